"""The pictures beside a fit and a render: training.png, error.png, a mesh's preview, MINER's blocks.png
with its legend; none of them (and one note) without matplotlib."""

import builtins
import subprocess
import sys

import imageio.v3 as iio
import pytest
import torch

from fieldlab import plots

FIT = ["--steps", 20, "--hidden-dim", 8, "--device", "cpu", "--quiet"]
MESH = ["--steps", 2, "--params", 500, "--points", 600, "--eval-points", 200, "--chamfer-points", 100,
        "--resolution", 12, "--quiet"]


@pytest.fixture
def no_matplotlib(monkeypatch):
    real = builtins.__import__

    def refuse(name, *args, **kwargs):
        if name == "matplotlib" or name.startswith("matplotlib."):
            raise ImportError(f"No module named {name!r}")
        return real(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", refuse)
    monkeypatch.setattr(plots, "_noted", set())


def test_an_image_fit_writes_its_training_curve_and_error_map(cli, tmp_path, one_thread):
    pytest.importorskip("matplotlib")
    status, _, err = cli(["fit", "sample:camera", "--max-size", 24, *FIT, "--out", tmp_path / "f"])
    assert status == 0, err
    assert iio.imread(tmp_path / "f" / "training.png").shape == (500, 600, 4)  # 6 × 5 in at 100 dpi
    error = iio.imread(tmp_path / "f" / "error.png")
    assert error.ndim == 3 and min(error.shape[:2]) >= 300


def test_an_audio_fit_writes_its_spectrogram_difference(cli, tmp_path, chord_wav, one_thread):
    pytest.importorskip("matplotlib")
    status, _, err = cli(["fit", chord_wav, "--span", "0:0.05", *FIT, "--out", tmp_path / "a"])
    assert status == 0, err
    assert iio.imread(tmp_path / "a" / "error.png").shape == (350, 700, 4)
    assert (tmp_path / "a" / "training.png").is_file()


def test_a_mesh_fit_and_a_mesh_render_write_a_preview(cli, tmp_path, bumpy_mesh, one_thread):
    pytest.importorskip("matplotlib")
    status, _, err = cli(["fit", bumpy_mesh.path, *MESH, "--out", tmp_path / "m"])
    assert status == 0, err
    assert iio.imread(tmp_path / "m" / "preview.png").shape == (400, 800, 4)
    assert (tmp_path / "m" / "training.png").is_file() and not (tmp_path / "m" / "error.png").exists()
    status, _, err = cli(["render", tmp_path / "m", "--size", 10, "--out", tmp_path / "surface.obj"])
    assert status == 0, err
    assert iio.imread(tmp_path / "surface.obj.preview.png").shape == (400, 800, 4)


def test_miner_blocks_picture_has_a_legend_per_scale(tmp_path):
    pytest.importorskip("matplotlib")
    import numpy as np

    picture = np.zeros((32, 68, 3), dtype=np.uint8)
    assert plots.write_blocks_figure(picture, [[230, 25, 75], [60, 180, 75]], [(4, 4), (7, 16)],
                                     tmp_path / "blocks.png", title="blocks")
    assert iio.imread(tmp_path / "blocks.png").ndim == 3


def test_without_matplotlib_no_picture_is_written_and_one_note_says_so(cli, tmp_path, no_matplotlib, one_thread):
    status, _, err = cli(["fit", "sample:camera", "--max-size", 24, *FIT, "--out", tmp_path / "f"])
    assert status == 0, err
    assert not (tmp_path / "f" / "training.png").exists() and not (tmp_path / "f" / "error.png").exists()
    notes = [line for line in err.splitlines() if "install matplotlib" in line]
    assert notes == ["fieldlab: no error.png: install matplotlib (pip install 'fieldlab[all]') for fieldlab's pictures"]
    assert (tmp_path / "f" / "reconstruction.png").is_file()


def test_without_matplotlib_a_volume_fit_names_the_picture_it_would_draw(cli, tmp_path, no_matplotlib, one_thread):
    """A volume has no error map: the one note names training.png, not error.png."""
    import numpy as np

    np.save(tmp_path / "cube.npy", np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    status, _, err = cli(["fit", tmp_path / "cube.npy", *FIT, "--out", tmp_path / "f"])
    assert status == 0, err
    notes = [line for line in err.splitlines() if "install matplotlib" in line]
    assert notes == ["fieldlab: no training.png: install matplotlib (pip install 'fieldlab[all]') for fieldlab's "
                     "pictures"]
    assert not (tmp_path / "f" / "training.png").exists() and (tmp_path / "f" / "field.safetensors").is_file()


def test_miner_blocks_png_stays_a_bare_picture_without_matplotlib(cli, tmp_path, no_matplotlib, one_thread):
    status, _, err = cli(["fit", "sample:camera", "--max-size", 32, "--field", "miner", "--scales", 2,
                          "--block-size", 8, "--hidden-dim", 10, "--steps", 10, "--device", "cpu", "--quiet",
                          "--out", tmp_path / "m"])
    assert status == 0, err
    assert iio.imread(tmp_path / "m" / "blocks.png").shape[2] == 3  # RGB from the picture itself


def test_a_mesh_fits_curve_draws_its_bce_loss(tmp_path):
    """An occupancy fit logs bce, not loss: its training.png was an empty axis (matplotlib warned that
    the range was empty)."""
    import json
    import warnings

    from fieldlab.plots import write_training_plot

    (tmp_path / "log.jsonl").write_text("".join(json.dumps({"step": s, "bce": 1 / s, "seconds": 0.1 * s}) + "\n"
                                                for s in (10, 20, 30)))
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert write_training_plot(tmp_path / "log.jsonl", tmp_path / "training.png")
    assert not [w for w in caught if "xlims" in str(w.message) or "ylims" in str(w.message)], caught


def test_the_seconds_axis_runs_on_past_the_first_and_last_logged_steps():
    """The top axis maps steps to seconds through the log's points; beyond them (the axis's margins) it goes on
    along the end segments instead of holding the end times, which piled the ticks onto the edges."""
    import numpy as np

    steps, seconds = np.array([10.0, 20.0, 50.0]), np.array([0.1, 0.2, 0.5])
    ends_s, ends_t = plots._extended(steps, seconds)
    assert np.interp(60.0, ends_s, ends_t) == pytest.approx(0.6)
    assert np.interp(0.0, ends_s, ends_t) == pytest.approx(0.0)
    assert np.interp(0.7, ends_t, ends_s) == pytest.approx(70.0)
    assert np.interp(20.0, ends_s, ends_t) == pytest.approx(0.2)  # inside: the log's own points


def test_preload_imports_pyplot_on_a_thread():
    code = ("import sys, threading\nfrom fieldlab import plots\nassert 'matplotlib.pyplot' not in sys.modules\n"
            "plots.preload()\n[t.join() for t in threading.enumerate() if t.name == 'fieldlab-plots-preload']\n"
            "assert 'matplotlib.pyplot' in sys.modules\nimport matplotlib\nprint(matplotlib.get_backend())")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().lower() == "agg"


def test_pictures_are_saved_at_the_fastest_zlib_level(tmp_path):
    """`plots.PNG`: the IDAT stream's zlib header says level 0-1 (FLEVEL 0: 0x78 0x01), not PIL's default 6
    (0x78 0x9C), so the pictures a command waits for are written at zlib's fastest level."""
    pytest.importorskip("matplotlib")
    original = torch.zeros(16, 16, 3)
    assert plots.write_error_map(original, original + 0.1, "image", tmp_path / "error.png", metrics={"psnr": 20.0})
    data = (tmp_path / "error.png").read_bytes()
    idat = data.index(b"IDAT") + 4
    assert data[idat:idat + 2] == b"\x78\x01"


@pytest.mark.parametrize("samples, drawn", [(1, False), (3, False), (4, True), (9, True)])
def test_a_clip_too_short_for_a_spectrogram_has_no_error_map(tmp_path, samples, drawn):
    """The spectrogram's window is at most the clip (STFT's reflect padding needs window / 2 < samples): a clip of
    9 samples is drawn, one of 1 sample crashed `fit` in torch.stft and now has no error map, as an image without
    matplotlib."""
    pytest.importorskip("matplotlib")
    original = torch.linspace(-0.5, 0.5, samples)[:, None]
    assert plots.write_error_map(original, original * 0.9, "audio", tmp_path / "e.png", sample_rate=8000) is drawn
    assert (tmp_path / "e.png").exists() is drawn
