"""The cross-cutting matrix of `fieldlab.capabilities`: built from the field and modality registries, full
(every cell holds or is declared with a reason), and each cell that holds tested here on tiny signals.

Grouping (CI has two cores): one row of cells, (command, field, modality), is a few runs of a few steps
that check all its properties together. Resume after SIGINT runs on every row that holds it (a real
SIGINT, sent by the process to itself between checkpoints); after SIGKILL on one row per engine, since a
kill only removes what an interrupt would have done after the last checkpoint (the other rows of that
engine save the same checkpoint, and `test_the_sigkill_rows_share_the_engine_of_their_representative`
says so). Resumed results are compared bit for bit: on the CPU every path here is deterministic (MINER's
too: a resumed scale is rebuilt from its residual pass and the saved generators, then given the saved blocks
and Adam state).
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import types
from pathlib import Path

import numpy as np
import pytest
import torch

import _fixtures

from fieldlab.capabilities import ANY, COMMANDS, NOT_APPLICABLE, NOT_YET, PROPERTIES, Cell, cell, matrix

pytestmark = pytest.mark.usefixtures("one_thread")

CELLS = matrix()


FIELD_OPTIONS = {"miner": ["--scales", "1", "--check-every", "1"]}
"""Options a field needs on an 8-sample signal (MINER's default scales pad it past its size; a check, its log
line and checkpoint, after every step)."""
MESH_OPTIONS = ["--points", "512", "--eval-points", "512", "--resolution", "8", "--chamfer-points", "256"]
LIVE = r"(psnr|bce)="
"""The live metric on the bar: a batch PSNR, or a mesh's binary cross-entropy."""


def rows(command: str, prop: str | None = None) -> list[tuple[str, str]]:
    """(field, modality) rows of `command` where some cell (or the cell of `prop`) holds."""
    return sorted({(c.field, c.modality) for c in CELLS
                   if c.command == command and c.holds and prop in (None, c.property)})


def holds(command: str, field: str, modality: str, prop: str) -> bool:
    return cell(command, field, modality, prop).holds


# -- fullness ---------------------------------------------------------------------------------------------
def test_the_matrix_is_the_full_product_of_the_registries():
    from fieldlab.fields import list_fields
    from fieldlab.signals import modality_names

    product = {(command, field, modality, prop) for command in COMMANDS
               for field, modality in ([(ANY, ANY)] if command in ("train", "train-sdf") else
                                       [(f, m) for f in list_fields() for m in modality_names()])
               for prop in PROPERTIES}
    assert {(c.command, c.field, c.modality, c.property) for c in CELLS} == product
    assert len(CELLS) == len(product)


def test_every_cell_holds_or_is_declared_with_a_one_line_reason():
    for c in CELLS:
        if c.holds:
            assert not c.reason, c
        else:
            assert c.declared in (NOT_APPLICABLE, NOT_YET), c
            assert c.reason.strip() and "\n" not in c.reason and len(c.reason) < 160, c


TESTED = {
    "fit": {"max_seconds", "precision", "device", "seed", "config", "tensorboard", "progress", "resume_sigint",
            "resume_sigkill"},
    "fit-dataset": {"max_seconds", "precision", "device", "seed", "config", "tensorboard", "progress", "resume_sigint",
                    "resume_sigkill"},
    "extend": {"max_seconds", "precision", "device", "seed", "config", "tensorboard", "progress", "resume_sigint",
               "resume_sigkill"},
    "train": {"max_seconds", "precision", "device", "seed", "config", "tensorboard", "progress", "resume_sigint", "resume_sigkill"},
    "train-sdf": {"max_seconds", "precision", "device", "seed", "config", "tensorboard", "progress", "resume_sigint",
                  "resume_sigkill"},
}
"""Which properties the tests below check, per command; each runs over every row that holds it."""


def test_every_cell_that_holds_is_tested():
    untested = [c for c in CELLS if c.holds and c.property not in TESTED[c.command]]
    assert not untested, f"{len(untested)} cells hold but no test checks them, e.g. {untested[0]}"
    declared_but_tested = [(command, prop) for command, props in TESTED.items() for prop in props
                           if not any(c.holds for c in CELLS if (c.command, c.property) == (command, prop))]
    assert not declared_but_tested


def test_fieldlab_capabilities_prints_the_matrix(cli):
    status, out, err = cli(["capabilities", "train-sdf"])
    assert status == 0, err
    assert "max_seconds" in out and "precision" in out and "resume_sigint" in out
    status, out, _ = cli(["capabilities", "fit", "--field", "miner", "--modality", "mesh"])
    assert "resume_sigint resume_sigkill" in out and "tensorboard" in out and "not yet" not in out
    status, _, err = cli(["capabilities", "fits"])
    assert status == 2 and err.startswith("fieldlab: error:") and len(err.strip().splitlines()) == 1
    # train's rows serve every field: a field filter keeps them, and an unknown field is named
    status, out, err = cli(["capabilities", "train", "--field", "siren"])
    assert status == 0 and out.startswith("train"), err
    status, _, err = cli(["capabilities", "--field", "nope"])
    assert status == 2 and "unknown field 'nope'" in err


