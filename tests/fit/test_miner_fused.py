"""MINER's blocks stepped by the fused Triton kernel (`ScaleTrainer(kernel=...)`, `fit --field miner --kernel
fused`) against the reference path, with the kernel run through Triton's interpreter on the CPU (as
tests/kernels/test_fused.py)."""

from __future__ import annotations

import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import make_config
from fieldlab.fields.miner import BlockNet
from fieldlab.fit import FitConfig
from fieldlab.fit import miner as M
from fieldlab.fit.miner_place import Placement

from fieldlab.kernels import fused  # noqa: E402
fused.use_interpreter()  # before anything imports the kernels compiled

SIZE, MARGIN = 6, 1
SAMPLES = (SIZE + 2 * MARGIN) ** 2


def _trainers(net: BlockNet, blocks: int = 5, max_blocks: int | None = None):
    """A reference and a fused trainer of the same blocks and targets (6×6 samples and a margin of 1)."""
    torch.manual_seed(0)
    params = net.init(blocks, scale=0)
    target = 0.3 * torch.randn(blocks, SAMPLES, net.out_dim)
    stop = torch.full((blocks,), 1e-9)

    def trainer(kernel):
        place = Placement(torch.device("cpu"))
        if max_blocks:  # as a streaming fit whose targets reach the device a few blocks at a time
            place.max_blocks = max_blocks
        return M.ScaleTrainer(net, torch.arange(blocks), params, target, stop, lr=1e-2, place=place,
                              margin=MARGIN, kernel=kernel)

    return trainer(None), trainer(net.fused_spec())


def _close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float = 1e-5) -> None:
    assert a.keys() == b.keys()
    for name in a:
        assert a[name].shape == b[name].shape, name
        assert torch.allclose(a[name], b[name], atol=tolerance, rtol=0), (name, float((a[name] - b[name]).abs().max()))


@pytest.mark.parametrize("frequencies,max_blocks", [(0, None), (2, None), (0, 2)])
def test_the_kernel_steps_blocks_as_the_reference_does(frequencies, max_blocks):
    """Same losses, parameters and block errors after a few steps on shared positions and on whole blocks;
    with a positional encoding (whose sine and cosine rows the kernel keeps in the other order), and with the
    targets brought over two blocks at a time."""
    net = BlockNet(2, 3, 8, 2, "sine", 30.0, frequencies)
    reference, kernel = _trainers(net, max_blocks=max_blocks)
    assert (reference.name, kernel.name) == ("reference", "fused")
    draws = torch.Generator().manual_seed(1)
    for step in range(4):
        positions = None if step == 3 else torch.randint(0, SAMPLES, (20,), generator=draws)
        a, b = reference.step(positions, 1e-2), kernel.step(positions, 1e-2)
        assert abs(float(a) - float(b)) < 1e-5 * float(a)
    _close(reference.parameters(), kernel.parameters())
    assert torch.allclose(reference.block_errors(), kernel.block_errors(), rtol=1e-4)
    assert not torch.equal(kernel.parameters()["w1"], net.init(5, scale=0)["w1"])  # it did train


def test_blocks_retire_from_the_kernel_and_the_scale_comes_out_whole():
    net = BlockNet(2, 1, 4, 1, "sine", 30.0, 0)
    reference, kernel = _trainers(net, blocks=4)
    for trainer in (reference, kernel):
        trainer.stop = torch.tensor([1e9, 0.0, 1e9, 0.0])
        trainer.step(None, 1e-2)
        assert trainer.retire(trainer.block_errors()) == 2 and len(trainer) == 2
    assert len(kernel.stack) == 2 and kernel.stack.m.shape[0] == 2  # its Adam moments left with the blocks
    for _ in range(2):
        reference.step(None, 1e-2), kernel.step(None, 1e-2)
    (index_a, params_a, errors_a), (index_b, params_b, errors_b) = reference.finish(), kernel.finish()
    assert index_a.tolist() == index_b.tolist() == [0, 1, 2, 3]
    _close(params_a, params_b)
    assert torch.allclose(errors_a, errors_b, rtol=1e-4)


@pytest.mark.parametrize("saved_by", ["fused", "reference"])
def test_a_scale_saved_by_one_path_resumes_on_the_other(saved_by):
    """The state (parameters and Adam's moments, in torch's format) carries over between the paths: the
    resumed trainer's next steps are the uninterrupted one's."""
    net = BlockNet(2, 2, 8, 2, "sine", 30.0, 0)
    reference, kernel = _trainers(net)
    saver, other = (kernel, reference) if saved_by == "fused" else (reference, kernel)
    for _ in range(3):
        saver.step(None, 1e-2)
    other.load_state_dict(saver.state_dict())
    assert other.name != saver.name
    for _ in range(2):
        a, b = saver.step(None, 1e-2), other.step(None, 1e-2)
        assert abs(float(a) - float(b)) < 1e-5 * float(a)
    _close(saver.parameters(), other.parameters())


