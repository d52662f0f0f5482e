"""Device-aware defaults (issue 22): on a CPU an unset time limit and batch size are chosen for the device and
said in the log; on a GPU they stay today's (no limit, every sample); a given value is always kept."""

import json

import pytest
import torch

from fieldlab.fit import FitConfig
from fieldlab.fit.device_defaults import (CPU_MAX_SECONDS, device_defaults, resolve_batch, resolve_fit_config,
                                         resolve_max_seconds)


def test_a_cpu_gets_a_time_budget_and_a_gpu_keeps_none():
    assert device_defaults("cpu").max_seconds == CPU_MAX_SECONDS == 120
    assert device_defaults(torch.device("cuda")).max_seconds == 0
    assert device_defaults("cuda:1").points_per_step(10**7, 10**6) == 0  # a GPU: the full batch


def test_a_large_fit_on_a_cpu_takes_mini_batches_and_a_small_one_its_full_batch(caplog):
    # The README's photo: 512² with a 200k-parameter field; camera at 128² with a 16k-parameter SIREN.
    with caplog.at_level("INFO", logger="fieldlab"):
        photo = resolve_fit_config(FitConfig(), "cpu", points=512 * 512, params=200_000)
    assert photo.batch_size == 4096 and photo.max_seconds == 120
    assert "4,096 of 262,144 points per step; --batch-size 0 for every point" in caplog.text
    assert resolve_fit_config(FitConfig(), "cpu", points=128 * 128, params=16_057).batch_size == 0
    assert resolve_fit_config(FitConfig(), "cuda", points=512 * 512, params=200_000).batch_size == 0


def test_given_values_are_kept_on_a_cpu_zero_included():
    given = FitConfig(max_seconds=0.0, batch_size=0)
    assert resolve_fit_config(given, "cpu", points=512 * 512, params=200_000) == given
    fraction = resolve_fit_config(FitConfig(sample_fraction=0.05), "cpu", points=10**7, params=10**6)
    assert fraction.batch_size == 0 and fraction.sample_fraction == 0.05
    assert resolve_max_seconds(30.0, "cpu") == 30.0


def test_an_unset_batch_size_stays_unset_where_the_points_are_not_known():
    # A field's own trainer (MINER) chooses its batches: only the time limit is resolved for it.
    resolved = resolve_fit_config(FitConfig(), "cpu")
    assert resolved.batch_size is None and resolved.max_seconds == 120


def test_fit_on_a_cpu_states_its_time_budget_and_records_it(tmp_path, cli):
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--steps", "5", "--device", "cpu",
                             "--out", tmp_path / "cam"])
    assert status == 0, stderr
    assert "CPU: stopping after 120 s; --max-seconds 0 for no limit" in stderr
    assert json.loads((tmp_path / "cam" / "config.json").read_text())["max_seconds"] == 120
    # --quiet keeps its one line per phase: the budget is in config.json (and said if it stops the fit)
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--steps", "5", "--device", "cpu",
                             "--quiet", "--out", tmp_path / "quiet"])
    assert status == 0 and "stopping after" not in stderr, stderr
    assert json.loads((tmp_path / "quiet" / "config.json").read_text())["max_seconds"] == 120


def test_fit_with_max_seconds_zero_has_no_limit_on_a_cpu(tmp_path, cli):
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--steps", "5", "--device", "cpu",
                             "--quiet", "--max-seconds", "0", "--out", tmp_path / "cam"])
    assert status == 0, stderr
    assert "stopping after" not in stderr
    assert json.loads((tmp_path / "cam" / "config.json").read_text())["max_seconds"] == 0


def test_the_library_fit_bounds_an_unset_time_limit_on_a_cpu(caplog):
    import fieldlab

    signal = fieldlab.load_signal("sample:camera", max_size=16)
    config = fieldlab.make_config("siren", in_dim=2, out_dim=1, hidden_dim=8)
    with caplog.at_level("INFO", logger="fieldlab"):
        result = fieldlab.fit(signal, config, FitConfig(steps=3, device="cpu"))
    assert result.metrics["steps"] == 3
    assert "CPU: stopping after 120 s" in caplog.text


@pytest.mark.parametrize("seconds, expected", [(None, 120.0), (0.0, 0.0), (7.0, 7.0)])
def test_train_sdf_takes_the_cpu_time_budget_unless_given(seconds, expected):
    from fieldlab.learn.sdf import SDFConfig

    config = SDFConfig() if seconds is None else SDFConfig(max_seconds=seconds)
    config.validate()
    assert resolve_max_seconds(config.max_seconds, "cpu") == expected


def test_the_cpu_time_budget_bounds_the_whole_fit_command(tmp_path, cli, monkeypatch):
    import time

    from fieldlab.fit import device_defaults

    monkeypatch.setattr(device_defaults, "CPU_MAX_SECONDS", 3.0)  # the default budget, shortened for the suite
    began = time.perf_counter()
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "32", "--steps", "1000000", "--device", "cpu",
                             "--quiet", "--out", tmp_path / "cam"])
    assert status == 0, stderr
    assert time.perf_counter() - began < 3.0 * 1.1 + 5
    metrics = json.loads((tmp_path / "cam" / "metrics.json").read_text())
    assert metrics["max_seconds"] == 3.0 and metrics["steps"] < 1000000


