"""MINER's training margin (issue 22): coarser blocks also fit a band of their neighbours' residual, so the
borders where every scale has one come out nearer the interior; renders stay each block's own."""

import pytest
import torch

from fieldlab.cli.main import main
from fieldlab.fields import make_config
from fieldlab.fit import FitConfig
from fieldlab.fit import miner as M
from fieldlab.fit.seams import inner_edges, seam_psnrs
from fieldlab.signals import load_signal


def test_a_margin_widens_each_kept_block_by_its_neighbours_samples():
    grid = torch.arange(2 * 8 * 12, dtype=torch.float32).reshape(2, 8, 12)
    blocks = M.to_blocks(grid, 4)  # 2×3 blocks of 4×4
    wide = M.with_margin(blocks, torch.tensor([4, 0]), (2, 3), 1)
    assert wide.shape == (2, 36, 2)
    assert torch.equal(wide[0, :, 0].reshape(6, 6)[:5], grid[0, 3:8, 3:9])  # block (1, 1) and its neighbours
    assert torch.equal(wide[0, :, 0].reshape(6, 6)[5], grid[0, 7, 3:9])  # past the grid: the edge, replicated
    inner = M.inside(4, 2, 1)
    assert torch.equal(wide[:, inner], blocks[[4, 0]])
    assert torch.equal(M.local_grid(4, 2, margin=1)[inner], M.local_grid(4, 2))


def test_the_coarse_blocks_margin_brings_their_borders_nearer_the_interior():
    signal = load_signal("sample:camera", max_size=128)
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=16, hidden_dim=8)
    seams, threads = {}, torch.get_num_threads()
    torch.set_num_threads(1)  # the same floats on any machine's thread count
    try:
        for margin in (0, 2):
            result = M.fit(signal, config, FitConfig(steps=200, device="cpu", seed=2, max_seconds=0),
                           train=M.MinerTrainConfig(margin=margin))
            prediction = result.prediction.reshape(signal.values.shape)
            # the coarse blocks' borders (every 32 samples): both scales have a border there
            seams[margin] = seam_psnrs(prediction, signal.values, inner_edges(signal.shape, 32))["seam_db"]
    finally:
        torch.set_num_threads(threads)
    assert seams[2] < seams[0] - 0.3, seams  # 1.43 dB without a margin, 0.41 with one (torch 2.13, CPU)


@pytest.mark.parametrize("margin, message", [("-1", "--margin must be"), ("9", "--margin must be at most the block's")])
def test_a_bad_margin_is_one_line_and_writes_nothing(tmp_path, capsys, margin, message):
    with pytest.raises(SystemExit) as e:
        main(["fit", "sample:camera", "--max-size", "32", "--field", "miner", "--block-size", "8", "--scales", "2",
              "--hidden-dim", "4", "--margin", margin, "--steps", "2", "--device", "cpu", "--quiet",
              "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1 and err[0].startswith("fieldlab: error:") and message in err[0], err
    assert not (tmp_path / "out").exists()
