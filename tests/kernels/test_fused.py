"""The fused MLP kernel (Triton) against the reference path, run through Triton's interpreter on the CPU.

The interpreter executes the same kernel source as the GPU (bf16 matrix products emulated by rounding
the operands, which is what the tensor cores multiply); tests/gpu/check_fused.py checks the compiled
kernel on a GPU.
"""

from __future__ import annotations


import numpy as np
import pytest
import torch

from fieldlab._errors import UserError
from fieldlab.fields import FieldStack, make_config
from fieldlab.fit.batched import BatchedFitConfig, fit_batch, init_params


from fieldlab.kernels import fused  # noqa: E402
from fieldlab.kernels import rounding  # noqa: E402
fused.use_interpreter()  # before anything imports the kernels compiled


def _fields(name, f=3, in_dim=2, **options):
    config = make_config(name, in_dim=in_dim, out_dim=3, **options)
    template, params, buffers = init_params(config, np.arange(f), "random", 0)
    return config, fused.fused_spec(config), template, params, buffers


def _reference_steps(template, params, buffers, coords, values, rows, steps, lr=1e-3, index=None):
    stack = FieldStack(template, {k: v.clone() for k, v in params.items()}, buffers)
    optimizer = torch.optim.Adam(stack.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        x = coords.expand(len(rows), *coords.shape) if index is None else coords[index]
        y = values[rows] if index is None else values[rows[:, None], index]
        loss = (stack(x) - y).square().mean(dim=(1, 2))
        optimizer.zero_grad()
        loss.sum().backward()
        optimizer.step()
        losses.append(loss.detach())
    return stack, losses


@pytest.mark.parametrize("name,options", [
    ("siren", dict(hidden_dim=24, num_layers=2)),  # a width that is not a power of two: padded
    ("siren", dict(hidden_dim=16, num_layers=2, in_dim=3)),  # 3-D coordinates: the first layer as a tile
    ("siren", dict(hidden_dim=16, num_layers=4)),
    ("gauss", dict(hidden_dim=16, num_layers=1, scale=3.0)),
    ("fourier", dict(hidden_dim=16, num_layers=2, num_frequencies=12, sigma=2.0)),  # ReLU on random features
    ("fourier", dict(hidden_dim=16, num_layers=1, encoding="positional", num_frequencies=3)),  # [x, cos, sin]
])
def test_fused_steps_follow_the_reference_adam_path(name, options):
    torch.manual_seed(0)
    config, spec, template, params, buffers = _fields(name, **options)
    n = 70  # not a multiple of the chunk: the last chunk is masked
    d = config.in_dim
    coords, values = torch.rand(n, d) * 2 - 1, torch.rand(5, n, 3) * 2 - 1
    rows = torch.tensor([4, 0, 2])  # fields read their targets through a row map
    stack, losses = _reference_steps(template, params, buffers, coords, values, rows, steps=3)
    packed = fused.FusedStack(spec, params, buffers=buffers, block=32)
    # Adam as a separate pass over atomically summed gradients
    split = fused.FusedStack(spec, params, buffers=buffers, block=16)
    for step in range(3):
        loss = packed.step(coords, values, rows, 1e-3)
        torch.testing.assert_close(loss / (n * 3), losses[step], atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(split.step(coords, values, rows, 1e-3, parts=3), loss, atol=1e-5, rtol=1e-5)
    for key, value in stack.state()[0].items():
        torch.testing.assert_close(packed.params()[key], value.detach(), atol=1e-6, rtol=1e-5)
        torch.testing.assert_close(split.params()[key], value.detach(), atol=1e-6, rtol=1e-5)
    torch.testing.assert_close(packed.forward(coords), stack(coords.expand(3, n, d)).detach(), atol=1e-5, rtol=1e-5)


def test_fused_gradients_match_autograd_whole_and_split_and_with_point_subsets():
    torch.manual_seed(1)
    config, spec, template, params, buffers = _fields("siren", f=2, hidden_dim=32, num_layers=2)
    n = 100
    coords, values = torch.rand(n, 2) * 2 - 1, torch.rand(2, n, 3) * 2 - 1
    rows = torch.arange(2)
    index = torch.stack([torch.randperm(n)[:40] for _ in range(2)])
    stack = FieldStack(template, {k: v.clone() for k, v in params.items()}, buffers)
    for idx in (None, index):
        stack.zero_grad()
        x = coords.expand(2, n, 2) if idx is None else coords[idx]
        y = values if idx is None else values[rows[:, None], idx]
        (stack(x) - y).square().mean(dim=(1, 2)).sum().backward()
        expected = fused.pack({k: v.grad for k, v in stack.state()[0].items()}, spec)
        for reload in (False, True):  # weights held in registers, or read at each use
            packed = fused.FusedStack(spec, params, block=16, reload=reload)
            for parts in (1, 3):  # one program per field, or partial gradients added atomically
                _, grad = packed.gradients(coords, values, rows, index=idx, parts=parts)
                torch.testing.assert_close(grad, expected, atol=1e-6, rtol=1e-4)
        assert torch.equal(packed.flat, fused.pack(params, spec))  # gradients() does not update


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=1)),
                                          ("siren", dict(hidden_dim=16, num_layers=3)),
                                          ("siren", dict(hidden_dim=16, num_layers=4)),
                                          ("fourier", dict(hidden_dim=16, num_layers=3, num_frequencies=8))])
