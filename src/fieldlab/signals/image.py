"""Images: PNG, JPEG, TIFF (8- or 16-bit; gray, RGB or RGBA) through imageio.

Pillow (imageio's PNG backend) reduces 16-bit colour PNGs to 8 bits, so those go through pypng, which
reads and writes every PNG bit depth exactly.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.signals._signal import Normalization, Signal

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp")


def image_signal(raw: np.ndarray, *, source: str, max_size: int | None = None) -> Signal:
    """An image signal from an array (H, W) or (H, W, C), downsampled with anti-aliasing to `max_size`."""
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.ndim != 3 or raw.shape[-1] not in (1, 2, 3, 4) or min(raw.shape[:2]) < 1:
        raise UserError(f"{source}: expected an image of shape (H, W) or (H, W, C≤4), got {raw.shape}")
    normalization = Normalization.for_array(raw)
    if max_size and max(raw.shape[:2]) > max_size:
        from skimage.transform import resize

        factor = max_size / max(raw.shape[:2])
        shape = tuple(max(1, round(n * factor)) for n in raw.shape[:2])
        unit = (raw.astype(np.float64) - normalization.offset) / normalization.scale
        small = resize(unit, shape, order=1, anti_aliasing=True, preserve_range=True)
        raw = small * normalization.scale + normalization.offset  # stays float: no rounding before fitting
    return Signal.from_array(raw, kind="image", source=source, normalization=normalization)


def _is_deep_colour_png(path: Path) -> bool:
    """True for a PNG with 16 bits per sample and more than one channel (IHDR's bit depth, colour type)."""
    with open(path, "rb") as f:
        header = f.read(26)
    return header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 26 and header[24] == 16 and header[25] in (2, 4, 6)


def _read_png_exact(path: Path) -> np.ndarray:
    import png

    width, height, rows, info = png.Reader(filename=str(path)).asDirect()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    return np.vstack([np.asarray(row, dtype=dtype) for row in rows]).reshape(height, width, info["planes"])


def read_image(path: Path, *, max_size: int | None = None) -> Signal:
    import imageio.v3 as iio

    try:
        raw = _read_png_exact(path) if _is_deep_colour_png(path) else np.asarray(iio.imread(path))
    except Exception as error:  # imageio raises many types for a bad file; all mean the same to a user
        reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(f"cannot read {path} as an image ({reason})") from None
    if raw.shape[:1] == (1,) and (raw.ndim == 4 or raw.ndim == 3 and raw.shape[-1] > 4):  # one page (1, H, W[, C])
        raw = raw[0]
    return image_signal(raw, source=str(path), max_size=max_size)


def write_image(path: Path, raw: np.ndarray) -> None:
    """Write (H, W, C) raw values; JPEG gets 8 bits, PNG and TIFF keep 16, TIFF keeps floats as float32.
    Floats go to PNG and JPEG as 8 bits: [0, 1] scaled by 255, [0, 255] as they are, any other range
    stretched from its min to its max (a view of the image, not its values)."""
    import imageio.v3 as iio

    if raw.shape[-1] == 1:
        raw = raw[..., 0]
    tiff = path.suffix.lower() in (".tif", ".tiff")
    if raw.dtype == np.bool_:
        raw = raw.astype(np.uint8) * 255
    elif not np.issubdtype(raw.dtype, np.integer) and tiff:
        raw = raw.astype(np.float32)
    elif not np.issubdtype(raw.dtype, np.integer):
        low, high = float(raw.min(initial=0)), float(raw.max(initial=0))
        if low >= 0 and high <= 1:
            raw = raw * 255
        elif low < 0 or high > 255:
            raw = (raw - raw.min()) / ((float(raw.max()) - float(raw.min())) or 1.0) * 255
        raw = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg") and raw.dtype != np.uint8:
        raw = (raw.astype(np.float64) / np.iinfo(raw.dtype).max * 255).round().astype(np.uint8)
    if path.suffix.lower() == ".png" and raw.dtype == np.uint16 and raw.ndim == 3:
        import png

        modes = {2: "LA", 3: "RGB", 4: "RGBA"}
        png.from_array(raw.reshape(raw.shape[0], -1), f"{modes[raw.shape[-1]]};16").save(str(path))
        return
    if raw.dtype not in (np.uint8, np.uint16, np.float32):
        raw = (raw.astype(np.float64) / np.iinfo(raw.dtype).max * 65535).round().astype(np.uint16)
    iio.imwrite(path, raw)
