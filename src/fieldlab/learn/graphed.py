"""A network's training forward and backward on a GPU, replayed from CUDA graphs.

A DI-Net training step on a GPU is bound by its launches, not by its arithmetic: about 330 forward and 250
backward kernels of a few microseconds each, so a network with cnn4's floating-point work steps no faster
than the default (BENCHMARKS.md, issue 20). A CUDA graph records those launches once and replays them as one.
It needs every replay to have the same shapes and to read nothing back to the host, which the DI layers
give on a GPU: a small point set's neighbourhoods keep every (query, source) pair
(`_neighbors.FULL_PAIRS`), so their shapes follow from the point counts, and a step's new point set (RQMC,
shrunk) enters the graph as new values of the same coordinates and weights.

`GraphedTraining(net)` is what `train_loop` hands the task on CUDA; it takes what the net takes. A
`Discretized` input in training mode is replayed from the graph of its signature (batch, channels, point
count and kind, grid shape, dtype, autocast), captured at the signature's second step (the first runs
eagerly, making the caches and the lazy initialization a capture must not hold), once a forward and
backward under `torch.cuda.set_sync_debug_mode("error")` showed that nothing reads back to the host. Any
other call, a net that returns points (a segmenter), and a signature that fails the check (a point set too
large to keep every pair) run the net eagerly: the same values, at eager speed; a failed check says why once.
Running statistics (`DINorm`) are restored after the check and the capture, so they move once per step as in
an eager run.

A caller drops each step's autograd graph (its loss) before the next step, as `train_loop` does: a graph kept
alive keeps the parameters' gradient accumulators of the stream it ran on, and a capture that meets them fails
("operation would make the legacy stream depend on a capturing blocking stream"; the step then runs eagerly).
One call per step: a replay overwrites the previous one's output and saved activations.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from fieldlab.learn.layers import Discretized
from fieldlab.learn.points import PointSet

_CAPTURE_NEXT = object()
"""A signature whose first step ran eagerly: its next step is captured."""

GRAPHS = True
"""Whether `train_loop` replays training steps on CUDA from graphs (benchmarks/dinet_speed.py --graphs
compares both ways in one run)."""


class _Input(nn.Module):
    """The net on tensors alone (what a graph takes): the values, and the coordinates and weights of a point
    set whose kind, grid shape and grid order are this signature's."""

    def __init__(self, net: nn.Module, points: PointSet):
        super().__init__()
        self.net = net
        self.kind, self.shape, self.quadrature = points.kind, points.shape, points.quadrature
        self.raster, self.levels = points.raster, points.levels  # a grid's, fixed by its shape

    def forward(self, values: torch.Tensor, coords: torch.Tensor, weights: torch.Tensor) -> torch.Tensor:
        points = PointSet(coords, weights, self.kind, self.shape, self.raster, self.levels,
                          quadrature=self.quadrature)
        return self.net(Discretized(values, points))


class GraphedTraining(nn.Module):
    """`net` whose training calls on CUDA replay captured graphs, one per input signature (module doc)."""

    def __init__(self, net: nn.Module, say=None):
        super().__init__()
        self.net = net
        self._graphs: dict[tuple, nn.Module | None] = {}
        """Per signature: its graphed net, None (eager for good), or `_CAPTURE_NEXT`."""
        self._say = say

    def forward(self, x, *rest):
        if rest or not self.training or not _on_cuda(x):
            return self.net(x, *rest)
        key = _signature(x)
        if key not in self._graphs:  # the first step of a signature runs eagerly
            out = self.net(x)
            # a net that returns points (a segmenter) gets no graph, without a word
            self._graphs[key] = _CAPTURE_NEXT if isinstance(out, torch.Tensor) else None
            return out
        graphed = self._graphs[key]
        if graphed is _CAPTURE_NEXT:
            graphed = self._graphs[key] = self._capture(x)
        if graphed is None:
            return self.net(x)
        return graphed(x.values, x.points.coords, x.points.weights)

    def _capture(self, x: Discretized) -> nn.Module | None:
        core = _Input(self.net, x.points)
        # the graph's own input tensors, which each replay fills: never a caller's (a fixed grid's coordinates
        # are cached and shared)
        args = (x.values.clone(), x.points.coords.clone(), x.points.weights.clone())
        kept = [b.detach().clone() for b in self.net.buffers()]
        try:
            problem = _host_reads(core, args)
            if problem is None:
                return torch.cuda.make_graphed_callables(core, args, allow_unused_input=True)
        except RuntimeError as error:  # an operation a capture cannot hold that the check did not see
            problem = f"the capture failed: {_first_line(error.__context__ or error)}"
        finally:
            with torch.no_grad():
                for buffer, value in zip(self.net.buffers(), kept):
                    buffer.copy_(value)
        if self._say is not None:
            self._say(f"{len(x.points):,} {x.points.kind} points: steps run without a CUDA graph ({problem})")
        return None


def _on_cuda(x) -> bool:
    """Whether `x` is what a graph takes: a `Discretized` on CUDA."""
    return isinstance(x, Discretized) and x.values.device.type == "cuda"


def _signature(x: Discretized) -> tuple:
    """What fixes a graph: the shapes and dtypes of the values and points, the point set's kind and grid,
    and the autocast state."""
    points = x.points
    autocast = torch.is_autocast_enabled("cuda")
    return (tuple(x.values.shape), x.values.dtype, x.values.device, tuple(points.coords.shape), points.kind,
            points.shape, points.quadrature, points.weights.dtype, autocast,
            torch.get_autocast_dtype("cuda") if autocast else None, torch.get_float32_matmul_precision())


def _host_reads(core: nn.Module, args: tuple[torch.Tensor, ...]) -> str | None:
    """Why `core` on `args` cannot be captured, or None: a forward and backward (gradients returned, not
    accumulated) under the sync debug mode, which raises at any read back to the host."""
    previous = torch.cuda.get_sync_debug_mode()
    torch.cuda.set_sync_debug_mode("error")
    try:
        out = core(*args)
        params = [p for p in core.parameters() if p.requires_grad]
        torch.autograd.grad(out.float().sum(), params, allow_unused=True)
    except RuntimeError as error:
        return _first_line(error)
    finally:
        torch.cuda.set_sync_debug_mode(previous)
    return None


def _first_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return f"{type(error).__name__}: {lines[0][:200] if lines else ''}"


__all__ = ["GRAPHS", "GraphedTraining"]