def test_recomputing_the_first_pre_activations_gives_the_same_gradients(name, options):
    torch.manual_seed(3)
    config, spec, template, params, buffers = _fields(name, f=2, **options)
    coords, values = torch.rand(40, 2) * 2 - 1, torch.rand(2, 40, 3) * 2 - 1
    held = fused.FusedStack(spec, params, buffers=buffers, block=16).gradients(coords, values, torch.arange(2))[1]
    for recompute in (1, 2):
        for reload in (False, True):
            stack = fused.FusedStack(spec, params, buffers=buffers, block=16, reload=reload, recompute=recompute)
            torch.testing.assert_close(stack.gradients(coords, values, torch.arange(2))[1], held, atol=1e-7, rtol=1e-6)


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=3)),
                                          ("fourier", dict(hidden_dim=16, num_layers=2, num_frequencies=8))])
def test_bf16_gradients_are_the_reference_with_bf16_operands(name, options):
    torch.manual_seed(2)
    config, spec, template, params, buffers = _fields(name, f=2, **options)
    coords, values = torch.rand(50, 2) * 2 - 1, torch.rand(2, 50, 3) * 2 - 1
    stack = FieldStack(template, {k: v.clone() for k, v in params.items()}, buffers)
    with rounding.rounded_operands("bf16"):  # the kernel's bf16 arithmetic, written in torch
        (stack(coords.expand(2, 50, 2)) - values).square().mean(dim=(1, 2)).sum().backward()
    emulated = fused.pack({k: v.grad for k, v in stack.state()[0].items()}, spec)
    exact = fused.FusedStack(spec, params, buffers=buffers).gradients(coords, values, torch.arange(2))[1]
    half = fused.FusedStack(spec, params, buffers=buffers, precision="bf16").gradients(coords, values,
                                                                                      torch.arange(2))[1]
    scale = emulated.abs().max()
    assert (half - emulated).abs().max() / scale < 2e-6
    assert (half - exact).abs().max() / scale > 1e-4  # the operands were rounded


def test_fp32_operands_are_the_reference_unchanged():
    torch.manual_seed(4)
    layer, x = torch.nn.Linear(8, 8), torch.randn(5, 8) * 3
    with rounding.rounded_operands("fp32"):
        inside = layer(x)
    with rounding.rounded_operands("bf16"):
        rounded = layer(x)
    assert torch.equal(inside, layer(x)) and not torch.equal(rounded, layer(x))


