"""The stepper contract every training engine implements, and the two engines of stacked fields.

An engine holds the parameters and the optimizer state of f fields and steps them on its own data; a driver
(`fit`, `fit_batch`) decides when to step, measure, shrink and stop::

    engine = StackEngine(stack, coords, values, lrs, betas=..., eps=..., precision="fp32")
    engine.run(0, 1)                   # steps first … end − 1 (the first alone: compilation stays apart)
    quality = measure(engine.predict(coords))
    engine.select(keep)                # fields that reached their target leave, with their Adam moments
    engine.run(1, 50)
    fitted = engine.parameters()       # {name: (f, …)} of the fields still fitting

`StackEngine` is autograd over a `FieldStack` with fieldlab's Adam (the reference path), `FusedEngine` the
fused Triton kernel (forward, backward and Adam in one launch per step); `fit.loop.Fitter` is the engine of
one field (or a stack fitted to the end: it has no `select`).

Shapes: f fields, n points, d coordinate dims, c channels, k points per step.
"""

from __future__ import annotations

from typing import Any, Callable, Protocol, runtime_checkable

import torch

from fieldlab._optim import Adam
from fieldlab.fields import FieldStack
from fieldlab.fit.loop import autocast_for, matmul_precision

PREDICT_POINTS = 2**20
"""Field-points a reference engine's `predict` evaluates at a time: its checks over every sample of every field
then hold a layer's activations for this many points, not for all (16 photos of 512² with SIREN 2×32: 128 MiB
a layer instead of 537 MiB; 256 of them, a CPU's chunk, would have needed 8.6 GiB a layer)."""

Points = Callable[[int, torch.Tensor], torch.Tensor]
"""(step, active positions (f,)) → the points (f, k) each field trains on at that step."""


@runtime_checkable
class Stepper(Protocol):
    """What a driver needs of a training engine."""

    name: str
    """Which path does the steps: reference (autograd and fieldlab's Adam) or fused (the Triton kernel)."""
    step_count: int
    """Steps done so far."""

    def step(self) -> torch.Tensor | None:
        """One step (step `step_count`); the loss where the engine has one at hand, not synchronised."""

    def run(self, first: int, end: int) -> None:
        """Steps first … end − 1."""

    def parameters(self) -> dict[str, torch.Tensor]:
        """The fitted tensors by module name, stacked (f, …) for a stack."""

    def state_dict(self) -> dict[str, Any]:
        """Everything a resumed engine needs to step on as this one would."""

    def load_state_dict(self, state: dict[str, Any]) -> None: ...

    def select(self, rows: torch.Tensor) -> None:
        """Keep only the fields at positions `rows` of the current stack, with their optimizer state."""

    def predict(self, coords: torch.Tensor) -> torch.Tensor:
        """Values at `coords`, fp32 whatever the fit's precision."""


