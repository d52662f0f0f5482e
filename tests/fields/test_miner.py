"""MINER's field: block geometry, the grouped evaluation against a per-point reference, sizes, storage."""

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import make_config
from fieldlab.fields.miner import MIN_WIDTH, Miner
from fieldlab.fit.own_engines import engine_for


def small(**options):
    return make_config("miner", in_dim=2, out_dim=3, scales=2, block_size=4, hidden_dim=6, **options).adapt((12, 10))


def reference(model: Miner, coords: torch.Tensor) -> torch.Tensor:
    """Point by point: the plain definition Σ_s MLP_{s, block}(local)."""
    out = torch.zeros(len(coords), model.net.out_dim)
    for s, level in enumerate(model.levels):
        flat, local = model.locate(coords, s)
        slots = level.slots()
        for i in range(len(coords)):
            slot = int(slots[flat[i]])
            if slot >= 0:
                params = {k: v[slot:slot + 1] for k, v in level.tensors().items()}
                out[i] += model.net(params, local[i][None, None])[0, 0]
    return out


@pytest.mark.parametrize("options", [{}, {"activation": "gauss", "frequencies": 2}])
def test_grouped_evaluation_equals_the_per_point_definition(options):
    model = small(**options).build()
    coords = torch.rand(50, 2) * 2.2 - 1.1  # some points off the grid use the edge blocks
    assert torch.allclose(model(coords), reference(model, coords), atol=1e-5)


def test_geometry_pads_to_whole_coarsest_blocks():
    model = small().build()
    assert model.padded == (16, 16)
    assert model.blocks_per_axis(0) == (2, 2) and model.blocks_per_axis(1) == (4, 4)
    flat, local = model.locate(torch.tensor([[-1.0, -1.0], [0.999, 0.999]]), 1)
    # (12, 10) samples: canonical 1 is sample 12 / 10, i.e. blocks (2, 2) of 4 samples
    assert flat.tolist() == [0, 2 * 4 + 2]
    assert local.abs().max() <= 1


def test_inactive_blocks_contribute_nothing_and_parameters_follow_the_blocks():
    config = small(blocks=(1, 0))
    model = config.build()
    assert config.num_params() == sum(p.numel() for p in model.parameters()) == model.net.params_per_block()
    with torch.no_grad():
        model.levels[0].index.fill_(3)  # the block at the far corner
    coords = torch.tensor([[-0.9, -0.9], [0.9, 0.9]])
    values = model(coords)
    assert torch.equal(values[0], torch.zeros(3)) and values[1].abs().sum() > 0


def test_bad_options_are_user_errors():
    with pytest.raises(UserError, match="--blocks needs one count per scale"):
        small(blocks=(1,))
    with pytest.raises(UserError, match="not between 0 and 4"):
        make_config("miner", scales=2, block_size=4, shape=(12, 10), blocks=(5, 0))
    with pytest.raises(UserError, match="--scales must be at most"):
        make_config("miner", scales=40)
    with pytest.raises(UserError, match="--activation must be one of"):
        make_config("miner", activation="relu")


def test_config_round_trips_with_its_blocks():
    config = small(blocks=(2, 7))
    assert type(config).from_dict(config.to_dict()) == config
    assert type(config).batched is True and engine_for(config) is not None


def test_a_budget_too_small_for_narrow_blocks_grows_them_instead():
    # sized to its 4,096 values, a 1-D signal's default 32-sample blocks could be 1 wide (8 parameters each)
    clip = make_config("miner", in_dim=1, out_dim=1).adapt((4096,))
    sized = clip.with_params(4096)
    assert sized.hidden_dim == MIN_WIDTH and sized.num_params() <= 4096
    assert sized.replace(block_size=sized.block_size - 1).num_params() > 4096  # the smallest side that fits
    assert clip.replace(block_size=32).with_params(4096).block_size == 32  # a chosen side is kept
    image = make_config("miner", in_dim=2, out_dim=3).adapt((64, 64))  # wide enough: the default side stays
    assert image.with_params(64 * 64 * 3).block_size == 0
