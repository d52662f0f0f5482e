import contextlib
import dataclasses
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

from fieldlab import UserError
from fieldlab.signals import Normalization, SignalInfo
from fieldlab.signals import video as video_module
from fieldlab.signals.video import (
    GIF_SAMPLE, VIDEO_SUFFIXES, read_video, sample_video_path, write_video,
)


def _info(fps: float) -> SignalInfo:
    return SignalInfo(kind="video", shape=(), channels=3, normalization=Normalization("uint8", 0.0, 255.0),
                      domain=(), extra={"fps": fps})


def _moving_gradient(frames: int = 12, height: int = 24, width: int = 32) -> np.ndarray:
    """(t, h, w, 3) uint8: a wave that moves right one period per clip, mostly in brightness."""
    t, y, x = np.meshgrid(np.arange(frames), np.arange(height), np.arange(width), indexing="ij")
    u = 0.5 + 0.5 * np.sin(2 * np.pi * (x / width + t / frames))
    rgb = np.stack([40 + 170 * u, 30 + 150 * u + 30 * y / height, 60 + 100 * u], axis=-1)
    return np.rint(rgb).astype(np.uint8)


def _few_colours(frames: int = 6, height: int = 10, width: int = 12) -> np.ndarray:
    """(t, h, w, 3) uint8 with 40 colours: a GIF's palette holds them exactly."""
    rng = np.random.default_rng(0)
    palette = rng.integers(0, 256, size=(40, 3)).astype(np.uint8)
    return palette[rng.integers(0, 40, size=(frames, height, width))]


def _raw(signal) -> np.ndarray:
    return signal.info.normalization.decode(signal.values)


def _psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float(10 * np.log10(255**2 / mse)) if mse else float("inf")


@pytest.mark.parametrize("suffix, fps", [(".mp4", 12.0), (".mov", 30000 / 1001), (".mkv", 25.0)])
def test_h264_round_trip(tmp_path, suffix, fps):
    frames = _moving_gradient()
    path = tmp_path / f"clip{suffix}"
    write_video(path, frames, _info(fps))
    signal = read_video(path)
    assert signal.shape == (12, 24, 32) and signal.info.channels == 3 and signal.info.kind == "video"
    assert signal.info.extra["fps"] == pytest.approx(fps, rel=1e-6)
    assert signal.info.extra["format"] == suffix[1:]
    # mp4 and mov state their frame count; Matroska does not.
    assert signal.info.extra["frames_total"] == (None if suffix == ".mkv" else 12)
    assert signal.info.normalization == Normalization("uint8", 0.0, 255.0)
    assert signal.values.min() >= -1 and signal.values.max() <= 1
    assert _psnr(_raw(signal), frames) > 35  # lossy, but CRF 12
    assert signal.info.domain == ((0.0, 12.0), (0.0, 24.0), (0.0, 32.0))


def test_mp4_frames_stay_in_order(tmp_path):
    frames = _moving_gradient()
    write_video(tmp_path / "clip.mp4", frames, _info(12.0))
    back = _raw(read_video(tmp_path / "clip.mp4")).astype(np.float64)
    # Each decoded frame is closest to the frame written at its own index.
    errors = ((back[:, None] - frames[None].astype(np.float64)) ** 2).mean(axis=(2, 3, 4))
    np.testing.assert_array_equal(errors.argmin(axis=1), np.arange(12))


def test_gif_round_trip_is_exact_for_few_colours(tmp_path):
    frames = _few_colours()
    write_video(tmp_path / "clip.gif", frames, _info(10.0))
    signal = read_video(tmp_path / "clip.gif")
    assert signal.shape == (6, 10, 12)
    assert signal.info.extra == {"fps": 10.0, "format": "gif", "frames_total": 6}
    np.testing.assert_array_equal(_raw(signal), frames)
    with Image.open(tmp_path / "clip.gif") as image:
        assert image.info["loop"] == 0 and image.info["duration"] == 100


def test_gif_many_colours_and_rounded_frame_rate(tmp_path):
    frames = _moving_gradient()
    write_video(tmp_path / "clip.gif", frames, _info(12.0))
    signal = read_video(tmp_path / "clip.gif")
    assert signal.shape == (12, 24, 32)
    assert signal.info.extra["fps"] == 12.5  # 1/12 s is stored as 0.08 s: GIF counts hundredths
    assert _psnr(_raw(signal), frames) > 30  # 256-colour palette per frame


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_gray_frames_are_written_and_read_as_rgb(tmp_path, suffix):
    gray = _moving_gradient()[..., :1]
    write_video(tmp_path / f"gray{suffix}", gray, _info(10.0))
    back = _raw(read_video(tmp_path / f"gray{suffix}"))
    assert back.shape == (12, 24, 32, 3)
    assert _psnr(back, np.repeat(gray, 3, axis=-1)) > 35


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
@pytest.mark.parametrize("height, width", [(23, 31), (24, 31), (7, 3), (1, 1)])
def test_odd_sizes_write_and_read_at_their_exact_size(tmp_path, suffix, height, width):
    frames = _moving_gradient(6, height, width)
    frames[:, 0, 0] = np.arange(6)[:, None] * 40  # no two frames alike, or GIF would merge them
    write_video(tmp_path / f"odd{suffix}", frames, _info(10.0))
    signal = read_video(tmp_path / f"odd{suffix}")
    assert signal.shape == (6, height, width)
    assert _psnr(_raw(signal), frames) > 30


