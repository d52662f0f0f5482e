"""What a FieldStore must prove before it is read: attributes of the right types within `LIMITS` that agree
with the arrays really there, and chunks whose values match the checksums recorded when they were written.

Checksums: the store's `checksums` array holds, for each store chunk (row) and each summed array (column, in
the order of attrs["checksums"]["arrays"]), crc32 of that array's rows of the chunk plus 2**32, so that 0, the
fill value, means "none recorded". A chunk's row is written after its arrays and before its completion mask;
one chunk file per store chunk, so ranks writing disjoint chunks never share one. Shared tensors' sums sit in
attrs["checksums"]["shared"]. A store written before checksums existed has no such attribute and is read
unchecked (chunks are still decoded at the read boundary, so a garbage chunk is one line, not a traceback).
"""

from __future__ import annotations

import math
import zlib
from pathlib import Path
from typing import Any

import numpy as np
import torch

from fieldlab import _validate as v
from fieldlab._errors import UserError
from fieldlab.fields import FieldConfig
from fieldlab.signals import SignalInfo
from fieldlab.store._schema import read_field_config

CHECKSUM = "crc32"
UNREADABLE = 1
"""A record that could not be decoded; real records are at least 2**32 and 0 is 'none recorded'."""


def checksum(array: np.ndarray) -> int:
    """crc32 of an array's values (little-endian, C order) plus 2**32."""
    array = np.asarray(array)
    data = np.ascontiguousarray(array, dtype=array.dtype.newbyteorder("<"))
    return zlib.crc32(data.reshape(-1).view(np.uint8)) + 2**32


def damage(path: Path, name: str, chunk: int, reason: str) -> UserError:
    state = "missing" if reason == "missing" else f"damaged ({reason})"
    return UserError(f"{path}: chunk {chunk} of {name} is {state}; run fit-dataset with --resume to refit it")


def chunk_file(path: Path, group, name: str, chunk: int) -> Path | None:
    """The file holding row-chunk `chunk` of array `name`, where zarr says (None when it cannot)."""
    try:
        array = group[name]
        index = (chunk,) + (0,) * (array.ndim - 1)
        if hasattr(getattr(array, "metadata", None), "encode_chunk_key"):  # zarr 3
            return path / name / array.metadata.encode_chunk_key(index)
        return path / name / (getattr(array, "_dimension_separator", None) or ".").join(map(str, index))  # zarr 2
    except Exception:  # a layout neither knows: the caller calls the chunk damaged rather than missing
        return None


def read_records(group, num_chunks: int) -> np.ndarray:
    """The (chunks, arrays) checksum records; a record chunk that cannot be decoded reads as UNREADABLE."""
    try:
        return np.asarray(group["checksums"][:], dtype=np.uint64)
    except Exception:  # zarr and numcodecs raise many kinds of error on a garbage chunk: find which
        records = np.zeros(group["checksums"].shape, dtype=np.uint64)
        for chunk in range(num_chunks):
            try:
                records[chunk] = group["checksums"][chunk]
            except Exception:
                records[chunk] = UNREADABLE
        return records


def checked_attrs(group, path: Path, row_arrays: list[str]) -> dict[str, Any]:
    """The store's attributes, after checking their types, bounds and names, and that the arrays they
    describe exist with the declared shapes (so that a crafted num_fields cannot pass for the real one)."""
    attrs = dict(group.attrs)
    where = f"{path}/zarr.json"
    v.check_keys(attrs, {"field": dict, "signal": dict, "num_fields": int, "chunk_fields": int, "per_field": dict},
                 where, optional={"shared": list, "label_names": list, "split_names": list, "checksums": dict})
    n = v.bounded_int(attrs["num_fields"], "num_fields", 1, v.LIMITS.fields, where=where)
    c = v.bounded_int(attrs["chunk_fields"], "chunk_fields", 1, v.LIMITS.fields, where=where)
    for name, shape in attrs["per_field"].items():
        v.safe_name(name, "the per-field array", where=where)
        if shape != []:  # [] is a scalar per field
            # min_size 0: a field may hold an empty tensor (a Local-Global field with no inner edges on an axis)
            v.check_shape(shape, f"per_field {name!r}", where=where, max_values=v.LIMITS.params, min_size=0)
    for name in attrs.get("shared", []):
        v.safe_name(name, "the shared array", where=where)
    splits = attrs.get("split_names", ["train"])
    if not 1 <= len(splits) <= 127:  # split is an int8 column
        raise UserError(f"{where}: split_names must list 1 to 127 splits, got {len(splits):,}")
    for name in splits:
        v.safe_name(name, "the split", where=where)
    labels = attrs.get("label_names", [])
    if len(labels) > v.LIMITS.label or not all(isinstance(name, str) for name in labels):
        raise UserError(f"{where}: label_names must be a list of names")
    _check_arrays(group, path, attrs, n, c, row_arrays)
    return attrs