def test_the_memory_check_counts_the_cpu_mini_batch_not_the_full_signal(tmp_path, cli, monkeypatch):
    """A photo too large for one full step was refused by the memory check before the CPU's mini-batch was
    chosen (a 6000x4000 PNG: 274.7 GB asked for 24M points per step, where 4,096 fit in 51 MB)."""
    import importlib

    job = importlib.import_module("fieldlab.fit.job")
    asked = []
    monkeypatch.setattr(job, "check_fit_memory", lambda config, points, device: asked.append(points))
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "128", "--params", "100000", "--steps", "1",
                             "--device", "cpu", "--quiet", "--out", tmp_path / "cam"])
    assert status == 0, stderr
    assert asked and asked[0] < 128 * 128, asked


@pytest.mark.parametrize("precision, note", [("fp16", "several times slower than fp32"), ("tf32", "run in fp32"),
                                             ("bf16", None), ("fp32", None)])
def test_a_gpu_precision_on_the_cpu_says_what_it_does_there(caplog, precision, note):
    """fp16 on the CPU ran a SIREN 4.4× slower than fp32 without a word, and tf32 is fp32 there: one line says so;
    on a GPU nothing is said."""
    with caplog.at_level("INFO", logger="fieldlab"):
        resolve_fit_config(FitConfig(precision=precision, max_seconds=0), "cpu")
        said = [r.message for r in caplog.records if "--precision" in r.message]
        resolve_fit_config(FitConfig(precision=precision, max_seconds=0), "cuda")
    assert [r.message for r in caplog.records if "--precision" in r.message] == said
    assert (said == []) if note is None else (len(said) == 1 and note in said[0])


@pytest.mark.parametrize("options, words", [
    (["--hidden-dim", "16"], "--kernel fused needs a CUDA device"),
    (["--hidden-dim", "256"], "this siren field (4×256, 2 in, 1 out)"),  # past the kernel's limits: by what
])
def test_a_refused_kernel_is_the_only_line_before_the_time_limit_note(tmp_path, cli, monkeypatch, options, words):
    from fieldlab.kernels import fused

    monkeypatch.setattr(fused, "interpreted", lambda: False)  # the kernel tests may have turned it on in-process
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--device", "cpu", "--kernel", "fused",
                             *options, "--out", tmp_path / "cam"])
    assert status == 2 and words in stderr and len(stderr.strip().splitlines()) == 1, stderr
    assert not (tmp_path / "cam").exists()


def test_a_gpu_fit_left_to_choose_its_batch_takes_as_many_points_as_its_memory_fits(monkeypatch):
    """Every point per step is a GPU's default; where their fit would not fit its free memory (a 10-s 512²
    video: about 1,800 GB on an H100), the largest power of two that fits is taken instead of a refusal."""
    from fieldlab.fields import make_config
    from fieldlab.fit import device_defaults as defaults

    free = 8 * 2**30
    monkeypatch.setattr(torch.cuda, "mem_get_info", lambda device=None: (free, 2 * free))
    config = make_config("siren", in_dim=3, out_dim=3, hidden_dim=256, num_layers=3)
    points = 600 * 512 * 512

    def fitting_batch(points, device):
        return resolve_batch(FitConfig(), device, points, config.num_params(), fit_bytes=config.fit_bytes).batch_size

    size = fitting_batch(points, "cuda")
    assert size & (size - 1) == 0 and size < points
    assert config.fit_bytes(size) <= defaults.MEMORY_SHARE * free < config.fit_bytes(2 * size)
    assert fitting_batch(4096, "cuda") == 0  # a signal that fits keeps every point
    assert fitting_batch(points, "cpu") == defaults.device_defaults("cpu").points_per_step(points, config.num_params())


def test_fit_dataset_takes_a_cpu_subset_only_where_a_step_of_its_chunk_exceeds_the_budget():
    from fieldlab.fit.device_defaults import dataset_sample_fraction

    # 16 photos of 512² with SIREN 2×32: 2^30 // (16 · 1,251) = 53,643 → 32,768 of 262,144 samples
    assert dataset_sample_fraction("cpu", 512 * 512, 16, 1251) == 32768 / 262144
    # a chunk of 256 such photos: at least 4,096 samples each, however many fields share the step
    assert dataset_sample_fraction("cpu", 512 * 512, 256, 1251) == 4096 / 262144
    assert dataset_sample_fraction("cpu", 64 * 64, 256, 1251) == 0.0  # within the budget: every sample
    assert dataset_sample_fraction("cpu", 8 * 8, 4096, 1251) == 0.0
    assert dataset_sample_fraction("cuda", 512 * 512, 4096, 1251) == 0.0  # a GPU: every sample
