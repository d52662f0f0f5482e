"""`fieldlab fit-dataset` and `fieldlab store info` as a user meets them: kill -9 and --resume, torchrun."""

import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

from fieldlab.store.field_store import FieldStore

pytestmark = pytest.mark.usefixtures("one_thread")


FIT = ["fit-dataset", "sample:digits", "--device", "cpu", "--chunk-fields", "4"]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}


def store_arrays(path: Path) -> dict[str, np.ndarray]:
    """Every array of a store by its path inside the store."""
    import zarr

    def walk(group, prefix=""):
        for name, member in group.members() if hasattr(group, "members") else group.items():  # zarr 3, zarr 2
            if isinstance(member, zarr.Group):
                yield from walk(member, prefix + name + "/")
            else:
                yield prefix + name, np.asarray(member[...])

    return dict(walk(zarr.open_group(str(path), mode="r")))


def assert_same_store(a: Path, b: Path) -> None:
    left, right = store_arrays(a), store_arrays(b)
    assert sorted(left) == sorted(right)
    for name in left:
        assert np.array_equal(left[name], right[name], equal_nan=True), name
    assert FieldStore(a).attrs == FieldStore(b).attrs


def test_fit_dataset_and_store_info(tmp_path, cli):
    status, out, err = cli(FIT + ["--limit", "12", "--steps", "60", "--copies", "2", "--test-fraction", "0.25",
                                  "--out", tmp_path / "S", "--quiet"])
    assert status == 0, err
    assert "24 of 24 siren fields" in out
    psnr = FieldStore(tmp_path / "S").column("psnr")
    below = int((psnr < 40).sum())  # 60 steps: the fields that did not reach the default target are counted
    assert (f"; {below} below --target-psnr 40 ->" in out) if below else ("below" not in out), out
    status, info, err = cli(["store", "info", tmp_path / "S"])  # the same count where the store is described
    assert status == 0 and ((f"; {below} below --target-psnr 40\n" in info) if below else ("below" not in info))
    status, out, err = cli(["store", "info", tmp_path / "S"])
    assert status == 0, err
    assert "24 of 24 complete (0 missing)" in out and "24 labelled" in out and "train 18, test 6" in out
    assert "12 augmented" in out and "hidden_dim=32" in out and "psnr      mean" in out
    store = FieldStore(tmp_path / "S")
    assert store.column("source_index").tolist() == np.repeat(np.arange(12), 2).tolist()
    assert len(store.rows("test")) == 6 and np.isfinite(store.column("psnr")).all()


def test_bad_input_is_one_line_exit_2(tmp_path, cli):
    status, _, err = cli(FIT + ["--limit", "4", "--out", tmp_path / "S", "--widht", "3"])
    assert status == 2 and "does not take --widht" in err and len(err.strip().splitlines()) == 1
    status, _, err = cli(["fit-dataset", "sample:nothing", "--out", tmp_path / "S"])
    assert status == 2 and "sample:digits" in err
    status, _, err = cli(["store", "info", tmp_path / "missing"])
    assert status == 2 and "no field store" in err
    status, _, err = cli(FIT + ["--limit", "4", "--kernel", "triton", "--out", tmp_path / "K"])
    assert status == 2 and "auto, fused or reference" in err and not (tmp_path / "K").exists()
    status, _, err = cli(FIT + ["--limit", "4", "--field", "hashgrid", "--kernel", "fused", "--out", tmp_path / "K"])
    assert status == 2 and "covers siren, gauss and fourier" in err and not (tmp_path / "K").exists()
    status, _, err = cli(FIT + ["--limit", "4", "--field", "local-global", "--mode", "local", "--kernel", "fused",
                                "--out", tmp_path / "K"])  # the kernel steps a single field's partitions only
    assert status == 2 and "in `fieldlab fit` only" in err and not (tmp_path / "K").exists()
    for chunk in ("0", "-1"):  # 0 used to mean the default silently
        status, _, err = cli(FIT + ["--limit", "4", "--chunk-fields", chunk, "--out", tmp_path / "K"])
        assert status == 2 and f"--chunk-fields must be positive, got {chunk}" in err and not (tmp_path / "K").exists()
    status, _, err = cli(FIT + ["--limit", "4", "--steps", "5", "--out", tmp_path / "S", "--quiet"])
    assert status == 0, err
    status, _, err = cli(FIT + ["--limit", "4", "--steps", "5", "--out", tmp_path / "S"])
    assert status == 2 and "--resume" in err  # a finished store is never overwritten silently
    status, _, err = cli(FIT + ["--limit", "4", "--steps", "6", "--out", tmp_path / "S", "--resume"])
    assert status == 2 and "different fit.steps (5, now 6)" in err  # names the option that differs