def test_gif_transparency_shows_white(tmp_path):
    # A palette GIF whose index 0 is transparent: the left half of frame 0, the right half of frame 1.
    indices = np.ones((2, 4, 6), dtype=np.uint8)
    indices[0, :, :3] = 0
    indices[1, :, 3:] = 0
    palette = [0, 0, 0, 200, 20, 20] + [0] * (3 * 254)
    images = []
    for frame in indices:
        image = Image.fromarray(frame, mode="P")
        image.putpalette(palette)
        images.append(image)
    path = tmp_path / "alpha.gif"
    images[0].save(path, save_all=True, append_images=images[1:], transparency=0, duration=50, disposal=2)
    back = _raw(read_video(path))
    assert back.shape == (2, 4, 6, 3)
    expected = np.where((indices == 0)[..., None], np.uint8(255), np.array([200, 20, 20], np.uint8))
    np.testing.assert_array_equal(back, expected)


def test_max_frames_keeps_the_first_frames(tmp_path):
    frames = _moving_gradient()
    write_video(tmp_path / "clip.mp4", frames, _info(12.0))
    signal = read_video(tmp_path / "clip.mp4", max_frames=5)
    assert signal.shape == (5, 24, 32) and signal.info.extra["frames_total"] == 12
    assert _psnr(_raw(signal), frames[:5]) > 35
    assert read_video(tmp_path / "clip.mp4", max_frames=100).shape == (12, 24, 32)


@pytest.mark.parametrize("suffix", [".mp4", ".gif"])
def test_max_frames_stops_decoding_before_a_damaged_end(tmp_path, suffix):
    """The end of the file is cut: reading it all fails, reading the first frames never gets there."""
    frames = _moving_gradient(90, 32, 32)
    write_video(tmp_path / f"full{suffix}", frames, _info(30.0))
    data = (tmp_path / f"full{suffix}").read_bytes()
    cut = tmp_path / f"cut{suffix}"
    cut.write_bytes(data[: int(len(data) * 0.6)])
    with pytest.raises(UserError, match="truncated"):
        read_video(cut)
    assert read_video(cut, max_frames=3).shape == (3, 32, 32)


def test_max_size_downsamples_with_anti_aliasing(tmp_path):
    # A one-pixel checkerboard (exact in a GIF) shrunk by 3, so that plain interpolation would land on
    # pixel centres and keep black and white: anti-aliasing averages it to grey.
    y, x = np.mgrid[:36, :48]
    board = np.stack([(x + y + t) % 2 * 255 for t in range(2)]).astype(np.uint8)  # two frames, not alike
    board = np.repeat(board[..., None], 3, axis=-1)
    write_video(tmp_path / "board.gif", board, _info(10.0))
    small = read_video(tmp_path / "board.gif", max_size=16)
    assert small.shape == (2, 12, 16)  # the aspect ratio is kept
    assert small.values.dtype.is_floating_point and small.info.normalization.dtype == "uint8"
    assert np.abs(_raw(small).astype(np.float64) - 127.5).max() < 8
    assert read_video(tmp_path / "board.gif", max_size=48).shape == (2, 36, 48)  # no larger: untouched


def test_a_clip_first_frames_small_decode_only_those_frames(turntable_mp4, monkeypatch):
    pulled = []
    open_movie = video_module._open_movie

    @contextlib.contextmanager
    def counting(path):
        with open_movie(path) as source:
            def frames():
                for frame in source.frames:
                    pulled.append(frame.shape)
                    yield frame
            yield dataclasses.replace(source, frames=frames())

    monkeypatch.setattr(video_module, "_open_movie", counting)
    signal = read_video(turntable_mp4, max_frames=3, max_size=16)
    assert signal.shape == (3, 16, 16) and signal.info.channels == 3
    assert signal.info.extra == {"fps": 60.0, "format": "mp4", "frames_total": 60}
    assert len(pulled) == 3  # decoding stopped at the third of 60 frames
    full = read_video(turntable_mp4, max_frames=2)
    assert full.shape == (2, 128, 128)
    # Anti-aliasing: each small pixel is close to the mean of its 8×8 block, not to one sample of it
    # (measured 0.035 against 0.24 for the block centres: the clip has a one-pixel checkerboard).
    blocks = full.values.reshape(2, 16, 8, 16, 8, 3).mean(dim=(2, 4))
    sampled = float((full.values[:, 4::8, 4::8] - blocks).abs().mean())
    assert float((signal.values[:2] - blocks).abs().mean()) < min(0.05, sampled / 4)


