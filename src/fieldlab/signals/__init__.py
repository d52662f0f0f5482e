"""Signals: readers and writers per modality, built-in samples, and the `Signal` they produce.

A signal's kind is detected from its file (suffix; a multi-page TIFF is a volume) or forced with
`modality`. Each kind is a `Modality` registered by its own module (see `signals/_modality.py`); the
functions here look it up instead of naming kinds. Heavy readers (soundfile, PyAV, trimesh, tifffile) are
imported only when a file needs them.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.signals._modality import (Modality, ReadRequest, get_modality, modalities, modality_names,
                                        refuse_limits, register_modality)
from fieldlab.signals._signal import Normalization, Signal, SignalInfo, grid_coords, span_samples
from fieldlab.signals.image import IMAGE_SUFFIXES, image_signal, read_image, write_image
from fieldlab.signals.samples import list_samples, sample_array

__all__ = [
    "IMAGE_SUFFIXES", "Modality", "Normalization", "ReadRequest", "Signal", "SignalInfo", "check_file",
    "detect_kind", "get_modality", "grid_coords", "image_signal", "kind_is_known", "kind_of", "list_samples",
    "load_signal", "modalities", "modality_names", "parse_span", "read_image", "reconstruction_name",
    "register_modality", "sample_array", "take_span", "write_image", "write_reconstruction", "write_signal",
]

# tifffile logs a warning per damaged tag; with no logging set up, Python's last-resort handler prints them
# before fieldlab's one-line error. A NullHandler keeps them out of the terminal; a program that configures
# logging still sees them.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

# The modalities, each registered by its module (image is imported above); this order is the order of
# messages and of suffix matching. A new modality is one module and one line here.
from fieldlab.signals import audio, video, volume, mesh  # noqa: E402,F401  (readers import libraries on use)

SAMPLE_FALLBACK = "image"
"""The kind of a `sample:NAME` no modality lists: the image reader refuses it, listing the samples."""


def kind_of(spec: str, modality: str | None = None) -> str:
    """The kind of `spec`: `modality` when given (checked), else detected from the name."""
    if modality is not None and modality not in modality_names():
        raise UserError(f"--modality must be one of {', '.join(modality_names())}, got {modality!r}")
    return modality or detect_kind(spec)


def detect_kind(spec: str) -> str:
    """The kind of a file or sample from its name alone (TIFFs say `image`; a stack is found on reading)."""
    if spec.startswith("sample:"):
        return _sample_kind(spec.removeprefix("sample:"))
    suffix = Path(spec).suffix.lower()
    for modality in modalities():
        if suffix in modality.suffixes:
            return modality.name
    known = ", ".join(s for modality in modalities() for s in modality.suffixes)
    raise UserError(f"unsupported file type {suffix or '(none)'!r} for {spec}; known: {known}")


def kind_is_known(spec: str, modality: str | None = None) -> bool:
    """Whether the kind of `spec` is settled before it is read: forced by `modality`, or its suffix belongs
    to one modality only (a `.tif` may be an image or a volume's stack of pages)."""
    suffix = Path(spec).suffix.lower()
    return modality is not None or sum(suffix in m.suffixes for m in modalities()) < 2


def _sample_kind(name: str) -> str:
    return next((m.name for m in modalities() if name in m.samples), SAMPLE_FALLBACK)


def check_file(spec: str) -> Path:
    path = Path(spec)
    if not path.exists():
        raise UserError(f"no such file: {spec}")
    if path.is_dir():
        raise UserError(f"{spec} is a folder, not a signal file")
    if path.stat().st_size == 0:
        raise UserError(f"{spec} is empty")
    return path


def parse_span(text: str) -> tuple[float, float]:
    """`START:STOP` in seconds (either side may be empty: `:1.5`, `2:`)."""
    if not isinstance(text, str):  # a config file may hold any JSON/TOML value
        raise UserError(f"--span must be START:STOP in seconds, got {text!r}")
    try:
        start, stop = (part.strip() for part in text.split(":"))
        span = (float(start) if start else 0.0, float(stop) if stop else float("inf"))
    except ValueError:
        raise UserError(f"--span must be START:STOP in seconds, got {text!r}") from None
    if not 0 <= span[0] < span[1] or span[0] == float("inf"):  # NaN fails the comparisons
        raise UserError(f"--span {text} is empty, negative or not a number")
    return span


def take_span(signal: Signal, span: tuple[float, float]) -> Signal:
    """The part of an audio clip or a video between `span` seconds."""
    rate = get_modality(signal.info.kind).rate
    if rate is None or not signal.info.extra.get(rate):
        raise UserError(f"--span applies to audio and video, not to a {signal.info.kind}")
    per_second = float(signal.info.extra[rate])
    start, stop = span_samples(span, per_second, signal.shape[0])
    if stop <= start:
        length = signal.shape[0] / per_second
        raise UserError(f"--span {span[0]:g}:{span[1]:g} lies outside the signal's {length:.3g} seconds")
    return signal.take(start, stop)


def load_signal(spec: str | os.PathLike, *, max_size: int | None = None, max_frames: int | None = None,
                modality: str | None = None, span: tuple[float, float] | None = None) -> Signal:
    """A signal from a file path or `sample:NAME`; `modality` forces the kind; `span` (seconds) takes
    part of a clip or video."""
    spec = os.fspath(spec)
    signal = _load(spec, max_size=max_size, max_frames=max_frames, modality=modality, span=span)
    return take_span(signal, span) if span and "taken_from" not in signal.info.extra else signal


def _load(spec: str, *, max_size: int | None, max_frames: int | None, modality: str | None,
          span: tuple[float, float] | None = None) -> Signal:
    """The signal of `spec`; a video reader takes `span` itself (decoding no further than it needs)."""
    for flag, value in (("--max-size", max_size), ("--max-frames", max_frames)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be positive, got {value}")
    kind = kind_of(spec, modality)
    reader = get_modality(kind)
    if reader.read is None:
        raise UserError(f"{spec} is a {kind}: {reader.not_read}")
    refuse_limits(kind, max_size=max_size, max_frames=max_frames)
    request = ReadRequest(spec, max_size=max_size, max_frames=max_frames, span=span, forced=modality is not None)
    if spec.startswith("sample:"):
        name = spec.removeprefix("sample:")
        own = get_modality(_sample_kind(name))
        if modality is not None and modality != own.name:
            raise UserError(f"{spec} is a built-in {own.name}; --modality {modality} does not apply to it")
        return own.read_sample(name, request)
    return reader.read(check_file(spec), request)


def reconstruction_name(info: SignalInfo) -> str:
    """The reconstruction's file name in the input's own format: its suffix where fieldlab writes that
    format losslessly (TIFF images, audio, volumes, meshes), else the kind's lossless default (PNG for other
    images, MP4 for video but GIF)."""
    modality = get_modality(info.kind)
    by_content = modality.content_suffix(info) if modality.content_suffix else None
    suffix = Path(info.source).suffix.lower()
    kept = suffix if suffix in modality.kept_suffixes else modality.reconstruction_suffix
    return f"reconstruction{by_content or kept}"


def write_reconstruction(folder: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """The reconstruction, named by `reconstruction_name`, and the modality's preview beside it where it
    has one (an EXR or HDR image gets a tone-mapped reconstruction.png to look at)."""
    name = reconstruction_name(info)
    write_signal(folder / name, raw, info)
    preview = get_modality(info.kind).preview
    extra = preview(name, raw) if preview else None
    if extra is not None:
        write_signal(folder / extra[0], extra[1], info)


def check_output(path: Path, info: SignalInfo) -> None:
    """A `UserError` unless `path`'s suffix can hold a signal of `info.kind`."""
    allowed = get_modality(info.kind).output_suffixes
    if path.suffix.lower() not in allowed:
        raise UserError(f"--out {path}: {info.kind} fields are written as one of {', '.join(allowed)}")


def write_signal(path: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """Write raw values (*shape, c) of a signal of `info.kind` to `path` (format from its suffix). The file
    is written under a temporary name beside `path` and renamed, so a failed write leaves `path` as it was."""
    check_output(path, info)
    writer = get_modality(info.kind).write
    if writer is None:
        raise UserError(f"cannot write signals of kind {info.kind!r}")
    from fieldlab._safety import replace_file

    # The writer gets a new file of an unpredictable name beside `path`, with its suffix.
    replace_file(Path(path), lambda partial: writer(partial, raw, info))
