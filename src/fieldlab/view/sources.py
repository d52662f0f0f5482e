"""What the view's HTTP routes render: image fields by name (the field DIR, or rows of a store, each a
field of its own), and thumbnails of a store's rows rendered in batches from the stacked fields."""

from __future__ import annotations

import threading
from collections import OrderedDict

import numpy as np
import torch

from fieldlab._errors import UserError
from fieldlab._validate import bounded_int
from fieldlab.store import StoredField
from fieldlab.view.tiles import ImageTiles, TileCache

THUMB = 64
"""A thumbnail's longer side in pixels."""


def row_field(store, row: int) -> StoredField:
    """Row `row` of a FieldStore as a StoredField, so that it renders and tiles like a field DIR."""
    stack = store.stack([row])
    psnr = float(store.column("psnr")[row])
    return StoredField(module=stack.field(0), config=store.config, signal=store.signal,
                       metrics={"psnr": round(psnr, 4), "row": row})


class Sources:
    """Named tile sources: "field" for a field DIR, "row-N" for row N of a store (made on demand; the last
    few kept). All share one tile cache."""

    def __init__(self, *, field: StoredField | None = None, store=None, device: str = "cpu"):
        self.store, self.device, self.cache = store, device, TileCache()
        self._rows: OrderedDict[str, ImageTiles] = OrderedDict()
        self._named = {"field": ImageTiles(field, device=device, cache=self.cache, key="field")} \
            if field is not None and field.signal.kind == "image" else {}
        self._lock = threading.Lock()

    def get(self, name: str) -> ImageTiles:
        if name in self._named:
            return self._named[name]
        if self.store is None or not name.startswith("row-"):
            raise UserError(f"no image field named {name!r} in this view")
        row = bounded_int(name.removeprefix("row-"), "row", 0, self.store.num_fields - 1)
        if not self.store.done[row]:
            raise UserError(f"row {row} of the store is not fitted yet")
        with self._lock:
            if name not in self._rows:
                self._rows[name] = ImageTiles(row_field(self.store, row), device=self.device, cache=self.cache,
                                              key=name)
                while len(self._rows) > 16:
                    self._rows.popitem(last=False)
            return self._rows[name]


def thumb_size(shape: tuple[int, ...]) -> list[int]:
    longest = max(shape)
    return [max(1, round(n * min(1.0, THUMB / longest))) for n in shape]


@torch.no_grad()
def thumbnails(store, rows: list[int], device: str = "cpu") -> list[np.ndarray]:
    """Raw thumbnails (h, w, c) of image rows, all fields of the page evaluated in one batched call."""
    from fieldlab.signals import grid_coords

    if not rows:
        return []
    if store.signal.kind != "image":
        raise UserError(f"thumbnails are drawn for image stores; this store holds {store.signal.kind}s")
    size = thumb_size(store.signal.shape)
    coords = grid_coords(store.signal.domain, [(0.0, float(n)) for n in store.signal.shape], size).to(device)
    stack = store.stack(rows, device=device)
    values = stack(coords.expand(len(rows), -1, -1)).float().cpu()  # (f, n, c)
    raw = store.signal.normalization.decode(values.reshape(len(rows), *size, -1))
    return [image for image in raw]
