"""Options across modalities: per-axis options in the signal's own dimension, runs repeated from config.json,
spans, limits that do not apply, rates, forced modalities and the reconstruction's format."""

import json

import numpy as np
import pytest
import soundfile as sf

from fieldlab.signals import Normalization, SignalInfo, load_signal
from fieldlab.signals.video import read_video, write_video

QUICK = ["--steps", "3", "--device", "cpu", "--quiet"]


@pytest.fixture(scope="module")
def clip(tmp_path_factory):
    """A 0.1-s mono chirp at 8 kHz, 16-bit FLAC."""
    path = tmp_path_factory.mktemp("audio") / "chirp.flac"
    t = np.arange(800) / 8000
    sf.write(path, (0.5 * np.sin(2 * np.pi * (200 + 2000 * t) * t)).astype(np.float32), 8000, subtype="PCM_16")
    return path


@pytest.fixture(scope="module")
def movie(tmp_path_factory):
    """12 frames of 16×16 at 10 fps, each frame filled with its own index, so frames can be told apart."""
    path = tmp_path_factory.mktemp("video") / "ramp.mp4"
    frames = np.repeat(np.arange(12, dtype=np.uint8)[:, None, None, None] * 20, 16, 1).repeat(16, 2).repeat(3, 3)
    info = SignalInfo(kind="video", shape=(12, 16, 16), channels=3, normalization=Normalization("uint8", 0, 255),
                      domain=((0, 12), (0, 16), (0, 16)), source="test", extra={"fps": 10.0})
    write_video(path, frames, info)
    return path


def test_per_axis_options_take_the_signals_own_dimension(cli, tmp_path, movie, clip):
    volume = tmp_path / "v.npy"
    np.save(volume, np.random.default_rng(0).random((8, 8, 8)).astype(np.float32))
    for source, partitions in ((volume, "2,2,2"), (movie, "2,2,2"), (clip, "4")):
        out = tmp_path / f"lg-{source.suffix[1:]}"
        status, _, err = cli(["fit", source, "--field", "local-global", "--partitions", partitions, *QUICK, "--out", out])
        assert status == 0, err
        edges = json.loads((out / "field.json").read_text())["field"]["config"]["edges"]
        assert [len(e) - 1 for e in edges] == [int(p) for p in partitions.split(",")]
    status, _, err = cli(["fit", clip, "--field", "local-global", "--partitions", "4,4", *QUICK, "--out", tmp_path / "x"])
    assert status == 2 and "one number or 1 (one per axis)" in err


def test_config_json_repeats_a_partitioned_fit(cli, tmp_path, clip):
    first, again = tmp_path / "first", tmp_path / "again"
    status, _, err = cli(["fit", clip, "--field", "local-global", "--partitions", "4", "--span", "0:0.05",
                          *QUICK, "--out", first])
    assert status == 0, err
    config = json.loads((first / "config.json").read_text())
    assert config["span"] == "0:0.05" and "edges" not in config  # the job's span; resolved options left out
    status, _, err = cli(["fit", "--config", first / "config.json", "--out", again])
    assert status == 0, err
    a, b = (json.loads((d / "field.json").read_text())["field"]["config"] for d in (first, again))
    assert a == b and (first / "reconstruction.flac").read_bytes() == (again / "reconstruction.flac").read_bytes()


def test_a_fourier_fields_sigma_is_its_own_option(cli, tmp_path):
    status, _, err = cli(["fit", "sample:camera", "--max-size", "16", "--field", "fourier", "--sigma", "3",
                          "--num-frequencies", "8", *QUICK, "--out", tmp_path / "f"])
    assert status == 0, err
    assert json.loads((tmp_path / "f" / "field.json").read_text())["field"]["config"]["sigma"] == 3.0


