"""MINER's trainer: pyramid, block layout, pruning, retirement, parent initialisation, occupancy grids."""

import dataclasses
import json
import math
import time

import numpy as np
import torch

from fieldlab.fields import make_config
from fieldlab.fit import FitConfig
from fieldlab.fit import miner as M
from fieldlab.fit import miner_place as P
from fieldlab.fit.job import resolve_field_config
from fieldlab.fit.miner_mesh import occupancy_grid
from fieldlab.signals import Signal


def test_blocks_round_trip_and_order():
    grid = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    blocks = M.to_blocks(grid, 4)
    assert blocks.shape == (6, 16, 2)
    assert torch.equal(blocks[1, :, 0], grid[0, 0:4, 4:8].reshape(-1))  # row-major blocks
    assert torch.equal(M.from_blocks(blocks, 4, (8, 12)), grid)


def test_pyramid_is_area_downsampling_of_the_padded_signal():
    values = torch.rand(6, 5, 1)
    levels = M.pyramid(values, (8, 8), 2)
    assert levels[1].shape == (1, 8, 8) and levels[0].shape == (1, 4, 4)
    assert torch.allclose(levels[1][0, :6, :5], values[..., 0])
    assert torch.allclose(levels[1][0, :, 5], levels[1][0, :, 4])  # edge replication
    assert torch.allclose(levels[0][0, 0, 0], values[:2, :2].mean())


def fit_small(image, steps=150, **train):
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=12)
    return M.fit(Signal.from_array(image, kind="image", channel_axis=False), config,
                 FitConfig(steps=steps, device="cpu", batch_size=64, lr=5e-3), train=M.MinerTrainConfig(**train))


def test_fit_reaches_a_floor_and_prediction_is_the_stored_field(camera32):
    result = M.fit(camera32, make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=12),
                   FitConfig(steps=300, device="cpu", lr=5e-3))
    assert result.metrics["psnr"] > 27
    assert result.config.blocks == tuple(result.metrics["blocks_per_scale"])
    assert torch.equal(M.predict(result.field, camera32.coords()).reshape(32, 32, 1), result.prediction)
    assert result.metrics["params"] == result.config.num_params()


def test_a_clip_sized_to_its_samples_fits_better_than_silence():
    # at most a parameter per sample: 32-sample blocks 1 wide gave SNR -5.2 dB here (bach.wav: -17.6 dB)
    t = np.arange(4096) / 4096
    clip = Signal.from_array((0.3 * np.sin(74 * np.pi * t) + 0.1 * np.sin(822 * np.pi * t)).astype(np.float32),
                             kind="audio", channel_axis=False)
    config = resolve_field_config("miner", {}, kind="audio", in_dim=1, out_dim=1, shape=clip.shape, params=None,
                                  max_params=clip.values.numel())
    result = M.fit(clip, config, FitConfig(steps=100, device="cpu"))
    assert config.num_params() <= 4096 and result.metrics["snr"] > 5  # 8.8 dB


def test_a_time_limit_is_not_spent_on_the_fixed_cost_of_small_checks(monkeypatch):
    # On a busy CPU a check of a few blocks is all fixed cost (the bunny's coarsest block: 0.19 s for 4,096
    # samples); its rate, extrapolated to every later evaluation, reserved more than the limit and stopped
    # this fit before its second scale.
    check = M.ScaleTrainer.block_errors

    def busy(trainer):
        time.sleep(0.25)
        return check(trainer)

    monkeypatch.setattr(M.ScaleTrainer, "block_errors", busy)
    noise = Signal.from_array(np.random.default_rng(0).integers(0, 256, (64, 64)).astype(np.uint8), kind="image",
                              channel_axis=False)
    config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=8, hidden_dim=8)
    free, limited = (M.fit(noise, config, FitConfig(steps=30, device="cpu", max_seconds=limit)) for limit in (0, 20))
    assert not limited.metrics["stopped_by_time_limit"] and limited.metrics["steps"] == free.metrics["steps"] == 30
    # the calibration's throwaway blocks come from a fork of the random state: the same field either way
    assert all(torch.equal(a, b) for a, b in zip(limited.field.state_dict().values(), free.field.state_dict().values()))


