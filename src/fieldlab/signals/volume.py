"""Volumes: 3D grids of samples from `.npy` arrays or multi-page TIFF stacks.

Shape letters: D depth (slices or pages), H height, W width, C channels (at most 4).

A volume of any numeric dtype (bool included) has shape (D, H, W) and values (D, H, W, C).
Integer volumes are normalized over their data range, not their dtype's range as images are: CT, MRI
and simulation volumes rarely fill their dtype (a 12-bit scan in uint16, labels in int64), and a
field fits and is scored over the values the volume holds. Decoding is exact while that range spans
fewer than 2^24 steps, which float32 field values resolve. Bool volumes (occupancy) map False, True
to -1, 1. `.npy` files are read with `allow_pickle=False`: a pickled array is refused, never run.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._modality import Modality, ReadRequest, refuse_limits, register_modality
from fieldlab.signals._signal import Normalization, Signal, SignalInfo

VOLUME_SUFFIXES = (".npy",)
TIFF_SUFFIXES = (".tif", ".tiff")


def _normalization(raw: np.ndarray) -> Normalization:
    if np.issubdtype(raw.dtype, np.integer):
        low, high = int(raw.min()), int(raw.max())
        return Normalization.for_range(raw.dtype.name, float(low), float(high))
    return Normalization.for_array(raw)  # bool: fixed [0, 1]; floats: their data range


def volume_signal(raw: np.ndarray, *, source: str) -> Signal:
    """A volume signal from an array (D, H, W) or (D, H, W, C≤4) of bool, integers or floats."""
    if raw.dtype.kind not in "biuf":
        raise UserError(f"{source}: a volume must hold numbers or booleans, not {raw.dtype}")
    if raw.ndim not in (3, 4) or raw.ndim == 4 and raw.shape[-1] > 4:
        raise UserError(f"{source}: expected a volume of shape (D, H, W) or (D, H, W, C≤4), got {raw.shape}")
    if raw.size == 0:
        raise UserError(f"{source}: the volume is empty, of shape {raw.shape}")
    _validate.require_finite(raw, source, axes=("slice", "row", "column", "channel"))
    extra = {"channel_axis": raw.ndim == 4}  # so a (D, H, W) volume is written back without one
    return Signal.from_array(raw if raw.ndim == 4 else raw[..., None], kind="volume", source=source,
                             normalization=_normalization(raw), extra=extra)


def read_volume(path: Path) -> Signal:
    """A volume from a `.npy` array (D, H, W) or (D, H, W, C≤4), loaded without pickle. The header's shape
    is checked against the limits and the file's size first, so a crafted or cut file allocates nothing."""
    with open(path, "rb") as f:
        if f.read(6) != b"\x93NUMPY":  # np.load would take a zip (.npz) too, and call anything else a pickle
            raise UserError(f"{path} is not a .npy array; save one with np.save (fieldlab never loads pickles)")
        f.seek(0)
        _validate.npy_header(f, str(path), path.stat().st_size)
    try:
        raw = np.load(path, allow_pickle=False)
    except (ValueError, OSError, EOFError) as error:
        raise UserError(f"cannot read {path} as a .npy array ({error or type(error).__name__})") from None
    return volume_signal(raw, source=str(path))


def _tiff_page_count(path: Path) -> int:
    """Pages of a TIFF by Pillow, to tell an image from a stack when tifffile is missing."""
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            return getattr(image, "n_frames", 1)
    except (UnidentifiedImageError, OSError) as error:
        raise UserError(f"cannot read {path} as a TIFF ({error})") from None


def read_tiff_stack(path: Path) -> np.ndarray | None:
    """The array (pages, H, W[, C]) of a multi-page TIFF, or None for a single page (an image)."""
    try:
        import tifffile
    except ImportError:
        if _tiff_page_count(path) == 1:
            return None
        raise missing_extra("tifffile", "tiff") from None
    try:
        with tifffile.TiffFile(path) as tiff:
            if not tiff.series:
                raise ValueError("no readable pages")
            series = tiff.series[0]
            if np.prod(series.shape) == np.prod(series.keyframe.shape):  # one page, however many samples
                return None
            raw, axes = series.asarray(), series.axes
    except (tifffile.TiffFileError, ValueError, OSError) as error:
        raise UserError(f"cannot read {path} as a TIFF ({error})") from None
    if "C" in axes and "S" not in axes and raw.ndim == 4:  # ImageJ hyperstacks put channels before Y
        raw = np.moveaxis(raw, axes.index("C"), -1)
    return raw


def write_volume(path: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """Write raw values (D, H, W, C) as `.npy` or a multi-page TIFF, one page per slice."""
    if raw.ndim == 4 and raw.shape[-1] == 1 and not info.extra.get("channel_axis", False):
        raw = raw[..., 0]
    suffix = path.suffix.lower()
    if suffix in VOLUME_SUFFIXES:
        np.save(path, raw, allow_pickle=False)
    elif suffix in TIFF_SUFFIXES:
        try:
            import tifffile
        except ImportError:
            raise missing_extra("tifffile", "tiff") from None
        if raw.ndim == 4 and raw.shape[-1] == 1:  # a TIFF page has no single-channel axis
            raw = raw[..., 0]
        colour = raw.ndim == 4 and raw.shape[-1] >= 3
        # Explicit, or tifffile may store a short stack as one page with D planar samples.
        tifffile.imwrite(path, raw, photometric="rgb" if colour else "minisblack",
                         planarconfig="contig" if raw.ndim == 4 else None)
    else:
        raise UserError(f"cannot write a volume as {suffix or '(none)'!r}; use .npy, .tif or .tiff")


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"


def _read(path: Path, request: ReadRequest) -> Signal:
    """A `.npy` array, else a multi-page TIFF stack (a single page is an image, refused here)."""
    if _is_npy(path):
        return read_volume(path)
    stack = read_tiff_stack(path)
    if stack is None:
        raise UserError(f"{request.spec} is a single-page TIFF: an image, not a volume")
    refuse_limits("volume", max_size=request.max_size, max_frames=request.max_frames)
    return volume_signal(stack, source=str(path))


def _example() -> tuple[np.ndarray, SignalInfo]:
    raw = np.arange(3 * 4 * 5, dtype=np.uint16).reshape(3, 4, 5) * 7  # (D, H, W)
    return raw[..., None], volume_signal(raw, source="example.npy").info


ALL_SUFFIXES = VOLUME_SUFFIXES + TIFF_SUFFIXES
register_modality(Modality(
    name="volume", dims=3, suffixes=ALL_SUFFIXES, read=_read, write=write_volume, output_suffixes=ALL_SUFFIXES,
    kept_suffixes=ALL_SUFFIXES, reconstruction_suffix=".npy", example=_example,
    render_bytes=43,  # 40.3 measured for a uint8 TIFF, plus 5% (`Modality.render_bytes`)
))
