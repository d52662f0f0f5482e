"""Cropping MINER fields on blocks: the kept region renders bit for bit as before, other blocks' weights go."""

import numpy as np
import pytest
import torch

from fieldlab import UserError
from fieldlab.edit import render
from fieldlab.edit.crop import crop_field, removal_summary
from fieldlab.fields import make_config
from fieldlab.signals import Signal
from fieldlab.store import StoredField


def pruned_field(shape, blocks, seed=0, **options):
    """An untrained MINER field whose active blocks are a random subset, stored in a shuffled order
    (as the trainer may leave them): cropping must keep exactly the routing of the points it keeps."""
    torch.manual_seed(seed)
    config = make_config("miner", in_dim=len(shape), out_dim=1, scales=3, block_size=4, hidden_dim=5,
                         **options).adapt(shape).replace(blocks=blocks)
    model = config.build()
    for level in model.levels:
        chosen = torch.randperm(level.total_blocks)[:len(level)]
        level.assign(chosen, {k: v + torch.randn_like(v) * 0.1 for k, v in level.tensors().items()})
    return config, model.eval()


def rebuilt(config, state):
    model = config.build()
    model.load_state_dict(state)
    return model.eval()


def points_in(box, shape, n=4000):
    """Random canonical coordinates of points inside a frame box (with its edges' samples)."""
    lo = torch.tensor([b[0] for b in box], dtype=torch.float32)
    hi = torch.tensor([b[1] for b in box], dtype=torch.float32)
    samples = lo + torch.rand(n, len(box)) * (hi - lo)
    samples = torch.cat([samples, lo[None] + 0.5, hi[None] - 0.5])
    return samples * 2 / torch.tensor(shape, dtype=torch.float32) - 1


@pytest.mark.parametrize("shape, blocks, box", [
    ((40, 36), (3, 10, 40), ((5, 23), (0, 17))),            # cuts through blocks of every scale
    ((20, 24, 18), (2, 12, 60), ((0, 9), (4, 20), (3, 18))),  # 3D
])
def test_crop_keeps_the_touched_blocks_and_renders_the_box_exactly(shape, blocks, box):
    config, model = pruned_field(shape, blocks)
    state = {k: v.detach() for k, v in model.state_dict().items()}
    new_config, new_state = config.cropped(state, box)
    cropped = rebuilt(new_config, new_state)
    coords = points_in(box, shape)
    with torch.no_grad():
        assert torch.equal(cropped(coords), model(coords))
    # The kept blocks are exactly those whose box meets the kept box.
    boxes = config.part_boxes(state)
    touched = [all(lo < b_hi and b_lo < hi for (lo, hi), (b_lo, b_hi) in zip(part, box)) for part in boxes]
    assert sum(new_config.blocks) == sum(touched) < sum(blocks)
    kept_boxes = sorted(b for b, t in zip(boxes, touched) if t)
    assert sorted(new_config.part_boxes(new_state)) == kept_boxes
    assert new_config.num_params() == sum(p.numel() for p in cropped.parameters()) < config.num_params()


def test_crop_field_rebases_the_signal_and_renders_the_kept_samples_exactly(camera32):
    config, model = pruned_field(camera32.shape, (4, 9, 30), activation="gauss", frequencies=2)
    stored = StoredField(model, config, camera32.info, {})
    keep = ((6, 29), (10, 32))
    new_config, state, info = crop_field(stored, keep=keep)
    cropped = StoredField(rebuilt(new_config, state), new_config, info, {})
    assert info.shape == (23, 22)
    assert torch.equal(render(cropped), render(stored, region=[tuple(map(float, b)) for b in keep]))
    assert torch.equal(render(cropped, size=[46, 44]),
                       render(stored, size=[46, 44], region=[tuple(map(float, b)) for b in keep]))


def test_a_box_inside_one_coarse_block_keeps_one_block_per_scale_at_most():
    config, model = pruned_field((32, 32), (4, 16, 64))  # every block active
    state = model.state_dict()
    new_config, _ = config.cropped(state, ((1, 3), (1, 3)))
    assert new_config.blocks == (1, 1, 1)


