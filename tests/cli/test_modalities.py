"""Every modality through the same commands: fit, render, info; the reconstruction in the input's format."""

import json

import imageio.v3 as iio
import numpy as np
import soundfile as sf


def test_audio_span_fits_and_writes_a_wav_of_the_same_length_and_rate(tmp_path, cli, chord_wav, one_thread):
    out = tmp_path / "chord"
    status, stdout, stderr = cli(["fit", chord_wav, "--span", "0.5:0.6", "--steps", "150", "--params", "3000",
                                  "--out", out, "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    # Measured 32.6 dB and 7.7 dB. SNR > 3 dB: the error has under half the clip's power, far from the
    # 0 dB of a field that learnt silence (PSNR alone says little about a quiet clip).
    assert metrics["psnr"] >= 30 and metrics["snr"] > 3, metrics
    info = sf.info(out / "reconstruction.wav")
    assert info.samplerate == 44100 and info.frames == 4410
    status, _, stderr = cli(["render", out, "--size", "8820", "--out", tmp_path / "up.wav"])
    assert status == 0, stderr
    up = sf.info(tmp_path / "up.wav")
    assert up.frames == 8820 and up.samplerate == 88200  # twice the samples over the same 0.1 s


def test_volume_fits_and_writes_npy(tmp_path, cli):
    z, y, x = np.meshgrid(*[np.linspace(-1, 1, 12)] * 3, indexing="ij")
    volume = np.sin(3 * x) * np.cos(2 * y) + z
    np.save(tmp_path / "v.npy", volume.astype(np.float32))
    out = tmp_path / "vol"
    status, _, stderr = cli(["fit", tmp_path / "v.npy", "--steps", "200", "--params", "4000", "--out", out,
                             "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    assert json.loads((out / "metrics.json").read_text())["psnr"] > 30
    back = np.load(out / "reconstruction.npy")
    assert back.shape == volume.shape and back.dtype == np.float32
    status, _, _ = cli(["render", out, "--size", "6", "6", "6", "--out", tmp_path / "small.npy"])
    assert status == 0 and np.load(tmp_path / "small.npy").shape == (6, 6, 6)


def test_bad_modality_input(tmp_path, cli, chord_wav):
    bad_wav = tmp_path / "bad.wav"
    bad_wav.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    empty = tmp_path / "empty.npy"
    np.save(empty, np.zeros((0, 4, 4)))
    cases = [
        (["fit", bad_wav], "cannot read"),
        (["fit", empty], "empty"),
        (["fit", chord_wav, "--span", "5:1"], "--span"),
        (["fit", chord_wav, "--span", "100:101"], "outside"),
        (["fit", "sample:camera", "--span", "0:1"], "--span applies"),
        (["fit", "sample:camera", "--modality", "smell"], "--modality"),
        (["fit", "sample:camera", "--modality", "audio"], "--modality audio does not apply"),
    ]
    for args, message in cases:
        status, _, stderr = cli(args + ["--out", tmp_path / "o", "--quiet"])
        assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
        assert not (tmp_path / "o").exists()


def test_gif_sample_fits_and_writes_a_gif_with_the_same_frame_count(tmp_path, cli):
    from fieldlab.signals.video import read_video

    out = tmp_path / "gif"
    status, stdout, stderr = cli(["fit", "sample:gif", "--field", "hashgrid", "--steps", "150",
                                  "--sample-fraction", "0.5", "--out", out, "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert json.loads((out / "field.json").read_text())["signal"]["source"] == "sample:gif"
    back = read_video(out / "reconstruction.gif")
    assert back.shape[0] == 24 and metrics["psnr_frame_mean"] > 20
    status, _, stderr = cli(["render", out, "--region", "0:12,0:25,0:14", "--out", tmp_path / "half.mp4"])
    assert status == 0, stderr
    assert read_video(tmp_path / "half.mp4").shape == (12, 25, 14)
    # one frame to an image file: the frame, as the video render has it
    status, _, stderr = cli(["render", out, "--region", "3:4,0:25,0:14", "--out", tmp_path / "frame.png"])
    assert status == 0, stderr
    frame = iio.imread(tmp_path / "frame.png")
    video = read_video(tmp_path / "half.mp4")
    assert frame.shape == (25, 14, 3)
    decoded = np.asarray(video.info.normalization.decode(video.values)[3], dtype=float)
    assert np.abs(frame.astype(float) - decoded).mean() < 12  # the mp4 is lossy (H.264)
    status, _, stderr = cli(["render", out, "--out", tmp_path / "all.png"])  # 24 frames are no image
    assert status == 2 and "--region 0:1,0:25,0:14" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "all.png").exists()


def test_bad_video_input(tmp_path, cli):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00\x00\x00\x18ftypmp42" + b"\x00" * 64)
    status, _, stderr = cli(["fit", broken, "--out", tmp_path / "o", "--quiet"])
    assert status == 2 and "broken.mp4" in stderr and len(stderr.strip().splitlines()) == 1
    assert not (tmp_path / "o").exists()


def test_a_scanned_mesh_fits_at_low_resolution_and_writes_a_mesh_trimesh_loads(tmp_path, cli, bumpy_mesh,
                                                                              one_thread):
    import trimesh

    from fieldlab.signals.mesh import MARGIN

    out = tmp_path / "scan"
    status, stdout, stderr = cli(["fit", bumpy_mesh.path, "--steps", "200", "--params", "5000", "--points", "10000",
                                  "--eval-points", "20000", "--resolution", "48", "--chamfer-points", "5000",
                                  "--out", out, "--device", "cpu", "--quiet"])
    assert status == 0, stderr
    metrics = json.loads((out / "metrics.json").read_text())
    assert metrics["iou"] >= 0.9, metrics  # held-out points, 80% of them near the surface (measured 0.95)
    # The 48³ grid spans the canonical cube [-1, 1]³; in the mesh's units one voxel is 2/48 of a cube side.
    voxel = np.ptp(bumpy_mesh.vertices, axis=0).max() / (2 * MARGIN) * 2 / 48
    assert "IoU" in stdout and metrics["chamfer"] < voxel, (metrics, voxel)  # measured 0.6 voxel
    mesh = trimesh.load(out / "reconstruction.obj")
    assert len(mesh.faces) == metrics["reconstruction_faces"] > 1000
    status, _, stderr = cli(["render", out, "--size", "24", "--out", tmp_path / "small.ply"])
    assert status == 0, stderr
    assert len(trimesh.load(tmp_path / "small.ply").faces) > 100


def test_mesh_bad_input(tmp_path, cli, bumpy_mesh):
    no_faces = tmp_path / "points.ply"
    no_faces.write_text("ply\nformat ascii 1.0\nelement vertex 3\nproperty float x\nproperty float y\n"
                        "property float z\nend_header\n0 0 0\n1 0 0\n0 1 0\n")
    (tmp_path / "junk.obj").write_bytes(b"\x00\x01garbage")
    cases = [(["fit", no_faces], "mesh"), (["fit", tmp_path / "junk.obj"], "mesh"),
             (["fit", bumpy_mesh.path, "--max-size", "64"], "--max-size"),
             (["fit", bumpy_mesh.path, "--points", "-3"], "--points")]
    for args, message in cases:
        status, _, stderr = cli(args + ["--out", tmp_path / "o", "--quiet"])
        assert status == 2 and message in stderr and len(stderr.strip().splitlines()) == 1, (args, stderr)
        assert not (tmp_path / "o").exists()
