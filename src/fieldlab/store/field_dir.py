"""One field on disk: a folder with safetensors weights and self-describing JSON.

    DIR/field.safetensors   weights (and persistent buffers), no pickle
    DIR/field.json          format, architecture name and config, the signal's info, versions
    DIR/metrics.json        psnr (or iou), params, steps, seconds, …
    DIR/config.json         the resolved run options, to repeat the run (`fieldlab fit --config`)
    DIR/reconstruction.*    the reconstruction in the input's own format

The folder is written under a temporary name and renamed at the end, so an interrupted or failed
run never leaves a half-written field, and an existing DIR is replaced only after success.
"""

from __future__ import annotations

import dataclasses
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterable

import torch
import torch.nn as nn

from fieldlab import _json
from fieldlab._errors import UserError
from fieldlab._safety import (OutputLock, check_output_folder, replace_file, replace_folder, user_write_errors,
                              write_error, write_marker)
from fieldlab.fields import FieldConfig
from fieldlab.signals import SignalInfo

FORMAT = "fieldlab.field"
FORMAT_VERSION = 1


def versions() -> dict[str, str]:
    from fieldlab import __version__

    return {"fieldlab": __version__, "torch": torch.__version__, "python": platform.python_version()}


@dataclasses.dataclass
class StoredField:
    """A field loaded from its DIR: the rebuilt module, its config, its signal's info and its metrics."""

    module: nn.Module
    config: FieldConfig
    signal: SignalInfo
    metrics: dict[str, Any]
    path: Path | None = None


def save_checkpoint(state: dict[str, Any], path: Path) -> None:
    """`torch.save` a training state to `path` whole or not at all: written beside it, then renamed over it,
    so an interrupt never leaves half a checkpoint (read back with `torch.load(..., weights_only=True)`)."""
    replace_file(path, lambda partial: torch.save(state, partial))


def check_out_dir(out: Path, force: bool, *, resumable: bool = False, resume: bool = False,
                  inputs: Iterable = ()) -> None:
    """Refuse, before any work is done, an `out` that is not ours to write: a non-empty folder unless
    `force` (or `resume`) and fieldlab wrote it, an input of the command (`inputs`), the current folder or
    one above it (`resumable`: the command has --resume; see `fieldlab._safety.check_output_folder`)."""
    check_output_folder(Path(out), force=force, resume=resume, resumable=resumable, inputs=inputs)


class FieldDirWriter:
    """Context manager that locks `out`, yields a temporary folder beside it (marked as a field) and moves it
    into place on success; an existing `out` is moved aside first and removed only once the new one is in."""

    def __init__(self, out: Path, force: bool = False, inputs: Iterable = ()):
        check_out_dir(out, force, inputs=inputs)
        self.out = Path(out)
        self.force = force
        self.lock = OutputLock(self.out)

    def __enter__(self) -> Path:
        self.lock.acquire()
        self.tmp = None
        try:
            check_out_dir(self.out, self.force)  # again under the lock: another writer may have finished meanwhile
            with user_write_errors(self.out):
                self.tmp = Path(tempfile.mkdtemp(prefix=f".{self.out.name}.", suffix=".tmp",
                                                 dir=self.out.absolute().parent))
                write_marker(self.tmp, "field")
        except BaseException:  # an interrupt may come between making the folder and returning it
            if self.tmp is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
            self.lock.release()
            raise
        return self.tmp

    def __exit__(self, kind, error, trace) -> None:
        try:
            if kind is not None:
                shutil.rmtree(self.tmp, ignore_errors=True)
                if isinstance(error, OSError) and write_error(error, self.out) is not error:
                    raise UserError(f"cannot write {self.out}: {error.strerror}") from None
                return
            try:
                self._move_into_place()
            except OSError as failure:
                shutil.rmtree(self.tmp, ignore_errors=True)
                raise write_error(failure, self.out) from None
        finally:
            self.lock.release()

    def _move_into_place(self) -> None:
        old = replace_folder(self.tmp, self.out)
        if old is not None:
            shutil.rmtree(old, ignore_errors=True)


def write_field(folder: Path, module: nn.Module, config: FieldConfig, signal: SignalInfo,
                metrics: dict[str, Any]) -> None:
    """Write weights, field.json and metrics.json into `folder` (which must exist)."""
    from safetensors.torch import save_file

    from fieldlab._validate import require_finite

    state = {k: v.detach().cpu().contiguous() for k, v in module.state_dict().items()}
    for name, tensor in state.items():  # the backstop behind every trainer's own check: NaN is never stored
        require_finite(tensor, f"the fitted field's weight {name}")
    save_file(state, folder / "field.safetensors", metadata={"format": FORMAT})
    description = {
        "format": FORMAT, "format_version": FORMAT_VERSION,
        "field": {"name": config.name, "config": config.to_dict()},
        "signal": signal.to_dict(), "versions": versions(),
    }
    (folder / "field.json").write_text(_json.dumps(description, indent=2) + "\n")
    (folder / "metrics.json").write_text(_json.dumps(metrics, indent=2) + "\n")


def load_field(path: str | Path, device: str | torch.device = "cpu") -> StoredField:
    """Rebuild a field from its DIR: the module from field.json alone, then its weights."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    from fieldlab._validate import check_memory, require_finite
    from fieldlab.store._schema import check_weights, read_description, read_metrics

    path = Path(path)
    description_path = path / "field.json"
    if not description_path.is_file():
        raise UserError(f"{path} is not a field folder (no field.json)")
    config, signal = read_description(description_path, FORMAT, FORMAT_VERSION)
    # The module, and the weights read beside it, in fp32: said in one line rather than swapped or killed.
    check_memory(8 * config.num_params(), f"the {config.name} field in {path}")
    check_weights(path / "field.safetensors", config)
    module = config.build()
    try:
        state = load_file(path / "field.safetensors", device=str(device))
    except (FileNotFoundError, SafetensorError, OSError) as error:
        raise UserError(f"cannot read the weights in {path} ({error})") from None
    try:
        module.load_state_dict(state)
    except RuntimeError as error:
        raise UserError(f"the weights in {path} do not match field.json ({str(error).splitlines()[0]})") from None
    for name, tensor in state.items():  # a NaN weight renders NaN everywhere: refused where it is
        require_finite(tensor, f"the weight {name} in {path / 'field.safetensors'}")
    metrics = read_metrics(path / "metrics.json")
    return StoredField(module.to(device).eval(), config, signal, metrics, path)
