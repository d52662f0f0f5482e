"""Every non-image reader refuses broken data (issue 19): NaN/Inf named by position, cut files, crafted headers.

Each case runs `fieldlab fit` in-process where the CLI reads the file: exit 2, one line, nothing written.
"""

import struct

import numpy as np
import pytest

from fieldlab._errors import UserError


def refused(cli, tmp_path, path, message, *extra):
    out = tmp_path / "out"
    status, _, err = cli(["fit", path, "--steps", "1", "--device", "cpu", "--out", out, "--quiet", *extra])
    assert status == 2, err
    assert err.count("\n") == 1 and err.startswith("fieldlab: error:") and message in err, err
    assert not out.exists()


def _wav(path, samples, rate=8000, subtype="PCM_16"):
    import soundfile

    soundfile.write(path, samples, rate, subtype=subtype)
    return path


def test_a_float_wav_with_a_nan_is_refused_with_its_sample(cli, tmp_path):
    samples = np.sin(np.arange(200) / 10).astype(np.float32)
    samples[17] = np.nan
    refused(cli, tmp_path, _wav(tmp_path / "n.wav", samples, subtype="FLOAT"), "holds NaN at sample 17, channel 0")


def test_a_truncated_wav_is_refused_not_fitted_on_its_first_half(cli, tmp_path):
    data = _wav(tmp_path / "a.wav", (np.arange(8000) % 200).astype(np.int16)).read_bytes()
    (tmp_path / "cut.wav").write_bytes(data[:len(data) // 2])
    refused(cli, tmp_path, tmp_path / "cut.wav", "cut.wav is truncated: its header says 8,000 samples, the file holds")


def test_a_wav_header_with_no_samples_is_refused(cli, tmp_path):
    data = _wav(tmp_path / "a.wav", np.zeros(100, np.int16)).read_bytes()
    (tmp_path / "head.wav").write_bytes(data[:44])
    refused(cli, tmp_path, tmp_path / "head.wav", "head.wav is truncated: its header says 100 samples, the file holds 0")


def test_a_wav_declaring_200_channels_is_refused(cli, tmp_path):
    data = bytearray(_wav(tmp_path / "a.wav", np.zeros(400, np.int16)).read_bytes())
    data[22:24] = struct.pack("<H", 200)  # the fmt chunk's channel count
    (tmp_path / "wide.wav").write_bytes(bytes(data))
    refused(cli, tmp_path, tmp_path / "wide.wav", "declares 200 channels; fieldlab reads 1 to 64")


def test_a_wav_with_a_zero_sample_rate_is_refused(cli, tmp_path):
    data = bytearray(_wav(tmp_path / "a.wav", np.zeros(100, np.int16)).read_bytes())
    data[24:28] = struct.pack("<I", 0)
    (tmp_path / "zero.wav").write_bytes(bytes(data))
    refused(cli, tmp_path, tmp_path / "zero.wav", "zero.wav")


def test_an_npy_volume_with_an_inf_is_refused_with_its_voxel(cli, tmp_path):
    volume = np.zeros((3, 4, 5), np.float32)
    volume[2, 1, 3] = np.inf
    np.save(tmp_path / "v.npy", volume)
    refused(cli, tmp_path, tmp_path / "v.npy", "infinite value at slice 2, row 1, column 3")


def test_a_tiff_stack_with_a_nan_is_refused_with_its_voxel(cli, tmp_path):
    tifffile = pytest.importorskip("tifffile")
    stack = np.zeros((3, 4, 5), np.float32)
    stack[1, 2, 0] = np.nan
    tifffile.imwrite(tmp_path / "s.tif", stack, photometric="minisblack")
    refused(cli, tmp_path, tmp_path / "s.tif", "holds NaN at slice 1, row 2, column 0")


def test_an_npy_declaring_a_huge_shape_is_refused_before_allocating(cli, tmp_path):
    header = "{'descr': '<f8', 'fortran_order': False, 'shape': (100000, 100000, 100000), }"
    header += " " * (63 - len(header) % 64) + "\n"  # the header pads to a multiple of 64 bytes
    (tmp_path / "huge.npy").write_bytes(b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode())
    refused(cli, tmp_path, tmp_path / "huge.npy", "huge.npy declares an array of 100000x100000x100000")


def test_a_truncated_npy_volume_names_what_its_header_declares(cli, tmp_path):
    np.save(tmp_path / "v.npy", np.zeros((8, 8, 8), np.float32))
    (tmp_path / "cut.npy").write_bytes((tmp_path / "v.npy").read_bytes()[:600])
    refused(cli, tmp_path, tmp_path / "cut.npy", "cut.npy is truncated: its header declares 8x8x8 of float32")


def _tetrahedron(last="0 0 1"):
    return f"v 0 0 0\nv 1 0 0\nv 0 1 0\nv {last}\nf 1 3 2\nf 1 2 4\nf 1 4 3\nf 2 3 4\n"


def test_an_obj_with_a_nan_vertex_is_refused_naming_the_vertex(tmp_path):
    from fieldlab.signals.mesh import read_mesh

    pytest.importorskip("trimesh")
    (tmp_path / "nan.obj").write_text(_tetrahedron("0 0 nan"))
    with pytest.raises(UserError, match="holds NaN at vertex 3, coordinate 2"):
        read_mesh(tmp_path / "nan.obj")
    (tmp_path / "ok.obj").write_text(_tetrahedron())
    assert read_mesh(tmp_path / "ok.obj").num_faces == 4


def test_an_obj_with_a_nan_vertex_is_refused_by_fit(cli, tmp_path):
    pytest.importorskip("trimesh")
    (tmp_path / "nan.obj").write_text(_tetrahedron("0 0 nan"))
    refused(cli, tmp_path, tmp_path / "nan.obj", "holds NaN at vertex 3")


def test_a_truncated_mesh_is_refused(tmp_path):
    trimesh = pytest.importorskip("trimesh")
    from fieldlab.signals.mesh import read_mesh

    trimesh.creation.box().export(tmp_path / "box.ply")
    data = (tmp_path / "box.ply").read_bytes()
    (tmp_path / "cut.ply").write_bytes(data[:len(data) * 2 // 3])
    with pytest.raises(UserError, match="cannot read .*cut.ply as a mesh"):
        read_mesh(tmp_path / "cut.ply")
    (tmp_path / "cut.obj").write_text(_tetrahedron() + "f 1 2 9\n")  # cut before vertex 9 was written
    with pytest.raises(UserError, match="cut.obj"):
        read_mesh(tmp_path / "cut.obj")


def _video(path, frames):
    pytest.importorskip("av")
    from fieldlab.signals.video import _write_h264

    _write_h264(path, frames, 10.0)
    return path


def test_a_video_whose_frames_change_size_is_refused(tmp_path, monkeypatch):
    from fieldlab.signals import video

    small, big = np.zeros((8, 8, 3), np.uint8), np.zeros((16, 16, 3), np.uint8)
    source = video._Source(iter([small, big]), 8, 8, 2, 2, lambda: 10.0)
    with pytest.raises(UserError, match="changes frame size: frame 1 is 16×16, the first is 8×8"):
        video._decode(tmp_path / "v.mp4", source, max_frames=None, max_size=None, max_values=2**31)


def test_a_video_header_declaring_absurd_frames_is_refused_before_decoding(tmp_path):
    from fieldlab.signals import video

    def never():
        raise AssertionError("decoded")
        yield

    source = video._Source(never(), 10**6, 10**6, None, None, lambda: 10.0)
    with pytest.raises(UserError, match="declares frames of 1000000×1000000 pixels"):
        video._decode(tmp_path / "v.mp4", source, max_frames=None, max_size=32, max_values=2**31)


def test_a_truncated_mp4_is_refused(cli, tmp_path):
    frames = np.random.default_rng(0).integers(0, 255, (30, 16, 16, 3), dtype=np.uint8)
    data = _video(tmp_path / "v.mp4", frames).read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[:len(data) // 2])
    refused(cli, tmp_path, tmp_path / "cut.mp4", "cut.mp4")
