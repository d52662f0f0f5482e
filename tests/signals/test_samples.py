"""Built-in samples: read from scikit-image's wheel without importing scikit-image (issue 25's start-up)."""

import subprocess
import sys

import numpy as np
import pytest

from fieldlab.signals.samples import SAMPLE_FILES, sample_array


@pytest.mark.parametrize("name", sorted(SAMPLE_FILES))
def test_a_sample_read_from_its_file_is_the_array_scikit_image_gives(name):
    import skimage.data

    expected = np.asarray(getattr(skimage.data, name)())
    kind, raw = sample_array(name)
    assert kind == "image" and raw.dtype == expected.dtype and raw.shape == expected.shape
    assert np.array_equal(raw, expected)


def test_the_samples_scikit_image_converts_still_come_from_it():
    import skimage.data

    assert np.array_equal(sample_array("horse")[1], skimage.data.horse())


def test_reading_a_bundled_sample_does_not_import_scikit_image_or_scipy():
    code = ("import sys; from fieldlab.signals.samples import sample_array; sample_array('astronaut'); "
            "print(sorted({m.split('.')[0] for m in sys.modules} & {'skimage', 'scipy'}))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"
