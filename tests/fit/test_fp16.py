"""--precision fp16: autocast with a dynamic loss scale on the reference path, refused where it cannot run."""

import copy
import math

import pytest
import torch

from fieldlab.cli.main import main
from fieldlab.fields import make_config
from fieldlab.fit import FitConfig, Fitter

CONFIG = make_config("siren", in_dim=2, out_dim=1, hidden_dim=32, num_layers=2)


def _signal(side=24):
    axis = torch.linspace(-1, 1, side)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    values = torch.sin(3 * coords[:, :1]) * torch.cos(2 * coords[:, 1:]) * 0.8
    return coords, values


def _fitter(precision, steps=60):
    torch.manual_seed(0)
    coords, values = _signal()
    return Fitter(CONFIG.build(), coords, values, FitConfig(steps=steps, device="cpu", precision=precision,
                                                            batch_size=0, max_seconds=0), lr=1e-3)


def _psnr(fitter):
    return -10 * math.log10(float((fitter.predict() - fitter.values).square().mean()) / 4)


def test_fp16_scales_the_loss_and_fits_as_well_as_fp32():
    runs = {}
    for precision in ("fp32", "fp16"):
        fitter = _fitter(precision)
        while not fitter.should_stop():
            fitter.step()
        runs[precision] = fitter
    assert runs["fp32"].scaler is None
    scaler = runs["fp16"].scaler
    assert scaler is not None and math.isfinite(scaler.get_scale()) and scaler.get_scale() > 1
    assert _psnr(runs["fp16"]) > _psnr(runs["fp32"]) - 1.0
    assert _psnr(runs["fp16"]) > 20  # it learned: an unscaled fp16 fit that flushed its gradients would not


def test_an_fp16_fit_resumes_with_its_loss_scale():
    whole = _fitter("fp16", steps=20)
    whole.run(0, 10)
    state = copy.deepcopy(whole.state_dict())  # as a checkpoint file holds it
    assert "scaler" in state
    whole.run(10, 20)
    resumed = _fitter("fp16", steps=20)
    resumed.load_state_dict(state)
    assert resumed.scaler.get_scale() == state["scaler"]["scale"]
    resumed.run(10, 20)
    for a, b in zip(whole.field.parameters(), resumed.field.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("extra", [["--field", "miner"], ["--kernel", "fused"]])
def test_fp16_is_refused_in_one_line_where_it_cannot_run(tmp_path, capsys, extra):
    out = tmp_path / "field"
    with pytest.raises(SystemExit) as e:
        main(["fit", "sample:camera", "--max-size", "16", "--precision", "fp16", "--steps", "2", *extra,
              "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) >= 1 and err[-1].startswith("fieldlab: error:") and "fp16" in err[-1]
    assert not [line for line in err if line.startswith("Traceback")]
    assert not out.exists()


@pytest.mark.parametrize("scaled", [True, False])
def test_fp16_keeps_gradients_that_fp16_alone_flushes_to_zero(scaled):
    """Residuals of 1e-4 over 65,536 points: each output's gradient (3e-9) is below fp16's smallest number."""
    torch.manual_seed(0)
    coords = torch.rand(65_536, 2) * 2 - 1
    field = CONFIG.build()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        values = field(coords).float() + 1e-4 * torch.sign(torch.randn(65_536, 1))
    fitter = Fitter(field, coords, values, FitConfig(steps=1, device="cpu", precision="fp16", batch_size=0,
                                                     max_seconds=0), lr=1e-3)
    if not scaled:  # the control: what fp16 autocast does without the loss scale
        fitter.scaler = None
    before = [p.detach().clone() for p in field.parameters()]
    fitter.step()
    moved = any(not torch.equal(a, b) for a, b in zip(before, fitter.field.parameters()))
    assert moved == scaled


def test_fp16_is_refused_for_a_dataset_of_fields():
    from fieldlab._errors import UserError
    from fieldlab.fit.batched import BatchedFitConfig

    with pytest.raises(UserError, match="fp16"):  # its stack's steps keep no loss scale
        BatchedFitConfig(precision="fp16").validate()