# -- tiny inputs -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def inputs(tmp_path_factory) -> dict[str, list[str]]:
    """INPUT words of fit per modality: each signal a few hundred values."""
    import soundfile as sf

    root = tmp_path_factory.mktemp("matrix")
    t = np.linspace(0, 30, 300, dtype=np.float32)
    sf.write(root / "a.wav", 0.5 * np.sin(t[:200]), 400, subtype="FLOAT")
    np.save(root / "v.npy", np.random.default_rng(0).random((6, 6, 6)).astype(np.float32))
    _fixtures.write_bumpy_mesh(root / "m.obj")
    return {"image": ["sample:camera", "--max-size", "8"], "audio": [str(root / "a.wav")],
            "video": ["sample:gif", "--max-size", "8", "--max-frames", "3"], "volume": [str(root / "v.npy")],
            "mesh": [str(root / "m.obj"), *MESH_OPTIONS]}


@pytest.fixture
def tensorboard(monkeypatch):
    """A stand-in for torch.utils.tensorboard (an optional extra, not installed for the tests): it records
    what the run logs, which is what --tensorboard promises."""
    logged: list[tuple[str, float, int]] = []

    class SummaryWriter:
        def __init__(self, folder):
            Path(folder).mkdir(parents=True, exist_ok=True)

        def add_scalar(self, name, value, step):
            logged.append((name, float(value), int(step)))

        def add_image(self, *args, **kwargs):
            pass

        def close(self):
            pass

    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", types.SimpleNamespace(SummaryWriter=SummaryWriter))
    return logged


def weights(folder: Path, name: str = "field.safetensors") -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(str(folder / name))


def same(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def ok(result) -> tuple[str, str]:
    status, out, err = result
    assert status == 0, err
    return out, err


def refused(result, *words: str) -> None:
    """Exit 2 with one `fieldlab: error:` line naming `words`."""
    status, _, err = result
    lines = err.strip().splitlines()
    assert status == 2 and lines and lines[-1].startswith("fieldlab: error:"), err
    assert all(w in lines[-1] for w in words), err


# -- fit ---------------------------------------------------------------------------------------------------
def fit_args(inputs, field: str, modality: str) -> list[str]:
    return ["fit", *inputs[modality], "--field", field, *FIELD_OPTIONS.get(field, []), "--device", "cpu"]


@pytest.mark.parametrize("field,modality", rows("fit"))
def test_fit_row(field, modality, inputs, tensorboard, cli, tmp_path):
    """--config, --seed, --precision, --device, TensorBoard and the bar in one run; --seed again and
    with another seed; --max-seconds."""
    held = lambda prop: holds("fit", field, modality, prop)  # noqa: E731
    (tmp_path / "options.json").write_text(json.dumps({"seed": 1, "steps": 3, "log_every": 1}))
    base = fit_args(inputs, field, modality) + ["--precision", "bf16"]
    flags = ["--config", tmp_path / "options.json"] + (["--tensorboard"] if held("tensorboard") else [])
    _, err = ok(cli(base + flags + ["--out", tmp_path / "A"]))
    resolved = json.loads((tmp_path / "A" / "config.json").read_text())
    metrics = json.loads((tmp_path / "A" / "metrics.json").read_text())
    assert (resolved["seed"], resolved["steps"], metrics["steps"] >= 3) == (1, 3, True)  # from --config
    assert resolved["precision"] == "bf16" and metrics["device"] == "cpu"
    import re

    assert re.search(r"\[\S+<\S+, [^\]]*" + LIVE, err), err[-400:]  # elapsed<ETA, the live metric
    if held("tensorboard"):
        assert {step for name, _, step in tensorboard if name in ("psnr", "bce")} == {1, 2, 3}
    else:
        refused(cli(base + ["--tensorboard", "--quiet", "--steps", "1", "--out", tmp_path / "T"]), "--tensorboard")
    ok(cli(base + ["--seed", "1", "--steps", "3", "--quiet", "--out", tmp_path / "A2"]))
    ok(cli(base + ["--seed", "2", "--steps", "3", "--quiet", "--out", tmp_path / "B"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "A2"))
    assert not same(weights(tmp_path / "A"), weights(tmp_path / "B"))
    ok(cli(base + ["--steps", "100000", "--max-seconds", "1e-9", "--quiet", "--out", tmp_path / "M"]))
    assert json.loads((tmp_path / "M" / "metrics.json").read_text())["steps"] < 100000
    if not held("resume_sigint"):
        refused(cli(base + ["--resume", "--quiet", "--out", tmp_path / "R"]), "--resume")


def interrupt_at(step: int, how: int):
    """Fitter.step that sends this process `how` once `step` steps are done (after their checkpoints)."""
    from fieldlab.fit.loop import Fitter

    original = Fitter.step

    def step_then_signal(self):
        if self.step_count == step:
            os.kill(os.getpid(), how)
        return original(self)

    return original, step_then_signal


def stepper(field: str) -> type:
    """The class whose `step` a fit of `field` calls once per step: MINER's ScaleTrainer, else the Fitter
    (an OccupancyFitter's step is the Fitter's)."""
    from fieldlab.capabilities import _own_engine

    if _own_engine(field):
        from fieldlab.fit.miner import ScaleTrainer

        return ScaleTrainer
    from fieldlab.fit.loop import Fitter

    return Fitter


def signal_at_call(owner: type, call: int, how: int):
    """`owner.step` that sends this process `how` at its `call`-th call (the steps before it are done and,
    with a checkpoint after every step, saved)."""
    original, calls = owner.step, []

    def step_then_signal(self, *args):
        calls.append(1)
        if len(calls) == call:
            os.kill(os.getpid(), how)
        return original(self, *args)

    return original, step_then_signal


@pytest.mark.parametrize("field,modality", rows("fit", "resume_sigint"))
def test_fit_resumes_after_sigint_to_the_uninterrupted_field(field, modality, inputs, cli, tmp_path, monkeypatch):
    import importlib

    loop = importlib.import_module("fieldlab.fit.loop")
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint at every logged step
    args = fit_args(inputs, field, modality) + ["--steps", "5", "--log-every", "1", "--seed", "3", "--quiet"]
    ok(cli(args + ["--out", tmp_path / "A"]))
    owner = stepper(field)
    original, interrupted = signal_at_call(owner, 4, signal.SIGINT)
    monkeypatch.setattr(owner, "step", interrupted)
    status, _, err = cli(args + ["--out", tmp_path / "B"])
    assert status == 130 and (tmp_path / ".B.checkpoint.pt").is_file(), err
    monkeypatch.setattr(owner, "step", original)
    ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "B"))
    assert not (tmp_path / ".B.checkpoint.pt").exists()  # removed once the field is written
    assert json.loads((tmp_path / "B" / "metrics.json").read_text())["steps"] == 5


