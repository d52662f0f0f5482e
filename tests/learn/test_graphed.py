"""What a CUDA graph of a training step is built from, checked on the CPU: the net on tensors alone rebuilds
the point set it was given (kind, grid order, cell weights), and a grid's sub-grids are counted without reading
a tensor back. The capture and replay themselves run on a GPU: tests/gpu/check_graphed.py."""

import pytest
import torch

from fieldlab.learn import points as P
from fieldlab.learn.graphed import GraphedTraining, _Input, _signature
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import net_config


@pytest.mark.parametrize("kind", ["grid", "rqmc", "shrunk"])
def test_the_net_on_tensors_alone_answers_as_on_its_point_set(kind):
    points = P.PointSampler(kind=kind, n=64, dim=2, seed=2)(1)
    torch.manual_seed(0)
    net = net_config("dinet", channels=4).for_points(64, 2).build(1, 3, 2).eval()
    values = torch.randn(2, 64, 1)
    expected = net(Discretized(values, points))
    core = _Input(net, points)
    got = core(values.clone(), points.coords.clone(), points.weights.clone())  # new tensors: nothing cached is reused
    assert torch.allclose(got, expected, atol=1e-5)


def test_signatures_tell_apart_what_a_graph_fixes():
    a = Discretized(torch.zeros(2, 64, 1), P.grid((8, 8)))
    assert _signature(a) == _signature(Discretized(torch.ones(2, 64, 1), P.grid((8, 8))))
    others = [Discretized(torch.zeros(3, 64, 1), P.grid((8, 8))), Discretized(torch.zeros(2, 64, 1), P.qmc(64, 2)),
              Discretized(torch.zeros(2, 64, 1), P.grid((4, 16))), Discretized(torch.zeros(2, 64, 2), P.grid((8, 8)))]
    assert len({_signature(a), *map(_signature, others)}) == 5


def test_off_a_gpu_the_wrapper_is_the_net():
    net = net_config("dinet", channels=4).for_points(64, 2).build(1, 3, 2)
    wrapped = GraphedTraining(net)
    x = Discretized(torch.randn(2, 64, 1), P.grid((8, 8)))
    torch.manual_seed(0)
    first = wrapped(x)
    assert not wrapped._graphs
    assert torch.allclose(first, net(x))


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (2, 9), (3, 6), (16, 16)])
@pytest.mark.parametrize("factor", [2, 4])
def test_a_grids_sub_grid_holds_the_points_its_levels_say(shape, factor):
    points = P.grid(shape)
    level = factor.bit_length() - 1
    coarse = points.downsample(factor)
    assert len(coarse) == int((points.levels >= level).sum())
    assert coarse.shape == tuple(-(-s // factor) for s in shape)


def test_the_loop_drops_a_steps_autograd_graph_before_the_next_step():
    """A step's loss (and with it the autograd graph and the gradient accumulators it holds) is gone when the
    next step's loss is made: a CUDA graph captured in that step must not meet the last step's accumulators."""
    import weakref

    from fieldlab.learn.loop import LoopOptions, train_loop
    from fieldlab.learn.task import Metric, Task

    class Probe(Task):
        metric = Metric("loss", "loss", higher_is_better=False)

        def __init__(self):
            self.last, self.alive = None, []

        def loss(self, model, step):
            self.alive.append(self.last is not None and self.last() is not None)
            out = model(torch.ones(2, 3)).square().sum()
            self.last = weakref.ref(out)
            return out

        def score(self, net, sampler):
            return 0.0

    task = Probe()
    train_loop(task, torch.nn.Linear(3, 1), LoopOptions(steps=3, lr=1e-3, weight_decay=0.0, warmup=0),
               device=torch.device("cpu"), progress=lambda line: None)
    assert task.alive == [False, False, False]


def test_a_signature_runs_eagerly_once_then_from_its_graph_or_eagerly_for_good(monkeypatch):
    """The wrapper's bookkeeping, with the capture stubbed (the real one needs CUDA: tests/gpu/check_graphed.py):
    a signature's first step is eager, its second captures, later ones replay; a refused capture is not retried;
    a net that returns points is never captured."""
    from fieldlab.learn import graphed

    monkeypatch.setattr(graphed, "_on_cuda", lambda x: isinstance(x, Discretized))
    captured = []

    class Replay(torch.nn.Module):
        def forward(self, values, coords, weights):
            return torch.full((len(values), 3), 7.0)

    def capture(self, x):
        captured.append(len(x.points))
        return Replay() if len(x.points) == 64 else None  # the 16-point signature is refused

    monkeypatch.setattr(graphed.GraphedTraining, "_capture", capture)
    net = net_config("dinet", channels=4).for_points(64, 2).build(1, 3, 2)
    wrapped = GraphedTraining(net)
    big, small = (Discretized(torch.randn(2, n, 1), P.grid((s, s))) for n, s in ((64, 8), (16, 4)))
    outs = [wrapped(x) for x in (big, small, big, small, big, small)]
    assert captured == [64, 16]  # each captured at its second step, once
    assert not (outs[0] == 7).all() and (outs[2] == 7).all() and (outs[4] == 7).all()
    assert not (outs[3] == 7).any() and not (outs[5] == 7).any()

    class Points(torch.nn.Module):  # a segmenter's answer: points, not a tensor
        def forward(self, x):
            return x

    wrapped = GraphedTraining(Points())
    for _ in range(3):
        wrapped(big)
    assert captured == [64, 16] and list(wrapped._graphs.values()) == [None]
