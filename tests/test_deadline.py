"""--max-seconds S bounds the whole command (reading, fitting, final evaluation, writing): each command,
made slow with many steps, ends within S·1.1 + 5 s, exits 0, writes its outputs and marks them as stopped
by the time limit (issue 22)."""

import json
import time

import numpy as np

from fieldlab import _deadline

S = 3.0


def within_limit(cli, args, limit=S):
    began = time.perf_counter()
    status, out, err = cli(args + ["--max-seconds", str(limit)])
    seconds = time.perf_counter() - began
    assert status == 0, err
    assert seconds <= limit * 1.1 + 5, f"{seconds:.1f} s under --max-seconds {limit}"
    return out, err


def test_a_deadline_counts_from_the_command_start_and_records_what_it_cut():
    with _deadline.command_started():
        time.sleep(0.05)
        with _deadline.limit(1.0) as deadline:
            assert 0.9 < deadline.left() < 0.96 and _deadline.active() is deadline
            with _deadline.limit(5.0) as inner:  # the command's limit stays in force
                assert inner is deadline
            deadline.cut("fitting stopped")
            assert deadline.report() == {"max_seconds": 1.0, "stopped_by_time_limit": True,
                                         "time_limit_cuts": ["fitting stopped"]}
    assert not _deadline.active().bounded and _deadline.active().report() == {}


def test_fit_with_max_seconds_writes_its_field_within_the_limit(cli, tmp_path):
    out, err = within_limit(cli, ["fit", "sample:camera", "--max-size", "96", "--steps", "1000000", "--device", "cpu",
                                  "--quiet", "--out", tmp_path / "F"])
    metrics = json.loads((tmp_path / "F" / "metrics.json").read_text())
    assert metrics["stopped_by_time_limit"] and metrics["max_seconds"] == S and metrics["steps"] < 1000000
    assert "--max-seconds 3: fitting stopped" in err
    assert (tmp_path / "F" / "config.json").is_file()


def extendable(cli, tmp_path):
    """A small partitioned field DIR and a signal twice as wide that holds its own: (DIR, INPUT)."""
    from fieldlab.signals import load_signal, write_image

    assert cli(["fit", "sample:camera", "--max-size", "32", "--field", "local-global", "--partitions", "2,2", "--steps", "2",
                "--hidden-dim", "4", "--global-dim", "8", "--device", "cpu",
                "--quiet", "--out", tmp_path / "A"])[0] == 0
    raw = load_signal("sample:camera", max_size=32)
    pixels = raw.info.normalization.decode(raw.values)[..., 0]
    write_image(tmp_path / "wide.png", np.concatenate([pixels, pixels[:, ::-1]], axis=1)[..., None])
    return tmp_path / "A", tmp_path / "wide.png"


def test_extend_with_max_seconds_writes_its_field_within_the_limit(cli, tmp_path):
    within_limit(cli, ["extend", *extendable(cli, tmp_path), "--steps", "1000000", "--device", "cpu",
                       "--quiet", "--out", tmp_path / "C"])
    metrics = json.loads((tmp_path / "C" / "metrics.json").read_text())
    assert metrics["stopped_by_time_limit"] and metrics["steps"] < 1000000


def test_train_sdf_with_max_seconds_writes_its_run_within_the_limit(cli, tmp_path):
    out, err = within_limit(cli, ["train-sdf", "--scenes", "10", "--steps", "1000000", "--num-points", "27",
                                  "--num-queries", "16", "--batch-size", "4", "--channels", "4", "--device", "cpu",
                                  "--out", tmp_path / "R"])
    metrics = json.loads((tmp_path / "R" / "run.json").read_text())["metrics"]
    assert metrics["stopped_by_time_limit"] and metrics["steps"] < 1000000
    assert "--max-seconds 3: training stopped" in err
    # A run the limit cut keeps its checkpoint at the cut, so --resume goes on from there (as train's does).
    assert (tmp_path / "R" / "checkpoint.pt").is_file()
    out, err = within_limit(cli, ["train-sdf", "--scenes", "10", "--steps", "1000000", "--num-points", "27",
                                  "--num-queries", "16", "--batch-size", "4", "--channels", "4", "--device", "cpu",
                                  "--out", tmp_path / "R", "--resume"])
    assert f"resuming from step {metrics['steps']}/" in out + err
    assert json.loads((tmp_path / "R" / "run.json").read_text())["metrics"]["steps"] > metrics["steps"]