SIGKILL_ROWS = {("fit", "siren", "image"), ("fit", "siren", "mesh"), ("fit", "miner", "image")}
"""One row per engine and driver that keeps a checkpoint: the reference (autograd) Fitter of the loop, the
OccupancyFitter of a mesh fit (fit.occupancy's driver) and MINER's pyramid (fit.miner_resume)."""


def engine_of(field: str, modality: str) -> str:
    from fieldlab.capabilities import _occupancy, _own_engine

    return "miner" if _own_engine(field) else "occupancy" if _occupancy(modality) else "fitter"


def test_the_sigkill_rows_share_the_engine_of_their_representative():
    represented = {engine_of(field, modality) for _, field, modality in SIGKILL_ROWS}
    for field, modality in rows("fit", "resume_sigkill"):  # each engine's checkpoint, saved the same way
        assert engine_of(field, modality) in represented and holds("fit", field, modality, "resume_sigint")
    assert all(holds(*row, "resume_sigkill") for row in SIGKILL_ROWS)


def killed(script: str) -> None:
    """Runs `script` in a fresh Python process, which must end killed by SIGKILL (kill -9 mid-run)."""
    process = subprocess.run([sys.executable, "-c", script], env={**os.environ, "OMP_NUM_THREADS": "1"},
                             capture_output=True, text=True, timeout=120)
    assert process.returncode == -signal.SIGKILL, process.stderr[-500:]


def fitter_killed_at(step: int, argv: list[str]) -> str:
    """A script running `fieldlab ARGV` that checkpoints after every step and is killed at `step`."""
    return ("import importlib, os, signal\n"
            "loop = importlib.import_module('fieldlab.fit.loop')\n"
            "loop.CHECKPOINT_SECONDS = 0.0\n"
            "step = loop.Fitter.step\n"
            "def killed(self):\n"
            f"    if self.step_count == {step}:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return step(self)\n"
            "loop.Fitter.step = killed\n"
            "from fieldlab.cli import main\n"
            f"main({argv!r})\n")


def killed_at_call(field: str, call: int, argv: list[str]) -> str:
    """A script running `fieldlab ARGV` that checkpoints after every step and is killed at the `call`-th step
    of the row's engine (`stepper`)."""
    owner = stepper(field)
    return ("import importlib, os, signal\n"
            "loop = importlib.import_module('fieldlab.fit.loop')\n"
            "loop.CHECKPOINT_SECONDS = 0.0\n"
            f"owner = getattr(importlib.import_module({owner.__module__!r}), {owner.__name__!r})\n"
            "step, calls = owner.step, []\n"
            "def killed(self, *args):\n"
            "    calls.append(1)\n"
            f"    if len(calls) == {call}:\n"
            "        os.kill(os.getpid(), signal.SIGKILL)\n"
            "    return step(self, *args)\n"
            "owner.step = killed\n"
            "from fieldlab.cli import main\n"
            f"main({argv!r})\n")


