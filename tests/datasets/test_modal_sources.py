"""fit-dataset over folders of audio clips, volumes and meshes (`signals/modal_sources.py`), and train-sdf
--store on a store of mesh occupancy fields (`learn/_sdf_store.py`). Files are made in the test."""

import json
import os
import signal
import wave
from pathlib import Path

import numpy as np
import pytest
import torch

from fieldlab.store.field_store import FieldStore

pytestmark = pytest.mark.usefixtures("one_thread")

FAST = ["--device", "cpu", "--quiet"]


def write_wav(path: Path, samples: np.ndarray, rate: int = 8000) -> Path:
    """16-bit PCM (n,) or (n, c) through the stdlib's wave module."""
    samples = samples.reshape(len(samples), -1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with wave.open(str(path), "wb") as f:
        f.setnchannels(samples.shape[1])
        f.setsampwidth(2)
        f.setframerate(rate)
        f.writeframes(np.asarray(samples, dtype="<i2").tobytes())
    return path


def tone(n: int, hertz: float, rate: int = 8000) -> np.ndarray:
    return np.rint(9000 * np.sin(2 * np.pi * hertz * np.arange(n) / rate)).astype(np.int16)


@pytest.fixture
def clips(tmp_path) -> Path:
    """6 clips of about 0.05 s at 8 kHz in two class folders (lengths 400 to 450 samples)."""
    root = tmp_path / "clips"
    for i in range(6):
        write_wav(root / ("high" if i % 2 else "low") / f"{i}.wav", tone(400 + 10 * i, 200 + 150 * i))
    return root


@pytest.fixture(scope="module")
def meshes(tmp_path_factory) -> Path:
    """20 boxes, spheres and cylinders of random sizes as .obj, one class folder per primitive."""
    import trimesh

    root = tmp_path_factory.mktemp("meshes") / "shapes"
    rng = np.random.default_rng(0)
    for i in range(20):
        kind = ("box", "sphere", "cylinder")[i % 3]
        if kind == "box":
            mesh = trimesh.creation.box(extents=rng.uniform(0.3, 1.0, 3))
        elif kind == "sphere":
            mesh = trimesh.creation.icosphere(subdivisions=1, radius=rng.uniform(0.3, 1.0))
        else:
            mesh = trimesh.creation.cylinder(radius=rng.uniform(0.2, 0.5), height=rng.uniform(0.5, 1.5), sections=10)
        (root / kind).mkdir(parents=True, exist_ok=True)
        mesh.export(root / kind / f"{i}.obj")
    return root


def refused(result, *words):
    status, out, err = result
    assert status == 2 and err.startswith("fieldlab: error:") and err.count("\n") == 1, err
    assert all(w in err for w in words), err


# -- audio ----------------------------------------------------------------------------------------------
def test_a_folder_of_wav_clips_makes_a_store_of_1d_fields_that_resumes(clips, tmp_path, cli, monkeypatch):
    args = ["fit-dataset", clips, "--steps", "10", "--chunk-fields", "2", *FAST]
    status, out, err = cli(args + ["--out", tmp_path / "A"])
    assert status == 0, err
    store = FieldStore(tmp_path / "A")
    assert store.signal.kind == "audio" and store.signal.shape == (400,) and store.config.in_dim == 1
    assert store.signal.extra["sample_rate"] == 8000 and store.label_names == ["high", "low"]
    assert store.column("labels").tolist() == [0, 0, 0, 1, 1, 1]
    status, out, err = cli(["store", "info", tmp_path / "A"])
    assert status == 0 and "signal    audio 400x1 at 8,000 Hz" in out, out

    from fieldlab.store.field_store import FieldStoreWriter

    write_chunk = FieldStoreWriter.write_chunk

    def write_then_interrupt(self, chunk, **columns):
        write_chunk(self, chunk, **columns)
        os.kill(os.getpid(), signal.SIGINT)

    monkeypatch.setattr(FieldStoreWriter, "write_chunk", write_then_interrupt)
    assert cli(args + ["--out", tmp_path / "R"])[0] == 130
    monkeypatch.setattr(FieldStoreWriter, "write_chunk", write_chunk)
    assert len(FieldStore(tmp_path / "R").rows()) == 2
    assert cli(args + ["--resume", "--out", tmp_path / "R"])[0] == 0
    whole, resumed = FieldStore(tmp_path / "A").read(slice(0, 6)), FieldStore(tmp_path / "R").read(slice(0, 6))
    assert all(torch.equal(whole[k], resumed[k]) for k in whole)


def test_a_network_trains_and_evaluates_on_a_store_of_1d_fields(clips, tmp_path, cli):
    assert cli(["fit-dataset", clips, "--steps", "5", "--out", tmp_path / "A", *FAST])[0] == 0
    run = tmp_path / "run"
    status, out, err = cli(["train", tmp_path / "A", "--net", "dinet", "--steps", "2", "--num-points", "32",
                            "--channels", "8", "--out", run, *FAST])
    assert status == 0, err
    status, out, err = cli(["eval", run, tmp_path / "A", "--points", "grid,qmc", "--resolutions", "16",
                            "--draws", "1", "--device", "cpu"])
    assert status == 0 and (run / "eval.json").is_file(), err


def test_clips_are_cut_or_padded_to_clip_seconds_and_mixed_down_with_mono(tmp_path):
    from fieldlab.signals.modal_sources import open_dataset

    root = tmp_path / "c"
    write_wav(root / "a.wav", tone(400, 300))
    write_wav(root / "b.wav", np.stack([tone(500, 300), np.zeros(500, np.int16)], axis=1))
    source = open_dataset(str(root), clip_seconds=0.06, mono=True)
    assert source.shape == (480,) and source.channels == 1 and source.labels.tolist() == [-1, -1]
    a, b = source.raw(0), source.raw(1)
    assert np.allclose(a[:400, 0], tone(400, 300) / 2**15) and not a[400:].any()  # padded with silence
    assert np.allclose(b[:, 0], tone(480, 300) / 2**16)  # the mean of the two channels, cut at 480


def test_files_of_another_kind_in_a_dataset_folder_are_named_not_dropped_silently(tmp_path, caplog):
    from PIL import Image

    from fieldlab.signals.modal_sources import open_dataset

    root = tmp_path / "c"
    write_wav(root / "a.wav", tone(400, 300))
    write_wav(root / "b.wav", tone(400, 500))
    (root / "notes.txt").write_text("not a signal")  # neither a signal nor a warning
    with caplog.at_level("WARNING", logger="fieldlab"):
        assert len(open_dataset(str(root))) == 2
    assert not caplog.records
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(root / "cover.gif")  # a video to fieldlab
    with caplog.at_level("WARNING", logger="fieldlab"):
        assert len(open_dataset(str(root))) == 2
    assert [r.getMessage() for r in caplog.records] == [
        f"{root}: left out 1 video file (.gif), which a dataset of audio files does not read"]


@pytest.mark.parametrize("damage,words", [
    ("rates", ("16,000 Hz", "resample")),
    ("channels", ("channel", "--mono")),
    ("unreadable", ("cannot read", "as audio")),
    ("truncated", ("z.wav is truncated",)),
    ("empty", ("no images",)),
    ("option", ("--mesh-resolution", "audio")),
])
def test_a_bad_folder_of_clips_is_one_line_and_writes_nothing(damage, words, clips, tmp_path, cli):
    extra = []
    if damage == "rates":
        write_wav(clips / "low" / "z.wav", tone(400, 300, 16000), rate=16000)
    elif damage == "channels":
        write_wav(clips / "low" / "z.wav", np.stack([tone(400, 300)] * 2, axis=1))
    elif damage == "unreadable":
        (clips / "low" / "z.wav").write_bytes(b"RIFF\x10\x00\x00\x00WAVEjunk")
    elif damage == "truncated":
        whole = write_wav(clips / "low" / "z.wav", tone(400, 300)).read_bytes()
        (clips / "low" / "z.wav").write_bytes(whole[:-200])
    elif damage == "empty":
        clips = tmp_path / "nothing"
        clips.mkdir()
    else:
        extra = ["--mesh-resolution", "8"]
    refused(cli(["fit-dataset", clips, "--out", tmp_path / "S", *FAST, *extra]), *words)
    assert not (tmp_path / "S").exists()


# -- volumes --------------------------------------------------------------------------------------------
def test_a_folder_of_volumes_makes_a_store_of_3d_fields_over_their_joint_range(tmp_path, cli):
    root = tmp_path / "vols"
    root.mkdir()
    for i in range(3):
        np.save(root / f"{i}.npy", np.full((4, 5, 6), 10 * i, dtype=np.int16) + np.arange(6, dtype=np.int16))
    status, out, err = cli(["fit-dataset", root, "--steps", "5", "--out", tmp_path / "V", *FAST])
    assert status == 0, err
    store = FieldStore(tmp_path / "V")
    assert store.signal.kind == "volume" and store.signal.shape == (4, 5, 6) and store.config.in_dim == 3
    assert (store.signal.normalization.offset, store.signal.normalization.scale) == (0.0, 25.0)
    np.save(root / "3.npy", np.zeros((4, 5, 7), dtype=np.int16))
    refused(cli(["fit-dataset", root, "--out", tmp_path / "W", *FAST]), "3.npy", "must match")
    assert not (tmp_path / "W").exists()


# -- meshes ---------------------------------------------------------------------------------------------
def test_a_folder_of_meshes_makes_an_occupancy_store_that_train_sdf_trains_on(meshes, tmp_path, cli):
    store = tmp_path / "M"
    status, out, err = cli(["fit-dataset", meshes, "--mesh-resolution", "16", "--steps", "10", "--out", store, *FAST])
    assert status == 0, err
    assert "dB on the ±1 occupancy (min" in out, out  # not a PSNR read as an image's
    opened = FieldStore(store)
    assert opened.signal.kind == "mesh" and opened.signal.shape == (16, 16, 16) and opened.config.in_dim == 3
    assert opened.signal.extra["occupancy"] and opened.label_names == ["box", "cylinder", "sphere"]
    status, out, err = cli(["store", "info", store])
    assert status == 0 and "signal    mesh 16x16x16x1 (occupancy)" in out, out
    assert f"source    mesh folder, 20 items, 3 classes, {meshes}" in out, out  # not "image folder"
    run = tmp_path / "run"
    status, out, err = cli(["train-sdf", "--store", store, "--out", run, "--steps", "5", "--num-points", "64",
                            "--num-queries", "64", "--batch-size", "4", *FAST[:2]])
    assert status == 0, err
    info = json.loads((run / "run.json").read_text())
    assert info["dim"] == 3 and info["input"] == "store" and info["metrics"]["test_scenes"] == 4
    assert np.isfinite(info["metrics"]["test_mae"])


def test_train_sdf_refuses_a_mesh_store_whose_folder_changed(meshes, tmp_path, cli):
    import shutil

    folder = tmp_path / "shapes"
    shutil.copytree(meshes, folder)
    store = tmp_path / "M"
    assert cli(["fit-dataset", folder, "--mesh-resolution", "8", "--limit", "5", "--steps", "2", "--out", store,
                *FAST])[0] == 0
    (folder / "box" / "0.obj").rename(folder / "box" / "renamed.obj")
    refused(cli(["train-sdf", "--store", store, "--out", tmp_path / "r", "--steps", "2", "--device", "cpu"]),
            "no longer holds the meshes")
    assert not (tmp_path / "r").exists()


def test_the_sdf_of_an_occupancy_grid_is_a_sphere_s_distance_to_within_a_step():
    from fieldlab.learn._sdf_store import occupancy_sdf, sdf_at
    from fieldlab.signals import grid_coords

    side, radius = 24, 0.6
    coords = grid_coords(((-1.0, 1.0),) * 3, ((-1.0, 1.0),) * 3, (side,) * 3)
    exact = coords.norm(dim=1) - radius
    grid = torch.from_numpy(occupancy_sdf((exact < 0).reshape((side,) * 3).numpy(), "sphere"))
    assert (grid.reshape(-1) - exact).abs().max() < 2 / side
    assert torch.allclose(sdf_at(grid[None], coords)[0], grid.reshape(-1), atol=1e-5)  # samples read back
