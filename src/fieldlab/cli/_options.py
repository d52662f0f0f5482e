"""Turning command-line words into option dictionaries (no logic of fitting lives here)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from fieldlab._errors import UserError
from fieldlab._validate import LIMITS, check_shape, read_json

MULTI_VALUE = ("--size",)


def join_multi_values(argv: list[str]) -> list[str]:
    """`--size 256 256` → `--size 256,256`, so options may take one number per axis."""
    out: list[str] = []
    i = 0
    while i < len(argv):
        word = argv[i]
        out.append(word)
        i += 1
        if word in MULTI_VALUE:
            values = []
            while i < len(argv) and argv[i].lstrip("-").replace(".", "", 1).isdigit() and not argv[i].startswith("--"):
                values.append(argv[i])
                i += 1
            if values:
                out.append(",".join(values))
    return out


def parse_extra(words: list[str]) -> dict[str, str]:
    """`--hidden-dim 128 --omega0=30` → {"hidden_dim": "128", "omega0": "30"}."""
    options: dict[str, str] = {}
    i = 0
    while i < len(words):
        word = words[i]
        if not word.startswith("--") or word == "--":
            raise UserError(f"unexpected argument {word!r}")
        if "=" in word:
            name, value = word[2:].split("=", 1)
            i += 1
        else:
            if i + 1 >= len(words) or words[i + 1].startswith("--"):
                raise UserError(f"option {word} needs a value")
            name, value = word[2:], words[i + 1]
            i += 2
        options[name.replace("-", "_")] = value
    return options


def read_config_file(path: Path) -> dict[str, Any]:
    """Options from a JSON (or TOML) file whose keys are option names (dashes or underscores); a binary,
    damaged or oversized file is one UserError naming it."""
    if not path.is_file():
        raise UserError(f"no such config file: {path}")
    if path.suffix != ".toml":
        data = read_json(path, f"config file {path}")
    else:
        import tomllib

        if path.stat().st_size > LIMITS.json_bytes:
            raise UserError(f"config file {path} is too large to be a fieldlab config")
        try:
            data = tomllib.loads(path.read_bytes().decode("utf-8"))
        except UnicodeDecodeError:
            raise UserError(f"config file {path} is damaged: not UTF-8 text") from None
        except (tomllib.TOMLDecodeError, RecursionError) as error:
            raise UserError(f"config file {path} is damaged: not valid TOML ({' '.join(str(error).split())[:120]})") \
                from None
    return {k.replace("-", "_"): v for k, v in data.items()}


def parse_size(text: str | None) -> list[int] | None:
    if text is None:
        return None
    try:
        parts = text.replace("x", ",").split(",")
        if not all(part.strip() for part in parts):  # "100x", "64,,64": a missing number
            raise ValueError
        values = [int(v) for v in parts]
    except ValueError:
        raise UserError(f"--size needs whole numbers, one per axis (e.g. --size 256 256), got {text!r}") from None
    return list(check_shape(values, "--size"))  # positive, and checked before a grid of that size is made