@pytest.mark.parametrize("field,modality", sorted((f, m) for _, f, m in SIGKILL_ROWS))
def test_fit_resumes_after_sigkill_to_the_uninterrupted_field(field, modality, inputs, cli, tmp_path):
    args = [str(a) for a in fit_args(inputs, field, modality)] + ["--steps", "6", "--log-every", "1", "--seed", "3",
                                                                  "--quiet"]
    killed(killed_at_call(field, 5, args + ["--out", str(tmp_path / "B")]))
    assert (tmp_path / ".B.checkpoint.pt").is_file() and not (tmp_path / "B").exists()
    ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    ok(cli(args + ["--out", tmp_path / "A"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "B"))


def test_fit_cells_that_cannot_apply_are_refused(inputs, cli, tmp_path):
    for c in CELLS:
        if c.command == "fit" and c.declared == NOT_APPLICABLE and c.property == "seed":  # one run per row
            refused(cli(fit_args(inputs, c.field, c.modality) + ["--quiet", "--out", tmp_path / "N"]))
            assert not (tmp_path / "N").exists()


# -- fit-dataset -----------------------------------------------------------------------------------------
DATASET = ["fit-dataset", "sample:digits", "--limit", "4", "--chunk-fields", "2", "--steps", "2", "--device", "cpu"]
META = ["fit-dataset", "sample:digits", "--limit", "4", "--chunk-fields", "2", "--meta-steps", "2", "--inner-steps",
        "1", "--meta-batch-size", "2", "--device", "cpu"]
"""Meta-learned fields (functa, spatial functa) take meta-learning's steps instead of --steps."""


def dataset_args(field: str, modality: str = "image", folders: dict[str, list[str]] | None = None) -> list[str]:
    """fit-dataset of `field` on sample:digits, or on the tiny folder of `modality` in `folders`."""
    from fieldlab.fields import Latent, get_config_class

    args = (META if isinstance(get_config_class(field)(), Latent) else DATASET) + ["--field", field]
    return args if modality == "image" else [args[0], *folders[modality], *args[2:]]


@pytest.fixture(scope="module")
def folders(tmp_path_factory) -> dict[str, list[str]]:
    """SOURCE words of fit-dataset per modality other than images: 4 tiny files of it in a folder."""
    import soundfile as sf
    import trimesh

    root = tmp_path_factory.mktemp("folders")
    rng = np.random.default_rng(0)
    for name in ("clips", "volumes", "meshes"):
        (root / name).mkdir()
    for i in range(4):
        sf.write(root / "clips" / f"{i}.wav", 0.5 * np.sin(np.arange(48) * 0.3 * (i + 1)), 400, subtype="FLOAT")
        np.save(root / "volumes" / f"{i}.npy", rng.random((4, 4, 4)).astype(np.float32))
        trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3)).export(root / "meshes" / f"{i}.obj")
    return {"audio": [str(root / "clips")], "volume": [str(root / "volumes")],
            "mesh": [str(root / "meshes"), "--mesh-resolution", "4"]}


@pytest.mark.parametrize("field,modality", rows("fit-dataset"))
def test_fit_dataset_row(field, modality, cli, tensorboard, tmp_path, monkeypatch, folders):
    """--config, --seed, --precision, --device, TensorBoard and the bar in one run; --seed again (images:
    the resumed run below repeats seed 1 on the other modalities) and with another seed; --resume after a
    SIGINT between chunks. Audio, volume and mesh rows read a folder of 4 tiny files (`signals/modal_sources.py`)."""
    import re

    from fieldlab.store.field_store import FieldStore

    precision = "tf32" if cell("fit-dataset", field, modality, "precision").note else "bf16"
    args = dataset_args(field, modality, folders) + ["--precision", precision]
    (tmp_path / "options.json").write_text(json.dumps({"seed": 1}))
    _, err = ok(cli(args + ["--config", tmp_path / "options.json", "--tensorboard", "--out", tmp_path / "A"]))
    assert re.search(r"fields: .*\[\S+<\S+", err) and re.search(r"mean PSNR \d", err), err[-400:]
    for name in ("psnr", "steps", "fields_per_second"):  # one point per chunk, at its number
        assert sorted(step for logged, _, step in tensorboard if logged == name) == [1, 2], tensorboard
    store = FieldStore(tmp_path / "A")
    assert store.attrs["fit"]["seed"] == 1 and store.attrs["fit"]["precision"] == precision
    if precision != "bf16":  # the cell's note: refused in one line, before anything is written
        refused(cli(args[:-1] + ["bf16", "--quiet", "--out", tmp_path / "P"]), "bf16")
        assert not (tmp_path / "P").exists()
    assert re.search(r"params each on cpu", err), err[-400:]  # the store records no device: it may move
    assert store.signal.kind == modality
    ok(cli(args + ["--seed", "2", "--quiet", "--out", tmp_path / "B"]))
    read = lambda name: FieldStore(tmp_path / name).read(slice(0, 4))  # noqa: E731
    assert not same(read("A"), read("B"))
    if modality == "image":
        ok(cli(args + ["--seed", "1", "--quiet", "--out", tmp_path / "A2"]))
        assert same(read("A"), read("A2"))

    from fieldlab.store.field_store import FieldStoreWriter as writer_class

    write_chunk = writer_class.write_chunk

    def write_then_interrupt(self, chunk, **columns):
        write_chunk(self, chunk, **columns)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(writer_class, "write_chunk", write_then_interrupt)
    status, _, err = cli(args + ["--seed", "1", "--quiet", "--out", tmp_path / "R"])
    assert status == 130 and "--resume" in err, err
    monkeypatch.setattr(writer_class, "write_chunk", write_chunk)
    assert 0 < len(FieldStore(tmp_path / "R").rows()) < 4
    ok(cli(args + ["--seed", "1", "--quiet", "--resume", "--out", tmp_path / "R"]))
    assert same(read("A"), read("R"))


