"""Every long phase shows a bar (tqdm on stderr) that names it and advances, or one log line under --quiet.

Inputs are tiny and pieces are forced tiny (`LABEL_PAIRS`, chunks), so a phase has several pieces; bars
redraw on every advance (`MININTERVAL` 0) so that the captured stderr shows each one."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from fieldlab import _progress
from fieldlab.signals import mesh as mesh_module

LABELLING = "labelling points inside/outside the mesh"


@pytest.fixture(autouse=True)
def _every_advance_redraws(monkeypatch):
    monkeypatch.setattr(_progress, "MININTERVAL", 0)


def draws(err: str, desc: str) -> int:
    """How many times a bar named `desc` was drawn (tqdm rewrites the whole line on each draw)."""
    return err.count(desc + ":")


def test_a_phase_in_pieces_draws_its_bar_before_the_first_piece_and_after_each(capsys):
    seen = []
    for start, stop in _progress.in_pieces("counting", 10, 3, unit="thing"):
        seen.append(draws(capsys.readouterr().err, "counting"))
    assert seen[0] == 1  # drawn when the phase starts, before any work
    assert len(seen) == 4 and all(n >= 1 for n in seen[1:])


def test_timed_pieces_grow_when_quick_and_cover_the_range_once():
    pieces = list(_progress.in_pieces("quick", 1000, 1, bar=False, seconds=10.0))
    assert [b - a for a, b in pieces][:3] == [1, 4, 16]
    assert pieces[0][0] == 0 and pieces[-1][1] == 1000 and all(a[1] == b[0] for a, b in zip(pieces, pieces[1:]))


def test_mesh_labelling_shows_its_bar_before_labelling_and_labels_as_in_one_call(monkeypatch, capsys, bumpy_mesh):
    monkeypatch.setattr(mesh_module, "LABEL_PAIRS", 1)  # one block of points per first piece
    real, seen = mesh_module.winding_number, []

    def spy(points, *args, **kwargs):
        seen.append(capsys.readouterr().err)
        return real(points, *args, **kwargs)

    monkeypatch.setattr(mesh_module, "winding_number", spy)
    mesh = mesh_module.read_mesh(bumpy_mesh.path)
    vertices, faces = mesh_module.mesh_tensors(mesh)
    points = torch.rand(300, 3) * 2 - 1
    labels = mesh_module.label_points(points, vertices, faces, chunk=2**14, backend="torch", progress=True)
    assert LABELLING in seen[0]  # on screen before the first winding number is computed
    assert len(seen) > 2 and sum(draws(err, LABELLING) for err in seen) > 2
    assert torch.equal(labels, real(points, vertices, faces, chunk=2**14, backend="torch"))


def test_a_mesh_fit_shows_labelling_training_grid_and_marching_cubes(monkeypatch, cli, bumpy_mesh, tmp_path):
    monkeypatch.setattr(mesh_module, "LABEL_PAIRS", 2**14)
    status, _, err = cli(["fit", bumpy_mesh.path, "--out", tmp_path / "f", "--steps", 2, "--params", 500,
                          "--points", 600, "--eval-points", 200, "--chamfer-points", 100, "--resolution", 12,
                          "--eval-chunk", 500])
    assert status == 0, err
    assert draws(err, LABELLING) > 2
    assert draws(err, "evaluating the field on the 12x12x12 grid") > 2  # 1,728 points in pieces of 500
    assert "marching cubes:" in err


def test_quiet_turns_each_long_phase_into_one_log_line(monkeypatch, cli, bumpy_mesh, tmp_path):
    monkeypatch.setattr(_progress, "QUIET_AFTER", 0.0)  # the tiny phases count as long
    status, _, err = cli(["fit", bumpy_mesh.path, "--out", tmp_path / "f", "--steps", 2, "--params", 500,
                          "--points", 600, "--eval-points", 200, "--chamfer-points", 100, "--resolution", 12,
                          "--quiet"])
    assert status == 0, err
    lines = err.splitlines()
    assert [line for line in lines if line.startswith(f"fieldlab: {LABELLING}: 600 point(s) in ")]
    assert [line for line in lines if line.startswith("fieldlab: marching cubes: 1 grid(s) in ")]
    assert "%|" not in err and "\r" not in err  # no bar


def test_miner_grid_labelling_shows_a_bar_per_phase(capsys, bumpy_mesh):
    from fieldlab.fit.miner_mesh import occupancy_grid

    mesh = mesh_module.read_mesh(bumpy_mesh.path)  # open: its hole's cells are a phase of their own
    grid = occupancy_grid(mesh, 8, coarsest=4, backend="torch", progress=True)
    err = capsys.readouterr().err
    assert "labelling the 8³ grid inside/outside the mesh:" in err
    assert "summing the crossings along the grid's columns:" in err
    assert "labelling the cells near the mesh's holes:" in err
    assert torch.equal(grid, occupancy_grid(mesh, 8, coarsest=4, backend="torch"))


def test_miner_pyramid_shows_its_building_and_each_scales_residual_pass(capsys):
    from fieldlab.fields import make_config
    from fieldlab.fit import FitConfig
    from fieldlab.fit.miner import fit_pyramid

    values = torch.linspace(-1, 1, 256).reshape(16, 16, 1)
    config = make_config("miner", in_dim=2, out_dim=1, scales=2, block_size=4)
    fit_pyramid(values, config, FitConfig(steps=4, device="cpu"), progress=True)
    err = capsys.readouterr().err
    assert "building the pyramid:" in err
    assert "residuals of scale 0:" in err and "residuals of scale 1:" in err


def test_fit_dataset_shows_reading_writing_and_its_fields(cli, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (4, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images, labels=np.arange(4))
    status, _, err = cli(["fit-dataset", tmp_path / "tiny.npz", "--out", tmp_path / "store", "--chunk-fields", 2,
                          "--steps", 2])
    assert status == 0, err
    assert "reading chunk 0:" in err and "reading chunk 1:" in err
    assert "writing chunk 0:" in err and "writing chunk 1:" in err
    assert draws(err, "fitting 4 fields") > 2  # drawn at the start and after each of the 2 chunks


def test_meta_learning_shows_a_bar_with_its_psnr_or_log_lines_under_quiet(cli, tmp_path):
    images = np.random.default_rng(0).integers(0, 256, (6, 4, 4, 1), dtype=np.uint8)
    np.savez(tmp_path / "tiny.npz", images=images, labels=np.arange(6))
    options = ["fit-dataset", tmp_path / "tiny.npz", "--out", tmp_path / "store", "--field", "functa",
               "--latent-dim", 4, "--meta-steps", 3, "--meta-batch-size", 2]
    status, _, err = cli(options)
    assert status == 0, err
    assert draws(err, "meta-learning functa") > 3  # at the start and after each step
    assert "3/3" in err and "dB after" in err  # the count and the PSNR beside it
    assert "meta-learning functa: step" not in err  # the bar replaces the log lines a tenth of the steps apart
    options[options.index(tmp_path / "store")] = tmp_path / "quiet"
    status, _, err = cli([*options, "--quiet"])
    assert status == 0 and "meta-learning functa: step 3/3" in err and "|" not in err, err


def test_render_shows_a_bar_over_its_chunks(capsys, tmp_path):
    from fieldlab.edit.render import render
    from fieldlab.fields import make_config
    from fieldlab.signals import Normalization, SignalInfo
    from fieldlab.store import StoredField

    config = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8, num_layers=2)
    signal = SignalInfo(kind="image", shape=(8, 8), channels=1, normalization=Normalization("uint8", 0, 255),
                        domain=((0.0, 8.0), (0.0, 8.0)), source="test")
    stored = StoredField(module=config.build(), config=config, signal=signal, metrics={}, path=None)
    values = render(stored, size=[8, 8], chunk=16, progress=True)
    assert draws(capsys.readouterr().err, "rendering 8x8") > 2  # 64 samples in pieces of 16
    assert torch.equal(values, render(stored, size=[8, 8], chunk=64))


def test_a_quiet_phase_logs_what_was_done_not_its_planned_total(caplog, monkeypatch):
    """fit-dataset cut by --max-seconds after 50 of 400 fields logged '400 field(s)' under --quiet."""
    import logging

    from fieldlab import _progress

    monkeypatch.setattr(_progress, "QUIET_AFTER", 0.0)
    with caplog.at_level(logging.INFO, logger="fieldlab"):
        with _progress.phase("fitting", 400, unit="field", bar=False) as advance:
            advance(50)
    assert "fitting: 50 of 400 field(s)" in caplog.text
