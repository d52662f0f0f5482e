"""Local-Global fields: geometry, routing, the tiled batched path, sizing, overlaps, INCODE sines."""

import pytest
import torch

from fieldlab import UserError
from fieldlab.fields import FieldStack, LocalGlobalConfig, make_config
from fieldlab.fields._partitioned import tile_layout
from fieldlab.fit import FitConfig, fit
from fieldlab.signals import Signal, grid_coords


def lg(shape, **options):
    options = {"hidden_dim": 4, "global_dim": 8, **options}
    return make_config("local-global", in_dim=len(shape), out_dim=1, **options).adapt(shape)


def naive(module, x):
    """Each point through its own partition's weights with plain matmuls: the reference for the tiles."""
    slot, _ = module.route(x)
    out = []
    for point, s in zip(x, slot):
        u = point[None]
        g = point[None]
        for layer in range(module.num_layers + 1):
            w, b = module.local_weights[layer][s], module.local_biases[layer][s]
            u = u @ w + b
            if layer == module.num_layers:
                break
            omega = module.first_omega0 if layer == 0 else module.omega0
            u = torch.sin(omega * u)
            if module.use_global:
                g = torch.sin(omega * module.global_layers[layer](g))
                u = torch.sin(module.omega0 * module.fusion(torch.cat([u, g], -1)))
        out.append(u)
    return torch.cat(out)


def test_paper_image_config_has_the_papers_parameter_count():
    config = make_config("local-global", in_dim=2, out_dim=3, hidden_dim=14, global_dim=84).adapt((512, 512))
    assert config.num_parts == 256 and config.num_params() == 206_610  # the reference note's table
    assert LocalGlobalConfig(out_dim=3).num_params() == 206_610  # the defaults, before any grid is known
    assert lg((48, 48)).num_parts == 1  # default partitions keep at least 32 samples per axis
    local = config.replace(mode="local", hidden_dim=15)
    assert local.num_params() == 208_128 == sum(p.numel() for p in local.build().parameters())


def test_partition_edges_fall_on_samples_and_need_not_divide():
    config = lg((10, 7), partitions=(3, 2))
    assert config.edges == ((0, 3, 6, 10), (0, 3, 7))
    size = lg((100,), partition_size=(32,))
    assert size.edges == ((0, 25, 50, 75, 100),)  # ⌈100/32⌉ = 4 balanced pieces
    with pytest.raises(UserError, match="exceeds its 7 samples"):
        lg((10, 7), partitions=(3, 8))


@pytest.mark.parametrize("mode, shape, parts", [("local-global", (9, 11), (2, 3)), ("local", (9, 11), (2, 3)),
                                                ("local-global", (101,), (7,)), ("local-global", (5, 9, 7), (2, 3, 2))])
def test_tiled_path_equals_a_per_point_reference(mode, shape, parts):
    torch.manual_seed(0)
    module = lg(shape, partitions=parts, mode=mode).build().double()
    x = (torch.rand(53, len(shape), dtype=torch.float64) * 2.4 - 1.2)  # off-grid, some outside [-1, 1]
    assert torch.allclose(module(x), naive(module, x), atol=1e-10)


def test_routing_follows_the_sample_grid():
    config = lg((10, 7), partitions=(3, 2))
    module = config.build()
    coords = grid_coords(((0, 10), (0, 7)), ((0, 10), (0, 7)), (10, 7))
    slot, void = module.route(coords)
    rows, cols = torch.meshgrid(torch.arange(10), torch.arange(7), indexing="ij")
    expected = torch.bucketize(rows.contiguous(), torch.tensor([3, 6]), right=True) * 2 + (cols >= 3).long()
    assert torch.equal(slot, expected.reshape(-1)) and not void.any()


def test_a_point_reads_only_its_own_partition():
    module = lg((16, 16), partitions=(2, 2)).build()
    x = torch.rand(40, 2) - 1  # all in partition 0 (the top-left quarter)
    before = module(x)
    with torch.no_grad():
        for w in module.local_weights:
            w[1:] += 1.0
    assert torch.equal(module(x), before)