def test_fit_dataset_tensorboard_without_its_extra_is_refused_before_the_store(cli, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "torch.utils.tensorboard", None)  # its import fails, as when not installed
    refused(cli(DATASET + ["--tensorboard", "--out", tmp_path / "X"]), "tensorboard")
    assert not (tmp_path / "X").exists()


def test_fit_dataset_sigkill_is_tested_beside_its_engines():
    """A killed fit-dataset keeps whole chunks (each written atomically, whatever engine fitted it) and
    --resume fits the rest, as after SIGINT (tested per row above): a real kill -9 in
    tests/cli/test_dataset_cli.py, a lost last chunk of a meta-learned store in tests/fit/test_meta.py."""
    import importlib.util

    here = Path(__file__).parent
    for path, name in (("cli/test_dataset_cli.py", "test_kill_9_then_resume_loses_nothing"),
                       ("fit/test_meta.py", "test_fit_dataset_meta_learns_and_resumes")):
        assert f"def {name}(" in (here / path).read_text()
    assert importlib.util.find_spec("fieldlab.fit.dataset_job")
    assert rows("fit-dataset", "resume_sigkill") == rows("fit-dataset", "resume_sigint")


# -- extend ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def pairs(tmp_path_factory) -> dict[str, tuple[list[str], list[str]]]:
    """(small, large) INPUT words per modality: the large signal holds the small one at its origin."""
    import soundfile as sf
    from PIL import Image

    root = tmp_path_factory.mktemp("extend")
    rng = np.random.default_rng(0)
    image = (rng.random((8, 12, 3)) * 255).astype(np.uint8)
    Image.fromarray(image[:, :8]).save(root / "small.png")
    Image.fromarray(image).save(root / "large.png")
    clip = (0.5 * np.sin(np.linspace(0, 30, 300))).astype(np.float32)
    sf.write(root / "small.wav", clip[:200], 400, subtype="FLOAT")
    sf.write(root / "large.wav", clip, 400, subtype="FLOAT")
    volume = rng.random((6, 6, 9)).astype(np.float32)
    np.save(root / "small.npy", volume[..., :6])
    np.save(root / "large.npy", volume)
    gif = ["sample:gif", "--max-size", "8", "--max-frames"]
    return {"image": ([root / "small.png"], [root / "large.png"]),
            "audio": ([root / "small.wav"], [root / "large.wav"]),
            "video": (gif + ["3"], gif + ["5"]), "volume": ([root / "small.npy"], [root / "large.npy"])}