def test_train_with_max_seconds_writes_its_run_within_the_limit(cli, tmp_path):
    assert cli(["fit-dataset", "sample:digits", "--limit", "10", "--chunk-fields", "10", "--steps", "2", "--device", "cpu",
                "--quiet", "--out", tmp_path / "S"])[0] == 0
    out, err = within_limit(cli, ["train", tmp_path / "S", "--net", "dinet2", "--channels", "4", "--steps", "1000000",
                                  "--batch-size", "4", "--num-points", "16", "--device", "cpu", "--quiet",
                                  "--out", tmp_path / "R"])
    metrics = json.loads((tmp_path / "R" / "run.json").read_text())["metrics"]
    assert metrics["stopped_by_time_limit"] and metrics["max_seconds"] == S and metrics["steps"] < 1000000
    assert "test_accuracy" in metrics and (tmp_path / "R" / "checkpoint.pt").is_file()
    assert "--max-seconds 3: training stopped" in err


def test_fit_dataset_with_max_seconds_begins_no_chunk_it_cannot_finish_and_resumes(cli, tmp_path):
    from fieldlab.store.field_store import FieldStore

    args = ["fit-dataset", "sample:digits", "--limit", "400", "--chunk-fields", "8", "--steps", "100", "--target-psnr",
            "0", "--device", "cpu", "--quiet", "--out", tmp_path / "S"]
    out, err = within_limit(cli, args)
    summary = FieldStore(tmp_path / "S").summary()
    assert 0 < summary["complete"] < 400 and summary["complete"] % 8 == 0  # whole chunks only
    assert "the store is incomplete (--resume fits the rest)" in err
    status, _, err = cli(args + ["--resume", "--max-seconds", str(S)])  # 1 s left no chunk on a loaded CI machine
    assert status == 0, err
    assert FieldStore(tmp_path / "S").summary()["complete"] > summary["complete"]  # at least one more chunk


def test_eval_with_max_seconds_writes_a_partial_table_that_marks_what_it_did_not_measure(cli, tmp_path):
    assert cli(["fit-dataset", "sample:digits", "--limit", "10", "--chunk-fields", "10", "--steps", "2", "--device", "cpu",
                "--quiet", "--out", tmp_path / "S"])[0] == 0
    assert cli(["train", tmp_path / "S", "--net", "dinet2", "--channels", "4", "--steps", "2", "--batch-size", "4",
                "--num-points", "16", "--device", "cpu", "--quiet", "--out", tmp_path / "R"])[0] == 0
    out, err = within_limit(cli, ["eval", tmp_path / "R", tmp_path / "S", "--resolutions", "4,8,16,32,64",
                                  "--draws", "100000", "--device", "cpu"])
    assert "--max-seconds 3: eval stopped:" in err and "time limit" in out
    cells = json.loads((tmp_path / "R" / "eval.json").read_text())["cells"]
    trained = next(c for c in cells if (c["test"], c["resolution"]) == ("rqmc", 4))  # scored first, and kept
    assert 0 < trained["draws"] < 100000 and trained["accuracy"] is not None
    assert any(c["accuracy"] is None and c["resolution"] == 64 for c in cells)
    assert json.loads((tmp_path / "R" / "eval.config.json").read_text())["max_seconds"] == S


def test_a_miner_fit_with_max_seconds_stops_its_scales_in_time_and_says_so(cli, tmp_path):
    out, err = within_limit(cli, ["fit", "sample:camera", "--max-size", "128", "--field", "miner", "--steps", "1000000",
                                  "--device", "cpu", "--quiet", "--out", tmp_path / "F"])
    metrics = json.loads((tmp_path / "F" / "metrics.json").read_text())
    assert metrics["stopped_by_time_limit"] and metrics["max_seconds"] == S and metrics["steps"] < 1000000
    assert "--max-seconds 3: fitting stopped" in err and (tmp_path / "F" / "blocks.png").is_file()


def test_a_mesh_fit_with_max_seconds_leaves_time_for_its_surface(cli, tmp_path, bumpy_mesh):
    # the final evaluation (held-out points, the marching-cubes grid) is what the fit must leave time for
    for field, size in (("siren", ["--hidden-dim", "16"]), ("miner", ["--hidden-dim", "8", "--scales", "2"])):
        out, err = within_limit(cli, ["fit", bumpy_mesh.path, "--field", field, *size, "--steps", "1000000",
                                      "--points", "4096", "--eval-points", "4096", "--resolution", "64",
                                      "--chamfer-points", "2000", "--device", "cpu", "--quiet", "--out", tmp_path / field],
                                limit=5)
        metrics = json.loads((tmp_path / field / "metrics.json").read_text())
        assert metrics["stopped_by_time_limit"] and 0 < metrics["steps"] < 1000000, field
        assert "--max-seconds 5: fitting stopped" in err