def test_a_pyramid_fitted_by_the_kernel_matches_the_reference(camera32):
    """fit_pyramid with --kernel fused against --kernel reference on the same image and draws: the same
    blocks kept and retired, the same PSNR to a few thousandths of a dB, and the path named in the metrics."""
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=8, num_layers=2)
    train = M.MinerTrainConfig(check_every=5, stop_mse=2e-3)  # some blocks of the finer scale retire
    results = {kernel: M.fit(camera32, config, FitConfig(steps=20, batch_size=32, lr=1e-2, device="cpu",
                                                         kernel=kernel), train=train)
               for kernel in ("reference", "fused")}
    a, b = results["reference"].metrics, results["fused"].metrics
    assert (a["kernel"], b["kernel"]) == ("reference", "fused")
    assert a["blocks_per_scale"] == b["blocks_per_scale"] == [4, 16]
    assert a["blocks_retired_per_scale"] == b["blocks_retired_per_scale"] and sum(b["blocks_retired_per_scale"]) > 0
    assert abs(a["psnr"] - b["psnr"]) <= 0.002 and a["psnr"] > 15, (a["psnr"], b["psnr"])


def test_the_kernel_is_refused_in_one_line_for_gaussian_blocks(tmp_path, cli):
    with pytest.raises(UserError, match="--kernel fused steps miner's sine blocks, not gauss"):
        M.fit_pyramid(torch.zeros(8, 8, 1), make_config("miner", in_dim=2, out_dim=1, scales=1, block_size=8,
                                                        activation="gauss"),
                      FitConfig(steps=1, device="cpu", kernel="fused"))
    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--field", "miner", "--scales", "1",
                             "--activation", "gauss", "--steps", "1", "--device", "cpu", "--quiet", "--kernel", "fused",
                             "--out", tmp_path / "out"])
    assert status == 2 and "fieldlab: error: --kernel fused steps miner's sine blocks" in stderr
    assert "Traceback" not in stderr and list(tmp_path.iterdir()) == []


def test_the_command_fits_miner_with_the_kernel(tmp_path, cli):
    import json

    status, _, stderr = cli(["fit", "sample:camera", "--max-size", "16", "--field", "miner", "--scales", "2",
                             "--block-size", "4", "--hidden-dim", "8", "--steps", "6", "--device", "cpu", "--quiet",
                             "--kernel", "fused", "--out", tmp_path / "out"])
    assert status == 0, stderr
    metrics = json.loads((tmp_path / "out" / "metrics.json").read_text())
    assert metrics["kernel"] == "fused" and metrics["steps"] > 0


def test_a_mesh_fits_with_the_kernel_through_miner_only(tmp_path, cli, bumpy_mesh):
    """MINER's occupancy is a squared error on ±1, so its mesh fits take the kernel; other fields' (a
    cross-entropy) still refuse it in one line, before the mesh is read."""
    import json

    common = ["--resolution", "16", "--eval-points", "4096", "--chamfer-points", "2000", "--steps", "2",
              "--device", "cpu", "--quiet", "--kernel", "fused"]
    status, _, stderr = cli(["fit", bumpy_mesh.path, "--field", "miner", "--scales", "1", "--block-size", "8",
                             "--hidden-dim", "8", *common, "--out", tmp_path / "miner"])
    assert status == 0, stderr
    assert json.loads((tmp_path / "miner" / "metrics.json").read_text())["kernel"] == "fused"
    status, _, stderr = cli(["fit", bumpy_mesh.path, "--field", "siren", *common, "--out", tmp_path / "siren"])
    assert status == 2 and "--kernel fused fits a squared error" in stderr and not (tmp_path / "siren").exists()


@pytest.mark.parametrize("precision,kernel,asked", [("fp32", "auto", "auto"), ("bf16", "auto", "auto"),
                                                    ("tf32", "auto", "auto"), ("fp32", "fused", "fused"),
                                                    ("bf16", "reference", "reference")])
def test_auto_asks_for_the_kernel_at_every_measured_precision(monkeypatch, precision, kernel, asked):
    """`--kernel auto` lets `choose_spec` take the kernel where it can run at the precisions timed faster on a
    GPU (all three MINER runs); `reference` and `fused` are passed on as asked."""
    seen = []
    monkeypatch.setattr(M, "choose_spec", lambda spec, device, choice, *a, **k: seen.append(choice))
    M.fit_pyramid(torch.zeros(8, 8, 1), make_config("miner", in_dim=2, out_dim=1, scales=1, block_size=8),
                  FitConfig(steps=1, device="cpu", precision=precision, kernel=kernel))
    assert seen == [asked]