@pytest.mark.parametrize("field,modality", rows("extend"))
def test_extend_row(field, modality, pairs, tensorboard, cli, tmp_path):
    """--config, --seed, --precision, --device, TensorBoard and the bar in one run; --seed again (after
    other draws of the global RNG) and with another seed; --max-seconds."""
    import re

    small, large = pairs[modality]
    ok(cli(["fit", *small, "--field", field, "--steps", "2", "--device", "cpu", "--quiet", "--out", tmp_path / "F"]))
    args = ["extend", tmp_path / "F", *large, "--steps", "3", "--device", "cpu", "--precision", "bf16"]
    (tmp_path / "options.json").write_text(json.dumps({"seed": 1}))
    _, err = ok(cli(args + ["--config", tmp_path / "options.json", "--tensorboard", "--out", tmp_path / "A"]))
    assert re.search(r"\[\S+<\S+, [^\]]*" + LIVE, err), err[-400:]
    assert 3 in {step for name, _, step in tensorboard if name == "psnr"}  # every --log-every steps and the last
    metrics = json.loads((tmp_path / "A" / "metrics.json").read_text())
    assert metrics["device"] == "cpu" and metrics["steps"] == 3
    assert json.loads((tmp_path / "A" / "config.json").read_text())["seed"] == 1
    torch.rand(7)  # the global RNG elsewhere: --seed alone draws the new parts
    ok(cli(args + ["--seed", "1", "--quiet", "--out", tmp_path / "A2"]))
    ok(cli(args + ["--seed", "2", "--quiet", "--out", tmp_path / "B"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "A2"))
    assert not same(weights(tmp_path / "A"), weights(tmp_path / "B"))
    ok(cli(args + ["--steps", "100000", "--max-seconds", "1e-9", "--quiet", "--out", tmp_path / "M"]))
    assert json.loads((tmp_path / "M" / "metrics.json").read_text())["steps"] < 100000
    refused(cli(args + ["--precision", "fp8", "--quiet", "--out", tmp_path / "P"]), "--precision")


@pytest.mark.parametrize("field,modality", rows("extend", "resume_sigint"))
def test_extend_resumes_after_sigint_to_the_uninterrupted_field(field, modality, pairs, cli, tmp_path, monkeypatch):
    import importlib

    loop = importlib.import_module("fieldlab.fit.loop")
    small, large = pairs[modality]
    ok(cli(["fit", *small, "--field", field, "--steps", "2", "--device", "cpu", "--quiet", "--out", tmp_path / "F"]))
    args = ["extend", tmp_path / "F", *large, "--steps", "4", "--device", "cpu", "--seed", "3", "--quiet"]
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    ok(cli(args + ["--out", tmp_path / "A"]))
    assert not (tmp_path / ".A.checkpoint.pt").exists()  # removed once the field is written
    original, interrupted = interrupt_at(2, signal.SIGINT)
    monkeypatch.setattr(loop.Fitter, "step", interrupted)
    status, _, err = cli(args + ["--out", tmp_path / "B"])
    assert status == 130 and "--resume" in err and (tmp_path / ".B.checkpoint.pt").is_file(), err
    assert not (tmp_path / "B").exists()
    monkeypatch.setattr(loop.Fitter, "step", original)
    refused(cli(args[:-2] + ["7", "--quiet", "--out", tmp_path / "B", "--resume"]), "--resume", "other options")
    ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "B"))
    assert json.loads((tmp_path / "B" / "metrics.json").read_text())["steps"] == 4


def test_extend_resumes_after_sigkill_to_the_uninterrupted_field(pairs, cli, tmp_path):
    """One row: every extend row steps the same Fitter, saved by fit's helpers (its SIGKILL row's engine)."""
    small, large = pairs["image"]
    ok(cli(["fit", *small, "--field", "local-global", "--steps", "2", "--device", "cpu", "--quiet", "--out",
            tmp_path / "F"]))
    args = [str(a) for a in ["extend", tmp_path / "F", *large, "--steps", "4", "--device", "cpu", "--seed", "3",
                             "--quiet"]]
    killed(fitter_killed_at(3, args + ["--out", str(tmp_path / "B")]))
    assert (tmp_path / ".B.checkpoint.pt").is_file() and not (tmp_path / "B").exists()
    ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    ok(cli(args + ["--out", tmp_path / "A"]))
    assert same(weights(tmp_path / "A"), weights(tmp_path / "B"))


def test_extend_bf16_differs_from_fp32(pairs, cli, tmp_path):
    """--precision reaches extend's steps (not only its options)."""
    small, large = pairs["image"]
    ok(cli(["fit", *small, "--field", "local-global", "--steps", "2", "--device", "cpu", "--quiet", "--out",
            tmp_path / "F"]))
    for precision in ("fp32", "bf16"):
        ok(cli(["extend", tmp_path / "F", *large, "--steps", "3", "--device", "cpu", "--quiet", "--precision",
                precision, "--out", tmp_path / precision]))
    assert not same(weights(tmp_path / "fp32"), weights(tmp_path / "bf16"))


# -- train and train-sdf -----------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def digits_store(tmp_path_factory):
    from fieldlab.cli import main

    out = tmp_path_factory.mktemp("train") / "S"
    try:
        main(DATASET[:3] + ["10"] + DATASET[4:] + ["--quiet", "--out", str(out)])
    except SystemExit as exit_:
        assert not exit_.code
    return out


TRAIN = ["--net", "dinet2", "--channels", "4", "--steps", "4", "--batch-size", "4", "--num-points", "16",
         "--device", "cpu"]


