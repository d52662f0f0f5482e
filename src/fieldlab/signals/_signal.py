"""A signal: values on a regular grid of samples, with its domain and normalization.

Coordinates: sample i of n along an axis sits at its centre, i + 0.5, in the signal's own units; the
field's domain [lo, hi) per axis maps affinely onto the canonical [-1, 1]. Values are stored in the
field's range [-1, 1]; `Normalization` maps them to and from the file's raw values exactly.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import torch


@dataclasses.dataclass(frozen=True)
class Normalization:
    """field = 2 (raw - offset) / scale - 1, and back; integer dtypes round and clip on the way back."""

    dtype: str
    offset: float
    scale: float

    @classmethod
    def for_array(cls, raw: np.ndarray) -> Normalization:
        if raw.dtype == np.bool_:
            return cls("bool", 0.0, 1.0)
        if np.issubdtype(raw.dtype, np.integer):
            info = np.iinfo(raw.dtype)
            return cls(raw.dtype.name, float(info.min), float(info.max) - float(info.min))
        return cls.for_range(raw.dtype.name, float(np.min(raw)), float(np.max(raw)))

    @classmethod
    def for_range(cls, dtype: str, low: float, high: float) -> Normalization:
        """[low, high] onto [-1, 1]. A constant (low == high) maps to 0, the centre of a field's output
        range, where a network starts and is most precise; at -1, the edge, a SIREN fits it poorly."""
        if high > low or not math.isfinite(2 * low):
            return cls(dtype, low, (high - low) or 1.0)
        # Scale 2|low| and offset low - |low| (0 or 2 low) make encode and decode exact in binary floating
        # point: both steps compute a value that is representable.
        return cls(dtype, low - abs(low), 2 * abs(low)) if low else cls(dtype, -0.5, 1.0)

    def encode(self, raw: np.ndarray) -> torch.Tensor:
        """Raw values → float32 field values in [-1, 1]."""
        raw = np.asarray(raw)
        # Up to 16-bit integers float32 is exact enough to decode back, and keeps a video's copy small.
        small = raw.dtype == np.bool_ or np.issubdtype(raw.dtype, np.integer) and raw.dtype.itemsize <= 2
        x = torch.from_numpy(raw.astype(np.float32 if small else np.float64))  # a copy: in place below
        # In place, in the order of 2 (x − offset) / scale − 1 (the same values): a chunk of a dataset is
        # encoded at once, and temporaries were most of its reading time.
        return x.sub_(self.offset).mul_(2).div_(self.scale).sub_(1).float()

    def decode(self, values: torch.Tensor | np.ndarray) -> np.ndarray:
        """Field values → raw values of the original dtype (rounded and clipped for integers)."""
        x = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64)
        raw = (x + 1) / 2 * self.scale + self.offset
        if self.dtype == "bool":
            return raw >= 0.5
        dtype = np.dtype(self.dtype)
        if np.issubdtype(dtype, np.integer):
            info = np.iinfo(dtype)
            return np.clip(np.rint(raw), info.min, info.max).astype(dtype)
        return raw.astype(dtype)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclasses.dataclass(frozen=True)
class SignalInfo:
    """What a field needs to know of its signal: kind, sample grid, domain, normalization, origin."""

    kind: str
    shape: tuple[int, ...]
    channels: int
    normalization: Normalization
    domain: tuple[tuple[float, float], ...]
    """Per axis, the box [lo, hi) in sample units that maps onto the canonical [-1, 1]."""
    source: str = ""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Kind-specific facts (sample rate, frame rate, …)."""

    @property
    def in_dim(self) -> int:
        return len(self.shape)

    def to_dict(self) -> dict[str, Any]:
        return {
            "kind": self.kind, "shape": list(self.shape), "channels": self.channels,
            "normalization": self.normalization.to_dict(), "domain": [list(b) for b in self.domain],
            "source": self.source, "extra": self.extra,
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any], where: object = "the signal's description") -> SignalInfo:
        """The info `to_dict` wrote; a damaged or crafted one (a wrong type, kind, shape, dtype, a missing
        sample rate) is a UserError naming `where`."""
        from fieldlab.signals._info_schema import check_info

        check_info(data, where)
        return cls(
            kind=data["kind"], shape=tuple(data["shape"]), channels=int(data["channels"]),
            normalization=Normalization(**data["normalization"]),
            domain=tuple(tuple(float(v) for v in b) for b in data["domain"]),
            source=data.get("source", ""), extra=dict(data.get("extra", {})),
        )


