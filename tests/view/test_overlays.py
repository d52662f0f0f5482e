"""Overlays of partitioned fields: Local-Global's partitions and MINER's blocks, each with its PSNR."""

import numpy as np
import pytest


def test_each_partition_shows_the_psnr_of_its_own_samples(local_global_field):
    from fieldlab.edit import render
    from fieldlab.store import load_field
    from fieldlab.view.tiles import ImageTiles

    stored = load_field(local_global_field)
    tiles = ImageTiles(stored)
    assert tiles.levels["overlays"] == ["partitions"]
    shown = tiles.overlay("partitions")
    assert shown["boxes"] == [[0, 16, 0, 16], [0, 16, 16, 32], [16, 32, 0, 16], [16, 32, 16, 32]]
    field = stored.signal.normalization.decode(render(stored)).astype(np.float64)
    original = tiles.original().astype(np.float64)
    for (r0, r1, c0, c1), db in zip(shown["boxes"], shown["psnr"]):  # 256 samples a box: all are measured
        mse = np.mean(((field - original)[r0:r1, c0:c1] / 255) ** 2)
        assert db == pytest.approx(-10 * np.log10(mse), abs=0.01)


def test_miner_blocks_past_the_signal_are_not_drawn_and_pruned_ones_are_told():
    from fieldlab.fields import make_config
    from fieldlab.signals import Normalization, SignalInfo
    from fieldlab.store import StoredField
    from fieldlab.view.overlays import overlay, overlay_names

    config = make_config("miner", in_dim=2, out_dim=1, shape=(40, 40), scales=2, block_size=16)
    module = config.build()
    level = module.levels[1]
    level.assign(level.index[:3], {k: v[:3] for k, v in level.tensors().items()})  # prune all but 3 blocks
    signal = SignalInfo(kind="image", shape=(40, 40), channels=1, normalization=Normalization("uint8", 0, 255),
                        domain=((0.0, 40.0), (0.0, 40.0)))
    stored = StoredField(module=module, config=config, signal=signal, metrics={})
    assert overlay_names(stored) == ["scale 0", "scale 1"]
    fine = overlay(stored, np.zeros((40, 40, 1), np.uint8), "scale 1")
    padded = module.blocks_per_axis(1)
    assert len(fine["boxes"]) == 9 < padded[0] * padded[1]  # 3x3 blocks of 16 reach into 40x40
    assert fine["boxes"][-1] == [32, 40, 32, 40] and sum(fine["active"]) == 3
    assert all(isinstance(db, float) for db in fine["psnr"])
    assert all(db is None for db in overlay(stored, None, "scale 0")["psnr"])  # no original: no error
