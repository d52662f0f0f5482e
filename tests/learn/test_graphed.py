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
    assert not wrapped._graphs and not wrapped._seen
    assert torch.allclose(first, net(x))


@pytest.mark.parametrize("shape", [(8, 8), (5, 7), (2, 9), (3, 6), (16, 16)])
@pytest.mark.parametrize("factor", [2, 4])
def test_a_grids_sub_grid_holds_the_points_its_levels_say(shape, factor):
    points = P.grid(shape)
    level = factor.bit_length() - 1
    coarse = points.downsample(factor)
    assert len(coarse) == int((points.levels >= level).sum())
    assert coarse.shape == tuple(-(-s // factor) for s in shape)
