"""Signals: readers and writers per modality, built-in samples, and the `Signal` they produce."""

from __future__ import annotations

from pathlib import Path

from fieldlab._errors import UserError
from fieldlab.signals._signal import Normalization, Signal, SignalInfo, grid_coords
from fieldlab.signals.image import IMAGE_SUFFIXES, image_signal, read_image, write_image
from fieldlab.signals.samples import list_samples, sample_array

__all__ = [
    "IMAGE_SUFFIXES", "Normalization", "Signal", "SignalInfo", "grid_coords", "image_signal", "list_samples",
    "load_signal", "read_image", "sample_array", "write_signal", "write_image",
]


def load_signal(spec: str, *, max_size: int | None = None) -> Signal:
    """A signal from a file path or `sample:NAME`."""
    if max_size is not None and max_size <= 0:
        raise UserError(f"--max-size must be positive, got {max_size}")
    if spec.startswith("sample:"):
        _, raw = sample_array(spec.removeprefix("sample:"))
        return image_signal(raw, source=spec, max_size=max_size)
    path = Path(spec)
    if not path.exists():
        raise UserError(f"no such file: {spec}")
    if path.is_dir():
        raise UserError(f"{spec} is a folder, not a signal file")
    if path.stat().st_size == 0:
        raise UserError(f"{spec} is empty")
    if path.suffix.lower() in IMAGE_SUFFIXES:
        return read_image(path, max_size=max_size)
    raise UserError(f"unsupported file type {path.suffix or '(none)'!r} for {spec}; images: {', '.join(IMAGE_SUFFIXES)}")


def reconstruction_name(info: SignalInfo) -> str:
    """The reconstruction's file name in the input's own format."""
    return {"image": "reconstruction.png"}[info.kind]


def write_signal(path: Path, raw, info: SignalInfo) -> None:
    """Write raw values of a signal of `info.kind` to `path`."""
    if info.kind == "image":
        write_image(path, raw)
    else:
        raise UserError(f"cannot write signals of kind {info.kind!r}")
