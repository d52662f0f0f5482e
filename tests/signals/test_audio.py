import sys

import numpy as np
import pytest

from fieldlab import UserError
from fieldlab.signals.audio import read_audio, write_audio

import soundfile as sf

# subtype → (dtype soundfile reads it as, bits per sample); narrower samples sit in the top bits.
PCM = {"PCM_U8": (np.int16, 8), "PCM_16": (np.int16, 16), "PCM_24": (np.int32, 24), "PCM_32": (np.int32, 32)}


def _random_pcm(subtype, n, channels, seed=0):
    """Full-range samples of `subtype` as soundfile reads them, both extremes and silence included."""
    dtype, bits = PCM[subtype]
    top = np.iinfo(dtype).bits
    samples = np.random.default_rng(seed).integers(-2 ** (bits - 1), 2 ** (bits - 1), size=(n, channels))
    samples[:3, 0] = [-2 ** (bits - 1), 2 ** (bits - 1) - 1, 0]
    return (samples << (top - bits)).astype(dtype)


def _write(path, data, rate, subtype):
    sf.write(path, data, rate, subtype=subtype)
    return path


def _decoded(signal):
    return signal.info.normalization.decode(signal.values)


@pytest.mark.parametrize("rate", [8000, 44100])
@pytest.mark.parametrize("channels", [1, 2])
@pytest.mark.parametrize("subtype", ["PCM_U8", "PCM_16", "PCM_24"])
def test_integer_pcm_round_trips_exactly(tmp_path, subtype, channels, rate):
    raw = _random_pcm(subtype, 301, channels)
    signal = read_audio(_write(tmp_path / "x.wav", raw, rate, subtype))
    assert signal.shape == (301,) and signal.info.channels == channels and signal.info.kind == "audio"
    assert signal.info.extra == {"sample_rate": rate, "subtype": subtype, "format": "WAV"}
    assert signal.values.min() >= -1 and signal.values.max() < 1
    back = _decoded(signal)
    assert back.dtype == PCM[subtype][0]
    np.testing.assert_array_equal(back, raw)


@pytest.mark.parametrize("subtype", ["PCM_16", "PCM_24"])
def test_pcm_field_values_are_full_scale_and_silence_is_zero(tmp_path, subtype):
    raw = _random_pcm(subtype, 200, 2)
    raw[50:60] = 0
    signal = read_audio(_write(tmp_path / "x.wav", raw, 16000, subtype))
    as_float, _ = sf.read(tmp_path / "x.wav", dtype="float64", always_2d=True)  # libsndfile's raw / 2^(bits-1)
    np.testing.assert_array_equal(signal.values.double().numpy(), as_float)
    assert (signal.values[50:60] == 0).all()


def test_pcm_32_is_exact_to_24_bits(tmp_path):
    """float32 field values hold 24 significant bits: 24-bit content in PCM_32 is exact, more is not."""
    deep = _random_pcm("PCM_24", 500, 1)  # 24-bit samples, stored as PCM_32
    signal = read_audio(_write(tmp_path / "deep.wav", deep, 48000, "PCM_32"))
    assert signal.info.extra["subtype"] == "PCM_32"
    np.testing.assert_array_equal(_decoded(signal), deep)
    full = _random_pcm("PCM_32", 500, 1)
    back = _decoded(read_audio(_write(tmp_path / "full.wav", full, 48000, "PCM_32")))
    error = np.abs(back.astype(np.int64) - full)
    assert error.max() <= 64 and (error <= np.abs(full.astype(np.int64)) * 2.0 ** -24).all()


@pytest.mark.parametrize("channels", [1, 2])
def test_float_audio_is_kept_as_is(tmp_path, channels):
    raw = np.random.default_rng(1).uniform(-1, 1, size=(400, channels)).astype(np.float32)
    raw[0, 0], raw[1, 0], raw[2, 0] = 0.0, 1.25, -1.0  # above full scale stays above
    signal = read_audio(_write(tmp_path / "x.wav", raw, 22050, "FLOAT"))
    assert signal.info.normalization.offset == -1 and signal.info.normalization.scale == 2
    np.testing.assert_array_equal(signal.values.numpy(), raw)
    np.testing.assert_array_equal(_decoded(signal), raw)


def test_float_samples_below_2_to_the_minus_29_are_within_2_to_the_minus_53(tmp_path):
    raw = np.array([[1e-12], [-3e-10], [2.0 ** -29], [0.5]], dtype=np.float32)
    back = _decoded(read_audio(_write(tmp_path / "tiny.wav", raw, 8000, "FLOAT")))
    np.testing.assert_array_equal(back[2:], raw[2:])
    np.testing.assert_allclose(back, raw, rtol=0, atol=2.0 ** -53)


@pytest.mark.parametrize("suffix, subtype", [
    (".wav", "PCM_U8"), (".wav", "PCM_16"), (".wav", "PCM_24"), (".wav", "FLOAT"), (".flac", "PCM_16"),
    (".flac", "PCM_24"),
])
def test_write_audio_then_read_back_is_equal(tmp_path, suffix, subtype):
    raw = _random_pcm(subtype, 256, 2) if subtype in PCM else (
        np.random.default_rng(2).uniform(-1, 1, size=(256, 2)).astype(np.float32))
    source = read_audio(_write(tmp_path / f"in{suffix}", raw, 11025, subtype))
    write_audio(tmp_path / f"out{suffix}", _decoded(source), source.info)
    again = read_audio(tmp_path / f"out{suffix}")
    assert again.info.extra == source.info.extra
    np.testing.assert_array_equal(_decoded(again), raw)


