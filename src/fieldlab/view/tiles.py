"""Deep-zoom tiles of an image field, rendered on demand through `fieldlab render`'s path and kept in an LRU cache.

Level `z` shows the signal at scale 2**(z - native): level 0 fits the whole image in one `TILE`-pixel tile,
level `native` is one screen pixel per sample, and the levels above it zoom past the signal's resolution
(the field is evaluated between the samples). Tile (x, y) of level z covers the region
rows [y*u, (y+1)*u) x columns [x*u, (x+1)*u) in sample units, u = TILE / scale, clipped to the signal, and is
rendered at the clipped region's size times the scale: exactly `fieldlab render DIR --region R --size S`.
"""

from __future__ import annotations

import math
import threading
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab._validate import bounded_int
from fieldlab.store import StoredField
from fieldlab.view.overlays import overlay, overlay_names

TILE = 128
"""Pixels per tile side. A tile renders TILE² points through the field: 128² (16,384) keeps a 200k-parameter
SIREN's tile near 0.1 s on a 2-core CPU, where 256² took about 0.5 s (benchmarks/view_speed.py)."""
EXTRA_LEVELS = 3
"""Levels past the signal's own resolution: up to 8 screen pixels per sample."""
ERROR_GAIN = 4
"""The error layer shows |field - original| times this, so that small errors are visible."""
LAYERS = ("field", "original", "error")


@dataclass(frozen=True)
class TileSpec:
    """One tile: its region (per axis START, STOP in sample units) and the size it is rendered at."""

    region: tuple[tuple[float, float], tuple[float, float]]
    size: tuple[int, int]

    @property
    def cli_region(self) -> str:
        """The same region as `fieldlab render --region` takes it."""
        return ",".join(f"{lo:g}:{hi:g}" for lo, hi in self.region)


def native_level(shape: tuple[int, int]) -> int:
    """The level at which one screen pixel is one sample."""
    return max(0, math.ceil(math.log2(max(shape) / TILE)))


def tile_spec(shape: tuple[int, int], z: object, x: object, y: object) -> TileSpec:
    """The region and size of tile (z, x, y) of an image of `shape` (H, W); a tile outside it is a UserError."""
    native = native_level(shape)
    z = bounded_int(z, "z", 0, native + EXTRA_LEVELS)
    scale = 2.0 ** (z - native)
    unit = TILE / scale  # sample units per tile side
    counts = [math.ceil(n / unit) for n in shape]
    y = bounded_int(y, "y", 0, counts[0] - 1)
    x = bounded_int(x, "x", 0, counts[1] - 1)
    region = tuple((i * unit, min((i + 1) * unit, n)) for i, n in ((y, shape[0]), (x, shape[1])))
    size = tuple(max(1, round((hi - lo) * scale)) for lo, hi in region)
    return TileSpec(region, size)


class TileCache:
    """The last `capacity` tiles as PNG bytes, by key; safe across the server's threads."""

    def __init__(self, capacity: int = 512):
        self.capacity, self._tiles, self._lock = capacity, OrderedDict(), threading.Lock()

    def get(self, key, make):
        with self._lock:
            if key in self._tiles:
                self._tiles.move_to_end(key)
                return self._tiles[key]
        value = make()
        with self._lock:
            self._tiles[key] = value
            while len(self._tiles) > self.capacity:
                self._tiles.popitem(last=False)
        return value


def png_bytes(raw: np.ndarray) -> bytes:
    """(H, W, C) raw image values as a PNG, written by the image writer that `fieldlab render` uses."""
    import tempfile

    from fieldlab.signals.image import write_image

    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "tile.png"
        write_image(path, raw)
        return path.read_bytes()


