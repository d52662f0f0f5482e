"""The modality registry: for each kind of signal (image, audio, …), its coordinate dims, file suffixes,
reader and writer, measures, reading limits and fitting presets, in one `Modality` record.

A modality's own module builds its record and calls `register_modality` (`signals/image.py` registers
"image", …); `signals/__init__.py` imports those modules, one line each, in the order the kinds are listed
in messages (and in which suffixes are matched: a `.tif` is an image before it is a volume). Code outside
`signals/` asks `get_modality(kind)` instead of comparing kind names.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from fieldlab._errors import UserError
from fieldlab.signals._signal import Signal, SignalInfo


@dataclasses.dataclass(frozen=True)
class ReadRequest:
    """What a reader is asked for besides the file: the command's reading options."""

    spec: str
    """The input as the user wrote it (a path or `sample:NAME`), for messages."""
    max_size: int | None = None
    max_frames: int | None = None
    span: tuple[float, float] | None = None
    """Seconds to keep; a reader may take it itself (decoding no further), else `take_span` cuts after."""
    forced: bool = False
    """--modality named this modality, so the reader must not reinterpret the file (a TIFF stack)."""


@dataclasses.dataclass(frozen=True, kw_only=True)
class Modality:
    """One kind of signal. Hooks left None mean the modality does not do that (see `not_read`)."""

    name: str
    dims: int
    """Coordinate dimensions of its samples (an image's 2: row, column)."""
    suffixes: tuple[str, ...]
    """Input file suffixes that are detected as this modality (lower case, with the dot)."""
    read: Callable[[Path, ReadRequest], Signal] | None
    """A file → its `Signal`; None where the file is not read as a signal (`not_read` says why)."""
    write: Callable[[Path, np.ndarray, SignalInfo], None] | None = None
    """Raw values (*shape, c) → a file whose suffix is one of `output_suffixes`; None: not written as values."""
    output_suffixes: tuple[str, ...] = ()
    """Suffixes `write` can produce (renders, reconstructions)."""
    kept_suffixes: tuple[str, ...] = ()
    """Input suffixes a reconstruction keeps, because `write` stores them losslessly."""
    reconstruction_suffix: str = ""
    """The reconstruction's suffix when the input's is not kept."""
    content_suffix: Callable[[SignalInfo], str | None] | None = None
    """A reconstruction suffix decided by the signal's content (its `extra`), before the input's suffix."""
    preview: Callable[[str, np.ndarray], tuple[str, np.ndarray] | None] | None = None
    """(reconstruction name, raw) → a second file to look at (name, raw), e.g. an HDR image's tone map."""
    limits: tuple[str, ...] = ()
    """The reading flags that apply (`--max-size`, `--max-frames`); any other one given is an error."""
    rate: str | None = None
    """The `extra` key of its rate along the first axis (samples or frames per second), if it has one."""
    rate_required: bool = False
    """Whether a stored signal must carry `rate` (a video's writer has a default frame rate)."""
    metrics: tuple[str, ...] = ("psnr",)
    """The measures a fit reports, in order, by their names in `fit.metrics.MEASURES` (one may report
    several values: "frame_psnr" gives psnr_frame_mean and psnr_frame_min)."""
    samples: tuple[str, ...] = ()
    """Names of its built-in samples (`sample:NAME`)."""
    read_sample: Callable[[str, ReadRequest], Signal] | None = None
    field_defaults: Mapping[str, Mapping[str, Any]] = dataclasses.field(default_factory=dict)
    """Per field architecture, option defaults that depend on this modality (audio's first ω₀)."""
    field_lr: Mapping[str, float] = dataclasses.field(default_factory=dict)
    """Per field architecture, the learning rate `fit` uses unless --lr is given."""
    log_image: bool = False
    """Whether TensorBoard shows its reconstruction as an image."""
    occupancy: bool = False
    """Fitted as an occupancy field from its own file reader, rendered as the field's zero level set."""
    not_read: str = ""
    """Why a file of this modality is not read as a signal, where `read` is None."""
    example: Callable[[], tuple[np.ndarray, SignalInfo]] | None = None
    """A tiny (raw, info) that `write` stores and `read` reads back (the registry's tests use it)."""
    render_bytes: float = 0.0
    """Peak host memory of `fieldlab render` per output value (sample × channel) beyond the loaded field, which
    `edit.render` checks against free memory before it allocates (0: not measured; every registered modality
    states it). Measured by benchmarks/render_memory.py: the largest growth of peak RSS on the CPU over renders of
    1.6·10⁷ to 4·10⁷ values in the modality's formats, dtypes and one to eight channels, plus 5% for the
    allocator's variation. Nearly all of it is the same in every modality: the coordinates (built in float64),
    the chunks' values and their concatenation (float32), the decoded float64 copy with its temporaries and the
    encoder's own (the old guess of 12 let a 10⁹-sample audio render run into the OOM killer at 24 GB). Renders
    under 10⁷ values read up to 60, as freed buffers under glibc's 32 MB mmap threshold stay counted, but they
    need under 600 MB."""


_MODALITIES: dict[str, Modality] = {}


def register_modality(modality: Modality) -> Modality:
    """File `modality` under its name; a second one of the same name raises."""
    if modality.name in _MODALITIES:
        raise ValueError(f"modality {modality.name!r} is already registered")
    _MODALITIES[modality.name] = modality
    return modality


def modality_names() -> tuple[str, ...]:
    """Registered modality names, in registration order."""
    return tuple(_MODALITIES)


def modalities() -> tuple[Modality, ...]:
    return tuple(_MODALITIES.values())


def get_modality(name: str) -> Modality:
    """The modality registered as `name`; an unknown one is a `UserError` listing the known."""
    if name not in _MODALITIES:
        raise UserError(f"unknown modality {name!r}; registered modalities: {', '.join(_MODALITIES)}")
    return _MODALITIES[name]


def refuse_limits(kind: str, *, max_size: int | None, max_frames: int | None) -> None:
    """A `UserError` for a reading flag given that the modality `kind` does not take."""
    takes = get_modality(kind).limits
    for flag, value in (("--max-size", max_size), ("--max-frames", max_frames)):
        if value is not None and flag not in takes:
            raise UserError(f"{flag} does not apply to {'an' if kind[0] in 'aeiou' else 'a'} {kind}")
