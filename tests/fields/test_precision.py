import pytest
import torch

from fieldlab._precision import FEW_COLUMNS, exact_linear


@pytest.mark.parametrize("columns", [2, FEW_COLUMNS + 1, 512])  # coordinates, and an encoding's features
@pytest.mark.parametrize("precision", ["highest", "high", "medium"])
def test_exact_linear_is_fp32_exact_at_any_matmul_precision_and_under_autocast(columns, precision):
    g = torch.Generator().manual_seed(columns)
    x = torch.rand(300, columns, generator=g) * 2 - 1
    weight = torch.randn(64, columns, generator=g) * 300  # phases of hundreds of radians, as SIREN's ω₀ makes
    bias = torch.randn(64, generator=g)
    expected = (x.double() @ weight.double().T + bias.double()).float()
    previous = torch.get_float32_matmul_precision()
    try:
        torch.set_float32_matmul_precision(precision)
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = exact_linear(x, weight, bias)
    finally:
        torch.set_float32_matmul_precision(previous)
    assert out.dtype == torch.float32
    scale = (x.abs().double() @ weight.abs().double().T).max().item()
    assert (out - expected).abs().max().item() <= 4 * columns * 2**-24 * scale  # fp32 rounding, not bf16's


def test_exact_linear_takes_stacked_weights_that_broadcast():
    x = torch.rand(5, 7, 2)  # (blocks p, points m, in), as MINER evaluates its blocks
    w0 = torch.randn(5, 2, 3)  # (p, in, h): viewed as (p, in, 1, h), column j is (p, 1, h)
    b0 = torch.randn(5, 1, 3)
    out = exact_linear(x, w0[:, :, None], b0)
    assert torch.allclose(out, torch.baddbmm(b0, x, w0), atol=1e-5)


def test_exact_linear_traces_without_a_graph_break():
    """`--compile` fits trace the first layer: asking for the matmul precision there would split the graph."""
    from fieldlab.fields import make_config

    field = make_config("fourier", in_dim=2, out_dim=1, hidden_dim=8, num_layers=1, num_frequencies=4).build()
    explanation = torch._dynamo.explain(field)(torch.rand(16, 2))
    assert explanation.graph_break_count == 0 and explanation.graph_count == 1
