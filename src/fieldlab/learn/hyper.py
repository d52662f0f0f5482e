"""Hypernetwork segmentation (DI-Net's `seg_hyper` baseline): a field's own weights in, a segmentation
field out.

An MLP reads the flattened per-field tensors of a stored field (BatchNorm → hidden → hidden) and writes
(a) a residual edit of every per-field tensor except the output layer, scaled by `edit_scale` (DI-Net used
0.1), and (b) a new output layer with one output per class, added to a learned base layer. The edited
field, with that output layer, is a segmentation field: its values at any points are per-class logits, so
it is trained and scored at the step's points (`fieldlab train --net seg_hyper`, `fieldlab eval`).

The output layer is found by building the architecture with two output sizes and keeping the tensors whose
shapes differ, so any field whose output layer is stored per field (siren, fourier, gauss, …) works; a
field whose output layer is shared by the whole store (functa) is refused. Buffers a store keeps per field
(a Fourier field's random frequencies) are read, not edited. Evaluation goes through the core batched path
(`FieldEvaluator.values`), with the generated tensors as differentiable overrides.
"""

from __future__ import annotations

import dataclasses
import math
from typing import ClassVar

import torch
import torch.nn as nn

from fieldlab._errors import UserError
from fieldlab.learn.field_batch import FieldEvaluator
from fieldlab.learn.layers import Discretized
from fieldlab.learn.nets import NetConfig, register_net
from fieldlab.learn.points import PointSet


def output_layer(config, per_field: dict[str, tuple[int, ...]]) -> list[str]:
    """Names of the per-field tensors that make the field's output layer (their shapes follow out_dim)."""
    one = {k: v.shape for k, v in dataclasses.replace(config, out_dim=1).build().named_parameters()}
    two = {k: v.shape for k, v in dataclasses.replace(config, out_dim=2).build().named_parameters()}
    names = sorted(k for k in one if one[k] != two.get(k))
    if not names or any(k not in per_field for k in names):
        raise UserError(f"seg_hyper edits fields whose output layer is stored per field; {config.name} fields "
                        "share theirs (use a siren, fourier or gauss store)")
    return names


class HyperSegmenter(nn.Module):
    """`forward(params, queries)`: stacked per-field tensors (b, ...) → Discretized logits (b, n, classes)."""

    def __init__(self, config, per_field: dict[str, tuple[int, ...]], shared: dict[str, torch.Tensor] | None,
                 classes: int, *, hidden: int = 128, edit_scale: float = 0.1, edit: bool = True):
        super().__init__()
        head_names = output_layer(config, per_field)
        evaluator = FieldEvaluator(dataclasses.replace(config, out_dim=classes), shared, kernel="reference")
        self.evaluator = [evaluator]  # a list keeps the template's own weights out of this module's parameters
        self.per_field = dict(per_field)
        own = dict(evaluator._template.named_parameters())
        self.edit_names = [k for k in sorted(per_field) if k in own and k not in head_names] if edit else []
        self.edit_scale = edit_scale
        self.head_shapes = {k: tuple(own[k].shape) for k in head_names}
        self.base_head = nn.ParameterDict({k.replace(".", "__"): nn.Parameter(own[k].detach().clone())
                                           for k in head_names})
        size = sum(math.prod(s) for s in per_field.values())
        out = sum(math.prod(per_field[k]) for k in self.edit_names) + sum(math.prod(s) for s in self.head_shapes.values())
        self.mlp = nn.Sequential(nn.BatchNorm1d(size), nn.Linear(size, hidden), nn.ReLU(), nn.Linear(hidden, hidden),
                                 nn.ReLU(), nn.Linear(hidden, out))
        nn.init.zeros_(self.mlp[-1].weight)  # start from the stored field and the base output layer
        nn.init.zeros_(self.mlp[-1].bias)

    def generate(self, params: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The segmentation fields' per-field tensors (b, ...): edited weights and the new output layer."""
        flat = torch.cat([params[k].flatten(1) for k in sorted(self.per_field)], 1)
        out = self.mlp(flat)
        b = flat.shape[0]
        new, at = {}, 0
        for k in self.edit_names:
            n = math.prod(self.per_field[k])
            new[k] = params[k] + self.edit_scale * out[:, at:at + n].view(b, *self.per_field[k])
            at += n
        for k, shape in self.head_shapes.items():
            n = math.prod(shape)
            new[k] = self.base_head[k.replace(".", "__")] + out[:, at:at + n].view(b, *shape)
            at += n
        for k in self.per_field:  # tensors left unedited (edit=False, per-field buffers) pass through
            new.setdefault(k, params[k])
        return new

    def forward(self, params: dict[str, torch.Tensor], queries: PointSet) -> Discretized:
        logits = self.evaluator[0].values(self.generate(params), queries.coords)
        return Discretized(logits.float(), queries)


@register_net("seg_hyper")
@dataclasses.dataclass(frozen=True)
class HyperSegConfig(NetConfig):
    """Hypernetwork segmenter on a field's weights: a 0.1-scaled weight edit and a new output layer
    (DI-Net's `seg_hyper`); its output is a segmentation field, queried at any points."""

    takes: ClassVar[str] = "params"
    task: ClassVar[str] = "segment"
    hidden: int = 128
    """Width of the hypernetwork's two hidden layers."""
    edit_scale: float = 0.1
    """Scale of the residual edit of the field's weights."""
    edit: bool = True
    """Edit the field's hidden layers (False: only generate the new output layer)."""

    def __post_init__(self):
        if self.hidden < 1 or self.edit_scale < 0:
            raise UserError("--hidden must be positive and --edit-scale non-negative")

    def build(self, in_channels, out_channels, dim=2):
        raise UserError("seg_hyper is built from a store's field architecture (fieldlab train STORE --net seg_hyper)")

    def build_for_fields(self, config, per_field, shared, classes: int) -> HyperSegmenter:
        return HyperSegmenter(config, per_field, shared, classes, hidden=self.hidden, edit_scale=self.edit_scale,
                              edit=self.edit)

    def build_for_store(self, store, classes: int) -> HyperSegmenter:
        return self.build_for_fields(store.config, store.per_field, store.shared(), classes)
