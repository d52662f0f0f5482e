"""Command-line numbers and config files are checked before anything is built or written, and a fit that
goes non-finite stops in one line instead of writing a NaN field (issue 19)."""

import imageio.v3 as iio
import numpy as np
import pytest
import torch

from fieldlab import UserError
from fieldlab.cli.main import main


@pytest.fixture
def gray_png(tmp_path):
    path = tmp_path / "in.png"
    iio.imwrite(path, (np.arange(64, dtype=np.uint8).reshape(8, 8) * 4))
    return path


def refused(capsys, tmp_path, *args):
    """Runs `fieldlab ARGS`, which must fail in one line with exit 2 and write nothing in tmp_path."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    err = capsys.readouterr().err
    assert exit_.value.code == 2, err
    assert err.startswith("fieldlab: error:") and err.count("\n") == 1, err
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return err


def fit_args(gray_png, tmp_path, *extra):
    return ("fit", gray_png, "--out", tmp_path / "out", "--steps", "2", "--device", "cpu", "--quiet", *extra)


NUMBERS = {
    "--seed 10**23": (("--seed", str(10**23)), "--seed must be between"),
    "--steps 0": (("--steps", "0"), "--steps must be between"),
    "--max-seconds inf": (("--max-seconds", "inf"), "--max-seconds must be a finite number"),
    "--max-seconds -1": (("--max-seconds", "-1"), "--max-seconds must be between"),
    "--target-psnr nan": (("--target-psnr", "nan"), "--target-psnr must be a finite number"),
    "--lr nan": (("--lr", "nan"), "--lr must be a finite number"),
    "--lr -1": (("--lr", "-1"), "--lr must be between"),
    "--batch-size -5": (("--batch-size", "-5"), "--batch-size must be between"),
    "--sample-fraction 2": (("--sample-fraction", "2"), "--sample-fraction must be between"),
    "--params 10**10": (("--params", str(10**10)), "--params must be between 1 and 1,000,000,000"),
    "--params 0": (("--params", "0"), "--params must be between"),
    "--max-size 0": (("--max-size", "0"), "--max-size must be between"),
    "--omega0 1e30": (("--omega0", "1e30"), "--omega0 must be at most"),
    "--hidden-dim 10**9": (("--hidden-dim", str(10**9)), "--hidden-dim must be at most"),
    "--num-layers 10**6": (("--num-layers", str(10**6)), "--num-layers must be at most"),
}


@pytest.mark.parametrize("case", NUMBERS)
def test_an_absurd_or_non_finite_number_is_refused_before_fitting(gray_png, tmp_path, capsys, case):
    extra, message = NUMBERS[case]
    assert message in refused(capsys, tmp_path, *fit_args(gray_png, tmp_path, *extra))


def test_a_legal_params_budget_beyond_free_memory_is_one_line_not_a_hang(gray_png, tmp_path, capsys, monkeypatch):
    import fieldlab._validate

    monkeypatch.setattr(fieldlab._validate, "available_memory", lambda: 2**20)
    monkeypatch.setattr(fieldlab._validate, "SMALL_BYTES", 0)
    err = refused(capsys, tmp_path, *fit_args(gray_png, tmp_path, "--params", "1000000"))
    assert "of memory; this machine has 1.0 MB free" in err


@pytest.mark.parametrize("content, suffix, message", [
    (b"\x00\xff\xfe\x89binary", ".json", "not UTF-8"),
    (b"\x00\xff\xfe\x89binary", ".toml", "not UTF-8"),
    (b"steps = = 3", ".toml", "not valid TOML"),
    (b"[1, 2, 3]", ".json", "holds a list"),
    (b'{"lr": NaN}', ".json", "--lr must be a finite number"),
])
def test_a_damaged_config_file_is_one_line(gray_png, tmp_path, capsys, content, suffix, message):
    config = tmp_path / f"options{suffix}"
    config.write_bytes(content)
    assert message in refused(capsys, tmp_path, *fit_args(gray_png, tmp_path, "--config", config))


def _nan_loss(self, prediction, target):
    return (prediction.to(target.dtype) - target).square().mean() * torch.nan


def diverged(capsys, tmp_path, *args) -> str:
    """Runs `fieldlab ARGS`, which must stop with a one-line error found while fitting, write nothing in
    tmp_path, and return that line. The input was accepted, so the log's notes (the CPU time budget) may
    come first."""
    before = sorted(p.name for p in tmp_path.iterdir())
    with pytest.raises(SystemExit) as exit_:
        main([str(a) for a in args])
    lines = capsys.readouterr().err.splitlines()
    assert exit_.value.code == 2 and lines[-1].startswith("fieldlab: error:"), lines
    assert all(line.startswith("fieldlab: ") for line in lines), lines
    assert sorted(p.name for p in tmp_path.iterdir()) == before
    return lines[-1]


def test_a_fit_whose_loss_goes_nan_stops_in_one_line_and_writes_no_field(gray_png, tmp_path, capsys, monkeypatch):
    from fieldlab.fit.loop import Fitter

    monkeypatch.setattr(Fitter, "loss", _nan_loss)
    err = diverged(capsys, tmp_path, *fit_args(gray_png, tmp_path, "--log-every", "1", "--kernel", "reference",
                                                          "--hidden-dim", "4"))
    assert "the fit diverged at step 1 (loss is nan)" in err and "--lr" in err


def test_a_fit_stopped_between_loss_checks_with_nan_values_writes_no_field(gray_png, tmp_path, capsys, monkeypatch):
    from fieldlab.fit.loop import Fitter

    monkeypatch.setattr(Fitter, "loss", _nan_loss)
    err = diverged(capsys, tmp_path, *fit_args(gray_png, tmp_path, "--log-every", "1000", "--steps", "3",
                                                          "--hidden-dim", "4"))
    assert "the fit diverged at step 3" in err


def test_a_dataset_batch_with_one_diverging_field_names_its_row_and_returns_nothing(monkeypatch):
    from fieldlab.fields import make_config
    from fieldlab.fit.batched import BatchedFitConfig, fit_batch
    from fieldlab.fit.engine import StackEngine

    def loss(self, stack, x, y):  # the field in position 1 gets a NaN loss; the others stay finite
        weights = torch.ones(len(y))
        weights[1] = torch.nan
        return ((stack(x).float() - y).square().mean(dim=(1, 2)) * weights).sum()

    monkeypatch.setattr(StackEngine, "_loss", loss)
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=4, num_layers=1)
    coords = torch.rand(16, 2) * 2 - 1
    values = torch.rand(3, 16, 1)
    with pytest.raises(UserError, match=r"the fits of 1 of 3 fields diverged \(rows 11:"):
        fit_batch(config, coords, values, [10, 11, 12],
                  BatchedFitConfig(steps=3, device="cpu", kernel="reference", target_psnr=0))


def test_render_at_an_absurd_size_is_refused_before_allocating(tmp_path, capsys):
    from fieldlab.fields import make_config
    from fieldlab.signals import Signal
    from fieldlab.store import FieldDirWriter, write_field

    signal = Signal.from_array(np.zeros((4, 4), np.float32), kind="image", channel_axis=False)
    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=4, num_layers=1)
    with FieldDirWriter(tmp_path / "f") as folder:
        write_field(folder, config.build(), config, signal.info, {})
    err = refused(capsys, tmp_path, "render", tmp_path / "f", "--out", tmp_path / "big.png", "--size", "100000",
                  "100000")
    assert "--size 100000x100000 is too large" in err