def test_a_scale_the_time_limit_leaves_no_step_keeps_no_blocks(monkeypatch):
    # its fresh blocks would only add their random biases (up to ±1/√width each) to the coarser scales' sum
    monkeypatch.setattr(M._ScaleClock, "scale_ends", lambda clock, s, steps: 0.0 if s else math.inf)
    image = np.random.default_rng(0).integers(0, 256, (32, 32)).astype(np.uint8)
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=8)
    result = M.fit(Signal.from_array(image, kind="image", channel_axis=False), config,
                   FitConfig(steps=20, device="cpu", max_seconds=60))
    assert result.metrics["blocks_per_scale"] == [4, 0] and result.metrics["stopped_by_time_limit"]


def test_flat_image_gets_no_blocks_and_still_works():
    result = fit_small(np.full((16, 16), 128, np.uint8), steps=20)
    assert result.metrics["blocks_per_scale"] == [0, 0] and result.metrics["params"] == 0
    assert result.metrics["psnr"] > 40  # 0 is mid-grey, off by half a level


def test_blocks_without_detail_are_pruned_at_the_finer_scale():
    image = np.zeros((32, 32), np.uint8)
    image[:16, :16] = np.random.default_rng(0).integers(0, 255, (16, 16))
    result = fit_small(image, steps=200, prune_mse=5e-3)
    active, total = result.metrics["blocks_per_scale"][1], result.metrics["blocks_total_per_scale"][1]
    assert 4 <= active < total  # the textured quarter keeps its 4 blocks, flat black needs none


def test_converged_blocks_retire_and_leave_the_optimizer():
    net = make_config("miner", in_dim=2, out_dim=1, scales=1, block_size=4, hidden_dim=4).build().net
    target = torch.zeros(3, 16, 1)
    trainer = M.ScaleTrainer(net, torch.arange(3), net.init(3, scale=0), target, torch.tensor([1e9, 0.0, 1e9]),
                             lr=1e-3)
    trainer.step(None, 1e-3)
    assert trainer.retire(trainer.block_errors()) == 2
    assert len(trainer) == 1 and trainer.params["w0"].shape[0] == 1
    state = trainer.optimizer.state[trainer.params["w0"]]
    assert state["exp_avg"].shape == trainer.params["w0"].shape
    trainer.step(None, 1e-3)  # still trains after shrinking
    index, params, _ = trainer.finish()
    assert index.tolist() == [0, 1, 2] and params["w0"].shape[0] == 3


def test_parent_init_reproduces_the_parent_features_on_the_child():
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=4, hidden_dim=5).adapt((16, 16))
    model = config.build()
    child = torch.tensor([5])  # scale 1, 4×4 blocks: position (1, 1), inside parent (0, 0)
    params = M.parent_params(model, 1, child, model.net.init(1, scale=1))
    x = torch.rand(1, 7, 2) * 2 - 1
    parent = {k: v[0:1].detach() for k, v in model.levels[0].tensors().items()}
    first = lambda p, z: torch.sin(30 * torch.baddbmm(p["b0"], z, p["w0"]))
    assert torch.allclose(first(params, x), first(parent, (x + 1) / 2), atol=1e-5)
    assert params["w3"].abs().sum() == 0


def test_occupancy_grid_equals_winding_numbers_at_every_centre():
    import trimesh

    from fieldlab.signals.mesh import Mesh, inside

    box = trimesh.creation.icosphere(subdivisions=2)
    mesh = Mesh.from_arrays(box.vertices, box.faces)
    r = 16
    grid = occupancy_grid(mesh, r, coarsest=4, backend="torch")
    index = torch.stack(torch.meshgrid(*[torch.arange(r)] * 3, indexing="ij"), -1).reshape(-1, 3)
    direct = inside(mesh, (index.float() + 0.5) * (2 / r) - 1, backend="torch").reshape(r, r, r)
    assert torch.equal(grid, direct) and 0 < int(grid.sum()) < r**3


def fit_tiny(image, **options):
    """A 3-scale fit of 4×4 blocks (32×48: 6, 24 and 96 blocks), 60 steps on the CPU."""
    config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8)
    return M.fit(Signal.from_array(image, kind="image", channel_axis=False), config,
                 FitConfig(steps=60, device="cpu", batch_size=8, lr=5e-3, seed=1),
                 train=M.MinerTrainConfig(check_every=20, **options))


