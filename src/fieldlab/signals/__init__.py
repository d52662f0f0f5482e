"""Signals: readers and writers per modality, built-in samples, and the `Signal` they produce.

A signal's kind is detected from its file (suffix; a multi-page TIFF is a volume) or forced with
`modality`. Heavy readers (soundfile, PyAV, trimesh, tifffile) are imported only when a file needs them.
"""

from __future__ import annotations

import dataclasses
import logging
import os
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.signals._signal import Normalization, Signal, SignalInfo, grid_coords, span_samples
from fieldlab.signals.image import IMAGE_SUFFIXES, image_signal, read_image, write_image
from fieldlab.signals.samples import list_samples, sample_array

__all__ = [
    "DIMS", "IMAGE_SUFFIXES", "KINDS", "Normalization", "Signal", "SignalInfo", "detect_kind", "grid_coords",
    "image_signal", "kind_of",
    "check_file", "list_samples", "load_signal", "parse_span", "take_span", "read_image", "reconstruction_name", "sample_array", "write_image", "write_reconstruction", "write_signal",
]

# tifffile logs a warning per damaged tag; with no logging set up, Python's last-resort handler prints them
# before fieldlab's one-line error. A NullHandler keeps them out of the terminal; a program that configures
# logging still sees them.
logging.getLogger("tifffile").addHandler(logging.NullHandler())

from fieldlab.signals.audio import AUDIO_SUFFIXES  # noqa: E402  (readers import their libraries on use)
from fieldlab.signals.video import GIF_SAMPLE, H264_SUFFIXES, VIDEO_SUFFIXES  # noqa: E402

SUFFIXES = {
    "image": IMAGE_SUFFIXES,
    "audio": AUDIO_SUFFIXES,
    "video": VIDEO_SUFFIXES,
    "volume": (".npy", ".tif", ".tiff"),
    "mesh": (".obj", ".ply", ".stl", ".off", ".glb"),
}
KINDS = tuple(SUFFIXES)
DIMS = {"image": 2, "audio": 1, "video": 3, "volume": 3, "mesh": 3}
"""Coordinate dimensions of each kind of signal."""
VIDEO_SAMPLES = (GIF_SAMPLE,)


def kind_of(spec: str, modality: str | None = None) -> str:
    """The kind of `spec`: `modality` when given (checked), else detected from the name."""
    if modality is not None and modality not in KINDS:
        raise UserError(f"--modality must be one of {', '.join(KINDS)}, got {modality!r}")
    return modality or detect_kind(spec)


def detect_kind(spec: str) -> str:
    """The kind of a file or sample from its name alone (TIFFs say `image`; a stack is found on reading)."""
    if spec.startswith("sample:"):
        return "video" if spec.removeprefix("sample:") in VIDEO_SAMPLES else "image"
    suffix = Path(spec).suffix.lower()
    for kind, suffixes in SUFFIXES.items():
        if suffix in suffixes:
            return kind
    known = ", ".join(s for suffixes in SUFFIXES.values() for s in suffixes)
    raise UserError(f"unsupported file type {suffix or '(none)'!r} for {spec}; known: {known}")


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
    rate = {"audio": "sample_rate", "video": "fps"}.get(signal.info.kind)
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
    if kind == "mesh":
        raise UserError(f"{spec} is a mesh: meshes are fitted as occupancy fields, not read as signals")
    _refuse_limits(kind, max_size=max_size, max_frames=max_frames)
    if spec.startswith("sample:"):
        name = spec.removeprefix("sample:")
        own = "video" if name in VIDEO_SAMPLES else "image"
        if modality is not None and modality != own:
            raise UserError(f"{spec} is a built-in {own}; --modality {modality} does not apply to it")
        if name in VIDEO_SAMPLES:
            from fieldlab.signals.video import read_video, sample_video_path

            signal = read_video(sample_video_path(name), max_frames=max_frames, max_size=max_size, span=span)
            return dataclasses.replace(signal, info=dataclasses.replace(signal.info, source=spec))
        _, raw = sample_array(name)
        return image_signal(raw, source=spec, max_size=max_size)
    path = check_file(spec)
    if kind == "image" and path.suffix.lower() in (".tif", ".tiff") or kind == "volume" and not _is_npy(path):
        from fieldlab.signals.volume import read_tiff_stack, volume_signal

        stack = read_tiff_stack(path)
        if stack is not None and modality != "image":
            _refuse_limits("volume", max_size=max_size, max_frames=max_frames)
            return volume_signal(stack, source=str(path))
        if kind == "volume":
            raise UserError(f"{spec} is a single-page TIFF: an image, not a volume")
        return read_image(path, max_size=max_size)
    if kind == "image":
        return read_image(path, max_size=max_size)
    if kind == "audio":
        from fieldlab.signals.audio import read_audio

        return read_audio(path)
    if kind == "video":
        from fieldlab.signals.video import read_video

        return read_video(path, max_frames=max_frames, max_size=max_size, span=span)
    from fieldlab.signals.volume import read_volume

    return read_volume(path)


