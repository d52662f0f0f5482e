"""GPU check of MINER's blocks stepped by the fused kernel (`ScaleTrainer(kernel=...)`, what `fieldlab fit
--field miner` runs on CUDA) against the reference path (run on a CUDA machine, not by pytest).

    python tests/gpu/check_miner_fused.py            # exit status 1 if any check fails
    python tests/gpu/check_miner_fused.py --smoke    # on the CPU, through Triton's interpreter (CI)

From the same blocks, targets and draws (a smooth random signal per block, 32×32 samples and a margin of 2,
256 shared positions per step), it checks: each block's gradient of a step at fp32 (max |Δ| / max |g| ≤ 1e-4:
the kernel's fp32 is three TF32 products); the mean block MSE after `--steps` steps at each precision
(within 5% of the reference's, which at tf32 and bf16 rounds differently: cuBLAS's TF32 and autocast);
with and without the positional encoding; and that `--kernel auto` takes the kernel on CUDA at every
precision.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))

from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fields.miner import BlockNet  # noqa: E402
from fieldlab.fit import FitConfig  # noqa: E402
from fieldlab.fit import miner as M  # noqa: E402
from fieldlab.kernels import fused as fused_module  # noqa: E402

PARAM_TOL, LOSS_TOL = 1e-4, 0.05


def targets(blocks: int, side: int, device) -> torch.Tensor:
    """(blocks, side², 3): a few random sinusoids per block, values within about ±0.5."""
    g = torch.Generator().manual_seed(3)
    axis = torch.linspace(-1, 1, side)
    x = torch.stack(torch.meshgrid(axis, axis, indexing="ij"), -1).reshape(-1, 2)
    freq = 4 * torch.randn(blocks, 4, 2, generator=g)
    phase = 6.28 * torch.rand(blocks, 4, 3, generator=g)
    waves = torch.sin((x[None, :, None, :] * freq[:, None]).sum(-1)[..., None] + phase[:, None])  # (p, m, 4, 3)
    return (0.15 * waves.sum(2)).to(device)


def pair(net: BlockNet, blocks: int, size: int, margin: int, precision: str, device):
    torch.manual_seed(0)
    params = net.init(blocks, scale=0, device=device)
    target = targets(blocks, size + 2 * margin, device)
    stop = torch.full((blocks,), 1e-12, device=device)
    make = lambda kernel: M.ScaleTrainer(net, torch.arange(blocks, device=device), params, target, stop, lr=2e-3,
                                         precision=precision, margin=margin, kernel=kernel)
    return make(None), make(net.fused_spec())


def run(reference, kernel, steps: int, positions: int, samples: int, device) -> None:
    draws = torch.Generator(device=device).manual_seed(1)
    for _ in range(steps):
        at = torch.randint(0, samples, (positions,), device=device, generator=draws)
        reference.step(at, 2e-3)
        kernel.step(at, 2e-3)


def gradients(reference, kernel, positions: int, samples: int, device) -> tuple[dict, dict]:
    """Each block's gradient of its mean squared error at one draw of positions: autograd on the reference
    trainer's blocks, and the kernel's (`FusedStack.gradients`), both in the blocks' layout. Gradients, not
    parameters after steps: Adam's first steps move a parameter by about ±lr whatever its gradient's size, so
    a gradient near zero whose sign the summation order flips moves it the other way."""
    from fieldlab.kernels import unpack

    at = torch.randint(0, samples, (positions,), device=device, generator=torch.Generator(device=device).manual_seed(5))
    params = {k: v.detach().clone().requires_grad_(True) for k, v in reference.parameters().items()}
    error = (reference.net(params, reference.x[at][None]) - reference.target[:, at]).square().mean(dim=(1, 2))
    error.sum().backward()
    p = len(kernel)
    _, grad = kernel.stack.gradients(kernel.x, kernel.target, kernel._rows[:p],
                                     index=at.to(torch.int32)[None].expand(p, positions))
    return {k: v.grad for k, v in params.items()}, kernel.net.from_fused(unpack(grad, kernel.kernel))


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--smoke", action="store_true", help="CPU, Triton's interpreter, tiny")
    parser.add_argument("--precisions", default="fp32,tf32,bf16")
    parser.add_argument("--steps", type=int, default=300)
    args = parser.parse_args()
    if args.smoke:
        fused_module.use_interpreter()
    device = torch.device("cpu" if args.smoke else "cuda")
    blocks, size, margin, positions, steps = (6, 6, 1, 16, 4) if args.smoke else (512, 32, 2, 256, args.steps)
    samples = (size + 2 * margin) ** 2
    failed = False

    def report(ok: bool, what: str) -> None:
        nonlocal failed
        failed |= not ok
        print(f"{'ok' if ok else 'FAIL'} {what}", flush=True)

    for frequencies in (0, 4):
        net = BlockNet(2, 3, 18, 3, "sine", 30.0, frequencies)
        reference, kernel = pair(net, blocks, size, margin, "fp32", device)
        a, b = gradients(reference, kernel, positions, samples, device)
        worst = max(float((a[k] - b[k]).abs().max() / a[k].abs().max()) for k in a)
        report(worst <= PARAM_TOL, f"miner 3x18 PE {frequencies}: fp32 gradients of a step, max |Δ|/max |g| "
                                   f"{worst:.1e} (≤ {PARAM_TOL:g})")
        for precision in args.precisions.split(","):
            reference, kernel = pair(net, blocks, size, margin, precision, device)
            first = float(reference.block_errors().mean())
            run(reference, kernel, steps, positions, samples, device)
            a, b = float(reference.block_errors().mean()), float(kernel.block_errors().mean())
            report(abs(a - b) <= LOSS_TOL * a and b < first,
                   f"miner 3x18 PE {frequencies} {precision}: mean block MSE after {steps} steps {b:.3e} against "
                   f"{a:.3e} (from {first:.3e}; within {LOSS_TOL:.0%})")
    if not args.smoke:
        for precision in ("fp32", "bf16"):
            _, stats = M.fit_pyramid(targets(1, 64, device)[0].reshape(64, 64, 3).cpu(),
                                     make_config("miner", in_dim=2, out_dim=3, scales=2, block_size=16),
                                     FitConfig(steps=4, device="cuda", precision=precision))
            report(stats.kernel == "fused", f"--kernel auto on CUDA at {precision} steps sine blocks with the "
                                            f"{stats.kernel} path")
    print("all checks passed" if not failed else "some checks FAILED")
    return int(failed)


if __name__ == "__main__":
    sys.exit(main())
