"""JSON that strict parsers read: Python's json writes NaN and Infinity, which JSON does not have."""

from __future__ import annotations

import json
import math
from typing import Any


def finite(value: Any) -> Any:
    """`value` with every non-finite float (an SSIM of a too-small image, a PSNR of an exact fit) as None."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [finite(v) for v in value]
    return value


def dumps(value: Any, **options) -> str:
    """`json.dumps` of `finite(value)`, refusing anything else that is not JSON."""
    return json.dumps(finite(value), allow_nan=False, **options)