def test_tile_layout_places_every_point_once():
    slot = torch.tensor([2, 0, 2, 2, 1, 0, 2])
    src, pos, tile_slot = tile_layout(slot, 3, 2)
    assert torch.equal(src[pos], torch.arange(7))
    assert torch.equal(tile_slot[pos // 2], slot)
    assert (src == 7).sum() == src.numel() - 7  # the rest is padding


def test_order_and_batching_do_not_change_values():
    module = lg((16, 16), partitions=(4, 4)).build()
    x = torch.rand(2, 30, 2) * 2 - 1
    y = module(x)
    perm = torch.randperm(30)
    assert torch.allclose(module(x[:, perm]), y[:, perm], atol=1e-6)
    assert torch.allclose(module(x[1]), y[1], atol=1e-6)


def test_stack_of_cropped_fields_runs_under_vmap():
    config = lg((8, 8), partitions=(2, 2))
    module = config.build()
    cropped, state = config.without_parts(dict(module.state_dict()), [3])
    fields = []
    for _ in range(2):
        m = cropped.build()
        fields.append(m)
    stack = FieldStack.from_modules(fields)
    x = (torch.rand(1, 25, 2) * 2 - 1).expand(2, -1, -1)
    y = stack(x)
    assert torch.allclose(y[0], fields[0](x[0]), atol=1e-6)
    assert not torch.allclose(y[0], y[1])
    assert (y[:, (x[0] > 0).all(-1)] == 0).all()  # partition 3 (bottom right) was cropped away


def test_with_params_solves_exactly_and_keeps_the_global_share():
    config = make_config("local-global", in_dim=2, out_dim=3).adapt((512, 512)).with_params(200_000)
    count = config.num_params()
    assert abs(count - 200_000) / 200_000 < 0.01
    shared = count - 256 * config.replace(mode="local").num_params() // 256
    assert 0.07 < shared / count < 0.13
    for dh in (-1, 1):  # no neighbouring local width is closer, at the chosen global width
        assert abs(config.replace(hidden_dim=config.hidden_dim + dh).num_params() - 200_000) >= abs(count - 200_000)
    share = make_config("local-global", in_dim=2, out_dim=3, global_share=0.3).adapt((512, 512)).with_params(200_000)
    assert share.global_dim > config.global_dim


def test_partition_size_and_budget_give_the_automatic_partitioning():
    config = make_config("local-global", in_dim=2, out_dim=3, partition_size=(32,)).adapt((339, 510))
    assert [len(e) - 1 for e in config.edges] == [11, 16]  # ⌈339/32⌉ × ⌈510/32⌉, as in the paper's example
    sized = config.with_params(200_000)
    assert abs(sized.num_params() - 200_000) < 2_000


def test_config_round_trips_through_json_with_cropped_cells():
    import json

    config = lg((12, 12), partitions=(3, 3), overlap=(1,))
    cropped, _ = config.without_parts(dict(config.build().state_dict()), [0, 4])
    again = LocalGlobalConfig.from_dict(json.loads(json.dumps(cropped.to_dict())))
    assert again == cropped and again.num_parts == 7


@pytest.mark.parametrize("options, message", [
    ({"partitions": (2,), "partition_size": (4,)}, "not both"),
    ({"partitions": (2, 2, 2)}, "one number or 2"),
    ({"overlap": (-1,)}, "non-negative"),
    ({"global_share": 1.5}, "between 0 and 1"),
    ({"mode": "global"}, "--mode must be one of"),
])
def test_bad_options(options, message):
    with pytest.raises(UserError, match=message):
        make_config("local-global", in_dim=2, out_dim=1, **options)


def test_audio_length_no_partition_count_divides_fits():
    t = torch.linspace(0, 1, 1009)[:, None]  # 1009 is prime
    signal = Signal.from_array((torch.sin(40 * t) * 0.8).numpy(), kind="audio", extra={"sample_rate": 1009})
    config = make_config("local-global", in_dim=1, out_dim=1, hidden_dim=8, global_dim=16,
                         partitions=(32,)).adapt(signal.shape)
    assert [b - a for a, b in zip(config.edges[0][:-1], config.edges[0][1:])].count(31) == 15  # 31s and 32s
    start = fit(signal, config, FitConfig(steps=1, device="cpu"))
    result = fit(signal, config, FitConfig(steps=60, device="cpu"))
    assert result.prediction.shape == (1009, 1) and torch.isfinite(result.prediction).all()
    assert result.metrics["psnr"] > start.metrics["psnr"] + 2


def test_overlap_trains_each_partition_on_its_neighbours_margin(camera32):
    config = make_config("local-global", in_dim=2, out_dim=1, hidden_dim=4, global_dim=8, partitions=(2, 2),
                         overlap=(1, 2)).adapt(camera32.shape)
    module = config.build()
    coords, values = module.training_points(camera32.coords(), camera32.flat_values(), camera32.shape)
    assert coords.shape == (4 * 17 * 18, 3) and values.shape == (4 * 17 * 18, 1)  # 16+1 rows, 16+2 columns each
    assert torch.equal(coords[:, 2].unique(), torch.arange(4.0))
    result = fit(camera32, config, FitConfig(steps=5, device="cpu"))
    assert result.prediction.shape == (32, 32, 1)


def test_incode_sines_train_the_harmonizer():
    module = lg((8, 8), partitions=(2, 2), incode=True).build()
    plain = lg((8, 8), partitions=(2, 2)).build()
    plain.load_state_dict({k: v for k, v in module.state_dict().items() if "harmonizer" not in k})
    x = torch.rand(20, 2) * 2 - 1
    y = module(x)
    assert torch.allclose(y, plain(x), atol=0.1)  # starts near the plain sines
    y.square().sum().backward()
    assert module.harmonizer_latent.grad.abs().sum() > 0
    assert all(p.grad.abs().sum() > 0 for p in module.harmonizer.parameters())
    assert lg((8, 8), partitions=(2, 2), incode=True).num_params() == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("partitions", [(2, 2), (4, 4), (8, 8)])
def test_partition_count_keeps_the_parameter_budget(partitions):
    from fieldlab.fit.job import resolve_field_config

    default = LocalGlobalConfig(out_dim=3).num_params()  # what `fieldlab fields` shows

    def size(params):
        return resolve_field_config("local-global", {"partitions": partitions}, kind="image", in_dim=2, out_dim=3,
                                    shape=(128, 128), params=params).num_params()

    assert abs(size(None) - default) <= 0.05 * default
    assert abs(size(60_000) - 60_000) <= 0.05 * 60_000


def test_given_widths_are_kept_and_the_other_is_solved_for_the_budget():
    config = make_config("local-global", in_dim=2, out_dim=3, partitions=(4, 4), hidden_dim=14).adapt((128, 128))
    assert config.hidden_dim == 14 and abs(config.num_params() - 206_610) <= 0.05 * 206_610
    stored = LocalGlobalConfig.from_dict(config.to_dict())  # a stored field holds its solved widths
    assert (stored.hidden_dim, stored.global_dim) == (config.hidden_dim, config.global_dim)


def _grid(rows, cols):
    return torch.stack(torch.meshgrid(torch.linspace(-1, 1, rows), torch.linspace(-1, 1, cols), indexing="ij"), -1)


def test_blend_cross_fades_partitions_so_values_are_continuous_at_borders():
    torch.manual_seed(0)
    blended = lg((16, 10), partitions=(2, 2), blend=(2,))
    module = blended.build()
    plain = blended.replace(blend=()).build()
    plain.load_state_dict(module.state_dict())
    x = _grid(160, 100)
    with torch.no_grad():
        y, y0 = module(x)[..., 0], plain(x)[..., 0]

    def jump(v):
        return max(float((v[1:] - v[:-1]).abs().max()), float((v[:, 1:] - v[:, :-1]).abs().max()))

    assert jump(y) < 0.2 * jump(y0)  # fine sampling: only a seam jumps
    far = (x[..., 0].abs() > 0.3) & (x[..., 1].abs() > 0.45)  # over 2 samples from the edges (row 8, column 5)
    assert torch.equal(y[far], y0[far])  # away from every border a point reads its own partition only
    assert module.training_points(*_flat(16, 10), (16, 10))[0].shape[0] == 4 * 12 * 9  # margins of 2 x 2 samples


def _flat(rows, cols):
    return _grid(rows, cols).reshape(-1, 2), torch.zeros(rows * cols, 1)


def test_blended_stack_runs_under_vmap_and_a_cropped_neighbour_drops_out():
    from torch.func import functional_call, vmap

    config = lg((12, 10), partitions=(3, 2), blend=(2,))
    module = config.build()
    params = dict(module.named_parameters())
    x = _grid(30, 25).reshape(-1, 2)
    both = vmap(lambda p, xx: functional_call(module, p, (xx,)))({k: torch.stack([v, v]) for k, v in params.items()},
                                                                 torch.stack([x, x]))
    torch.testing.assert_close(both[1], module(x))
    cropped, state = config.without_parts(module.state_dict(), [1])
    left = cropped.build()
    left.load_state_dict(state)
    assert torch.isfinite(left(x)).all() and left(torch.tensor([[-0.9, 0.5]])).abs().sum() == 0  # removed: 0


def test_a_field_json_from_before_keeps_its_widths_and_reads_without_blending():
    old = make_config("local-global", in_dim=2, out_dim=3, hidden_dim=14, global_dim=84,
                      partitions=(4, 4)).adapt((128, 128)).to_dict()
    del old["blend"]  # written before the option existed
    config = LocalGlobalConfig.from_dict(old)
    assert config.num_params() == 34_530 and config.blend == ()
    assert not any(config.build().blend)


def test_a_new_field_trains_on_a_margin_of_its_neighbours_unless_overlap_0_is_given():
    config = lg((64, 40), partitions=(2, 2))
    assert config.overlap == (2, 1)  # 1/16 of the narrowest partition per axis (32 and 20 samples)
    assert lg((64, 40), partitions=(1, 2)).overlap == (0, 1)  # one partition: no border to agree on
    assert lg((64, 40), partitions=(2, 2), overlap=(0,)).overlap == (0,)
    coords, values = torch.rand(64 * 40, 2), torch.rand(64 * 40, 1)
    train_coords, _ = config.build().training_points(coords, values, (64, 40))
    assert train_coords.shape == ((32 + 2) * (20 + 1) * 4, 3)  # each box grown inward by its margin