class ImageTiles:
    """Tiles of one image field and, when its source can be read, of the original and the absolute error."""

    def __init__(self, stored: StoredField, *, device: str = "cpu", cache: TileCache | None = None, key: object = ""):
        if stored.signal.kind != "image":
            raise UserError(f"deep-zoom tiles need an image field, not a {stored.signal.kind}")
        self.stored, self.device, self.key = stored, device, key
        self.shape = tuple(stored.signal.shape)
        self.cache = cache or TileCache()
        self._original: np.ndarray | None | bool = False  # False: not read yet; None: unreadable
        self._lock = threading.Lock()

    @property
    def levels(self) -> dict:
        native = native_level(self.shape)
        return {"tile": TILE, "native": native, "max": native + EXTRA_LEVELS, "height": self.shape[0],
                "width": self.shape[1], "original": self.has_original(), "error_gain": ERROR_GAIN,
                "overlays": overlay_names(self.stored)}

    def overlay(self, name: str) -> dict:
        """Overlay `name` (partitions or blocks with their PSNR), measured once."""
        return self.cache.get((self.key, "overlay", name),
                              lambda: overlay(self.stored, self.original(), name, self.device))

    def has_original(self) -> bool:
        """Whether the source is there to read: checked without reading it, so that a large field opens at
        once (the original is read on the first original or error tile)."""
        source = self.stored.signal.source
        return self._original is not None and (source.startswith("sample:") or Path(source).is_file())

    def field_raw(self, spec: TileSpec) -> np.ndarray:
        """The tile's raw values, as `fieldlab render` writes them before encoding."""
        from fieldlab.edit import render

        values = render(self.stored, size=list(spec.size), region=list(spec.region), device=self.device)
        return self.stored.signal.normalization.decode(values)

    def original(self) -> np.ndarray | None:
        """The signal the field was fitted to, raw (H, W, C), read once from its source; None when its
        source is gone or no longer matches the field's grid."""
        with self._lock:
            if self._original is False:
                self._original = self._read_original()
            return self._original

    def _read_original(self) -> np.ndarray | None:
        from fieldlab.signals import load_signal

        source = self.stored.signal.source
        quick = self._read_8bit(source)
        if quick is not None:
            return quick
        try:
            signal = load_signal(source, max_size=max(self.shape))
        except (UserError, OSError, ValueError):
            return None
        if tuple(signal.shape) != self.shape or signal.info.channels != self.stored.signal.channels:
            return None
        return self.stored.signal.normalization.decode(signal.values)

    def _read_8bit(self, source: str) -> np.ndarray | None:
        """An 8-bit image file of the field's own grid, as its bytes: 16 times faster than a signal's float
        copy of it (4096x4096: 0.6 s). None when the file is anything else (load_signal reads those)."""
        from PIL import Image

        modes = {1: "L", 2: "LA", 3: "RGB", 4: "RGBA"}
        if self.stored.signal.normalization.dtype != "uint8" or not Path(source).is_file():
            return None
        try:
            with Image.open(source) as image:
                if image.mode != modes.get(self.stored.signal.channels) or image.size != self.shape[::-1]:
                    return None
                return np.asarray(image).reshape(*self.shape, -1)
        except (OSError, ValueError, Image.DecompressionBombError):
            return None

    def original_raw(self, spec: TileSpec) -> np.ndarray:
        """The original over the tile's region at its size (box-averaged when smaller, nearest when larger)."""
        from PIL import Image

        original = self.original()
        if original is None:
            raise UserError(f"the original of this field ({self.stored.signal.source or 'unnamed'}) cannot be read")
        (r0, r1), (c0, c1) = spec.region
        top, left = math.floor(r0), math.floor(c0)
        crop = original[top:math.ceil(r1), left:math.ceil(c1)]  # only the samples under the tile are converted
        box = (c0 - left, r0 - top, c1 - left, r1 - top)
        resample = Image.BOX if spec.size[0] <= r1 - r0 else Image.NEAREST
        planes = []
        for c in range(original.shape[-1]):  # per channel, in float, so no mode limits apply
            plane = Image.fromarray(crop[..., c].astype(np.float32), mode="F")
            planes.append(np.asarray(plane.resize(spec.size[::-1], resample=resample, box=box)))
        values = np.stack(planes, -1)
        if np.issubdtype(original.dtype, np.integer):
            info = np.iinfo(original.dtype)
            return np.clip(np.rint(values), info.min, info.max).astype(original.dtype)
        return values.astype(original.dtype)

    def error_raw(self, spec: TileSpec) -> np.ndarray:
        field = self.field_raw(spec).astype(np.float64)
        diff = np.abs(field - self.original_raw(spec).astype(np.float64)) * ERROR_GAIN
        return np.clip(np.rint(diff / self.stored.signal.normalization.scale * 255), 0, 255).astype(np.uint8)

    def tile(self, layer: str, z: object, x: object, y: object) -> bytes:
        """PNG bytes of one tile of `layer` (field, original or error)."""
        if layer not in LAYERS:
            raise UserError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
        spec = tile_spec(self.shape, z, x, y)
        make = {"field": self.field_raw, "original": self.original_raw, "error": self.error_raw}[layer]
        return self.cache.get((self.key, layer, spec), lambda: png_bytes(make(spec)))
