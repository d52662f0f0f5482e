"""High-dynamic-range images: OpenEXR (.exr, through the OpenEXR bindings) and Radiance HDR (.hdr, through
imagecodecs' RGBE codec), both in the `hdr` extra: `pip install 'fieldlab[hdr]'`.

Their values are linear light, read as float32 and fitted as they are (negative EXR values included); the
PSNR of such a fit is on those linear values, relative to the peak max - min (metrics.json's `psnr_peak`). A
reconstruction is written as float again, with a tone-mapped PNG beside it to look at (`tone_map`).

Shape letters: H height, W width, C channels (1 gray, 2 gray + alpha, 3 RGB, 4 RGBA).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError, missing_extra

HDR_SUFFIXES = (".exr", ".hdr")
EXR_MAGIC = b"\x76\x2f\x31\x01"
_RESOLUTION = re.compile(rb"^([-+])Y (\d+) ([-+])X (\d+)$")


def hdr_format(path: Path) -> str | None:
    """'exr' or 'hdr' by the file's first bytes (whatever its suffix), else None."""
    with open(path, "rb") as f:
        head = f.read(4)
    if head == EXR_MAGIC:
        return "exr"
    return "hdr" if head[:2] == b"#?" else None


def _openexr():
    try:
        import OpenEXR
    except ImportError:
        raise missing_extra("OpenEXR", "hdr") from None
    return OpenEXR


@contextlib.contextmanager
def _native_stderr_muted():
    """OpenEXR's C core prints its own errors straight to file descriptor 2, beside the one line fieldlab
    says for the same damaged file; while it reads, descriptor 2 points at the null device."""
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 (a daemon): nothing to mute
        yield
        return
    try:
        with open(os.devnull, "wb") as null:
            os.dup2(null.fileno(), 2)
            yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)


def _imagecodecs():
    try:
        import imagecodecs
    except ImportError:
        raise missing_extra("imagecodecs", "hdr") from None
    return imagecodecs


def hdr_size(path: Path, fmt: str) -> tuple[int, int, int]:
    """(H, W, C) from the file's header alone, before any pixel is decoded."""
    if fmt == "exr":
        try:
            with _native_stderr_muted(), _openexr().File(str(path), header_only=True) as f:  # the header is emptied on closing
                header = f.header()
                (x0, y0), (x1, y1) = header["dataWindow"]
                size = int(y1) - int(y0) + 1, int(x1) - int(x0) + 1, len(header["channels"])
        except UserError:
            raise
        except Exception as error:  # the bindings raise RuntimeError and others for a damaged file
            raise UserError(f"cannot read {path} as an OpenEXR image ({_reason(error)})") from None
        return size
    with open(path, "rb") as f:
        lines = f.read(65536).split(b"\n")
    blank = lines.index(b"") if b"" in lines else len(lines)
    match = _RESOLUTION.match(lines[blank + 1].strip()) if blank + 1 < len(lines) else None
    if not match or match[1] != b"-" or match[3] != b"+":
        raise UserError(f"cannot read {path} as a Radiance HDR image (no '-Y H +X W' resolution line)")
    return int(match[2]), int(match[4]), 3


def read_hdr_image(path: Path, fmt: str) -> np.ndarray:
    """The float32 image (H, W, C) of an EXR or Radiance HDR file."""
    if fmt == "hdr":
        codecs = _imagecodecs()
        try:
            return np.asarray(codecs.rgbe_decode(path.read_bytes()), dtype=np.float32)
        except Exception as error:
            raise UserError(f"cannot read {path} as a Radiance HDR image ({_reason(error)})") from None
    try:
        with _native_stderr_muted(), _openexr().File(str(path), separate_channels=True) as f:
            channels = {name: np.asarray(c.pixels) for name, c in f.channels().items()}
    except UserError:
        raise
    except Exception as error:
        raise UserError(f"cannot read {path} as an OpenEXR image ({_reason(error)})") from None
    names = _pick_channels(list(channels), path)
    if len({channels[n].shape for n in names}) != 1:
        raise UserError(f"{path}: the channels {', '.join(names)} are sampled at different sizes")
    return np.stack([channels[n].astype(np.float32) for n in names], axis=-1)


def _pick_channels(names: list[str], path: Path) -> list[str]:
    """R, G, B (and A) of an EXR, or its one luminance (Y) or only channel."""
    for colour in (["R", "G", "B"], ["Y"]):
        if set(colour) <= set(names):
            return colour + (["A"] if "A" in names else [])
    if len(names) == 1:
        return names
    raise UserError(f"{path}: an EXR with channels {', '.join(sorted(names))}; fieldlab reads R, G, B (A) or Y")


def write_hdr_image(path: Path, raw: np.ndarray) -> None:
    """Write (H, W, C) values as float: integer images as fractions of their dtype's maximum. EXR keeps
    every channel as float32; Radiance HDR holds RGB only (gray is repeated, alpha dropped) and no negative
    values (written as 0)."""
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.dtype == np.bool_:
        raw = raw.astype(np.float32)
    elif np.issubdtype(raw.dtype, np.integer):
        raw = raw.astype(np.float64) / np.iinfo(raw.dtype).max
    raw = np.ascontiguousarray(raw, dtype=np.float32)
    if path.suffix.lower() == ".hdr":
        colour = raw[..., :3] if raw.shape[-1] >= 3 else np.repeat(raw[..., :1], 3, axis=-1)
        data = _imagecodecs().rgbe_encode(np.ascontiguousarray(np.maximum(colour, 0)))
        path.write_bytes(bytes(data))
        return
    openexr = _openexr()
    names = {1: ["Y"], 2: ["Y", "A"], 3: ["R", "G", "B"], 4: ["R", "G", "B", "A"]}[raw.shape[-1]]
    channels = {n: np.ascontiguousarray(raw[..., i]) for i, n in enumerate(names)}
    header = {"compression": openexr.ZIP_COMPRESSION, "type": openexr.scanlineimage}
    with openexr.File(header, channels) as f:
        f.write(str(path))


def tone_map(raw: np.ndarray) -> np.ndarray:
    """An 8-bit view of linear values (H, W, C): Reinhard's x / (1 + x) per colour channel (negatives as
    0), then the sRGB transfer curve; an alpha channel is clipped to [0, 1]."""
    x = np.asarray(raw, dtype=np.float64)
    colour = x.shape[-1] if x.shape[-1] in (1, 3) else x.shape[-1] - 1
    linear = np.maximum(x[..., :colour], 0)
    linear = linear / (1 + linear)
    srgb = np.where(linear <= 0.0031308, 12.92 * linear, 1.055 * linear ** (1 / 2.4) - 0.055)
    out = np.concatenate([srgb, np.clip(x[..., colour:], 0, 1)], axis=-1)
    return np.rint(out * 255).astype(np.uint8)


def _reason(error: BaseException) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:160] if text else type(error).__name__