def budget_for(blocks: int, shape=(32, 48)) -> float:
    """A --device-budget that leaves room for exactly `blocks` 4×4 grey blocks at a time while every block of
    the finest scale (96) and of the coarser ones (6 + 24, stored) has a network."""
    model = blank_model(shape=shape)
    stored = 30 * model.net.params_per_block() * 4
    return P.parameter_bytes(model, 96) + stored + blocks * P.streamed_block_bytes(model, 1)


def test_streaming_fits_the_same_field_as_resident_training():
    image = (np.random.default_rng(0).random((32, 48)) * 255).astype(np.uint8)
    image[:, :16] = 90  # flat blocks: pruned at the finer scales
    resident, streamed = (fit_tiny(image, streaming=mode, device_budget=budget_for(5), stop_mse=2e-3) for mode in ("off", "on"))
    assert not resident.metrics["streaming"] and streamed.metrics["streaming"]
    assert streamed.metrics["pyramid_host_bytes"] == streamed.metrics["pyramid_bytes"] == 4 * 32 * 48 * (1 + 1 / 4 + 1 / 16)
    assert resident.metrics["blocks_per_scale"] == streamed.metrics["blocks_per_scale"]
    assert sum(streamed.metrics["blocks_retired_per_scale"]) > 0 and sum(streamed.metrics["blocks_pruned_per_scale"]) > 0
    a, b = resident.field.state_dict(), streamed.field.state_dict()
    # on the CPU every block sees the same arithmetic in both modes (only the chunking differs): equal to 1e-6
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6) for k in a)
    assert abs(resident.metrics["psnr"] - streamed.metrics["psnr"]) < 1e-3


def blank_model(out_dim: int = 1, block_size: int = 4, shape=(32, 48)):
    """A 3-scale model before training, as the trainer builds it (no block has a network yet); 6, 24 and 96
    blocks for the default 32×48 grey image of 4×4 blocks, or 64×96 RGB of 8×8 blocks (`rgb_model`)."""
    config = make_config("miner", in_dim=2, out_dim=out_dim, scales=3, block_size=block_size, hidden_dim=8)
    return config.adapt(shape).replace(blocks=(0, 0, 0)).build()


def rgb_model():
    return blank_model(3, 8, (64, 96))


def test_a_streaming_plan_fits_the_budget_scale_by_scale():
    model = rgb_model()
    block_bytes = 64 * 3 * 4
    place = P.Placement(torch.device("cpu"), streaming=True, budget=P.parameter_bytes(model, 96)
                        + 5 * P.streamed_block_bytes(model, 3))
    place.plan(model, 3, 96)  # 96 blocks' targets need more than half the room: chunks of 5 move every step
    assert not place.targets_on_device and place.max_blocks == 5 and place.points == 5 * 64
    place.plan(model, 3, 10)  # few blocks: their targets go to the device once
    assert place.targets_on_device and place.points >= P.MIN_POINTS_PER_CHUNK
    place.plan(model, 3, 0, training=False)  # the residual pass: five copies of a block in half the room
    assert place.max_blocks == int(place.budget / 2 // (5 * block_bytes))
    unlimited = P.Placement(torch.device("cpu"), streaming=True)
    unlimited.plan(model, 3, 96)
    assert unlimited.points == P.POINTS_PER_CHUNK and unlimited.targets_on_device


def test_streaming_keeps_fewer_blocks_on_the_device_than_a_resident_fit():
    image = (np.random.default_rng(1).random((64, 96, 3)) * 255).astype(np.uint8)
    config = make_config("miner", in_dim=2, out_dim=3, scales=3, block_size=8, hidden_dim=8)
    train = M.MinerTrainConfig(streaming="on", prune_mse=0)
    model = rgb_model()
    stored = 30 * model.net.params_per_block() * 4
    budget = P.parameter_bytes(model, 96) + stored + 5 * P.streamed_block_bytes(model, 3)
    place = P.placement(dataclasses.replace(train, device_budget=budget), model, 3, torch.device("cpu"))
    assert place.streaming and place.max_blocks == 5 + stored // P.streamed_block_bytes(model, 3)
    signal = Signal.from_array(image, kind="image")
    fit = FitConfig(steps=20, device="cpu", batch_size=8, lr=5e-3)
    streamed = M.fit(signal, config, fit, train=dataclasses.replace(train, device_budget=budget))
    assert streamed.metrics["blocks_per_scale"] == [6, 24, 96]  # every block trains
    assert 5 <= streamed.metrics["max_target_blocks_on_device"] < 96  # 96 finest blocks, never all at once
    resident = M.fit(signal, config, fit, train=dataclasses.replace(train, streaming="off"))
    assert resident.metrics["max_target_blocks_on_device"] == 96


def test_a_resident_fit_under_a_budget_only_changes_the_chunks(monkeypatch):
    monkeypatch.setattr(P, "MIN_POINTS_PER_CHUNK", 16)
    model = blank_model()
    tight = P.data_bytes(model, 1) + P.parameter_bytes(model, 96) + P.activation_bytes(model, 64)
    place = P.placement(M.MinerTrainConfig(streaming="off", device_budget=tight), model, 1, torch.device("cpu"))
    assert not place.streaming and place.points == 64
    image = (np.random.default_rng(2).random((32, 48)) * 255).astype(np.uint8)
    free, budgeted = (fit_tiny(image, streaming="off", device_budget=budget, stop_mse=2e-3) for budget in (0, tight))
    assert not budgeted.metrics["streaming"] and budgeted.metrics["device_budget_bytes"] == int(tight)
    a, b = free.field.state_dict(), budgeted.field.state_dict()
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6) for k in a)


