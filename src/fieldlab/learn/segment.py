"""Segmentation on fields: per-point labels at any point set, and mIoU.

A store keeps no masks: a segmentation source (`ImageSource.masks`, e.g. `sample:shapes`) regenerates
them from the spec in the store's attrs, and an augmented row (copy a > 0) gets the same flip / upscale /
crop as its image (`datasets.augment` on the one-hot mask, then argmax), so labels follow the pixels.
A point's label is that of the pixel it falls in: pixel i covers [i, i + 1) in sample units, i.e.
canonical [-1 + 2i/n, -1 + 2(i+1)/n). A mask's -1 marks a pixel of no class (Cityscapes' 255, "ignore"):
the loss, the class weights and the scores skip it.
"""

from __future__ import annotations

import numpy as np
import torch

from fieldlab._errors import UserError


def store_masks(store, rows: np.ndarray) -> torch.Tensor:
    """Masks (len(rows), H, W) int64 of `rows`, rebuilt from the store's source."""
    from fieldlab.signals.datasets import augment, open_source

    spec = store.attrs.get("source", {}).get("spec")
    if spec is None:
        raise UserError(f"{store.path} records no source; segmentation needs a store fitted by fit-dataset "
                        "from a source with masks (e.g. sample:shapes)")
    source = open_source(spec)
    if source.masks is None:
        raise UserError(f"{spec} has no masks; segmentation networks train on a source with masks (sample:shapes)")
    seed = int(store.attrs.get("seed", 0))
    index, copy = store.column("source_index")[rows], store.column("augment")[rows]
    classes = len(source.label_names)
    out = []
    for i, a in zip(index, copy):
        mask = torch.from_numpy(np.asarray(source.masks(int(i)))).long()
        if a > 0:  # ignored pixels (-1) ride along as one more class, so they move with the rest
            onehot = torch.nn.functional.one_hot(torch.where(mask < 0, classes, mask), classes + 1).float()
            mask = augment(onehot, int(a), (seed, int(i))).argmax(-1)
            mask[mask == classes] = -1
        out.append(mask)
    return torch.stack(out)


def labels_at(masks: torch.Tensor, coords: torch.Tensor) -> torch.Tensor:
    """Labels (b, n) of the pixels that canonical points `coords` (n, 2) fall in, for masks (b, H, W)."""
    shape = torch.tensor(masks.shape[1:], device=coords.device)
    pixel = ((coords + 1) / 2 * shape).floor().long()
    pixel = torch.minimum(pixel.clamp_min(0), shape - 1)
    return masks[:, pixel[:, 0], pixel[:, 1]]


def class_weights(masks: torch.Tensor, classes: int) -> torch.Tensor:
    """Inverse-frequency class weights (mean 1 over present classes), as DI-Net's segmentation loss; rare
    shapes would otherwise be drowned by the background."""
    counts = torch.bincount(masks[masks >= 0], minlength=classes).float()
    weights = torch.where(counts > 0, counts.sum() / counts.clamp_min(1), torch.zeros_like(counts))
    return weights / weights[counts > 0].mean()


def confusion(pred: torch.Tensor, target: torch.Tensor, classes: int) -> torch.Tensor:
    """Confusion counts (classes, classes): rows are the truth; ignored points (truth -1) are not counted."""
    keep = target.flatten() >= 0
    cells = target.flatten()[keep] * classes + pred.flatten()[keep]
    return torch.bincount(cells, minlength=classes * classes).reshape(classes, classes)


def miou(matrix: torch.Tensor) -> float:
    """Mean intersection over union over the classes present in the truth or the prediction (accumulated over
    the whole test set, not per batch)."""
    matrix = matrix.double()
    inter = matrix.diag()
    union = matrix.sum(0) + matrix.sum(1) - inter
    present = union > 0
    return float((inter[present] / union[present]).mean()) if present.any() else 0.0