@dataclasses.dataclass(frozen=True)
class Signal:
    """Values (*shape, c) in the field range [-1, 1], with the `SignalInfo` that describes them."""

    values: torch.Tensor
    info: SignalInfo

    @classmethod
    def from_array(cls, raw: np.ndarray, *, kind: str, source: str = "", channel_axis: bool = True,
                   normalization: Normalization | None = None, extra: dict | None = None) -> Signal:
        """A signal from a raw array of shape (*shape, c) (or (*shape) with `channel_axis=False`)."""
        if not channel_axis:
            raw = raw[..., None]
        normalization = normalization or Normalization.for_array(raw)
        values = normalization.encode(raw)
        shape = tuple(values.shape[:-1])
        info = SignalInfo(kind=kind, shape=shape, channels=values.shape[-1], normalization=normalization,
                          domain=tuple((0.0, float(n)) for n in shape), source=source, extra=extra or {})
        return cls(values, info)

    @property
    def shape(self) -> tuple[int, ...]:
        return self.info.shape

    def take(self, start: int, stop: int) -> Signal:
        """Samples [start, stop) of the first axis (time, for audio and video) as a signal of its own."""
        values = self.values[start:stop]
        shape = tuple(values.shape[:-1])
        info = dataclasses.replace(self.info, shape=shape, domain=tuple((0.0, float(n)) for n in shape),
                                   extra={**self.info.extra, "taken_from": [start, stop]})
        return Signal(values, info)

    def coords(self) -> torch.Tensor:
        """Canonical coordinates of every sample, (n, d), in the order of `values.reshape(-1, c)`."""
        return grid_coords(self.info.domain, [(0.0, float(n)) for n in self.shape], self.shape)

    def coords_at(self, rows: torch.Tensor) -> torch.Tensor:
        """`coords()[rows]` without making every coordinate (a 10-s 512² video's are 1.9 GB, 5.7 GB while made):
        the canonical coordinates (k, d) of the samples at the flat indices `rows`."""
        axes = _grid_axes(self.info.domain, [(0.0, float(n)) for n in self.shape], self.shape)
        index = torch.unravel_index(torch.as_tensor(rows, dtype=torch.int64), tuple(self.shape))
        return torch.stack([axis[i] for axis, i in zip(axes, index)], dim=-1).float()

    def flat_values(self) -> torch.Tensor:
        return self.values.reshape(-1, self.info.channels)


def grid_coords(domain, region, size) -> torch.Tensor:
    """Canonical coordinates (n, d) of a `size` grid of sample centres covering `region`.

    `region` and `domain` are per-axis (lo, hi) boxes in sample units; the first axis varies slowest.
    """
    axes = [axis.float() for axis in _grid_axes(domain, region, size)]  # rounded once per axis: the same values
    mesh = torch.meshgrid(*axes, indexing="ij")  # views; the stack below is the one grid made (float32)
    return torch.stack(mesh, dim=-1).reshape(-1, len(axes))


def _grid_axes(domain, region, size) -> list[torch.Tensor]:
    """Per axis, the canonical coordinates (float64) of `grid_coords`' sample centres along it."""
    axes = []
    for (d_lo, d_hi), (r_lo, r_hi), n in zip(domain, region, size):
        centres = r_lo + (torch.arange(n, dtype=torch.float64) + 0.5) * (r_hi - r_lo) / n
        axes.append(2 * (centres - d_lo) / (d_hi - d_lo) - 1)
    return axes


def span_samples(span: tuple[float, float], per_second: float, count: int | None) -> tuple[int, int | None]:
    """Samples (or frames) [start, stop) between `span` seconds at `per_second`, rounded to the nearest;
    stop is clipped to `count` when the length is known, and None (to the end) for an open span without it."""
    start = int(round(span[0] * per_second))
    stop = None if span[1] == float("inf") else int(round(span[1] * per_second))
    if count is not None:
        stop = count if stop is None else min(stop, count)
    return start, stop
