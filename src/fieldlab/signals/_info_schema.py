"""The schema of a stored `SignalInfo` (field.json's "signal", a store's attributes): every key's type and
range, checked before a field or store is rebuilt from it, so a damaged or crafted file is one line."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from fieldlab._errors import UserError
from fieldlab._validate import LIMITS, bounded_float, bounded_int, check_keys, check_shape

def check_info(data: Any, where: object) -> dict[str, Any]:
    """`data` if it describes a signal fieldlab can rebuild; else a UserError naming `where` and the key."""
    from fieldlab.signals._modality import get_modality, modality_names

    check_keys(data, {"kind": str, "shape": list, "channels": int, "normalization": dict, "domain": list}, where,
               optional={"source": str, "extra": dict})
    kind = data["kind"]
    if kind not in modality_names():
        raise UserError(f"{where}: the signal kind {kind!r} is not one of {', '.join(modality_names())}")
    modality = get_modality(kind)
    shape = check_shape(data["shape"], "the signal's shape", where=where, ndim=modality.dims)
    bounded_int(data["channels"], "the signal's channels", 1, LIMITS.width, where=where)
    _check_normalization(data["normalization"], where)
    domain = data["domain"]
    if len(domain) != len(shape) or not all(isinstance(b, list) and len(b) == 2 for b in domain):
        raise UserError(f"{where}: the signal's domain must hold one [lo, hi] pair per axis ({len(shape)})")
    for lo, hi in domain:
        lo, hi = (bounded_float(v, "a domain bound", where=where) for v in (lo, hi))
        if not lo < hi:
            raise UserError(f"{where}: a domain axis must have lo < hi, got [{lo:g}, {hi:g}]")
    if modality.rate is not None:  # a video's writer has a default frame rate; audio needs its own
        key = modality.rate
        rate = data.get("extra", {}).get(key)
        if rate is None and modality.rate_required:
            raise UserError(f"{where}: an {kind} signal needs its {key.replace('_', ' ')} (extra.{key})")
        if rate is not None:
            bounded_float(rate, f"extra.{key}", 1e-6, 1e9, where=where)
    return data


def _check_normalization(data: dict, where: object) -> None:
    check_keys(data, {"dtype": str, "offset": float, "scale": float}, where)
    unknown = sorted(set(data) - {"dtype", "offset", "scale"})
    if unknown:
        raise UserError(f"{where}: the normalization has unknown keys {', '.join(map(repr, unknown))}")
    if data["dtype"] != "bool":
        try:
            dtype = np.dtype(data["dtype"])
        except (TypeError, ValueError):
            dtype = None
        if dtype is None or not (np.issubdtype(dtype, np.integer) or np.issubdtype(dtype, np.floating)):
            raise UserError(f"{where}: the signal's dtype {data['dtype']!r} is not a numeric dtype")
    bounded_float(data["offset"], "the normalization offset", where=where)
    scale = bounded_float(data["scale"], "the normalization scale", where=where)
    if not scale > 0 or not math.isfinite(1 / scale):
        raise UserError(f"{where}: the normalization scale must be positive, got {scale:g}")