def _refuse_limits(kind: str, *, max_size: int | None, max_frames: int | None) -> None:
    """--max-size shrinks images and video frames, --max-frames shortens videos; elsewhere they are errors."""
    takes = {"image": ("--max-size",), "video": ("--max-size", "--max-frames")}.get(kind, ())
    for flag, value in (("--max-size", max_size), ("--max-frames", max_frames)):
        if value is not None and flag not in takes:
            raise UserError(f"{flag} does not apply to {'an' if kind[0] in 'aeiou' else 'a'} {kind}")


def _is_npy(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(6) == b"\x93NUMPY"


def reconstruction_name(info: SignalInfo) -> str:
    """The reconstruction's file name in the input's own format: its suffix where fieldlab writes that
    format losslessly (TIFF images, audio, volumes, meshes), else the kind's lossless default (PNG for other
    images, MP4 for video but GIF)."""
    if info.kind == "video":
        return "reconstruction.gif" if info.extra.get("format") == "gif" else "reconstruction.mp4"
    if info.kind == "image" and info.extra.get("format") in ("exr", "hdr"):  # by content, whatever the suffix
        return f"reconstruction.{info.extra['format']}"
    suffix = Path(info.source).suffix.lower()
    own = {"image": (".tif", ".tiff"), "audio": AUDIO_SUFFIXES, "volume": (".npy", ".tif", ".tiff"),
           "mesh": SUFFIXES["mesh"]}
    if suffix in own.get(info.kind, ()):
        return f"reconstruction{suffix}"
    return {"image": "reconstruction.png", "audio": "reconstruction.wav", "volume": "reconstruction.npy",
            "mesh": "reconstruction.obj"}[info.kind]


def write_reconstruction(folder: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """The reconstruction, named by `reconstruction_name`; an EXR or HDR one gets a tone-mapped
    reconstruction.png beside it to look at (`signals.hdr.tone_map`)."""
    name = reconstruction_name(info)
    write_signal(folder / name, raw, info)
    if name.endswith((".exr", ".hdr")):
        from fieldlab.signals.hdr import tone_map

        write_signal(folder / "reconstruction.png", tone_map(raw), info)


OUTPUT_SUFFIXES = {
    "image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES, "video": (*H264_SUFFIXES, ".gif"),
    "volume": (".npy", ".tif", ".tiff"), "mesh": (".obj", ".ply", ".stl", ".off", ".glb"),
}


def check_output(path: Path, info: SignalInfo) -> None:
    """A `UserError` unless `path`'s suffix can hold a signal of `info.kind`."""
    allowed = OUTPUT_SUFFIXES[info.kind]
    if path.suffix.lower() not in allowed:
        raise UserError(f"--out {path}: {info.kind} fields are written as one of {', '.join(allowed)}")


def write_signal(path: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """Write raw values (*shape, c) of a signal of `info.kind` to `path` (format from its suffix). The file
    is written under a temporary name beside `path` and renamed, so a failed write leaves `path` as it was."""
    check_output(path, info)
    if info.kind not in SUFFIXES or info.kind == "mesh":
        raise UserError(f"cannot write signals of kind {info.kind!r}")
    from fieldlab._safety import replace_file

    def write(partial: Path) -> None:  # a new file of an unpredictable name beside `path`, with its suffix
        if info.kind == "image":
            write_image(partial, raw)
        elif info.kind == "audio":
            from fieldlab.signals.audio import write_audio

            write_audio(partial, raw, info)
        elif info.kind == "video":
            from fieldlab.signals.video import write_video

            write_video(partial, raw, info)
        else:
            from fieldlab.signals.volume import write_volume

            write_volume(partial, raw, info)

    replace_file(Path(path), write)
