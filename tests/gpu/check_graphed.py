"""GPU check: training steps replayed from CUDA graphs (`learn.graphed.GraphedTraining`) must train as the
eager steps do (run on a CUDA machine, not by pytest).

    python tests/gpu/check_graphed.py        # exit status 1 if any case fails

For DI-Net (Voronoi cell weights, a residual block, batch norms; with full kernels on every set, and with its
default separable convolutions on RQMC and mixed sets) and cnn4, on point sets that are redrawn every step
(RQMC, shrunk), fixed (grid) and mixed, it trains two copies of one network from the
same start for a few steps on the same batches, one eagerly and one through the graphs, and compares every
step's loss, the parameters and the running statistics at the end (relative to their size), and that the
graphed copy did replay graphs: a step that read anything back to the host (a pair list searched instead of
`_neighbors.FULL_PAIRS`, a count) would have been refused a graph and run eagerly.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path[:0] = [str(ROOT / "src"), str(ROOT / "benchmarks")]

import torch  # noqa: E402

from dinet_speed import fields_at  # noqa: E402  the benchmark's smooth random fields, at the points
from fieldlab._optim import Adam  # noqa: E402
from fieldlab.learn.abilities import SizedByPoints  # noqa: E402
from fieldlab.learn.graphed import GraphedTraining  # noqa: E402
from fieldlab.learn.layers import Discretized  # noqa: E402
from fieldlab.learn.nets import net_config  # noqa: E402
from fieldlab.learn.points import PointSampler  # noqa: E402

STEPS = 6
TOLERANCE = 1e-3


def train(net, sampler, graphed: bool, batch: int = 16):
    model = GraphedTraining(net, say=print) if graphed else net
    optimizer = Adam(net.parameters(), lr=1e-3, weight_decay=1e-2)
    losses = []
    for step in range(STEPS):
        points = sampler(step).to("cuda")
        x = Discretized(fields_at(points, batch, step), points)
        labels = torch.arange(batch, device="cuda") % 10
        model.train()
        loss = torch.nn.functional.cross_entropy(model(x), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        del loss  # as train_loop: the step's autograd graph does not outlive it
    replayed = graphed and any(isinstance(g, torch.nn.Module) for g in model._graphs.values())
    return losses, net, replayed


def case(name: str, kind: str, side: int, **options) -> bool:
    cfg = net_config(name, **({"channels": 16, **options} if name.startswith("dinet") else {}))
    if isinstance(cfg, SizedByPoints):
        cfg = cfg.for_points(side * side, 2)
    torch.manual_seed(0)
    net = cfg.build(1, 10, 2).cuda()
    sampler = PointSampler(kind=kind, n=side * side, dim=2, seed=3, mix=("rqmc", "grid", "random", "shrunk"))
    eager_losses, eager, _ = train(copy.deepcopy(net), sampler, graphed=False)
    graph_losses, graphed, replayed = train(copy.deepcopy(net), sampler, graphed=True)
    loss_gap = max(abs(a - b) / max(abs(a), 1e-6) for a, b in zip(eager_losses, graph_losses))
    state_gap = max(float((a - b).abs().max() / b.abs().max().clamp_min(1e-6))
                    for a, b in zip(graphed.state_dict().values(), eager.state_dict().values())
                    if a.is_floating_point())
    ok = replayed and loss_gap <= TOLERANCE and state_gap <= TOLERANCE
    label = name + "".join(f" {k}={v}" for k, v in options.items())
    print(f"{'ok  ' if ok else 'FAIL'} {label:6} {kind:7} {side}²: replayed {replayed}, loss gap {loss_gap:.2e}, "
          f"state gap {state_gap:.2e}, losses {[round(v, 4) for v in graph_losses]}")
    return ok


def main() -> int:
    # cuDNN may pick other convolution algorithms in a capture than eagerly (cnn4's parameters then drift apart
    # by a few % in 6 Adam steps); deterministic ones make the two runs comparable
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    results = [case("dinet", kind, side, separable=False) for kind in ("rqmc", "shrunk", "grid", "mixed")
               for side in (16, 32)]
    results += [case("dinet", kind, side, separable=True) for kind in ("rqmc", "mixed") for side in (16, 32)]
    results.append(case("cnn4", "grid", 16))
    print("all passed" if all(results) else f"{results.count(False)} failed")
    return 0 if all(results) else 1


if __name__ == "__main__":
    sys.exit(main())