def test_gif_sample_gives_all_its_frames():
    path = sample_video_path(GIF_SAMPLE)
    assert path.suffix in VIDEO_SUFFIXES
    signal = read_video(path)
    assert signal.shape == (24, 25, 14) and signal.info.channels == 3
    assert signal.info.extra["frames_total"] == 24
    assert signal.info.extra["fps"] == pytest.approx(1000 / 70)
    assert not np.array_equal(signal.values[0], signal.values[12])  # it moves
    with pytest.raises(UserError, match="unknown video sample 'nope'.*gif"):
        sample_video_path("nope")


def _zero_frame_avi(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("mpeg4", rate=10)
        stream.width, stream.height = 32, 24
        container.start_encoding()


def _audio_only_mp4(path: Path) -> None:
    with av.open(str(path), "w") as container:
        stream = container.add_stream("aac", rate=8000)
        frame = av.AudioFrame.from_ndarray(np.zeros((1, 1024), np.float32), format="fltp", layout="mono")
        frame.sample_rate = 8000
        container.mux(stream.encode(frame))
        container.mux(stream.encode(None))


@pytest.mark.parametrize("name, make, message", [
    ("empty.mp4", lambda p: p.write_bytes(b""), "cannot read .*empty.mp4 as a video"),
    ("junk.mp4", lambda p: p.write_bytes(b"not a video at all" * 20), "cannot read .*junk.mp4 as a video"),
    ("junk.gif", lambda p: p.write_bytes(b"GIF89a and then nothing"), "cannot read .*junk.gif as a video"),
    ("text.gif", lambda p: p.write_text("hello"), "cannot read .*text.gif as a video"),
    ("sound.mp4", _audio_only_mp4, "sound.mp4 has no video stream"),
    ("zero.avi", _zero_frame_avi, "zero.avi has no video frames"),
])
def test_bad_files_are_user_errors(tmp_path, name, make, message):
    path = tmp_path / name
    make(path)
    with pytest.raises(UserError, match=message):
        read_video(path)


def test_png_named_gif_is_a_user_error(tmp_path):
    Image.new("RGB", (4, 4)).save(tmp_path / "fake.gif", format="PNG")
    with pytest.raises(UserError, match="PNG, not a GIF"):
        read_video(tmp_path / "fake.gif")


def test_too_large_is_refused_with_advice(tmp_path):
    write_video(tmp_path / "clip.mp4", _moving_gradient(), _info(12.0))
    values = 12 * 24 * 32 * 3
    assert read_video(tmp_path / "clip.mp4", max_values=values).shape == (12, 24, 32)
    with pytest.raises(UserError, match=r"too large: 12 frames of 24×32×3 .*--max-frames.*--max-size"):
        read_video(tmp_path / "clip.mp4", max_values=values - 1)
    assert read_video(tmp_path / "clip.mp4", max_values=values // 2, max_frames=6).shape == (6, 24, 32)
    assert read_video(tmp_path / "clip.mp4", max_values=values // 4, max_size=16).shape == (12, 12, 16)


def test_too_large_without_a_stated_length_stops_while_decoding(tmp_path):
    write_video(tmp_path / "clip.mkv", _moving_gradient(), _info(12.0))  # Matroska states no frame count
    with pytest.raises(UserError, match="too large: at least 3 frames"):
        read_video(tmp_path / "clip.mkv", max_values=2 * 24 * 32 * 3 + 1)
    # A generous --max-frames is no reason to refuse a short clip of unknown length.
    assert read_video(tmp_path / "clip.mkv", max_values=12 * 24 * 32 * 3, max_frames=1000).shape == (12, 24, 32)


@pytest.mark.parametrize("flag, kwargs", [("--max-frames", {"max_frames": 0}), ("--max-size", {"max_size": -1})])
def test_limits_must_be_positive(tmp_path, flag, kwargs):
    write_video(tmp_path / "clip.gif", _few_colours(), _info(10.0))
    with pytest.raises(UserError, match=f"{flag} must be positive"):
        read_video(tmp_path / "clip.gif", **kwargs)


def test_write_refuses_unknown_suffix_and_bad_arrays(tmp_path):
    with pytest.raises(UserError, match="cannot write a video as '.webm'"):
        write_video(tmp_path / "clip.webm", _few_colours(), _info(10.0))
    with pytest.raises(ValueError, match="uint8"):
        write_video(tmp_path / "clip.mp4", _few_colours().astype(np.float32), _info(10.0))
    with pytest.raises(ValueError, match="1 or 3"):
        write_video(tmp_path / "clip.mp4", np.zeros((2, 4, 4, 4), np.uint8), _info(10.0))