def test_write_audio_picks_a_subtype_the_format_has(tmp_path):
    raw = np.random.default_rng(3).uniform(-1, 1, size=(300, 1)).astype(np.float32)
    source = read_audio(_write(tmp_path / "in.wav", raw, 8000, "FLOAT"))
    write_audio(tmp_path / "out.flac", _decoded(source), source.info)  # FLAC has no float: 24-bit PCM
    flac = read_audio(tmp_path / "out.flac")
    assert flac.info.extra["subtype"] == "PCM_24"
    np.testing.assert_allclose(flac.values.numpy(), raw, rtol=0, atol=2.0 ** -24)
    deep = read_audio(_write(tmp_path / "deep.wav", _random_pcm("PCM_32", 300, 1), 8000, "PCM_32"))
    write_audio(tmp_path / "deep.flac", _decoded(deep), deep.info)
    assert sf.info(tmp_path / "deep.flac").subtype == "PCM_24"
    u8 = read_audio(_write(tmp_path / "u8.wav", _random_pcm("PCM_U8", 300, 1), 8000, "PCM_U8"))
    write_audio(tmp_path / "u8.flac", _decoded(u8), u8.info)
    np.testing.assert_array_equal(_decoded(read_audio(tmp_path / "u8.flac")), _decoded(u8))


def test_write_audio_to_ogg_is_vorbis_and_close(tmp_path):
    tone = (0.5 * np.sin(2 * np.pi * 440 * np.arange(8000) / 8000)).astype(np.float32)[:, None]
    source = read_audio(_write(tmp_path / "in.wav", np.repeat(tone, 2, axis=1), 8000, "PCM_16"))
    write_audio(tmp_path / "out.ogg", _decoded(source), source.info)
    ogg = read_audio(tmp_path / "out.ogg")
    assert ogg.info.extra["subtype"] == "VORBIS" and ogg.info.extra["sample_rate"] == 8000
    assert ogg.shape == (8000,) and ogg.info.channels == 2
    error = (ogg.values - source.values)[1000:-1000]  # lossy codec; skip its edges
    assert float((error ** 2).mean()) < 1e-3 * float((source.values ** 2).mean())


def test_write_audio_rounds_and_clips_instead_of_truncating_or_wrapping(tmp_path):
    pcm24 = read_audio(_write(tmp_path / "in.wav", _random_pcm("PCM_24", 4, 1), 8000, "PCM_24")).info
    fitted = np.array([[200], [-200], [383], [2 ** 31 - 1]], dtype=np.int32)  # not on the 24-bit grid
    write_audio(tmp_path / "out.wav", fitted, pcm24)
    back, _ = sf.read(tmp_path / "out.wav", dtype="int32")
    np.testing.assert_array_equal(back, [256, -256, 256, 2 ** 31 - 256])
    floats = read_audio(_write(tmp_path / "f.wav", np.zeros((3, 1), np.float32), 8000, "FLOAT")).info
    write_audio(tmp_path / "loud.flac", np.array([[1.0], [-1.0], [1.5]], dtype=np.float32), floats)
    back, _ = sf.read(tmp_path / "loud.flac", dtype="int32")
    np.testing.assert_array_equal(back, [2 ** 31 - 256, -2 ** 31, 2 ** 31 - 256])


def test_a_music_clip_round_trips_exactly(tmp_path, chord_wav):
    signal = read_audio(chord_wav)
    assert signal.shape == (44100,) and signal.info.channels == 1
    assert signal.info.extra == {"sample_rate": 44100, "subtype": "PCM_16", "format": "WAV"}
    raw, _ = sf.read(chord_wav, dtype="int16", always_2d=True)
    back = _decoded(signal)
    np.testing.assert_array_equal(back, raw)
    write_audio(tmp_path / "clip.wav", back, signal.info)
    np.testing.assert_array_equal(_decoded(read_audio(tmp_path / "clip.wav")), raw)


@pytest.mark.parametrize("content, message", [
    (b"", "cannot read .*bad.wav as audio"), (b"RIFF\x00\x00\x00\x00WAVEjunk", "cannot read .*bad.wav as audio"),
    (b"not audio at all, just text", "cannot read .*bad.wav as audio"),
])
def test_bad_files_are_user_errors(tmp_path, content, message):
    path = tmp_path / "bad.wav"
    path.write_bytes(content)
    with pytest.raises(UserError, match=message):
        read_audio(path)


def test_zero_frames_missing_file_and_nan_are_user_errors(tmp_path):
    with pytest.raises(UserError, match="silent.wav holds no samples"):
        read_audio(_write(tmp_path / "silent.wav", np.zeros((0, 2), np.int16), 8000, "PCM_16"))
    with pytest.raises(UserError, match="cannot read .*nope.wav"):
        read_audio(tmp_path / "nope.wav")
    with pytest.raises(UserError, match="nan.wav holds NaN"):
        read_audio(_write(tmp_path / "nan.wav", np.array([0.1, np.nan], np.float32), 8000, "FLOAT"))


def test_unknown_output_suffix_and_missing_soundfile(tmp_path, monkeypatch):
    info = read_audio(_write(tmp_path / "x.wav", np.zeros(5, np.int16), 8000, "PCM_16")).info
    with pytest.raises(UserError, match="cannot write audio as '.mp3'"):
        write_audio(tmp_path / "x.mp3", np.zeros((5, 1), np.int16), info)
    monkeypatch.setitem(sys.modules, "soundfile", None)
    with pytest.raises(UserError, match=r"soundfile is not installed.*fieldlab\[audio\]"):
        read_audio(tmp_path / "x.wav")
