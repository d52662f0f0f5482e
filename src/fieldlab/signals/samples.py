"""Built-in samples (`sample:NAME`): real signals that ship inside installed packages, no download."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError

# scikit-image's images that are part of its wheel (the rest need a download).
IMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket",
    "shepp_logan_phantom", "text",
)

# The samples scikit-image reads unchanged from a file in its wheel: read here with imageio (what its
# imread calls), byte for byte the same array, without importing scikit-image and scipy (0.2-0.3 s of a fit's
# start-up). horse and shepp_logan_phantom are converted by scikit-image, so they still come from it.
SAMPLE_FILES = {
    "astronaut": "astronaut.png", "brick": "brick.png", "camera": "camera.png", "cat": "chelsea.png",
    "chelsea": "chelsea.png", "coffee": "coffee.png", "coins": "coins.png", "colorwheel": "color.png",
    "grass": "grass.png", "gravel": "gravel.png", "hubble_deep_field": "hubble_deep_field.jpg",
    "immunohistochemistry": "ihc.png", "logo": "logo.png", "moon": "moon.png", "page": "page.png",
    "retina": "retina.jpg", "rocket": "rocket.jpg", "text": "text.png",
}


def list_samples() -> list[str]:
    return sorted(IMAGE_SAMPLES)


def sample_array(name: str) -> tuple[str, np.ndarray]:
    """(kind, raw array) of the built-in sample `name`."""
    if name not in IMAGE_SAMPLES:
        raise UserError(f"unknown sample {name!r}; built-in samples: {', '.join(list_samples())}")
    path = _bundled_file(name)
    if path is not None:
        import imageio.v3 as iio

        return "image", np.asarray(iio.imread(path))
    import skimage.data

    return "image", np.asarray(getattr(skimage.data, name)())


def _bundled_file(name: str) -> Path | None:
    """The file in scikit-image's wheel that holds sample `name` as it is, found without importing the package."""
    spec = importlib.util.find_spec("skimage")
    if name not in SAMPLE_FILES or spec is None or spec.origin is None:
        return None
    path = Path(spec.origin).parent / "data" / SAMPLE_FILES[name]
    return path if path.is_file() else None
