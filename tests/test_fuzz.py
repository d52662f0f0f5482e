"""A seeded mutation fuzzer over every reader (issue 19): valid tiny fixtures are damaged byte by byte or by
their structure, then fed to the command that reads them, in-process. Every case must end with exit 0, or exit
2 with one `fieldlab: error:` line on stderr and nothing written; never a traceback, never a hang.

Each case is one (reader, seed): `python -m pytest tests/test_fuzz.py -k "image_png8 and seed_17"` repeats
one; its failure message says the mutation and the command. `CASES_PER_READER` scales them all.
"""

from __future__ import annotations

import dataclasses
import functools
import random
import shutil
from pathlib import Path
from typing import Callable

import pytest
import torch

from _fuzz import mutate as m
from _fuzz import mutate_media as media
from _fuzz.fixtures import hdr_suffixes, make_inputs
from _fuzz.harness import address_space_cap, broken_contract, changes, run_cli, snapshot

CASES_PER_READER = 36
"""Seeds of a reader of weight 1: about 540 cases, 610 once EXR and Radiance HDR images are read."""
TIME_LIMIT = 10.0
"""Seconds one case may run: every valid fixture is read and fitted in well under one."""
MEMORY_HEADROOM = 3 * 2**30
"""Bytes the cases may allocate beyond what the process holds when they start (a MemoryError is a failure)."""

FIT = ["--steps", "2", "--hidden-dim", "8", "--device", "cpu", "--quiet"]
MESH = ["--resolution", "8", "--points", "512", "--eval-points", "512", "--chamfer-points", "64"]


def fit_file(*extra: str) -> Callable:
    return lambda case, target, rng: ["fit", target, *FIT, *extra, "--out", case / "out"]


def fit_with_config(case, target, rng):
    return ["fit", "sample:camera", "--max-size", "16", "--steps", "1", "--device", "cpu", "--quiet",
            "--config", target, "--out", case / "out"]


def fit_dataset(case, target, rng):
    return ["fit-dataset", target, "--field", "siren", "--hidden-dim", "8", "--steps", "1", "--limit", "2",
            "--device", "cpu", "--quiet", "--out", case / "out"]


def read_field(case, target, rng):
    if rng.random() < 0.5:
        return ["info", target]
    return ["render", target, "--out", case / "x.png", "--size", "8", "8", "--device", "cpu"]


def read_store(case, target, rng):
    choice = rng.random()
    if choice < 0.5:
        return ["store", "info", target, *(["--verify"] if store_verify() and rng.random() < 0.5 else [])]
    if choice < 0.75:
        return ["store", "info", target, "--json"]
    return ["train", target, "--net", "mlp", "--hidden", "8", "--steps", "1", "--batch-size", "2", "--device", "cpu",
            "--out", case / "run"]


def read_run(case, target, rng):
    if rng.random() < 0.6:
        return ["eval", target, case / "store", "--points", "grid", "--resolutions", "8", "--draws", "1",
                "--device", "cpu", "--out", case / "eval"]
    return ["train", case / "store", "--net", "mlp", "--hidden", "8", "--steps", "3", "--batch-size", "2",
            "--device", "cpu", "--resume", "--out", target]


@functools.lru_cache(maxsize=None)
def store_verify() -> bool:
    """Whether `store info` takes --verify yet (its own option, not a field option)."""
    outcome = run_cli(["store", "info", "--help"], time_limit=30)
    return "--verify" in outcome.out


def mutate_folder(plan: list[tuple[str, Callable, float]]) -> Callable:
    """A mutator of a folder: one of its files (chosen by `plan`'s glob patterns and weights) is damaged by
    that pattern's mutator, deleted, or replaced by a folder."""

    def run(folder: Path, rng: random.Random) -> str:
        pattern, mutator, _ = rng.choices(plan, [weight for *_, weight in plan])[0]
        files = sorted(p for p in folder.glob(pattern) if p.is_file())
        target = rng.choice(files)
        name = target.relative_to(folder)
        if mutator == "delete":
            target.unlink()
            return f"deleted {name}"
        if mutator == "folder":
            target.unlink()
            target.mkdir()
            return f"replaced {name} by a folder"
        return f"{name}: {mutator(target, rng)}"

    return run


FIELD_DIR = mutate_folder([
    ("field.json", m.mutate_json, 4), ("metrics.json", m.mutate_json, 2), ("field.safetensors", m.mutate_safetensors, 3),
    ("field.safetensors", m.mutate_bytes, 1), ("*", "delete", 1), ("*.json", "folder", 0.3)])
STORE = mutate_folder([
    ("zarr.json", lambda p, rng: m.mutate_json(p, rng, focus="attributes"), 5), ("*/**/zarr.json", m.mutate_json, 2),
    ("*/**/c/**/*", m.mutate_bytes, 2.5), ("*/**/c/**/*", "delete", 1), ("**/zarr.json", "delete", 0.5)])
RUN = mutate_folder([
    ("run.json", m.mutate_json, 4), ("config.json", m.mutate_json, 2), ("net.safetensors", m.mutate_safetensors, 3),
    ("checkpoint.pt", m.mutate_bytes, 2), ("*", "delete", 1)])


