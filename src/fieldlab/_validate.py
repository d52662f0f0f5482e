"""One validation layer for everything that crosses a boundary: files, field folders, stores, run folders,
configs and command-line numbers.

Every check raises `UserError` with one sentence that names the file or option and the offending value,
before anything is allocated or written. Declared sizes are checked against `LIMITS` (and, where a file
holds them, against the file's real size) *before* anything of that size is built, so a crafted header
cannot make fieldlab allocate or loop for hours.

    from fieldlab import _validate as v
    data = v.read_json(path, "field.json")                       # a dict, or one-line UserError
    v.check_keys(data, {"format": str, "signal": dict}, path)    # types of required keys
    n = v.bounded_int(data["num_fields"], "num_fields", 1, v.LIMITS.fields, where=path)
    v.require_finite(array, "img.tif", axes=("row", "column", "channel"))
    v.check_memory(nbytes, "the 12000x12000x3 image in bomb.png")
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from fieldlab._errors import UserError


@dataclasses.dataclass(frozen=True)
class Limits:
    """Upper bounds on what a file or an option may declare. Far above any real use; low enough that the
    check happens before an allocation or a loop that would take the machine down."""

    params: int = 10**9
    """Parameters of one field (`--params`, a declared config)."""
    width: int = 65_536
    """Any one layer width, latent size, number of frequencies or hash-table entry count exponent base."""
    layers: int = 1_024
    """Layers of one network."""
    pixels: int = 2**28
    """Samples of one decoded image (268 megapixels; Pillow's bomb limit is 89 megapixels by default)."""
    samples: int = 2**33
    """Values (all axes and channels together) of one decoded signal of any kind."""
    fields: int = 10**9
    """Fields in one store or dataset."""
    label: int = 2**31 - 1
    """A class label's value."""
    classes: int = 2**20
    """Classes one dataset names (a store keeps one name per class)."""
    seed: int = 2**63 - 1
    """A random seed (torch takes 64-bit seeds)."""
    json_bytes: int = 64 * 2**20
    """Size of one JSON or TOML file fieldlab reads (field.json, metrics.json, run.json, a --config file)."""


LIMITS = Limits()


def _where(where: object) -> str:
    return f"{where}: " if where else ""


def bounded_int(value: Any, name: str, lo: int | None = None, hi: int | None = None, *, where: object = "") -> int:
    """`value` as an int (a bool, a float with a fraction, a string that is no number: errors) within
    [lo, hi]."""
    if isinstance(value, bool) or value is None:
        raise UserError(f"{_where(where)}{name} must be a whole number, got {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value) or value != int(value):
            raise UserError(f"{_where(where)}{name} must be a whole number, got {value!r}")
        value = int(value)
    elif not isinstance(value, (int, np.integer)):
        try:
            value = int(str(value).strip())
        except ValueError:
            raise UserError(f"{_where(where)}{name} must be a whole number, got {value!r}") from None
    value = int(value)
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"at least {lo:,}" if hi is None else f"at most {hi:,}" if lo is None else f"between {lo:,} and {hi:,}"
        raise UserError(f"{_where(where)}{name} must be {bounds}, got {value:,}")
    return value


def bounded_float(value: Any, name: str, lo: float | None = None, hi: float | None = None, *,
                  where: object = "", finite: bool = True) -> float:
    """`value` as a finite float within [lo, hi]."""
    if isinstance(value, bool) or value is None:
        raise UserError(f"{_where(where)}{name} must be a number, got {value!r}")
    try:
        value = float(value)
    except (TypeError, ValueError, OverflowError):
        raise UserError(f"{_where(where)}{name} must be a number, got {value!r}") from None
    if finite and not math.isfinite(value):
        raise UserError(f"{_where(where)}{name} must be a finite number, got {value!r}")
    if lo is not None and value < lo or hi is not None and value > hi:
        bounds = f"at least {lo:g}" if hi is None else f"at most {hi:g}" if lo is None else f"between {lo:g} and {hi:g}"
        raise UserError(f"{_where(where)}{name} must be {bounds}, got {value:g}")
    return value


def check_shape(shape: Any, name: str, *, where: object = "", max_values: int | None = None,
                ndim: int | Sequence[int] | None = None, min_size: int = 1) -> tuple[int, ...]:
    """A declared shape: a list of whole numbers of at least `min_size` (0 for a tensor that may be empty)
    whose product stays under `max_values` (default `LIMITS.samples`)."""
    if not isinstance(shape, (list, tuple)) or not shape:
        raise UserError(f"{_where(where)}{name} must be a non-empty list of sizes, got {shape!r}")
    sizes = tuple(bounded_int(s, name, min_size, None, where=where) for s in shape)
    if ndim is not None and len(sizes) not in ((ndim,) if isinstance(ndim, int) else tuple(ndim)):
        raise UserError(f"{_where(where)}{name} must have {ndim} axes, got {list(sizes)}")
    limit = LIMITS.samples if max_values is None else max_values
    if math.prod(sizes) > limit:
        raise UserError(f"{_where(where)}{name} {'x'.join(map(str, sizes))} is too large "
                        f"({math.prod(sizes):,} values; at most {limit:,})")
    return sizes


def read_json(path: str | os.PathLike, what: str | None = None, *, kind: type = dict) -> Any:
    """The JSON document in `path`, which must be a `kind` (dict by default), under `LIMITS.json_bytes`, UTF-8
    and valid; anything else is one UserError naming the file."""
    path = Path(path)
    name = what or str(path)
    if not path.is_file():
        raise UserError(f"{name} is missing")
    size = path.stat().st_size
    if size > LIMITS.json_bytes:
        raise UserError(f"{name} is too large to be a fieldlab JSON file ({size:,} bytes)")
    try:
        data = json.loads(path.read_bytes().decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, json.JSONDecodeError, ValueError, RecursionError) as error:
        reason = "not UTF-8 text" if isinstance(error, UnicodeDecodeError) else f"not valid JSON ({_short(error)})"
        raise UserError(f"{name} is damaged: {reason}") from None
    if not isinstance(data, kind):
        raise UserError(f"{name} is damaged: it holds a {type(data).__name__}, not a {kind.__name__}")
    return data


def _no_constant(name: str) -> float:
    return float(name)  # NaN and Infinity, as Python's json writes them: read, then checked where it matters


def _short(error: BaseException) -> str:
    return " ".join(str(error).split())[:120]


def check_keys(data: Any, schema: dict[str, type | tuple[type, ...]], where: object, *,
               optional: dict[str, type | tuple[type, ...]] | None = None) -> dict:
    """`data` is a dict holding every key of `schema` with a value of its type, and the keys of `optional`
    (when present) with theirs. An int is accepted where a float is asked, a bool never for a number."""
    if not isinstance(data, dict):
        raise UserError(f"{_where(where)}expected a mapping, got a {type(data).__name__}")
    for key, kind in {**schema, **(optional or {})}.items():
        if key not in data:
            if key in schema:
                raise UserError(f"{_where(where)}the key {key!r} is missing")
            continue
        if not _is(data[key], kind):
            names = "/".join(k.__name__ for k in (kind if isinstance(kind, tuple) else (kind,)))
            raise UserError(f"{_where(where)}{key!r} must be a {names}, got {data[key]!r:.60}")
    return data


def _is(value: Any, kind: type | tuple[type, ...]) -> bool:
    kinds = kind if isinstance(kind, tuple) else (kind,)
    if isinstance(value, bool):
        return bool in kinds
    if float in kinds and isinstance(value, int):
        return True
    return isinstance(value, kinds)


def require_finite(values: Any, what: str, axes: Sequence[str] | None = None) -> None:
    """Refuse an array holding NaN or Inf, naming the first such element's position (`axes` names each axis,
    e.g. ("row", "column", "channel")). Integer arrays pass at once."""
    array = values.detach().cpu().numpy() if hasattr(values, "detach") else np.asarray(values)
    if not np.issubdtype(array.dtype, np.inexact):
        return
    finite = np.isfinite(array)
    if finite.all():
        return
    bad = np.argwhere(~finite)
    index = tuple(int(i) for i in bad[0])
    value = array[index]
    kind = "NaN" if np.isnan(value) else "an infinite value"
    names = list(axes or ())
    place = ", ".join(f"{names[i]} {v}" if i < len(names) else str(v) for i, v in enumerate(index))
    more = f" (and {len(bad) - 1:,} more)" if len(bad) > 1 else ""
    raise UserError(f"{what} holds {kind} at {place or 'its only element'}{more}; fieldlab fits finite values only")


def available_memory() -> int | None:
    """Bytes of memory this process can still allocate (MemAvailable, under a cgroup limit), or None when
    the platform does not say."""
    available = None
    try:
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemAvailable:"):
                available = int(line.split()[1]) * 1024
    except OSError:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (ValueError, OSError, AttributeError):
            return None
    for limit_file, usage_file in (("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory.current"),
                                   ("/sys/fs/cgroup/memory/memory.limit_in_bytes",
                                    "/sys/fs/cgroup/memory/memory.usage_in_bytes")):
        try:
            limit = Path(limit_file).read_text().strip()
            if limit.isdigit() and int(limit) < 2**60:
                room = int(limit) - int(Path(usage_file).read_text().strip())
                available = room if available is None else min(available, room)
            break
        except (OSError, ValueError):
            continue
    return available


SMALL_BYTES = 2**26
"""64 MB: an allocation below this is never refused for memory."""


def check_memory(nbytes: int, what: str) -> None:
    """One line, before allocating, when `what` would need more memory than the machine has left. Under
    `SMALL_BYTES` nothing is read: a dataset reads thousands of small images, and asking the kernel for
    each cost a sixth of a 28x28 PNG's read."""
    if nbytes < SMALL_BYTES:
        return
    available = available_memory()
    if available is not None and nbytes > available:
        raise UserError(f"{what} needs {_bytes(nbytes)} of memory; this machine has {_bytes(available)} free")


def _bytes(n: float) -> str:
    for unit in ("bytes", "KB", "MB", "GB", "TB"):
        if n < 1024 or unit == "TB":
            return f"{n:,.0f} {unit}" if unit == "bytes" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n}"


def safe_name(name: Any, what: str, *, where: object = "") -> str:
    """A stored name (an array, a label, a file inside a folder) that cannot leave its folder: no path
    separators, no `..`, nothing empty or absolute."""
    if not isinstance(name, str) or not name or name in (".", "..") or "\x00" in name:
        raise UserError(f"{_where(where)}{what} {name!r} is not a valid name")
    parts = name.split("/")
    if name.startswith("/") or "\\" in name or any(p in ("", ".", "..") for p in parts):
        raise UserError(f"{_where(where)}{what} {name!r} is not a valid name")
    return name


def npy_header(file: Any, what: str, available: int) -> tuple[tuple[int, ...], np.dtype]:
    """(shape, dtype) that the `.npy` stream `file` declares, read from its start and checked before anything
    is allocated: numbers only (never pickled objects), at most `LIMITS.samples` values, no more bytes than the
    `available` bytes of the stream (file size or zip member size) hold, and room for them in memory."""
    start = file.tell()
    try:
        version = np.lib.format.read_magic(file)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        shape, _, dtype = read(file)
    except (ValueError, EOFError, OSError, SyntaxError, TypeError) as error:
        raise UserError(f"{what} is not a readable .npy array ({_short(error)})") from None
    if dtype.hasobject:
        raise UserError(f"{what} holds Python objects, which fieldlab never unpickles; save a numeric array")
    values = math.prod(shape)
    if values > LIMITS.samples:
        raise UserError(f"{what} declares an array of {'x'.join(map(str, shape))}: {values:,} values, "
                        f"more than the limit of {LIMITS.samples:,}")
    nbytes, held = values * dtype.itemsize, available - (file.tell() - start)
    if nbytes > held:
        raise UserError(f"{what} is truncated: its header declares {'x'.join(map(str, shape))} of {dtype} "
                        f"({nbytes:,} bytes), the file holds {max(held, 0):,}")
    check_memory(nbytes, what)
    return tuple(shape), dtype
