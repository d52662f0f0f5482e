"""What a kind of learning supplies to the one training loop (`fieldlab.learn.loop.train_loop`) and to `eval`.

A network owns its forward pass; a task owns everything around it: the step's batch and the network's input
(fields evaluated at the step's points through the batched path), the loss, the held-out score with its name
and direction, and the trivial baseline. The tasks, one file each:

    ClassifyTask   fieldlab.learn.store_tasks   a label per field             cross-entropy    test accuracy ↑
    SegmentTask    fieldlab.learn.store_tasks   a class per point (masks)     cross-entropy    test mIoU ↑
    SDFTask        fieldlab.learn.sdf           a scene's SDF at query points mean sq. error   test SDF MAE ↓

Adding a task is one file: a `Task` subclass (its `metric`, `loss`, `score`), built by its command, which
hands it and the network to `train_loop` and writes its run files from `test_metrics`.
"""

from __future__ import annotations

import abc
import dataclasses
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from fieldlab.learn.points import PointSampler


@dataclasses.dataclass(frozen=True)
class Metric:
    """A task's headline score."""

    name: str
    """eval's `metric` column: accuracy, miou or sdf_mae."""
    key: str
    """Its key in run.json's metrics: test_accuracy, test_miou or test_mae."""
    higher_is_better: bool
    """Its direction: eval's drops (how much worse a cell is than the training cell) follow it."""
    fraction: bool = True
    """A fraction shown in percent, its drops in points; else the value itself, its drops in `unit`."""
    unit: str = "points"
    """What eval's drops of it are counted in."""
    label: str = ""
    """What eval's table legend calls it (default: the name)."""
    short: str = ""
    """What eval's plot calls it (default: the label)."""

    def describe(self) -> str:
        return self.label or self.name

    def axis(self) -> str:
        return self.short or self.describe()


class Task(abc.ABC):
    """A kind of learning: the batch and input of a step, its loss, and the score on the held-out data."""

    metric: Metric

    @abc.abstractmethod
    def loss(self, model: nn.Module, step: int) -> torch.Tensor:
        """The loss of training step `step` (0-based) on this process's part of the step's batch. Every draw
        (rows, points, augmentation) is keyed by the step, so a resumed run takes the same ones."""

    @abc.abstractmethod
    def score(self, net: nn.Module, sampler: PointSampler) -> float:
        """`metric` on the held-out data, the network's input sampled at `sampler`'s point sets."""

    def test_metrics(self, net: nn.Module) -> dict[str, float]:
        """The held-out scores a finished run records (run.json's metrics): the headline first."""
        return {self.metric.key: self.score(net, self.test_sampler())}

    def test_sampler(self) -> PointSampler:
        """The point sets the run is scored at when it ends (the training set's kind and count)."""
        raise NotImplementedError(f"{type(self).__name__} names no test point set")

    def baseline(self) -> dict[str, float]:
        """The trivial predictor's score, where the task has one (e.g. the training scenes' mean SDF)."""
        return {}

    def scoring_seconds(self, last: float) -> float:
        """The seconds that scoring and writing the run take after training, from the last step's `last`
        seconds: what the loop keeps free of the time limit (the next step is kept besides)."""
        return 3 * last


__all__ = ["Metric", "Task"]
