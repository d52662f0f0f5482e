"""The seam metric: border samples against the interior."""

import pytest
import torch

from fieldlab.fit.seams import border_mask, inner_edges, seam_psnrs


def test_border_mask_marks_the_two_rows_touching_each_inner_edge():
    mask = border_mask((6, 4), ((0, 3, 6), ()))
    assert mask[:, 0].tolist() == [False, False, True, True, False, False]
    assert mask.all(dim=1).tolist() == mask[:, 0].tolist()  # a whole row along the other axis
    assert inner_edges((10, 7), 4) == ((4, 8), (4,))


def test_a_jump_at_a_partition_border_reads_as_a_seam():
    target = torch.zeros(16, 16, 1)
    smooth = target + 0.01
    seamed = smooth.clone()
    seamed[7:9] = 0.1  # the two rows at the edge between rows 0..7 and 8..15 are off
    edges = ((8,), ())
    assert seam_psnrs(smooth, target, edges)["seam_db"] == pytest.approx(0, abs=1e-6)
    assert seam_psnrs(seamed, target, edges)["seam_db"] == pytest.approx(20, abs=1e-3)