def test_fit_dataset_costs_a_chunk_from_the_chunks_so_far_not_the_first_alone():
    from types import SimpleNamespace

    import torch

    from fieldlab.fit.dataset_job import _fit_chunks

    seconds = [0.05] + [0.4] * 9  # the first chunk is quick, the later ones are slower

    class Writer:
        def chunk_rows(self, chunk):
            return list(range(4 * chunk, 4 * chunk + 4))

        def write_chunk(self, chunk, **columns):
            pass

    class Fitter:  # a DatasetFitter's interface
        steps_of_fit = False

        def fit(self, coords, values, rows, progress=None):
            time.sleep(seconds[rows[0] // 4])
            return SimpleNamespace(params={}, psnr=[30.0] * len(rows), steps=[1] * len(rows))

    rows_of = SimpleNamespace(values=lambda rows: torch.zeros(len(rows), 1),
                              columns=lambda rows: {"source_index": np.asarray(rows)})
    deadline = _deadline.Deadline(1.0)
    _fit_chunks(list(range(10)), Writer(), Fitter(), rows_of, None, np.zeros(40, bool), False, deadline=deadline)
    assert deadline.cuts and deadline.elapsed() < 1.0  # the first chunk's cost alone began one at 0.85 s


def test_the_cpu_budget_is_recorded_where_it_applies_and_quiet_or_a_user_error_do_not_print_it(cli, tmp_path):
    from fieldlab.fit.device_defaults import CPU_MAX_SECONDS

    field, wide = extendable(cli, tmp_path)
    status, out, err = cli(["extend", field, wide, "--steps", "2", "--device", "cpu", "--quiet", "--out", tmp_path / "C"])
    assert status == 0 and "CPU" not in err, err
    assert json.loads((tmp_path / "C" / "config.json").read_text())["max_seconds"] == CPU_MAX_SECONDS
    status, out, err = cli(["extend", field, wide, "--steps", "2", "--device", "cpu", "--resume", "--out", tmp_path / "D"])
    assert status == 2 and err.startswith("fieldlab: error: --resume") and len(err.splitlines()) == 1, err
    status, out, err = cli(["train-sdf", "--scenes", "10", "--steps", "2", "--num-points", "27", "--num-queries", "16",
                            "--batch-size", "4", "--channels", "4", "--device", "cpu", "--quiet", "--out", tmp_path / "R"])
    assert status == 0 and "CPU" not in err, err
    assert json.loads((tmp_path / "R" / "config.json").read_text())["max_seconds"] == CPU_MAX_SECONDS


def test_a_command_run_as_its_own_program_counts_its_limit_from_its_imports():
    """`fieldlab …` as a process counts --max-seconds from when it began to import fieldlab (torch's seconds
    of imports are on the user's clock too); a call inside a program counts from the call."""
    from fieldlab._deadline import IMPORTED, command_started, limit

    with command_started(since=time.perf_counter() - 3.0), limit(5.0) as deadline:
        assert 1.5 < deadline.left() <= 2.0
    with command_started(), limit(5.0) as deadline:
        assert 4.5 < deadline.left() <= 5.0
    assert IMPORTED < time.perf_counter()


def test_a_fit_whose_evaluation_takes_a_part_writes_its_field_and_says_what_it_left_out(tmp_path, cli, monkeypatch):
    from fieldlab.fit import loop

    monkeypatch.setattr(loop.Fitter, "final_samples", lambda self, total: total // 7)
    status, _, err = cli(["fit", "sample:camera", "--max-size", "32", "--field", "siren", "--steps", "20",
                          "--device", "cpu", "--out", tmp_path / "F"])
    assert status == 0, err
    metrics = json.loads((tmp_path / "F" / "metrics.json").read_text())
    assert metrics["evaluated_samples"] == 32 * 32 // 7 and 5 < metrics["psnr"] < 60 and "ssim" not in metrics
    assert "evenly spread of the 1,024 samples" in err and "`fieldlab render`" in err
    files = {p.name for p in (tmp_path / "F").iterdir()}
    assert {"field.safetensors", "metrics.json", "training.png"} <= files
    assert not any(name.startswith(("reconstruction", "error")) for name in files)
    status, _, err = cli(["render", tmp_path / "F", "--out", tmp_path / "r.png"])
    assert status == 0 and (tmp_path / "r.png").is_file(), err