class StackEngine:
    """Autograd over a `FieldStack`, one torch Adam over the stack; the loss is the sum of per-field mean
    squared errors, so each field gets exactly the gradient it would get alone. `coords` (n, d) are shared,
    `values` (f, n, c), `lrs` the learning rate of every step, `points` the step's subsets (None: all)."""

    name = "reference"

    def __init__(self, stack: FieldStack, coords: torch.Tensor, values: torch.Tensor, lrs: list[float], *,
                 betas: tuple[float, float], eps: float, precision: str, compile: bool = False,
                 points: Points | None = None):
        self.stack, self.coords, self.values, self.lrs, self.points = stack, coords, values, lrs, points
        self.active = torch.arange(len(values), device=values.device)
        """Positions in `values` of the fields still fitting."""
        self.step_count = 0
        self.optimizer = Adam(stack.parameters(), lr=lrs[0], betas=betas, eps=eps)
        self.autocast = lambda: autocast_for(precision, values.device)
        self.loss_fn = torch.compile(self._loss) if compile else self._loss

    def _loss(self, stack: FieldStack, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            prediction = stack(x)
        return (prediction.float() - y).square().mean(dim=(1, 2)).sum()

    def run(self, first: int, end: int) -> None:
        self.step_count = first
        while self.step_count < end:
            self.step()

    def step(self) -> torch.Tensor:
        index = self.points(self.step_count, self.active) if self.points else None
        for group in self.optimizer.param_groups:
            group["lr"] = self.lrs[self.step_count]
        active, coords = self.active, self.coords
        if index is not None:
            x, y = coords[index], self.values[active[:, None], index]
        else:
            x, y = coords.expand(len(active), *coords.shape), self.values[active]
        loss = self.loss_fn(self.stack, x, y)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        self.step_count += 1
        return loss.detach()

    def predict(self, coords: torch.Tensor) -> torch.Tensor:
        """Values (f, n, c) at `coords` (n, d), evaluated `PREDICT_POINTS` field-points at a time."""
        f, n = len(self.stack), coords.shape[0]
        piece = max(1, PREDICT_POINTS // max(f, 1))
        with torch.no_grad(), matmul_precision("fp32"):
            if n <= piece:
                return self.stack(coords.expand(f, *coords.shape))
            out = None  # made by the first piece, which gives the values' channels and dtype
            for start in range(0, n, piece):
                part = coords[start:start + piece]
                values = self.stack(part.expand(f, *part.shape))
                if out is None:
                    out = values.new_empty((f, n, *values.shape[2:]))
                out[:, start:start + len(part)] = values
        return out

    def parameters(self) -> dict[str, torch.Tensor]:
        return {name: value.detach() for name, value in self.stack.state()[0].items()}

    def state_dict(self) -> dict[str, Any]:
        return {"step": self.step_count, "active": self.active.clone(),
                "params": {k: v.clone() for k, v in self.parameters().items()},
                "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _shrink_to(self, state["active"])
        with torch.no_grad():
            for name, value in self.stack.state()[0].items():
                value.copy_(state["params"][name])
        self.optimizer.load_state_dict(state["optimizer"])
        self.step_count = state["step"]

    def select(self, rows: torch.Tensor) -> None:
        old_stack, old_optimizer = self.stack, self.optimizer
        self.stack = old_stack.select(rows)
        self.optimizer = Adam(self.stack.parameters(), lr=old_optimizer.defaults["lr"],
                              betas=old_optimizer.defaults["betas"], eps=old_optimizer.defaults["eps"],
                              fused=old_optimizer.defaults["fused"])
        for old_p, new_p in zip(old_stack.state()[0].values(), self.stack.state()[0].values()):
            state = old_optimizer.state.get(old_p)
            if state:
                self.optimizer.state[new_p] = {k: v[rows].clone() if k != "step" else v.clone()
                                               for k, v in state.items()}
        self.active = self.active[rows]


class FusedEngine:
    """The fused Triton kernel: one launch per step does forward, backward and Adam of every field (a
    `FusedStack` holds the parameters and moments). Arguments as `StackEngine`'s, with `spec` the kernel's
    `FusedSpec`, `params`/`buffers` the stacked tensors and `cuda_graphs` whether full-batch runs of several
    steps on CUDA replay a captured graph."""

    name = "fused"

    def __init__(self, spec, params: dict, buffers: dict, coords: torch.Tensor, values: torch.Tensor,
                 lrs: list[float], *, betas: tuple[float, float], eps: float, precision: str,
                 cuda_graphs: bool = True, points: Points | None = None):
        from fieldlab.kernels import FusedStack

        self.stack = FusedStack(spec, params, buffers=buffers, precision=precision, betas=betas, eps=eps)
        self.coords, self.values, self.points = coords, values, points
        self.hyper = self.stack.hyper(lrs)  # every step's Adam scalars made once: a step is one launch
        self.active = torch.arange(len(values), device=values.device)
        self._rows = self.active.to(torch.int32)  # the kernel's row map
        self.step_count = 0
        self.graphs = cuda_graphs and self.stack.flat.device.type == "cuda"
        self._graph_below = (4 * torch.cuda.get_device_properties(self.stack.flat.device).multi_processor_count
                             if self.graphs else 0)
        self._graphs: dict[int, tuple[torch.cuda.CUDAGraph, torch.Tensor]] = {}  # steps → (graph, its hyper rows)

    def step(self) -> None:
        self.run(self.step_count, self.step_count + 1)

    def run(self, first: int, end: int) -> None:
        """Steps first … end − 1 (their learning rates are in the hyper-parameter table). Full-batch runs of
        several steps on CUDA replay a captured CUDA graph of that many launches; the graph reads its Adam rows
        from a window that is refilled before each replay, and is captured again when fields leave the batch."""
        count = end - first
        self.step_count = end
        # Graphs pay only while a step is too short to hide its launch: fewer fields than about 4 programs
        # per multiprocessor (H100, 2×32: 1,175 vs 942 fields/s at 100 fields, 7,783 vs 8,392 at 1,000).
        if not self.graphs or self.points is not None or count < 2 or len(self.active) >= self._graph_below:
            for step in range(first, end):
                self.stack.step(self.coords, self.values, self._rows, self.hyper[step],
                                index=self.points(step, self.active) if self.points else None)
            return
        if count not in self._graphs:
            self._graphs[count] = self._capture(first, end)
        graph, window = self._graphs[count]
        window.copy_(self.hyper[first:end])
        graph.replay()

    def _capture(self, first: int, end: int) -> tuple[torch.cuda.CUDAGraph, torch.Tensor]:
        window = self.hyper[first:end].clone()
        graph = torch.cuda.CUDAGraph()
        # Captured on a side stream by hand: `torch.cuda.graph` would also synchronise, collect garbage
        # and empty the allocator's cache at every capture, which costs more than the launches it saves.
        side = torch.cuda.Stream(device=window.device)
        side.wait_stream(torch.cuda.current_stream(window.device))
        with torch.cuda.stream(side):
            graph.capture_begin()
            try:
                for i in range(end - first):
                    self.stack.step(self.coords, self.values, self._rows, window[i])
            finally:
                graph.capture_end()
        torch.cuda.current_stream(window.device).wait_stream(side)
        return graph, window

    def predict(self, coords: torch.Tensor) -> torch.Tensor:
        return self.stack.forward(coords, precision="fp32")

    def parameters(self) -> dict[str, torch.Tensor]:
        return self.stack.params()

    def state_dict(self) -> dict[str, Any]:
        s = self.stack
        return {"step": self.step_count, "active": self.active.clone(), "flat": s.flat.clone(), "m": s.m.clone(),
                "v": s.v.clone(), "kernel_steps": s.step_count}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        _shrink_to(self, state["active"])
        s = self.stack
        s.flat.copy_(state["flat"])
        s.m.copy_(state["m"])
        s.v.copy_(state["v"])
        s.step_count, self.step_count = state["kernel_steps"], state["step"]

    def select(self, rows: torch.Tensor) -> None:
        self.stack.select(rows)
        self.active = self.active[rows]
        self._rows = self.active.to(torch.int32)
        self._graphs.clear()  # they hold the old tensors


STEPPERS: dict[str, str | None] = {
    "fieldlab.fit.engine.StackEngine": None,  # stacks of fields, autograd and fieldlab's Adam (fit_batch's reference)
    "fieldlab.fit.engine.FusedEngine": None,  # stacks of fields, the fused Triton kernel (fit_batch's fused path)
    "fieldlab.fit.loop.Fitter": None,  # one field: fit, extend, and meshes through its OccupancyFitter subclass
    "fieldlab.fit.miner.ScaleTrainer":
        "MINER's pyramid driver (fit_pyramid) owns each scale's schedule and point draws and hands every step "
        "its positions and learning rate (step(positions, lr)); blocks leave by their own error (retire), not "
        "by a driver's rows, and its state_dict is a part of the pyramid's checkpoint (fit.miner_resume), so "
        "run/select would go unused",
    "fieldlab.fit.meta.MetaLearner":
        "an outer step takes its batch of signals (step(values)) and adapts their latents in an inner loop of "
        "functional SGD steps (adapt); its shared weights are torch's optimizer's list (`parameters`), and it "
        "is never shrunk or read by rows: fit_latents hands the fitted stack to the driver",
}
"""Every class in `fit/` that does training steps (defines `step` or `run`), by qualified name: one step
implementation per engine. None: it is a `Stepper`; else why it keeps its own interface. `tests/test_imports.py`
checks that no other class in `fit/` defines a step, so a new copy fails until it is listed here (better: use
one of these)."""


def _shrink_to(engine: StackEngine | FusedEngine, active: torch.Tensor) -> None:
    """Select the fields of `engine` that a saved state's `active` positions still hold."""
    active = active.to(engine.active.device)
    if not torch.equal(active, engine.active):
        position = {int(a): i for i, a in enumerate(engine.active.tolist())}
        engine.select(torch.tensor([position[int(a)] for a in active.tolist()], device=engine.active.device))