def test_remove_blocks_leaves_every_other_point_unchanged():
    config, model = pruned_field((40, 36), (3, 10, 40))
    state = model.state_dict()
    boxes = config.part_boxes(state)
    assert config.num_parts == len(boxes) == 53
    parts = [1, 3, 20, 52]  # one coarse block, one of scale 1, two of the finest
    new_config, new_state = config.without_parts(state, parts)
    smaller = rebuilt(new_config, new_state)
    assert new_config.blocks == (2, 9, 38)
    coords = points_in(((0, 40), (0, 36)), (40, 36))
    samples = (coords + 1) / 2 * torch.tensor([40.0, 36.0])
    hit = torch.zeros(len(coords), dtype=torch.bool)
    for p in parts:
        (a0, a1), (b0, b1) = boxes[p]
        hit |= (samples[:, 0] >= a0) & (samples[:, 0] < a1) & (samples[:, 1] >= b0) & (samples[:, 1] < b1)
    with torch.no_grad():
        assert torch.equal(smaller(coords[~hit]), model(coords[~hit]))
        assert not torch.equal(smaller(coords[hit]), model(coords[hit]))


def test_bad_block_removals_are_user_errors():
    config, model = pruned_field((16, 16), (1, 2, 0))
    state = model.state_dict()
    with pytest.raises(UserError, match="block 3 does not exist"):
        config.without_parts(state, [3])
    with pytest.raises(UserError, match="every block"):
        config.without_parts(state, [0, 1, 2])


def removal(boxes):
    """Remove the blocks with these boxes from a 20×24 MINER field whose every block is active (4, 16 and 64
    over the 32×32 the coarsest blocks pad it to), stored in shuffled order: the block numbers, the summary
    `crop --remove` prints, and the renders (20, 24) before and after."""
    config, model = pruned_field((20, 24), (4, 16, 64))
    state = model.state_dict()
    parts = [config.part_boxes(state).index(box) for box in boxes]
    stored = StoredField(model, config, Signal.from_array(np.zeros((20, 24, 1), np.uint8), kind="image").info, {})
    new_config, new_state = config.without_parts(state, parts)
    after = StoredField(rebuilt(new_config, new_state), new_config, stored.signal, {})
    return parts, removal_summary(stored, parts), render(stored)[..., 0], render(after)[..., 0]


def test_removing_a_coarsest_block_changes_every_sample_under_it_and_none_to_0():
    (part,), summary, before, after = removal([((0, 16), (0, 16))])
    assert f"{part} (scale 0 of 3, 0:16,0:16)" in summary
    assert "256 of 480 samples lose that scale's share" in summary and "(0 are left with no block" in summary
    changed = (before - after).abs() > 1e-5
    assert changed[:16, :16].all() and not changed[16:].any() and not changed[:, 16:].any()
    assert (after[:16, :16] != 0).all()


def test_removing_every_scale_over_a_corner_leaves_0_there_only():
    parts, summary, before, after = removal([((0, 16), (0, 16)), ((0, 8), (0, 8)), ((0, 4), (0, 4))])
    assert f"{parts[1]} (scale 1 of 3, 0:8,0:8)" in summary and f"{parts[2]} (scale 2 of 3, 0:4,0:4)" in summary
    assert "256 of 480 samples" in summary and "(16 are left with no block and render 0)" in summary
    assert (after[:4, :4] == 0).all() and (after[4:16].abs() > 0).all() and (after[:16, 4:16].abs() > 0).all()


def test_a_block_in_the_padding_changes_no_sample():
    (part,), summary, before, after = removal([((24, 32), (24, 32))])  # past the 20×24 signal
    assert f"{part} (scale 1 of 3, past the signal)" in summary and "0 of 480 samples" in summary
    assert torch.allclose(before, after, atol=1e-5)  # other tilings of the batch round differently
