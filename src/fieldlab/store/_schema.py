"""What a field DIR's JSON must hold before anything is rebuilt from it: field.json's schema (format,
architecture and config within `LIMITS`, the signal's info, dims that agree) and metrics.json's.

A damaged, foreign or crafted file is one UserError naming it, never a traceback or a module built from
sizes nobody checked.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldlab._errors import UserError
from fieldlab._validate import bounded_int, check_keys, read_json
from fieldlab.fields import FieldConfig, get_config_class
from fieldlab.signals import SignalInfo


def read_field_config(field: object, where: object) -> FieldConfig:
    """A stored {"name", "config"} (field.json's or a store's) as its validated config, within LIMITS."""
    check_keys(field, {"name": str, "config": dict}, where)
    try:
        return get_config_class(field["name"]).from_dict(field["config"])
    except UserError as error:  # the config's own sentence names the option; this names the file
        raise UserError(f"{where}: {error}") from None


def read_description(path: Path, format: str, version: int) -> tuple[FieldConfig, SignalInfo]:
    """The config and signal info in `path` (a field.json of `format`, at most `version`)."""
    data = read_json(path)
    check_keys(data, {"format": str, "field": dict, "signal": dict}, path, optional={"format_version": int})
    if data["format"] != format:
        raise UserError(f"{path} is not a fieldlab field (format {data['format']!r})")
    if bounded_int(data.get("format_version", 1), "format_version", 1, where=path) > version:
        raise UserError(f"{path} was written by a newer fieldlab (format version {data['format_version']}); "
                        "upgrade fieldlab to read it")
    config = read_field_config(data["field"], path)
    signal = SignalInfo.from_dict(data["signal"], path)
    if (config.in_dim, config.out_dim) != (signal.in_dim, signal.channels):
        raise UserError(f"{path}: the field maps {config.in_dim} coordinates to {config.out_dim} channels, but its "
                        f"signal has {signal.in_dim} axes and {signal.channels} channels")
    return config, signal


NUMERIC_METRICS = ("psnr", "ssim", "snr", "iou", "chamfer", "params", "steps", "seconds", "psnr_peak")
"""Metrics that code reads as numbers: each is a number or null (NaN written by an older fieldlab)."""
METRICS_DEPTH = 4


def read_metrics(path: Path) -> dict[str, Any]:
    """metrics.json as a mapping of names to JSON values no deeper than `METRICS_DEPTH` (a crop's region, a
    MINER's blocks per scale), whose `NUMERIC_METRICS` are numbers (empty when there is none)."""
    if not path.is_file():
        return {}
    metrics = read_json(path)
    for key, value in metrics.items():
        if key in NUMERIC_METRICS and value is not None and (isinstance(value, bool) or
                                                             not isinstance(value, (int, float))):
            raise UserError(f"{path}: the metric {key!r} must be a number, got {value!r:.60}")
        if _depth(value) > METRICS_DEPTH:
            raise UserError(f"{path}: the metric {key!r} is nested more than {METRICS_DEPTH} levels deep")
    return metrics


def _depth(value: Any) -> int:
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, list):
        return 1 + max(map(_depth, value), default=0)
    return 0


def check_weights(path: Path, config: FieldConfig) -> None:
    """The tensors in the safetensors file `path` are the ones `config` builds, name for name and shape for
    shape: read from the file's header and a module on the meta device, so nothing is allocated."""
    import torch
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(path, framework="pt") as weights:
            found = {name: tuple(weights.get_slice(name).get_shape()) for name in weights.keys()}
    except (FileNotFoundError, SafetensorError, OSError, ValueError) as error:
        raise UserError(f"cannot read the weights in {path.parent} ({' '.join(str(error).split())[:120]})") from None
    with torch.device("meta"):
        expected = {name: tuple(t.shape) for name, t in config.build().state_dict().items()}
    for name in sorted(set(expected) | set(found)):
        if expected.get(name) != found.get(name):
            what = (f"lacks {name}" if name not in found else f"holds {name}, which field.json does not declare"
                    if name not in expected else f"holds {name} of shape {list(found[name])}, field.json declares "
                    f"{list(expected[name])}")
            raise UserError(f"the weights in {path.parent} do not match field.json: the file {what}")
