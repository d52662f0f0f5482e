"""Photos with an EXIF orientation (phones store them sideways and tag how to turn them) are read as viewers
show them: every tag 1-8 as Pillow's `ImageOps.exif_transpose`, on the plain and the shrinking (`--max-size`)
paths, with the turned size in the headers a dataset folder checks, and their masks turned alike."""

import numpy as np
import pytest
from PIL import Image, ImageOps

from fieldlab.signals.image import declared, read_image
from fieldlab.signals.sources_segmentation import read_mask

RAW = np.random.default_rng(0).integers(0, 256, (6, 10, 3), dtype=np.uint8)


def tagged(path, raw, orientation, **save):
    image = Image.fromarray(raw)
    exif = image.getexif()
    exif[0x0112] = orientation
    image.save(path, exif=exif.tobytes(), **save)
    return path


def decoded(signal):
    return signal.info.normalization.decode(signal.values)


@pytest.mark.parametrize("orientation", range(1, 9))
@pytest.mark.parametrize("suffix", [".png", ".jpg"])
def test_each_exif_orientation_reads_as_pillow_turns_it(tmp_path, orientation, suffix):
    path = tagged(tmp_path / f"photo{suffix}", RAW, orientation, **({"quality": 95} if suffix == ".jpg" else {}))
    with Image.open(path) as image:
        expected = np.asarray(ImageOps.exif_transpose(image))
    got = decoded(read_image(path))
    assert np.array_equal(got, expected)
    assert declared(path)[:3] == expected.shape and declared(path).bits == 8
    assert got.shape[:2] == ((10, 6) if orientation >= 5 else (6, 10))


def test_a_shrunk_photo_is_turned_too(tmp_path):
    """`--max-size` decodes a large file shrunk (block means while reading): the turned result is the one of the
    same pixels stored already turned."""
    big = np.repeat(np.repeat(RAW, 8, axis=0), 8, axis=1)  # 48 x 80
    turned = tagged(tmp_path / "turned.png", big, 6)
    upright = tmp_path / "upright.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(big, -1))).save(upright)
    a, b = decoded(read_image(turned, max_size=20)), decoded(read_image(upright, max_size=20))
    assert a.shape == b.shape == (20, 12, 3)
    assert np.allclose(a, b)


def test_a_mask_is_turned_as_its_image(tmp_path):
    ids = np.arange(60, dtype=np.uint8).reshape(6, 10)
    path = tagged(tmp_path / "mask.png", ids, 8)
    assert np.array_equal(read_mask(path), np.rot90(ids, 1))


def test_a_shrunk_photo_with_partial_blocks_matches_its_upright_copy(tmp_path):
    """Sides that are no multiple of the block: the photo is turned before its block means, so the partial
    blocks sit where they would for the same pixels stored upright."""
    big = np.random.default_rng(1).integers(0, 256, (45, 83, 3), dtype=np.uint8)
    turned = tagged(tmp_path / "turned.png", big, 6)
    upright = tmp_path / "upright.png"
    Image.fromarray(np.ascontiguousarray(np.rot90(big, -1))).save(upright)
    a, b = decoded(read_image(turned, max_size=20)), decoded(read_image(upright, max_size=20))
    assert a.shape == b.shape and np.allclose(a, b)


def test_a_bilevel_image_among_grey_ones_is_refused_from_the_headers(tmp_path):
    """A bilevel PNG reads as booleans: its header says 1 bit, so a folder mixing it with 8-bit grey images is
    refused when the source opens, not when the fitting reaches it."""
    from fieldlab._errors import UserError
    from fieldlab.signals.datasets import open_source
    from fieldlab.signals.image import declared

    (tmp_path / "set" / "a").mkdir(parents=True)
    Image.fromarray(RAW[..., 0]).save(tmp_path / "set" / "a" / "0.png")
    Image.fromarray(RAW[..., 1] > 128).save(tmp_path / "set" / "a" / "1.png")
    assert declared(tmp_path / "set" / "a" / "1.png").bits == 1
    with pytest.raises(UserError, match=r"1.png is 10x6, 1 channel, 1 bit, but .* 8 bits"):
        open_source(str(tmp_path / "set"))


@pytest.mark.parametrize("transparency", [False, True])
def test_a_palette_image_reads_as_rgb_on_both_paths(tmp_path, transparency):
    """A palette PNG reads as its RGB colours whether it is shrunk while decoding (`--max-size`) or not (the
    shrinking path made RGBA of one with a transparent entry), and its header says so."""
    big = np.repeat(np.repeat(RAW, 8, axis=0), 8, axis=1)
    path = tmp_path / "palette.png"
    Image.fromarray(big).convert("P").save(path, **({"transparency": 0} if transparency else {}))
    plain, shrunk = decoded(read_image(path)), decoded(read_image(path, max_size=20))
    assert plain.shape[-1] == shrunk.shape[-1] == declared(path).channels == 3