def test_auto_streams_only_when_even_small_chunks_exceed_the_budget():
    config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8).adapt((32, 48))
    model = config.build()
    assert not P.placement(M.MinerTrainConfig(), model, 1, torch.device("cpu")).streaming  # unlimited on the CPU
    tight = P.placement(M.MinerTrainConfig(device_budget=budget_for(5)), model, 1, torch.device("cpu"))
    assert tight.streaming
    roomy = M.MinerTrainConfig(device_budget=P.resident_bytes(model, 1, P.MIN_POINTS_PER_CHUNK) + 1)
    assert not P.placement(roomy, model, 1, torch.device("cpu")).streaming


# -- precision ------------------------------------------------------------------------------------
def test_bf16_autocast_touches_only_the_hidden_layers():
    torch.manual_seed(0)
    net = make_config("miner", in_dim=2, out_dim=3, scales=1, block_size=4, hidden_dim=16).build().net
    params = net.init(3, scale=0)
    x = torch.rand(1, 40, 2) * 2 - 1
    exact = net(params, x)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        reduced = net(params, x)
    assert reduced.dtype == torch.float32
    assert 0 < (reduced - exact).abs().max() < 0.05  # bf16 hidden matmuls: close, not equal


def test_precision_is_used_and_reported():
    image = (np.random.default_rng(3).random((32, 32)) * 255).astype(np.uint8)
    signal = Signal.from_array(image, kind="image", channel_axis=False)
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=12)
    runs = {p: M.fit(signal, config, FitConfig(steps=60, device="cpu", batch_size=32, lr=5e-3, precision=p))
            for p in ("fp32", "bf16")}
    assert [r.metrics["precision"] for r in runs.values()] == ["fp32", "bf16"]
    fp32, bf16 = runs["fp32"], runs["bf16"]
    assert not torch.equal(fp32.field.state_dict()["levels.1.params.w1"], bf16.field.state_dict()["levels.1.params.w1"])
    assert abs(fp32.metrics["psnr"] - bf16.metrics["psnr"]) < 1.0


def test_compile_is_refused_in_one_line():
    import pytest

    from fieldlab import UserError

    with pytest.raises(UserError, match="--compile is not supported by the miner trainer"):
        M.fit_pyramid(torch.zeros(8, 8, 1), make_config("miner", in_dim=2, out_dim=1, scales=1, block_size=8),
                      FitConfig(steps=1, device="cpu", compile=True))


def test_a_limit_that_leaves_no_time_for_any_block_says_the_field_is_zero_and_why(tmp_path, cli):
    """A MINER field with no block renders as zeros (IoU 0 for a mesh); like every field under a limit it is
    written (the matrix's --max-seconds row), and the log says plainly what happened and what to give instead."""
    status, _, err = cli(["fit", "sample:camera", "--max-size", "32", "--field", "miner", "--device", "cpu",
                          "--max-seconds", "0.001", "--quiet", "--out", tmp_path / "m"])
    assert status == 0, err
    assert "no block could be fitted, so the field is 0 everywhere" in err and "give a longer --max-seconds" in err
    assert json.loads((tmp_path / "m" / "metrics.json").read_text())["steps"] == 0