def test_train_row(digits_store, cli, tensorboard, tmp_path):
    """--config, --seed, --precision, --device, TensorBoard and the bar in one run; --seed again (quiet: no
    bar) and with another seed; fp32 against bf16."""
    import re

    (tmp_path / "options.json").write_text(json.dumps({"seed": 1, "log_every": 2, "precision": "bf16"}))
    _, err = ok(cli(["train", digits_store, "--out", tmp_path / "A", "--config", tmp_path / "options.json",
                     "--tensorboard", *TRAIN]))
    assert re.search(r"\[\S+<\S+, [^\]]*loss=", err), err[-400:]  # elapsed<ETA, the live loss
    assert {step for name, _, step in tensorboard if name == "loss"} == {2, 4}
    for name, seed, precision in (("A2", "1", "bf16"), ("B", "2", "bf16"), ("F", "1", "fp32")):
        _, err = ok(cli(["train", digits_store, "--out", tmp_path / name, "--seed", seed, "--precision", precision,
                         "--quiet", *TRAIN]))
        assert "<" not in err, err[-400:]
    train = json.loads((tmp_path / "A" / "run.json").read_text())["train"]
    assert train["device"] == "cpu" and train["seed"] == 1 and train["precision"] == "bf16"
    net = lambda name: weights(tmp_path / name, "net.safetensors")  # noqa: E731
    assert same(net("A"), net("A2")) and not same(net("A"), net("B")) and not same(net("A"), net("F"))
    refused(cli(["train", digits_store, "--out", tmp_path / "P", *TRAIN, "--precision", "fp8"]), "--precision")
    assert not (tmp_path / "P").exists()
    refused(cli(["train", digits_store, "--out", tmp_path / "D", *TRAIN[:-1], "quantum"]), "--device")


def test_train_resumes_after_sigint_to_the_uninterrupted_network(digits_store, tmp_path):
    from fieldlab.learn.train import TrainConfig, train

    config = TrainConfig(net="dinet2", net_options={"channels": 4}, steps=6, batch_size=4, num_points=16,
                         checkpoint_every=2, log_every=1, device="cpu", seed=1)
    train(digits_store, tmp_path / "A", config, progress=lambda line: None)

    def interrupt(line):
        if line.startswith("step 3/"):
            os.kill(os.getpid(), signal.SIGINT)

    with pytest.raises(KeyboardInterrupt):
        train(digits_store, tmp_path / "B", config, progress=interrupt)
    assert not (tmp_path / "B" / "run.json").exists()
    train(digits_store, tmp_path / "B", config, resume=True, progress=lambda line: None)
    assert same(weights(tmp_path / "A", "net.safetensors"), weights(tmp_path / "B", "net.safetensors"))