def test_tf32_gradients_round_operands_to_nearest(monkeypatch):
    """The kernel rounds its TF32 operands to nearest, as torch's TF32 does, where the tensor cores would
    truncate them (a bias toward zero that cost 0.4 dB at 64 dB on an H100)."""
    torch.manual_seed(3)
    config, spec, template, params, buffers = _fields("siren", f=2, hidden_dim=16, num_layers=3)
    coords, values = torch.rand(50, 2) * 2 - 1, torch.rand(2, 50, 3) * 2 - 1
    monkeypatch.setitem(rounding._ROUNDINGS, "truncated", lambda x: (x.contiguous().view(torch.int32) & -8192).view(torch.float32))
    emulated = {}
    for kind in ("tf32", "truncated"):
        stack = FieldStack(template, {k: v.clone() for k, v in params.items()}, buffers)
        with rounding.rounded_operands(kind):
            (stack(coords.expand(2, 50, 2)) - values).square().mean(dim=(1, 2)).sum().backward()
        emulated[kind] = fused.pack({k: v.grad for k, v in stack.state()[0].items()}, spec)
    tf32 = fused.FusedStack(spec, params, buffers=buffers, precision="tf32").gradients(coords, values,
                                                                                      torch.arange(2))[1]
    scale = emulated["tf32"].abs().max()
    # Not to 1e-7 as bf16: an operand one fp32 ulp apart on the two paths rounds the other way 8 times as
    # often at TF32's 10 bits (1.7e-5 measured; 1.1e-3 from truncated operands).
    assert (tf32 - emulated["tf32"]).abs().max() / scale < 5e-5
    assert (tf32 - emulated["truncated"]).abs().max() / scale > 1e-4
    x = torch.tensor([1 + 2 ** -11, 1 + 3 * 2 ** -11, -(1 + 2 ** -10 + 2 ** -12), 1 + 2 ** -11 + 2 ** -20])
    expected = torch.tensor([1.0, 1 + 2 ** -9, -(1 + 2 ** -10), 1 + 2 ** -10])  # ties to even; above a tie, up
    assert torch.equal(rounding._to_tf32(x), expected)


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=2)),
                                          ("fourier", dict(hidden_dim=16, num_layers=2, num_frequencies=8, sigma=1.0))])
def test_fit_batch_fused_matches_reference_and_reports_its_kernel(name, options):
    config = make_config(name, in_dim=2, out_dim=1, **options)
    axis = torch.linspace(-1, 1, 6)
    coords = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    values = torch.sin(3 * coords.sum(-1))[None, :, None] * torch.tensor([1.0, 0.5, -0.7])[:, None, None]
    results = {}
    for kernel in ("fused", "reference"):
        fit = BatchedFitConfig(steps=20, target_psnr=30.0, check_every=10, device="cpu", kernel=kernel, init="random")
        results[kernel] = fit_batch(config, coords, values, np.arange(3), fit)
        assert results[kernel].kernel == kernel
    np.testing.assert_allclose(results["fused"].psnr, results["reference"].psnr, atol=1e-3)
    np.testing.assert_array_equal(results["fused"].steps, results["reference"].steps)
    for key, value in results["reference"].params.items():
        torch.testing.assert_close(results["fused"].params[key], value, atol=1e-5, rtol=1e-4)