HDR_MUTATORS = {".exr": media.mutate_exr, ".hdr": media.mutate_radiance}


@dataclasses.dataclass(frozen=True)
class Reader:
    fixture: str
    mutate: Callable
    command: Callable
    weight: float = 1.0
    needs_store: bool = False


READERS = {
    "image_png8": Reader("png8.png", media.mutate_png, fit_file("--max-size", "16")),
    "image_png16": Reader("png16.png", media.mutate_png, fit_file("--max-size", "16")),
    "image_float_tiff": Reader("float.tif", media.mutate_float_tiff, fit_file("--max-size", "16")),
    **{f"image_{suffix[1:]}": Reader(f"hdr{suffix}", HDR_MUTATORS[suffix], fit_file("--max-size", "16"))
       for suffix in hdr_suffixes()},
    "audio_pcm16_wav": Reader("pcm16.wav", media.mutate_wav, fit_file()),
    "audio_float_wav": Reader("float.wav", media.mutate_wav, fit_file()),
    "video_mp4": Reader("clip.mp4", m.mutate_bytes, fit_file("--max-size", "16", "--max-frames", "6")),
    "volume_npy": Reader("volume.npy", m.mutate_npy, fit_file()),
    "mesh_obj": Reader("octahedron.obj", media.mutate_obj, fit_file(*MESH)),
    "dataset_npz": Reader("dataset.npz", m.mutate_npz, fit_dataset),
    "config_json": Reader("config.json", m.mutate_config_json, fit_with_config),
    "config_toml": Reader("config.toml", m.mutate_toml, fit_with_config),
    "field_dir": Reader("field", FIELD_DIR, read_field, weight=1.5),
    "store": Reader("store", STORE, read_store, weight=1.5),
    "run": Reader("run", RUN, read_run, weight=1.0, needs_store=True),
}

CASES = [pytest.param(name, seed, id=f"{name}-seed_{seed}")
         for name, reader in READERS.items() for seed in range(round(CASES_PER_READER * reader.weight))]


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # tiny fits: a second thread only adds synchronisation
    yield make_inputs(tmp_path_factory.mktemp("fuzz_inputs"))
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def memory_cap(inputs):
    with address_space_cap(MEMORY_HEADROOM):
        yield


def copy(source: Path, target: Path) -> None:
    if source.is_dir():
        shutil.copytree(source, target)
    else:
        shutil.copyfile(source, target)


def test_the_fuzzer_makes_enough_cases():
    assert len(CASES) >= 500


def test_the_harness_catches_a_traceback_a_hang_a_second_line_and_a_write(tmp_path, monkeypatch):
    import sys
    import time

    import _fuzz.harness as harness

    def write_then_fail(argv):
        (tmp_path / "partial").write_text("x")
        print("fieldlab: error: refused", file=sys.stderr)
        raise SystemExit(2)

    def two_lines(argv):
        print("a note\nfieldlab: error: refused", file=sys.stderr)
        raise SystemExit(2)

    fakes = {"traceback": lambda argv: [][0], "hang": lambda argv: time.sleep(5), "second line": two_lines,
             "write": write_then_fail}
    seen = {}
    for name, fake in fakes.items():
        monkeypatch.setattr(harness, "main", fake)
        before = snapshot(tmp_path)
        outcome = run_cli([], time_limit=0.2)
        seen[name] = broken_contract(outcome) or " ".join(changes(before, snapshot(tmp_path)))
    assert seen["traceback"].startswith("traceback: IndexError escaped main at tests/test_fuzz.py")
    assert seen["hang"].startswith("hang")
    assert seen["second line"].startswith("exit 2 but stderr is not one")
    assert seen["write"] == "+partial"


def run_case(name: str, seed: int, inputs: dict[str, Path], folder: Path):
    """Damage a copy of `name`'s fixture in `folder` with `seed`'s mutation, run its command, and return
    (what breaks the contract or '', the mutation, the outcome)."""
    reader = READERS[name]
    rng = random.Random(f"{name}-{seed}")
    case = folder / "case"
    case.mkdir()
    target = case / inputs[reader.fixture].name
    copy(inputs[reader.fixture], target)
    if reader.needs_store:
        copy(inputs["store"], case / "store")
    mutation = reader.mutate(target, rng)
    argv = reader.command(case, target, rng)
    before = snapshot(case)
    outcome = run_cli(argv, TIME_LIMIT)
    problem = broken_contract(outcome)
    if not problem and outcome.code == 2 and changes(before, snapshot(case)):
        problem = f"wrote on failure: {' '.join(changes(before, snapshot(case))[:8])}"
    return problem, mutation, outcome


@pytest.mark.parametrize("name, seed", CASES)
def test_a_damaged_input_ends_in_success_or_one_line(name, seed, inputs, memory_cap, tmp_path):
    problem, mutation, outcome = run_case(name, seed, inputs, tmp_path)
    if problem:
        pytest.fail(f"{name} seed {seed}: {problem}\nmutation: {mutation}\n{outcome.report()}\n"
                    f"reproduce: python -m pytest tests/test_fuzz.py -k '{name} and seed_{seed}'", pytrace=False)