def test_train_resumes_after_sigkill_to_the_uninterrupted_network(digits_store, tmp_path):
    from fieldlab.learn.train import TrainConfig, train

    options = dict(net="dinet2", net_options={"channels": 4}, steps=6, batch_size=4, num_points=16,
                   checkpoint_every=2, log_every=1, device="cpu", seed=1)
    script = ("import os, signal\n"
              "from fieldlab.learn.train import TrainConfig, train\n"
              "def kill(line):\n"
              "    if line.startswith('step 3/'):\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              f"train({str(digits_store)!r}, {str(tmp_path / 'B')!r}, TrainConfig(**{options!r}), progress=kill)\n")
    killed(script)
    assert not (tmp_path / "B" / "run.json").exists()
    config = TrainConfig(**options)
    train(digits_store, tmp_path / "B", config, resume=True, progress=lambda line: None)
    train(digits_store, tmp_path / "A", config, progress=lambda line: None)
    assert same(weights(tmp_path / "A", "net.safetensors"), weights(tmp_path / "B", "net.safetensors"))


SDF = ["train-sdf", "--scenes", "10", "--steps", "3", "--num-points", "27", "--num-queries", "16", "--batch-size", "4",
       "--channels", "4"]


def test_train_sdf_row(cli, tensorboard, tmp_path):
    (tmp_path / "options.json").write_text(json.dumps({"seed": 1, "precision": "bf16"}))
    _, err = ok(cli(SDF + ["--device", "cpu", "--config", tmp_path / "options.json", "--tensorboard", "--out",
                           tmp_path / "A"]))
    import re

    assert re.search(r"\[\S+<\S+, [^\]]*loss=", err), err[-400:]  # elapsed<ETA, the live loss
    assert 3 in {step for name, _, step in tensorboard if name == "loss"}  # the last step's loss
    for name, seed, precision in (("A2", "1", "bf16"), ("B", "2", "bf16"), ("F", "1", "fp32")):
        ok(cli(SDF + ["--device", "cpu", "--seed", seed, "--precision", precision, "--quiet", "--out",
                      tmp_path / name]))
    run = json.loads((tmp_path / "A" / "run.json").read_text())
    assert run["metrics"]["device"] == "cpu" and run["metrics"]["steps"] == 3 and run["train"]["seed"] == 1
    assert run["train"]["precision"] == "bf16"
    net = lambda name: weights(tmp_path / name, "net.safetensors")  # noqa: E731
    assert same(net("A"), net("A2")) and not same(net("A"), net("B")) and not same(net("A"), net("F"))
    refused(cli(SDF + ["--precision", "fp8", "--out", tmp_path / "P"]), "--precision")
    assert not (tmp_path / "P").exists()
    ok(cli(SDF[:4] + ["100000"] + SDF[5:] + ["--max-seconds", "1e-9", "--device", "cpu", "--out", tmp_path / "M"]))
    assert json.loads((tmp_path / "M" / "run.json").read_text())["metrics"]["steps"] == 1
    refused(cli(SDF + ["--device", "quantum", "--out", tmp_path / "D"]), "--device")
    assert not (tmp_path / "D").exists()


def test_train_sdf_resumes_after_sigint_to_the_uninterrupted_network(cli, tmp_path, monkeypatch):
    import importlib

    from fieldlab.learn import sdf

    loop = importlib.import_module("fieldlab.fit.loop")
    monkeypatch.setattr(loop, "CHECKPOINT_SECONDS", 0.0)  # a checkpoint after every step
    args = SDF[:4] + ["4"] + SDF[5:] + ["--device", "cpu", "--seed", "3", "--quiet"]
    ok(cli(args + ["--out", tmp_path / "A"]))
    assert not (tmp_path / "A" / "checkpoint.pt").exists()  # removed once the run is written
    save = sdf._save_state

    def save_then_interrupt(run, net, optimizer, step, identity):
        save(run, net, optimizer, step, identity)
        if step == 2:
            os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(sdf, "_save_state", save_then_interrupt)
    status, _, err = cli(args + ["--out", tmp_path / "B"])
    assert status == 130 and "--resume" in err and (tmp_path / "B" / "checkpoint.pt").is_file(), err
    assert not (tmp_path / "B" / "run.json").exists()
    monkeypatch.setattr(sdf, "_save_state", save)
    refused(cli(args[:-2] + ["7", "--quiet", "--out", tmp_path / "B", "--resume"]), "--resume", "other options")
    out, _ = ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    assert "resuming from step 2/4" in out
    assert same(weights(tmp_path / "A", "net.safetensors"), weights(tmp_path / "B", "net.safetensors"))


def test_train_sdf_resumes_after_sigkill_to_the_uninterrupted_network(cli, tmp_path):
    args = [str(a) for a in SDF[:4] + ["4"] + SDF[5:] + ["--device", "cpu", "--seed", "3", "--quiet"]]
    script = ("import importlib, os, signal\n"
              "loop = importlib.import_module('fieldlab.fit.loop')\n"
              "loop.CHECKPOINT_SECONDS = 0.0\n"
              "from fieldlab.learn import sdf\n"
              "save = sdf._save_state\n"
              "def killed(run, net, optimizer, step, identity):\n"
              "    save(run, net, optimizer, step, identity)\n"
              "    if step == 3:\n"
              "        os.kill(os.getpid(), signal.SIGKILL)\n"
              "sdf._save_state = killed\n"
              "from fieldlab.cli import main\n"
              f"main({args + ['--out', str(tmp_path / 'B')]!r})\n")
    killed(script)
    assert (tmp_path / "B" / "checkpoint.pt").is_file() and not (tmp_path / "B" / "run.json").exists()
    ok(cli(args + ["--out", tmp_path / "B", "--resume"]))
    ok(cli(args + ["--out", tmp_path / "A"]))
    assert same(weights(tmp_path / "A", "net.safetensors"), weights(tmp_path / "B", "net.safetensors"))


# -- declared cells ----------------------------------------------------------------------------------------
def test_only_fit_has_cells_not_built_yet():
    """fit's declared cells are refused in `test_fit_row`; every other command's cells all hold (two tests
    that refused their declared flags ran a fit to check nothing once the last of them was built). A new
    "not yet" cell of another command needs its refusal tested here."""
    assert not [c for c in CELLS if c.command != "fit" and c.declared == NOT_YET]


def test_fields_that_cannot_be_extended_are_refused(inputs, cli, tmp_path, pairs):
    small, large = pairs["image"]
    for field in sorted({c.field for c in CELLS if c.command == "extend" and c.declared == NOT_APPLICABLE
                         and c.modality == "image"}):
        ok(cli(["fit", *small, "--field", field, *FIELD_OPTIONS.get(field, []), "--steps", "1", "--device", "cpu",
                "--quiet", "--force", "--out", tmp_path / "F"]))
        refused(cli(["extend", tmp_path / "F", *large, "--steps", "1", "--out", tmp_path / "X"]), "cannot be extended")


def test_a_cell_is_a_plain_record():
    c = cell("fit", "siren", "image", "seed")
    assert isinstance(c, Cell) and c.holds and c.command == "fit"
    with pytest.raises(KeyError):
        cell("fit", "siren", "image", "colour")
