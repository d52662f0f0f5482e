"""The modality registry, checked for every registered modality: a new one gets these tests by registering."""

import numpy as np
import pytest

from fieldlab import UserError
from fieldlab.cli.main import main
from fieldlab.fit.metrics import MEASURES
from fieldlab.signals import (Modality, get_modality, kind_is_known, load_signal, modalities, modality_names,
                              reconstruction_name, register_modality, write_reconstruction, write_signal)

WRITTEN = [m for m in modalities() if m.write is not None]
# What fieldlab read before the registry, in this order: the unknown-suffix error lists these first.
BUILT_IN = {
    "image": (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", ".exr", ".hdr"),
    "audio": (".wav", ".flac", ".ogg"),
    "video": (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif"),
    "volume": (".npy", ".tif", ".tiff"),
    "mesh": (".obj", ".ply", ".stl", ".off", ".glb"),
}


def _raw(signal):
    return signal.info.normalization.decode(signal.values)


@pytest.mark.parametrize("modality", WRITTEN, ids=lambda m: m.name)
def test_a_modalitys_reconstruction_reads_back_exactly(tmp_path, modality):
    raw, info = modality.example()
    write_reconstruction(tmp_path, raw, info)
    back = load_signal(tmp_path / reconstruction_name(info), modality=modality.name)
    assert back.info.kind == modality.name and back.shape == info.shape and len(back.shape) == modality.dims
    np.testing.assert_array_equal(_raw(back), raw)


@pytest.mark.parametrize("modality, suffix", [(m, s) for m in WRITTEN for s in m.output_suffixes],
                         ids=lambda x: x if isinstance(x, str) else x.name)
def test_every_output_suffix_of_a_modality_reads_back_as_that_modality(tmp_path, modality, suffix):
    """Lossy formats (JPEG, H.264, Vorbis) too: same kind, grid and channels, and the same values on the
    scale of their range (a float format stores 8-bit values as [0, 1])."""
    raw, info = modality.example()
    path = tmp_path / f"x{suffix}"
    write_signal(path, raw, info)
    back = load_signal(path, modality=modality.name)
    assert back.info.kind == modality.name and back.shape == info.shape and back.info.channels == info.channels
    error = np.abs(_unit(_raw(back)) - _unit(raw)).mean()
    assert error <= 0.05, f"{suffix}: mean error {error:g} of the range"


def _unit(raw):
    x = raw.astype(np.float64)
    return (x - x.min()) / (x.max() - x.min())


@pytest.mark.parametrize("modality", [m for m in modalities() if m.read is None], ids=lambda m: m.name)
def test_a_modality_not_read_as_a_signal_says_why_it_is_not(tmp_path, modality):
    spec = str(tmp_path / f"x{modality.suffixes[0]}")
    with pytest.raises(UserError) as error:
        load_signal(spec)
    assert str(error.value) == f"{spec} is a {modality.name}: {modality.not_read}"


@pytest.mark.parametrize("modality", modalities(), ids=lambda m: m.name)
def test_a_modality_declares_what_it_measures_and_reconstructs(modality):
    assert all(name in MEASURES for name in modality.metrics)
    assert (modality.read is None) == bool(modality.not_read)
    if modality.write is not None:
        raw, info = modality.example()
        assert info.kind == modality.name and info.in_dim == modality.dims
        assert reconstruction_name(info).removeprefix("reconstruction") in modality.output_suffixes


def test_the_built_in_modalities_keep_their_order_dims_and_suffixes():
    assert modality_names()[:5] == tuple(BUILT_IN)
    assert {name: get_modality(name).suffixes for name in BUILT_IN} == BUILT_IN
    assert [get_modality(name).dims for name in BUILT_IN] == [2, 1, 3, 3, 3]


def test_an_unknown_suffix_gives_the_old_error_listing_every_registered_suffix(tmp_path):
    spec = str(tmp_path / "notes.xyz")
    known = ", ".join(s for m in modalities() for s in m.suffixes)
    assert known.startswith(", ".join(s for suffixes in BUILT_IN.values() for s in suffixes))
    with pytest.raises(UserError) as error:
        load_signal(spec)
    assert str(error.value) == f"unsupported file type '.xyz' for {spec}; known: {known}"


def test_an_unknown_suffix_stops_fit_with_one_line_before_writing(tmp_path, capsys):
    (tmp_path / "notes.xyz").write_text("hello")
    with pytest.raises(SystemExit) as exit_:
        main(["fit", str(tmp_path / "notes.xyz"), "--out", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1
    assert err.startswith(f"fieldlab: error: unsupported file type '.xyz' for {tmp_path / 'notes.xyz'}; known: .png,")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["notes.xyz"]


def test_an_unknown_modality_gives_the_old_error(tmp_path):
    with pytest.raises(UserError) as error:
        load_signal("sample:camera", modality="smell")
    assert str(error.value) == f"--modality must be one of {', '.join(modality_names())}, got 'smell'"
    assert str(error.value).startswith("--modality must be one of image, audio, video, volume, mesh")


def test_a_suffix_two_modalities_claim_leaves_the_kind_to_reading():
    """A .tif is an image or a volume's page stack: fit checks only option names until it is read."""
    assert not kind_is_known("scan.TIF") and kind_is_known("scan.tif", "volume")
    assert kind_is_known("photo.png") and kind_is_known("sample:camera")


def test_registering_a_modality_twice_raises():
    with pytest.raises(ValueError, match="already registered"):
        register_modality(Modality(name="image", dims=2, suffixes=(), read=None))
