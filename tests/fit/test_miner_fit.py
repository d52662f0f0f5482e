"""MINER's trainer: pyramid, block layout, pruning, retirement, parent initialisation, occupancy grids."""

import numpy as np
import torch

from fieldlab.fields import make_config
from fieldlab.fit import FitConfig
from fieldlab.fit import miner as M
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


def fit_small(image, steps=150, **options):
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=12, **options)
    return M.fit(Signal.from_array(image, kind="image", channel_axis=False), config,
                 FitConfig(steps=steps, device="cpu", batch_size=64, lr=5e-3))


def test_fit_reaches_a_floor_and_prediction_is_the_stored_field(camera32):
    result = M.fit(camera32, make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=8, hidden_dim=12),
                   FitConfig(steps=300, device="cpu", lr=5e-3))
    assert result.metrics["psnr"] > 27
    assert result.config.blocks == tuple(result.metrics["blocks_per_scale"])
    assert torch.equal(M.predict(result.field, camera32.coords()).reshape(32, 32, 1), result.prediction)
    assert result.metrics["params"] == result.config.num_params()


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
                             lr=1e-3, fused=False)
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


def fit_both_ways(image, **options):
    signal = Signal.from_array(image, kind="image", channel_axis=False)
    results = []
    for streaming in ("off", "on"):
        config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8, check_every=20,
                             streaming=streaming, **options)
        results.append(M.fit(signal, config, FitConfig(steps=60, device="cpu", batch_size=8, lr=5e-3, seed=1)))
    return results


def budget_for(blocks: int, shape=(32, 48)) -> float:
    """A --device-budget that leaves room for exactly `blocks` 4×4 grey blocks at a time."""
    model = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8).adapt(shape).build()
    return M.parameter_bytes(model) + blocks * M.streamed_block_bytes(model, 1)


def test_streaming_fits_the_same_field_as_resident_training():
    image = (np.random.default_rng(0).random((32, 48)) * 255).astype(np.uint8)
    image[:, :16] = 90  # flat blocks: pruned at the finer scales
    resident, streamed = fit_both_ways(image, device_budget=budget_for(5), stop_mse=2e-3)
    assert not resident.metrics["streaming"] and streamed.metrics["streaming"]
    assert streamed.metrics["pyramid_host_bytes"] == streamed.metrics["pyramid_bytes"] == 4 * 32 * 48 * (1 + 1 / 4 + 1 / 16)
    assert resident.metrics["blocks_per_scale"] == streamed.metrics["blocks_per_scale"]
    assert sum(streamed.metrics["blocks_retired_per_scale"]) > 0 and sum(streamed.metrics["blocks_pruned_per_scale"]) > 0
    a, b = resident.field.state_dict(), streamed.field.state_dict()
    # on the CPU every block sees the same arithmetic in both modes (only the chunking differs): equal to 1e-6
    assert all(torch.allclose(a[k].float(), b[k].float(), rtol=0, atol=1e-6) for k in a)
    assert abs(resident.metrics["psnr"] - streamed.metrics["psnr"]) < 1e-3


def test_streaming_keeps_at_most_the_budgeted_blocks_on_the_device():
    image = (np.random.default_rng(1).random((32, 48)) * 255).astype(np.uint8)
    config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8, streaming="on",
                         device_budget=budget_for(5))
    place = M.placement(config, config.adapt((32, 48)).build(), 1, torch.device("cpu"))
    assert place.streaming and place.max_blocks == 5
    result = M.fit(Signal.from_array(image, kind="image", channel_axis=False), config,
                   FitConfig(steps=20, device="cpu", batch_size=8, lr=5e-3))
    assert result.metrics["max_target_blocks_on_device"] == 5  # 96 finest blocks, moved 5 at a time
    resident = M.fit(Signal.from_array(image, kind="image", channel_axis=False), config.replace(streaming="off"),
                     FitConfig(steps=20, device="cpu", batch_size=8, lr=5e-3))
    assert resident.metrics["max_target_blocks_on_device"] == 96


def test_auto_streams_only_over_the_budget():
    config = make_config("miner", in_dim=2, out_dim=1, scales=3, block_size=4, hidden_dim=8).adapt((32, 48))
    model = config.build()
    assert not M.placement(config, model, 1, torch.device("cpu")).streaming  # unlimited on the CPU
    tight = M.placement(config.replace(device_budget=budget_for(5)), model, 1, torch.device("cpu"))
    assert tight.streaming and tight.max_blocks == 5
    roomy = config.replace(device_budget=M.resident_bytes(model, 1) + 1)
    assert not M.placement(roomy, model, 1, torch.device("cpu")).streaming
