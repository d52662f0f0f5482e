"""What every long command can do, per field architecture and modality: the cross-cutting matrix.

Each cell is (command, field, modality, property). A cell either holds (`Cell.holds`), or is declared
here with the one-line reason it does not: because it cannot apply (`NOT_APPLICABLE`), or because it is
not built yet (`NOT_YET`). `tests/test_matrix.py` builds the whole product from the registries (fields,
modalities), asserts that every cell is one or the other, tests the cells that hold and checks that the
declared ones are refused as declared. `fieldlab capabilities` prints it.

    >>> cell("train-sdf", ANY, ANY, "device").holds
    True

Commands that train networks rather than fit fields (`train`, `train-sdf`) have one row per property,
under field and modality `ANY`: a network reads any store through the batched evaluator.
"""

from __future__ import annotations

import dataclasses
import functools

ANY = "*"
"""The field or modality of a command that does not depend on it."""

COMMANDS = ("fit", "fit-dataset", "extend", "train", "train-sdf")

PROPERTIES = {
    "max_seconds": "--max-seconds stops the run in time and writes what it has",
    "resume_sigint": "--resume after SIGINT ends as an uninterrupted run",
    "resume_sigkill": "--resume after SIGKILL ends as an uninterrupted run",
    "precision": "--precision fp32, tf32 or bf16",
    "device": "--device auto, cpu, cuda or cuda:N",
    "seed": "--seed: the same seed gives the same result, another seed another",
    "config": "--config FILE of options",
    "tensorboard": "--tensorboard logs the live metrics",
    "progress": "a progress bar with ETA and the live metric (off with --quiet)",
}

NOT_APPLICABLE = "n/a"
NOT_YET = "not yet"
"""Declared kinds: cannot apply; not built yet (left for later)."""


@dataclasses.dataclass(frozen=True)
class Cell:
    command: str
    field: str
    modality: str
    property: str
    declared: str = ""
    """"" when the cell holds, else NOT_APPLICABLE or NOT_YET."""
    reason: str = ""
    """Why a declared cell does not hold (one line)."""
    note: str = ""
    """A limit of a cell that holds (one line)."""

    @property
    def holds(self) -> bool:
        return not self.declared


def targets(command: str) -> list[tuple[str, str]]:
    """The (field, modality) rows of `command`, from the field and modality registries."""
    from fieldlab.fields import list_fields
    from fieldlab.signals import modality_names

    if command in ("train", "train-sdf"):
        return [(ANY, ANY)]
    return [(field, modality) for field in list_fields() for modality in modality_names()]


@functools.lru_cache(maxsize=None)
def _refusal(field: str, modality: str) -> str:
    """Why a field cannot represent signals of `modality` (its config refuses the dims), or ""."""
    from fieldlab._errors import UserError
    from fieldlab.fields import get_config_class
    from fieldlab.signals import get_modality

    try:
        get_config_class(field).from_options({"in_dim": get_modality(modality).dims, "out_dim": 1})
    except UserError as error:
        return str(error)
    return ""


def _extendable(field: str) -> bool:
    from fieldlab.fields import Extendable, get_config_class

    return isinstance(get_config_class(field)(), Extendable)


def _own_engine(field: str) -> bool:
    from fieldlab.fields import get_config_class
    from fieldlab.fit.own_engines import engine_for

    return engine_for(get_config_class(field)()) is not None


def _occupancy(modality: str) -> bool:
    from fieldlab.signals import get_modality

    return get_modality(modality).occupancy


def _declare(command: str, field: str, modality: str, prop: str) -> tuple[str, str]:
    """(kind, reason) of a cell that does not hold, or ("", "")."""
    if field != ANY and _refusal(field, modality):
        return NOT_APPLICABLE, _refusal(field, modality)
    table = {"fit": _fit, "fit-dataset": _fit_dataset, "extend": _extend, "train": _train, "train-sdf": _train_sdf}
    return table[command](field, modality, prop)


def _fit(field: str, modality: str, prop: str) -> tuple[str, str]:
    return "", ""


def _fit_dataset(field: str, modality: str, prop: str) -> tuple[str, str]:
    from fieldlab.signals.modal_sources import MODAL_KINDS  # the modalities of a folder besides images

    if modality != "image" and modality not in MODAL_KINDS:
        return NOT_APPLICABLE, "fit-dataset reads folders of images, audio clips, volumes or meshes, not of videos"
    return "", ""


def _extend(field: str, modality: str, prop: str) -> tuple[str, str]:
    if not _extendable(field):
        return NOT_APPLICABLE, f"{field} is not partitioned: it cannot grow new parts"
    if _occupancy(modality):
        return NOT_APPLICABLE, "a mesh is fitted as occupancy of a fixed cube; there is no larger signal to grow to"
    return "", ""


def _train(field: str, modality: str, prop: str) -> tuple[str, str]:
    return "", ""


def _train_sdf(field: str, modality: str, prop: str) -> tuple[str, str]:
    return "", ""


def cell(command: str, field: str, modality: str, prop: str) -> Cell:
    """The cell of `command` for `field` on `modality` and property `prop` (a key of PROPERTIES)."""
    if command not in COMMANDS or prop not in PROPERTIES:
        raise KeyError(f"no matrix cell for command {command!r}, property {prop!r}")
    declared, reason = _declare(command, field, modality, prop)
    note = "" if declared else _note(command, field, prop)
    return Cell(command, field, modality, prop, declared, reason, note)


def _note(command: str, field: str, prop: str) -> str:
    from fieldlab.fields import Latent, get_config_class

    if (command, prop) == ("fit-dataset", "precision") and isinstance(get_config_class(field)(), Latent):
        return "fp32 or tf32: meta-learning refuses bf16"
    return ""


def matrix() -> list[Cell]:
    """Every cell: each command × its (field, modality) rows × every property."""
    return [cell(command, field, modality, prop) for command in COMMANDS for field, modality in targets(command)
            for prop in PROPERTIES]


def format_matrix(cells: list[Cell]) -> list[str]:
    """One line per (command, field, modality): the properties that hold, then each declared one with its reason."""
    lines: list[str] = []
    rows: dict[tuple[str, str, str], list[Cell]] = {}
    for c in cells:
        rows.setdefault((c.command, c.field, c.modality), []).append(c)
    for (command, field, modality), row in rows.items():
        kinds = {c.declared for c in row}
        if kinds == {NOT_APPLICABLE} and len({c.reason for c in row}) == 1:
            lines.append(f"{command:<12} {field:<15} {modality:<7} n/a: {row[0].reason}")
            continue
        held = " ".join(c.property for c in row if c.holds) or "-"
        lines.append(f"{command:<12} {field:<15} {modality:<7} {held}")
        for c in row:
            if not c.holds:
                lines.append(f"{'':<36}   {c.property} ({c.declared}): {c.reason}")
            elif c.note:
                lines.append(f"{'':<36}   {c.property} (holds): {c.note}")
    return lines


__all__ = ["ANY", "COMMANDS", "Cell", "NOT_APPLICABLE", "NOT_YET", "PROPERTIES", "cell", "format_matrix", "matrix",
           "targets"]