def test_kernel_choice():
    cpu, cuda = torch.device("cpu"), torch.device("cuda")
    siren = make_config("siren", in_dim=2, out_dim=3, hidden_dim=32, num_layers=2)
    assert fused.choose_kernel(siren, cpu, "reference") is None
    assert fused.choose_kernel(siren, cpu, "auto") is None  # auto never takes the interpreter
    assert fused.choose_kernel(siren, cpu, "fused") is not None  # forced: the interpreter runs it
    assert fused.choose_kernel(siren, cuda, "auto").hidden_dim == 32  # auto on CUDA: fused
    medium = make_config("siren", in_dim=2, out_dim=3, hidden_dim=64, num_layers=3)
    assert fused.choose_kernel(medium, cuda, "auto") is None  # fp32 at 64 wide: the reference path is faster
    for precision in ("tf32", "bf16"):
        assert fused.choose_kernel(medium, cuda, "auto", precision).hidden_dim == 64
    assert fused.choose_kernel(make_config("siren", in_dim=2, out_dim=3, hidden_dim=256, num_layers=2), cuda,
                               "auto") is None  # wider than the kernel covers: the reference path
    wide = make_config("siren", in_dim=2, out_dim=3, hidden_dim=128, num_layers=3)
    assert fused.choose_kernel(wide, cuda, "auto") is None  # covered, but not faster: auto leaves it
    assert fused.choose_kernel(wide, cpu, "fused", "bf16").hidden_dim == 128
    for precision in ("tf32", "fp32"):  # their TF32 tiles overflow the shared memory (fp32 is three TF32 products)
        with pytest.raises(UserError, match=f"bf16 only, not {precision}"):
            fused.choose_kernel(wide, cpu, "fused", precision)
    assert fused.choose_kernel(siren, cpu, "fused", "tf32") is not None
    assert "fused Triton kernel (sine MLP 2×32, bf16)" in fused.describe(siren, cuda, "auto", "bf16")
    assert "reference" in fused.describe(siren, cpu, "auto", "bf16")
    fourier = make_config("fourier", in_dim=2, out_dim=3, hidden_dim=64, num_layers=2, num_frequencies=32)
    assert fused.choose_kernel(fourier, cuda, "auto", "tf32").frequencies == 32  # γ as wide as a hidden layer
    assert "on 32 gaussian Fourier frequencies" in fused.describe(fourier, cuda, "auto", "tf32")
    wide_encoding = make_config("fourier", in_dim=2, out_dim=3, hidden_dim=64, num_layers=2, num_frequencies=64)
    assert fused.choose_kernel(wide_encoding, cuda, "auto", "tf32") is None  # covered, but auto leaves it
    assert fused.choose_kernel(wide_encoding, cpu, "fused").encoded_dim == 128
    with pytest.raises(UserError, match="covers siren, gauss and fourier"):  # 256 frequencies by default
        fused.choose_kernel(make_config("fourier", in_dim=2, out_dim=3, hidden_dim=32, num_layers=2), cpu, "fused")
    with pytest.raises(UserError, match="covers siren, gauss and fourier"):
        fused.choose_kernel(make_config("hashgrid", in_dim=2, out_dim=3), cpu, "fused")
    with pytest.raises(UserError, match="auto, fused or reference"):
        BatchedFitConfig(kernel="triton").validate()


def test_forcing_the_fused_kernel_on_a_cpu_without_the_interpreter_is_a_clear_error(monkeypatch):
    monkeypatch.setattr(fused, "interpreted", lambda: False)
    siren = make_config("siren", in_dim=2, out_dim=3, hidden_dim=32, num_layers=2)
    with pytest.raises(UserError, match="needs a CUDA device"):
        fused.choose_kernel(siren, torch.device("cpu"), "fused")


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=2)),
                                          ("fourier", dict(hidden_dim=16, num_layers=2, num_frequencies=8))])
def test_field_evaluator_fused_forward_equals_the_vmapped_path(name, options):
    from fieldlab.learn.field_batch import FieldEvaluator
    from fieldlab.learn.points import PointSet

    config, spec, template, params, buffers = _fields(name, f=4, **options)
    params = params | buffers  # as a store keeps them: random Fourier frequencies per field
    coords = torch.rand(30, 2) * 2 - 1
    points = PointSet(coords, torch.full((30,), 1 / 30))
    fused_values = FieldEvaluator(config, kernel="fused")(params, points).values
    reference = FieldEvaluator(config, kernel="reference")(params, points).values
    torch.testing.assert_close(fused_values, reference, atol=1e-5, rtol=1e-5)


