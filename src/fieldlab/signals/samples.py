"""Built-in samples (`sample:NAME`): real signals that ship inside installed packages, no download."""

from __future__ import annotations

import numpy as np

from fieldlab._errors import UserError

# scikit-image's images that are part of its wheel (the rest need a download).
IMAGE_SAMPLES = (
    "astronaut", "brick", "camera", "cat", "chelsea", "coffee", "coins", "colorwheel", "grass", "gravel",
    "horse", "hubble_deep_field", "immunohistochemistry", "logo", "moon", "page", "retina", "rocket",
    "shepp_logan_phantom", "text",
)


def list_samples() -> list[str]:
    return sorted(IMAGE_SAMPLES)


def sample_array(name: str) -> tuple[str, np.ndarray]:
    """(kind, raw array) of the built-in sample `name`."""
    if name not in IMAGE_SAMPLES:
        raise UserError(f"unknown sample {name!r}; built-in samples: {', '.join(list_samples())}")
    import skimage.data

    return "image", np.asarray(getattr(skimage.data, name)())
