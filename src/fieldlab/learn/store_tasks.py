"""The tasks of networks trained on a FieldStore (`fieldlab train`): classification (a label per field) and
segmentation (a class per point, from the store's masks), on the one learn loop (`fieldlab.learn.loop`).

A step (`StoreTask.loss`): draw a global batch of rows (seeded by step), draw the step's point set
(`TrainConfig.step_points`), evaluate the batch's fields there through the batched path (`FieldEvaluator`),
augment (coordinate jitter, intensity noise, flips), then the cross-entropy: per field (a classifier) or per
point (a segmenter, its labels mirrored where the input was flipped). Under `torchrun` each rank takes its
slice of the same global batch and draws. `score` is the held-out accuracy or mIoU, also `eval`'s.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Callable

import numpy as np
import torch
import torch.nn as nn

from fieldlab import distributed
from fieldlab._errors import UserError
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import NetConfig
from fieldlab.learn.points import PointSampler
from fieldlab.learn.task import Metric, Task

if TYPE_CHECKING:
    from fieldlab.learn.train import TrainConfig
    from fieldlab.signals import SignalInfo


# -- data --------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Split:
    """Rows of a store held in memory: per-field tensors and labels."""

    rows: np.ndarray
    params: dict[str, torch.Tensor]
    labels: torch.Tensor
    masks: torch.Tensor | None = None
    """(rows, H, W) per-pixel classes, for segmentation (`fieldlab.learn.segment`)."""


def split_rows(store) -> tuple[np.ndarray, np.ndarray, str]:
    """(train rows, test rows, how): the store's own test/val split, else every 5th source item held out
    (by source item, so augmented copies of a test item never reach training). An incomplete store is refused,
    and so is one that leaves either side empty (a score over no fields would read 0%, or divide by zero)."""
    store.require_complete()
    for test in ("test", "val", "validation"):
        if test in store.split_names and len(store.rows(test)):
            train = np.concatenate([store.rows(s) for s in store.split_names if s != test])
            if not len(train):
                raise UserError(f"{store.path} holds only its {test!r} split: nothing to train on")
            return np.sort(train), store.rows(test), f"split {test!r}"
    rows = store.rows()
    source = store.column("source_index")[rows]
    source = np.where(source >= 0, source, rows)
    held = source % 5 == 4
    if not held.any():
        raise UserError(f"{store.path} has no test split, and its {len(np.unique(source))} source item(s) are too few "
                        "for every 5th to be held out: fit-dataset at least 5 items, or give --test-fraction")
    return rows[~held], rows[held], "every 5th source item held out"


def load_split(store, rows: np.ndarray, device, masks: bool = False) -> Split:
    labels = torch.from_numpy(store.column("labels")[rows]).long()
    params = {k: v.to(device) for k, v in store.read(rows).items()}
    if masks:
        from fieldlab.learn.segment import store_masks

        return Split(rows, params, labels.to(device), store_masks(store, rows).to(device))
    return Split(rows, params, labels.to(device))


def num_classes(store, segment: bool = False) -> int:
    if segment:  # a segmentation store's label_names name the mask classes
        if not store.label_names:
            raise UserError(f"{store.path} names no mask classes; segmentation needs a source with masks (sample:shapes)")
        return len(store.label_names)
    labels = store.column("labels")[store.rows()]
    labels = labels[labels >= 0]
    if not len(labels):
        raise UserError(f"{store.path} has no labels; a classifier needs a labelled store (e.g. sample:digits)")
    return max(len(store.label_names), int(labels.max()) + 1)


# -- inputs -------------------------------------------------------------------------------------------
def jittered(coords: torch.Tensor, jitter: float | torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
    """`coords` (n, d) moved by normal noise of standard deviation `jitter` (one, or one per axis, on any
    device; the noise is drawn on the CPU by `generator`, so every device draws the same), or as they are."""
    sigma = torch.as_tensor(jitter, dtype=coords.dtype)
    if not bool(sigma.any()):
        return coords
    return coords + (sigma * torch.randn(coords.shape, generator=generator)).to(coords.device)


def make_input(cfg: NetConfig, evaluator: FieldEvaluator, params: dict[str, torch.Tensor], points,
               *, jitter: float | torch.Tensor = 0.0, noise: float | torch.Tensor = 0.0, flip: torch.Tensor | None = None,
               generator: torch.Generator | None = None):
    """What the network eats for this batch: the per-field tensors, or the fields sampled at `points`, moved by
    `jitter` (standard deviations, one or one per axis, in the points' units)."""
    if cfg.takes == "params":
        return params
    coords = jittered(points.coords, jitter, generator)
    x = evaluator(params, points, coords)
    values = x.values
    if flip is not None and flip.any():  # mirror the image: sample at (y, -x) instead of (y, x)
        values = torch.where(flip.to(values.device)[:, None, None], evaluator(params, points, mirror(coords)).values,
                             values)
    if isinstance(noise, torch.Tensor):
        values = values + noise.to(values.device)
    elif noise:
        values = values + noise * torch.randn(values.shape, generator=generator).to(values.device)
    return Discretized(values, points)


def mirror(coords: torch.Tensor) -> torch.Tensor:
    """`coords` (y, x) mirrored to (y, -x): where a flipped image is sampled, and its labels read."""
    mirrored = coords.clone()
    mirrored[:, -1] = -mirrored[:, -1]
    return mirrored


def input_points(cfg: NetConfig, points):
    """Where the fields are sampled for the network: `points` itself, except for a grid segmenter (FCN),
    which reads a grid of as many points and answers at `points`."""
    if cfg.takes == "grid" and cfg.task == "segment" and not points.is_grid:
        return PointSampler(kind="grid", n=len(points), dim=points.dim)().to(points.coords.device)
    return points


def segment_logits(model: nn.Module, cfg: NetConfig, x, points) -> torch.Tensor:
    """Per-point logits (b, n, classes) of a segmenter at `points`: DI segmenters answer at their input
    points; FCNs and hypernetworks are queried there."""
    if cfg.takes == "points":
        return model(x).values
    return model(x, points).values


@torch.no_grad()
def accuracy(net: nn.Module, cfg: NetConfig, evaluator: FieldEvaluator, split: Split, sampler: PointSampler,
             batch_size: int = 256) -> float:
    """Top-1 accuracy on `split`; randomized point sets are redrawn for every batch."""
    net.eval()
    correct = 0
    for i, start in enumerate(range(0, len(split.rows), batch_size)):
        sl = slice(start, start + batch_size)
        device = split.labels.device
        x = make_input(cfg, evaluator, {k: v[sl] for k, v in split.params.items()}, sampler(10_000 + i).to(device))
        correct += int((net(x).argmax(-1) == split.labels[sl]).sum())
    return correct / max(1, len(split.rows))


@torch.no_grad()
def segment_scores(net: nn.Module, cfg: NetConfig, evaluator: FieldEvaluator, split: Split, sampler: PointSampler,
                   classes: int, batch_size: int = 256) -> tuple[float, float]:
    """(mIoU, pixel accuracy) of per-point predictions on `split`, accumulated over all its points."""
    from fieldlab.learn.segment import confusion, labels_at, miou

    net.eval()
    matrix = torch.zeros(classes, classes, dtype=torch.long, device=split.masks.device)
    for i, start in enumerate(range(0, len(split.rows), batch_size)):
        sl = slice(start, start + batch_size)
        points = sampler(10_000 + i).to(split.masks.device)
        x = make_input(cfg, evaluator, {k: v[sl] for k, v in split.params.items()}, input_points(cfg, points))
        pred = segment_logits(net, cfg, x, points).argmax(-1)
        matrix += confusion(pred, labels_at(split.masks[sl], points.coords), classes)
    return miou(matrix), float(matrix.diag().sum() / matrix.sum().clamp_min(1))


def score(net: nn.Module, cfg: NetConfig, evaluator: FieldEvaluator, split: Split, sampler: PointSampler,
          classes: int) -> float:
    """The task's headline metric: mIoU for segmenters, top-1 accuracy for classifiers."""
    if cfg.task == "segment":
        return segment_scores(net, cfg, evaluator, split, sampler, classes)[0]
    return accuracy(net, cfg, evaluator, split, sampler)


# -- the tasks ---------------------------------------------------------------------------------------------
@dataclasses.dataclass(eq=False)
class StoreTask(Task):
    """A network of `cfg` on the fields of a store. For scoring alone (`eval`) only the first four are given."""

    cfg: NetConfig
    evaluator: FieldEvaluator
    classes: int
    test: Split | Callable[[], Split]
    """The held-out rows, or what loads them (after training, when they are first scored)."""
    config: TrainConfig | None = None
    train: Split | None = None
    test_fields: int = 0
    """Held-out fields (what the time limit keeps room to score)."""
    signal: SignalInfo | None = None
    """The store's signals (dimensions, channels), for training."""

    def __post_init__(self):
        if self.config is not None:
            local = self.config.batch_size // distributed.world_size()
            self.part = slice(distributed.rank() * local, (distributed.rank() + 1) * local)
            self.samplers = self.config.samplers(self.signal.in_dim)
            self.sigma = self.jitter()  # made once, not per step

    def held_out(self) -> Split:
        if callable(self.test):
            self.test = self.test()
        return self.test

    def loss(self, model: nn.Module, step: int) -> torch.Tensor:
        from fieldlab.fit.points import step_generator, with_replacement

        config, cfg, part = self.config, self.cfg, self.part
        device = self.train.labels.device
        g = step_generator(config.seed, step)
        pick = with_replacement(len(self.train.rows), config.batch_size, g)[part].to(device)
        flips = None
        if config.flip and cfg.takes != "params":  # a field's weights are not flipped
            flips = (torch.rand(config.batch_size, generator=g) < 0.5)[part]
        points = config.step_points(self.samplers, step).to(device)
        params = {k: v[pick] for k, v in self.train.params.items()}
        noise = None
        if config.noise and cfg.takes != "params":  # drawn for the global batch, so every rank slices the same draw
            noise = config.noise * torch.randn(config.batch_size, len(points), self.signal.channels,
                                               generator=g)[part]
        x = make_input(cfg, self.evaluator, params, input_points(cfg, points), jitter=self.sigma, noise=noise,
                       flip=flips, generator=g)
        return self.cross_entropy(model, x, points, pick, flips)

    def jitter(self) -> torch.Tensor | float:
        """`--jitter` as standard deviations per axis in the points' units: the fraction times the sample
        spacing, [-1, 1] over the store's samples along that axis."""
        if not self.config.jitter:
            return 0.0
        return torch.tensor([self.config.jitter * 2 / n for n in self.signal.shape])

    def cross_entropy(self, model: nn.Module, x, points, pick: torch.Tensor, flips) -> torch.Tensor:
        raise NotImplementedError

    def test_sampler(self) -> PointSampler:
        return self.config.sampler(self.signal.in_dim)

    def scoring_seconds(self, last: float) -> float:
        """The test scoring (a forward pass over the test fields, costed as a third of a step per batch of
        them), then writing (costed as a step)."""
        return last / 3 * max(1, -(-self.test_fields // self.config.batch_size)) + last


class ClassifyTask(StoreTask):
    """A label per field: cross-entropy of the network's logits; top-1 accuracy on the held-out fields."""

    metric = Metric("accuracy", "test_accuracy", higher_is_better=True, label="accuracy (%)")

    def cross_entropy(self, model, x, points, pick, flips):
        return nn.functional.cross_entropy(model(x), self.train.labels[pick])

    def score(self, net: nn.Module, sampler: PointSampler) -> float:
        return accuracy(net, self.cfg, self.evaluator, self.held_out(), sampler)


class SegmentTask(StoreTask):
    """A class per point (the store's masks): class-weighted cross-entropy at the step's points; mIoU and
    pixel accuracy over every held-out point."""

    metric = Metric("miou", "test_miou", higher_is_better=True, label="mIoU (%)")

    def __post_init__(self):
        super().__post_init__()
        self.weights = None
        if self.train is not None:
            from fieldlab.learn.segment import class_weights

            self.weights = class_weights(self.train.masks, self.classes)

    def cross_entropy(self, model, x, points, pick, flips):
        from fieldlab.learn.segment import labels_at

        masks = self.train.masks[pick]
        target = labels_at(masks, points.coords)
        if flips is not None and flips.any():
            target = torch.where(flips.to(masks.device)[:, None], labels_at(masks, mirror(points.coords)), target)
        logits = segment_logits(model, self.cfg, x, points)
        return nn.functional.cross_entropy(logits.reshape(-1, self.classes), target.flatten(), weight=self.weights,
                                           ignore_index=-1)

    def score(self, net: nn.Module, sampler: PointSampler) -> float:
        return segment_scores(net, self.cfg, self.evaluator, self.held_out(), sampler, self.classes)[0]

    def test_metrics(self, net: nn.Module) -> dict[str, float]:
        miou, pixels = segment_scores(net, self.cfg, self.evaluator, self.held_out(), self.test_sampler(), self.classes)
        return {"test_miou": miou, "test_pixel_accuracy": pixels}


def store_task(cfg: NetConfig, evaluator: FieldEvaluator, classes: int, test, **training) -> StoreTask:
    """The task of a network of `cfg`: segmentation or classification (`training`: StoreTask's config, train
    and test_fields, for `train`)."""
    kind = SegmentTask if cfg.task == "segment" else ClassifyTask
    return kind(cfg, evaluator, classes, test, **training)


__all__ = ["ClassifyTask", "SegmentTask", "Split", "StoreTask", "accuracy", "input_points", "load_split", "make_input",
           "num_classes", "score", "segment_logits", "segment_scores", "split_rows", "store_task"]