def _three_fields(name, options, seed):
    """Three fields' spec and parameters, 45 random points (not a multiple of a chunk) and targets."""
    torch.manual_seed(seed)
    config, spec, _, params, _ = _fields(name, f=3, **options)
    n, d = 45, config.in_dim
    return spec, params, torch.rand(n, d) * 2 - 1, torch.rand(3, n, 3) * 2 - 1, torch.arange(3)


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=2)),
                                          ("gauss", dict(hidden_dim=16, num_layers=1, scale=3.0)),
                                          ("siren", dict(hidden_dim=16, num_layers=2, in_dim=3)),  # padded to 4
                                          ("siren", dict(hidden_dim=16, num_layers=2, in_dim=1))])
def test_the_narrow_first_layer_gives_the_tiles_gradients_and_values(name, options, monkeypatch):
    spec, params, coords, values, rows = _three_fields(name, options, seed=2)
    d = spec.in_dim
    results = {}
    for dims in ((), (d,)):  # the coordinates padded into a 16-column tile, then one product per coordinate
        monkeypatch.setattr(fused, "NARROW_DIMS", dims)
        packed = fused.FusedStack(spec, params, block=16)
        assert packed._constants["DP"] == (16 if dims == () else {1: 1, 2: 2, 3: 4}[d])
        _, grad = packed.gradients(coords, values, rows)
        results[dims] = grad, packed.forward(coords)
    (tile_grad, tile_values), (narrow_grad, narrow_values) = results[()], results[(d,)]
    assert tile_grad[:, :16 * d].abs().max() > 0  # the first layer's weight gradient is there to compare
    torch.testing.assert_close(narrow_grad, tile_grad, atol=1e-7, rtol=1e-5)
    torch.testing.assert_close(narrow_values, tile_values, atol=1e-7, rtol=1e-5)


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=2)),
                                          ("siren", dict(hidden_dim=24, num_layers=3, in_dim=3)),
                                          ("gauss", dict(hidden_dim=16, num_layers=1, scale=3.0))])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_bias_sums_and_the_first_layer_tile_give_the_same_gradients(name, options, precision):
    """`sums`: the biases' gradients as products of ones with the chunk's gradients (tensor cores) instead of
    reductions across lanes (1), or as partial sums within the lanes reduced once (2, the first layer's too);
    `first`: the first layer as a TF32×3 tile with the bias as a row of the weight and a column of ones
    beside the coordinates. Same gradients as the lane sums, up to rounding: at bf16 the ones' product rounds
    its operand to bf16 as the weight gradient's product does; partial sums add in fp32 in another order."""
    spec, params, coords, values, rows = _three_fields(name, options, seed=3)
    results = {}
    for sums, first in ((0, 0), (1, 0), (0, 1), (1, 1), (2, 0), (2, 1)):
        packed = fused.FusedStack(spec, params, block=16, precision=precision, sums=sums, first=first)
        assert (packed._constants["SUMS"], packed._constants["FIRST"]) == (sums, first)
        results[sums, first] = packed.gradients(coords, values, rows)
    loss, grad = results[0, 0]
    scale = grad.abs().max()
    for (sums, first), (other_loss, other_grad) in results.items():
        torch.testing.assert_close(other_loss, loss, atol=0, rtol=1e-6)
        bound = 2e-3 if sums == 1 and precision == "bf16" else 1e-6  # bf16: the bias gradients' operand rounded
        assert (other_grad - grad).abs().max() <= bound * scale, (sums, first)
    if precision == "bf16":  # the ones' product is there: it changed the bias gradients by bf16's rounding
        assert (results[1, 0][1] - grad).abs().max() > 0