def test_a_video_span_is_decoded_from_its_start_and_max_frames_counts_from_there(movie):
    signal = read_video(movie, span=(0.3, 0.9), max_frames=4)
    assert signal.shape[0] == 4 and signal.info.extra["taken_from"] == [3, 7]
    means = np.asarray(signal.info.normalization.decode(signal.values), dtype=np.float64).mean(axis=(1, 2, 3))
    assert np.allclose(means, [60, 80, 100, 120], atol=3)  # frames 3..6, not 0..3
    whole = load_signal(str(movie), span=(0.3, 0.9))
    assert whole.shape[0] == 6 and whole.info.domain[0] == (0.0, 6.0)


def test_spans_limits_and_rates_that_do_not_fit_are_one_line_errors(cli, tmp_path, clip, movie):
    cases = [
        (["fit", clip, "--span", "nan:1"], "not a number"),
        (["fit", clip, "--span", "0:nan"], "not a number"),
        (["fit", clip, "--max-size", "8"], "--max-size does not apply to an audio"),
        (["fit", movie, "--span", "5:6"], "outside the video's 1.2 seconds"),
        (["fit", "sample:camera", "--max-frames", "3"], "--max-frames does not apply to an image"),
    ]
    for args, message in cases:
        status, _, err = cli(args + QUICK + ["--out", tmp_path / "o"])
        assert status == 2 and message in err and len(err.strip().splitlines()) == 1, (args, err)
        assert not (tmp_path / "o").exists()


def test_render_and_extend_refuse_rates_that_change_meaning(cli, tmp_path, clip):
    field = tmp_path / "lg"
    status, _, err = cli(["fit", clip, "--field", "local-global", "--partitions", "4", *QUICK, "--out", field])
    assert status == 0, err
    status, _, err = cli(["render", field, "--size", "10x", "--out", tmp_path / "r.wav"])
    assert status == 2 and "--size needs whole numbers" in err
    slow = tmp_path / "slow.wav"  # 3 s at 100 Hz: one sample over it would play at a third of a hertz
    sf.write(slow, np.sin(np.arange(300) / 10).astype(np.float32), 100)
    status, _, err = cli(["fit", slow, *QUICK, "--out", tmp_path / "slow"])
    assert status == 0, err
    status, _, err = cli(["render", tmp_path / "slow", "--size", "1", "--out", tmp_path / "r.wav"])
    assert status == 2 and "under 1 Hz" in err and not list(tmp_path.glob("*r.*wav"))
    longer = tmp_path / "longer.wav"
    sf.write(longer, np.zeros(1600, dtype=np.float32), 16000)
    status, _, err = cli(["extend", field, longer, "--out", tmp_path / "wide", "--steps", "2", "--device", "cpu"])
    assert status == 2 and "16000 Hz; the field was fitted at 8000" in err and not (tmp_path / "wide").exists()


def test_a_forced_modality_reads_files_whatever_their_suffix(cli, tmp_path):
    volume = np.random.default_rng(1).random((6, 6, 6)).astype(np.float32)
    np.save(tmp_path / "v.npy", volume)
    (tmp_path / "v.npy").rename(tmp_path / "volume.bin")
    assert tuple(load_signal(str(tmp_path / "volume.bin"), modality="volume").shape) == (6, 6, 6)
    import imageio.v3 as iio

    iio.imwrite(tmp_path / "p.png", np.zeros((5, 7, 3), dtype=np.uint8))
    (tmp_path / "p.png").rename(tmp_path / "picture.dat")
    assert tuple(load_signal(str(tmp_path / "picture.dat"), modality="image").shape) == (5, 7)


def test_reconstructions_keep_the_inputs_format_and_sizes_stay_under_the_values(cli, tmp_path, clip):
    out = tmp_path / "c"
    status, _, err = cli(["fit", clip, *QUICK, "--out", out])
    assert status == 0, err
    assert sf.info(out / "reconstruction.flac").frames == 800
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["params"] <= 800  # unasked, a field has no more parameters than its signal has values