def _check_arrays(group, path: Path, attrs: dict, n: int, c: int, row_arrays: list[str]) -> None:
    declared = {f"params/{k}": (n, *shape) for k, shape in attrs["per_field"].items()}
    declared.update({name: (n,) for name in [*row_arrays, "done"]})
    for name, shape in declared.items():
        real, rows = _shape(group, path, name)
        if real != shape or rows != c:
            raise UserError(f"{path} is a damaged field store: {name} holds {'x'.join(map(str, real))} in chunks "
                            f"of {rows:,} rows; its attributes declare {'x'.join(map(str, shape))} in chunks of {c:,}")
    for name in attrs.get("shared", []):
        real, _ = _shape(group, path, f"shared/{name}")
        if math.prod(real) > v.LIMITS.params:
            raise UserError(f"{path}: the shared array {name} is too large ({math.prod(real):,} values)")
    if "checksums" in attrs:
        sums = v.check_keys(attrs["checksums"], {"algorithm": str, "arrays": list}, f"{path}/zarr.json checksums",
                            optional={"shared": dict})
        if sums["algorithm"] != CHECKSUM:
            raise UserError(f"{path} records {sums['algorithm']!r} checksums; this fieldlab knows {CHECKSUM!r}")
        if sorted(map(str, sums["arrays"])) != sorted(set(declared) - {"done"}):
            raise UserError(f"{path} is a damaged field store: its checksums cover other arrays than it holds")
        real, _ = _shape(group, path, "checksums")
        if real != (math.ceil(n / c), len(sums["arrays"])):
            raise UserError(f"{path} is a damaged field store: its checksum records do not match its chunks")


def _shape(group, path: Path, name: str) -> tuple[tuple[int, ...], int]:
    """(shape, rows per chunk) of array `name`, read from its metadata only."""
    try:
        array = group[name]
        return tuple(int(s) for s in array.shape), int(array.chunks[0]) if array.ndim else 1
    except Exception:  # absent, or metadata that zarr cannot parse
        raise UserError(f"{path} is a damaged field store: its array {name} is missing or unreadable") from None


def checked_config(attrs: dict, path: Path) -> FieldConfig:
    """The stored field config, validated and its parameter count bounded, and the module it builds (on the
    meta device: nothing is allocated) holding the per-field tensors the store holds, so that reading the
    fields builds nothing larger than the arrays on disk."""
    where = f"{path}/zarr.json field"
    config = read_field_config(attrs["field"], where)  # from_dict bounds the parameter count too
    try:
        with torch.device("meta"):
            module = config.build()
    except UserError as error:
        raise UserError(f"{where}: {error}") from None
    except (TypeError, ValueError, RuntimeError, OverflowError, MemoryError) as error:
        raise UserError(f"{where}: the {config.name} config cannot be built ({type(error).__name__})") from None
    built = {name: tuple(t.shape) for name, t in [*module.named_parameters(), *module.named_buffers()]}
    for name, shape in attrs["per_field"].items():
        if name in built and built[name] != tuple(shape):  # a meta-learned latent is not in the module
            raise UserError(f"{where}: its config builds {name} of shape {list(built[name])}, the store holds "
                            f"{list(shape)}")
    return config


def checked_signal(attrs: dict, path: Path) -> SignalInfo:
    return SignalInfo.from_dict(attrs["signal"], f"{path}/zarr.json: the signal is damaged")  # _info_schema checks