@pytest.mark.parametrize("name,options", [("siren", dict(hidden_dim=16, num_layers=3)),
                                          ("gauss", dict(hidden_dim=16, num_layers=2, scale=3.0))])
@pytest.mark.parametrize("precision", ["fp32", "bf16"])
def test_the_scaled_pre_activation_gives_the_same_gradients_and_values(name, options, precision):
    """`FOLD` 1 keeps w·z, with the biases (and a held first-layer weight) scaled once, where FOLD 0 keeps z:
    the same values and gradients up to the rounding of that multiply-add (bf16 operands: a bf16 rounding
    can land on the other side, so a looser bound there)."""
    spec, params, coords, values, rows = _three_fields(name, options, seed=5)
    results = {}
    for fold in (0, 1):
        packed = fused.FusedStack(spec, params, block=16, precision=precision)
        packed._constants = dict(packed._constants, FOLD=fold)  # `step`'s
        packed._split_constants = dict(packed._split_constants, FOLD=fold)  # `gradients`'
        results[fold] = packed.gradients(coords, values, rows)
    (loss0, grad0), (loss1, grad1) = results[0], results[1]
    torch.testing.assert_close(loss1, loss0, atol=0, rtol=1e-5)
    bound = 1e-3 if precision == "bf16" else 1e-5
    assert grad0.abs().max() > 0 and (grad1 - grad0).abs().max() <= bound * grad0.abs().max()
    assert not torch.equal(grad1, grad0)  # two computations: the knob reached the kernel


def test_a_one_warp_block_keeps_partial_sums_and_the_split_kernel_lane_sums(monkeypatch):
    """`ONE_WARP_SUMS`: SIREN 2×32 takes one warp, and so partial sums at bf16 and tf32 (fp32, untimed with them,
    keeps the lanes' sums); the split kernel's two warps would sum across warps every chunk, so it keeps them."""
    monkeypatch.setattr(fused, "interpreted", lambda: False)  # the blocks a GPU gets
    config = make_config("siren", in_dim=2, out_dim=3, hidden_dim=32, num_layers=2)
    assert fused.ONE_WARP_SUMS == 2
    for precision, sums in (("bf16", 2), ("tf32", 2), ("fp32", 0)):
        constants, split = fused.launch_constants(fused.fused_spec(config), precision)
        assert (constants["num_warps"], constants["SUMS"], constants["FOLD"]) == (1, sums, sums // 2)
        assert (split["num_warps"], split["SUMS"], split["FOLD"]) == (2, 0, 0)
    two_warps, _ = fused.launch_constants(fused.fused_spec(config), "bf16", warps=2)
    assert two_warps["SUMS"] == 0
    asked, _ = fused.launch_constants(fused.fused_spec(config), "bf16", sums=0)
    assert asked["SUMS"] == 0


def test_siren_3x64_at_bf16_takes_the_bias_sums_and_the_first_layer_tile_by_default(monkeypatch):
    monkeypatch.setattr(fused, "interpreted", lambda: False)  # the blocks a GPU gets (4 warps: no partial sums)
    config = make_config("siren", in_dim=2, out_dim=3, hidden_dim=64, num_layers=3)
    constants, _ = fused.launch_constants(fused.fused_spec(config), "bf16")
    assert (constants["SUMS"], constants["FIRST"], constants["DP"], constants["FOLD"]) == (1, 1, 16, 0)
    narrow, _ = fused.launch_constants(fused.fused_spec(config), "tf32")
    assert (narrow["SUMS"], narrow["FIRST"], narrow["DP"]) == (0, 0, 2)
    fourier = make_config("fourier", in_dim=2, out_dim=3, hidden_dim=64, num_layers=3, num_frequencies=8)
    encoded, _ = fused.launch_constants(fused.fused_spec(fourier), "bf16")
    assert encoded["FIRST"] == 0  # the tile of the coordinates is for fields without an encoding