def test_kill_9_then_resume_loses_nothing(tmp_path, cli):
    options = FIT + ["--limit", "16", "--steps", "200", "--target-psnr", "0"]
    command = [sys.executable, "-m", "fieldlab", *map(str, options), "--out", str(tmp_path / "K")]
    process = subprocess.Popen(command, env=ENV, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 240
    done = 0
    while time.monotonic() < deadline and process.poll() is None:
        time.sleep(0.2)
        try:
            done = int(FieldStore(tmp_path / "K").done.sum())
        except Exception:  # not created yet
            continue
        if done >= 4:
            break
    assert process.poll() is None, f"the run ended before it could be killed: {process.stderr.read()[-500:]}"
    process.send_signal(signal.SIGKILL)
    process.wait()
    before = FieldStore(tmp_path / "K")
    finished = before.rows()
    assert 4 <= len(finished) < 16 and len(finished) % 4 == 0  # whole chunks only
    kept = before.read(finished)
    status, _, err = cli(options + ["--out", tmp_path / "K", "--resume", "--quiet"])
    assert status == 0, err
    after = FieldStore(tmp_path / "K")
    assert len(after.rows()) == 16 and after.column("source_index").tolist() == list(range(16))
    assert np.isfinite(after.column("psnr")).all() and (after.column("steps") == 200).all()
    for name, tensor in after.read(finished).items():
        assert np.array_equal(tensor.numpy(), kept[name].numpy())  # finished chunks were not refitted
    weights = after.read(slice(0, 16))["layers.1.weight"].reshape(16, -1)
    assert (weights.abs().sum(dim=1) > 0).all()  # no zero rows
    status, _, err = cli(options + ["--out", tmp_path / "clean", "--quiet"])
    assert status == 0, err
    assert_same_store(tmp_path / "K", tmp_path / "clean")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_torchrun_two_processes_equal_one(tmp_path, cli):
    options = [*FIT, "--limit", "20", "--steps", "40", "--init", "random", "--sample-fraction", "0.5"]
    torchrun = str(Path(sys.executable).parent / "torchrun")
    result = subprocess.run([torchrun, "--nnodes", "1", "--nproc-per-node", "2", "--master-port", str(_free_port()),
                             "-m", "fieldlab", *options, "--out", str(tmp_path / "two"), "--quiet"],
                            env=ENV, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    status, _, err = cli(options + ["--out", tmp_path / "one", "--quiet"])
    assert status == 0, err
    assert len(FieldStore(tmp_path / "two").rows()) == 20
    assert_same_store(tmp_path / "two", tmp_path / "one")


def test_a_gpu_precision_on_the_cpu_is_said_once(tmp_path, cli, caplog):
    """TF32 does not exist on a CPU: fit-dataset says so in one line, as `fit` does, and fits in fp32."""
    status, _, err = cli(FIT + ["--limit", "2", "--steps", "2", "--precision", "tf32", "--quiet", "--out",
                                tmp_path / "S"])
    assert status == 0, err
    notes = [r.getMessage() for r in caplog.records if "on the CPU" in r.getMessage()]
    assert notes == ["--precision tf32 on the CPU: the CPU has no TF32, so the steps run in fp32"]


def _photos(folder: Path, count: int, truncate: int | None = None) -> Path:
    """`count` 8×8 RGB PNGs in `folder`; with `truncate`, that one cut to half its bytes (its header still reads)."""
    from PIL import Image

    folder.mkdir()
    rng = np.random.default_rng(0)
    for i in range(count):
        path = folder / f"p{i}.png"
        Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(path)
        if i == truncate:
            path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    return folder


def test_an_item_found_bad_while_fitting_leaves_out_as_it_was(tmp_path, cli):
    """A truncated image passes the header check and fails when its chunk is read: with --force the store it
    was to replace is put back whole, and a new --out is not left half-made (a rerun would ask for --resume)."""
    good, bad = _photos(tmp_path / "good", 3), _photos(tmp_path / "bad", 3, truncate=2)
    common = ["fit-dataset", "--device", "cpu", "--steps", "3", "--quiet"]
    status, _, err = cli(common[:1] + [good] + common[1:] + ["--out", tmp_path / "S"])
    assert status == 0, err
    before = sorted((p.relative_to(tmp_path / "S"), p.read_bytes()) for p in (tmp_path / "S").rglob("*") if p.is_file())
    status, _, err = cli(common[:1] + [bad] + common[1:] + ["--out", tmp_path / "S", "--force"])
    assert status == 2 and "cannot read" in err and "p2.png" in err
    after = sorted((p.relative_to(tmp_path / "S"), p.read_bytes()) for p in (tmp_path / "S").rglob("*") if p.is_file())
    assert after == before and len(FieldStore(tmp_path / "S").rows()) == 3
    status, _, err = cli(common[:1] + [bad] + common[1:] + ["--out", tmp_path / "N"])
    assert status == 2 and "cannot read" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["S", "bad", "good"]  # no N, no leftovers beside it


def test_max_seconds_stops_a_chunk_mid_fit_and_its_steps_show(tmp_path, cli, caplog):
    """--max-seconds bounds the whole command: a chunk that would take far longer than the limit stops mid-fit
    (its fields are not written; --resume fits them), where it used to run to its end whatever the limit."""
    from fieldlab.fit.batched import _reporting_segment

    assert _reporting_segment(50, 0.3) == 2 and _reporting_segment(50, 0.01) == 50 and _reporting_segment(50, 4) == 1
    folder = _photos(tmp_path / "set", 2)
    began = time.perf_counter()
    status, out, err = cli(["fit-dataset", folder, "--device", "cpu", "--steps", "1000000", "--target-psnr", "0",
                            "--max-seconds", "2", "--out", tmp_path / "S"])
    assert status == 0, err
    assert time.perf_counter() - began < 60  # a million steps of 64-pixel fields take far longer
    assert "stopped during chunk 0 (0 of 1 chunks done" in caplog.text
    assert re.search(r"at step [\d,]+ of 1,000,000 and [\d.e-]+ s a step: about [\d,]+ min for the chunk", caplog.text)
    assert "0 of 2 siren fields (" in out and "nan" not in out  # no mean PSNR of no fields
    assert FieldStore(tmp_path / "S").rows().size == 0


def test_unset_sample_fraction_is_the_cpus_subset_for_large_items_and_a_resume_keeps_the_stores(
        tmp_path, cli, monkeypatch, caplog):
    from fieldlab.fit import device_defaults

    images = np.random.default_rng(0).integers(0, 256, (4, 128, 128), dtype=np.uint8)
    np.savez(tmp_path / "big.npz", images=images)
    params = 1185  # SIREN 2×32 on one grey channel
    # a step of all 4 items' 16,384 samples exceeds this budget; 4,096 samples each do not
    monkeypatch.setattr(device_defaults, "CPU_STEP_BUDGET", 4 * params * 6000)
    command = ["fit-dataset", tmp_path / "big.npz", "--device", "cpu", "--steps", "3", "--target-psnr", "0",
               "--hidden-dim", "32", "--num-layers", "2"]
    with caplog.at_level("INFO", logger="fieldlab"):
        status, out, err = cli(command + ["--out", tmp_path / "S"])
    assert status == 0, err
    assert "CPU: 4,096 of 16,384 samples per field and step" in caplog.text
    assert "--sample-fraction 0 for every sample" in caplog.text
    store = FieldStore(tmp_path / "S")
    assert store.attrs["fit"]["sample_fraction"] == 0.25 and store.config.num_params() == params
    # --resume with the option unset continues with the store's own value, whatever this run would choose
    monkeypatch.setattr(device_defaults, "CPU_STEP_BUDGET", 2**40)
    status, out, err = cli(command + ["--out", tmp_path / "S", "--resume"])
    assert status == 0, err
    status, out, err = cli(command + ["--out", tmp_path / "S", "--resume", "--sample-fraction", "0"])
    assert status == 2 and "different fit.sample_fraction" in err, err
