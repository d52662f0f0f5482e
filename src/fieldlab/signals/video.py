"""Videos: MP4, MOV, WebM, MKV and AVI through imageio's PyAV plugin; animated GIF through Pillow.

A video is a signal of shape (T, H, W) with 3 channels (RGB) and the uint8 normalization: gray videos are
read as RGB, and a GIF's transparent pixels are composited onto white. `info.extra` holds `fps`,
`format` (the file's suffix: "mp4", "gif", …) and `frames_total` (the file's frame count; None where
the container does not say). Reading decodes frame by frame: `max_frames` stops decoding after the first
frames, and `max_size` shrinks each frame with anti-aliasing as it arrives (time is never resampled).

Writing uses H.264 (libx264, CRF 12: visually lossless) in .mp4, .mov and .mkv. Frames with even sides
are encoded yuv420p, which every player shows. 4:2:0 cannot represent an odd side (H.264 crops in steps
of two chroma-shared pixels), so a frame with an odd side is encoded yuv444p (the High 4:4:4 profile)
rather than padded: the file keeps the exact size for FFmpeg-based readers (this one, VLC, mpv), at the
cost of some browsers and hardware players. GIF is written through Pillow: one 256-colour palette per
frame, delays in hundredths of a second (so the frame rate is rounded, and capped at 50 fps because
browsers slow shorter delays to 0.1 s), looping forever. Pillow merges identical consecutive frames into
one longer frame, and a GIF is read back as stored, so such a GIF has fewer frames than were written.

Shape letters: t frames, h height, w width, c channels.
"""

from __future__ import annotations

import contextlib
import dataclasses
import statistics
from collections.abc import Callable, Iterator
from fractions import Fraction
from pathlib import Path

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._modality import Modality, ReadRequest, register_modality
from fieldlab.signals._signal import Normalization, Signal, SignalInfo, span_samples

VIDEO_SUFFIXES = (".mp4", ".mov", ".webm", ".mkv", ".avi", ".gif")
H264_SUFFIXES = (".mp4", ".mov", ".mkv")
"""The suffixes `write_video` encodes with H.264; it also writes .gif."""

GIF_SAMPLE = "gif"
_SAMPLE_FILES = {GIF_SAMPLE: "no_time_for_that_tiny.gif"}  # ships inside scikit-image's wheel

DEFAULT_FPS = 24.0
"""The frame rate `write_video` uses when `info.extra` has none."""

_CRF = 12  # x264's constant-quality scale: 0 lossless, 23 default; ~12 is visually lossless
# A container's frame count may exceed the frames that decode by a few (an edit list that trims encoder
# priming, AVI's dropped frames); a bigger gap (more than this plus 1 %) means the file was cut.
_FRAME_COUNT_SLACK = 2
_GIF_MIN_DELAY_MS = 20  # browsers play a delay of 0 or 0.01 s as 0.1 s
_GIF_SLOW_DELAY_MS = 100  # ... which is what a reader should assume for such a delay too


@dataclasses.dataclass
class _Source:
    """An opened video: its size as the container reports it, and its frames, decoded lazily."""

    frames: Iterator[np.ndarray]
    """RGB frames (h, w, 3) uint8, in order."""
    height: int
    width: int
    frames_total: int | None
    """The exact frame count the container states, or None."""
    frames_guess: int | None
    """`frames_total`, else duration × frame rate, else None: only for the early size check."""
    fps: Callable[[], float]
    """The frame rate; a GIF's is known only once its frames are read, so it is asked for last."""


def read_video(path: Path, *, max_frames: int | None = None, max_size: int | None = None,
               max_values: int = 2**31, span: tuple[float, float] | None = None) -> Signal:
    """A video signal (T, H, W) with 3 channels: the first `max_frames` frames (of the part between `span`
    seconds, when given), each shrunk to `max_size`. Frames before the span are decoded but not kept, and
    decoding stops at its end; `info.extra["taken_from"]` then holds the kept frames' [start, stop).

    `max_values` bounds frames × height × width × channels after those limits; a larger video stops with a
    `UserError` before its frames are decoded (or, where the container does not state its length, as soon
    as the decoded frames pass the bound).
    """
    for flag, value in (("--max-frames", max_frames), ("--max-size", max_size)):
        if value is not None and value <= 0:
            raise UserError(f"{flag} must be positive, got {value}")
    is_gif = path.suffix.lower() == ".gif"
    try:
        with (_open_gif if is_gif else _open_movie)(path) as source:
            if span is not None and is_gif:  # a GIF's frame rate is known once its frames are read: take all
                frames, first = _decode(path, source, max_frames=None, max_size=max_size, max_values=max_values)
                start, stop = span_samples(span, source.fps(), len(frames))
                frames = frames[start:stop][:max_frames]
            else:
                start, stop = span_samples(span, source.fps(), None) if span is not None else (0, None)
                frames, first = _decode(path, source, max_frames=max_frames, max_size=max_size,
                                        max_values=max_values, skip=start, stop=stop)
            fps = source.fps()
            frames_total = source.frames_total
    except (UserError, MemoryError):
        raise
    except Exception as error:  # imageio, PyAV and Pillow raise many types for a bad file; all mean the same
        raise UserError(_unreadable(path, error, is_gif)) from None
    if first is None:
        raise UserError(f"{path} has no video frames")
    if span is not None and not frames:
        seconds = f"{frames_total / fps:.3g}" if frames_total and fps else "fewer"
        raise UserError(f"--span {span[0]:g}:{span[1]:g} lies outside the video's {seconds} seconds")
    expected = min(frames_total, stop or frames_total) - start if frames_total else 0
    if frames_total and len(frames) < min(expected, max_frames or expected) - _slack(frames_total):
        # PyAV stops quietly where an MP4 is cut, so compare with the count the container states.
        raise UserError(f"{path} ends early (truncated or corrupt): {len(frames)} of its {frames_total} "
                        f"frames decode")
    extra = {"fps": fps, "format": path.suffix.lower().removeprefix("."), "frames_total": frames_total}
    if span is not None:
        extra["taken_from"] = [start, start + len(frames)]
    return Signal.from_array(np.stack(frames), kind="video", source=str(path),
                             normalization=Normalization.for_array(first), extra=extra)


def _slack(frames_total: int) -> int:
    """How many fewer frames than the container states may decode from a whole file."""
    return _FRAME_COUNT_SLACK + frames_total // 100


def _decode(path: Path, source: _Source, *, max_frames: int | None, max_size: int | None,
            max_values: int, skip: int = 0, stop: int | None = None) -> tuple[list[np.ndarray], np.ndarray | None]:
    """The kept frames (each (h, w, 3), uint8 or shrunk to float32) and the first frame as decoded; frames
    before `skip` are decoded and dropped, decoding ends at frame `stop`."""
    if source.height * source.width > _validate.LIMITS.pixels:  # a damaged or hostile header: refuse before decoding
        raise UserError(f"{path} declares frames of {source.height}×{source.width} pixels, more than the limit "
                        f"of {_validate.LIMITS.pixels:,}")
    height, width = _shrunk_size(source.height, source.width, max_size)
    frame_values = height * width * 3
    guess = source.frames_guess
    if guess:
        guess = max(0, min(guess, stop or guess) - skip)
    count = min(guess, max_frames or guess) if guess else None  # max_frames alone may exceed a short video
    if count and count * frame_values > max_values:
        raise _too_large(path, count, height, width, max_values)
    frames: list[np.ndarray] = []
    first = None
    for index, frame in enumerate(source.frames):
        if first is None:
            first = frame
            height, width = _shrunk_size(*frame.shape[:2], max_size)  # the frames, not the header, decide
            frame_values = height * width * 3
        elif frame.shape != first.shape:  # shrinking to the first frame's size would distort the others
            raise UserError(f"{path} changes frame size: frame {index} is {frame.shape[1]}×{frame.shape[0]}, "
                            f"the first is {first.shape[1]}×{first.shape[0]}")
        if stop is not None and index >= stop:
            break
        if index < skip:
            continue
        if (len(frames) + 1) * frame_values > max_values:  # the container understated its length
            raise _too_large(path, len(frames) + 1, height, width, max_values, at_least=True)
        frames.append(frame if frame.shape[:2] == (height, width) else _shrink(frame, (height, width)))
        if len(frames) == max_frames:
            break
    return frames, first


def _shrunk_size(height: int, width: int, max_size: int | None) -> tuple[int, int]:
    """The frame size after `max_size`, computed as `image_signal` does."""
    if not max_size or max(height, width) <= max_size:
        return height, width
    factor = max_size / max(height, width)
    return max(1, round(height * factor)), max(1, round(width * factor))


def _shrink(frame: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """An RGB uint8 frame resized with anti-aliasing; it stays float (no rounding before fitting)."""
    from skimage.transform import resize

    small = resize(frame / 255.0, size, order=1, anti_aliasing=True, preserve_range=True)
    return (small * 255).astype(np.float32)  # float32 halves memory; exact enough for 8-bit values


def _too_large(path: Path, frames: int, height: int, width: int, max_values: int,
               at_least: bool = False) -> UserError:
    count = f"{'at least ' if at_least else ''}{frames} frame{'s' * (frames != 1)}"
    return UserError(
        f"{path} is too large: {count} of {height}×{width}×3 make {frames * height * width * 3:,} values, more "
        f"than the limit of {max_values:,}; keep fewer frames with --max-frames or smaller ones with --max-size")


def _unreadable(path: Path, error: Exception, is_gif: bool) -> str:
    """One sentence for a file that failed to open or decode."""
    if not is_gif:
        av = _import_av()
        try:
            with av.open(str(path)) as container:
                if not container.streams.video:
                    return f"{path} has no video stream"
        except Exception as av_error:  # PyAV's own words say more than imageio's wrapper of them
            error = av_error
    cause = error.__cause__ or error
    reason = getattr(cause, "strerror", None) or str(cause).strip()
    return f"cannot read {path} as a video ({reason.splitlines()[0] if reason else type(cause).__name__})"


def _import_av():
    try:
        import av
    except ImportError:
        raise missing_extra("PyAV (the 'av' package)", "video") from None
    return av


@contextlib.contextmanager
def _open_movie(path: Path) -> Iterator[_Source]:
    _import_av()
    import imageio.v3 as iio

    with iio.imopen(path, "r", plugin="pyav") as file:
        frames_total, height, width, _ = file.properties().shape  # reads headers only
        metadata = file.metadata()
        fps = float(metadata["fps"])
        duration = metadata.get("duration")
        guess = frames_total or (round(duration * fps) if duration and fps else None)
        # FRAME threading decodes several frames at once: faster in bulk, and stopping early is still cheap.
        yield _Source(file.iter(thread_type="FRAME"), height, width, frames_total or None, guess, lambda: fps)


@contextlib.contextmanager
def _open_gif(path: Path) -> Iterator[_Source]:
    from PIL import Image, ImageSequence

    with Image.open(path) as image:
        if image.format != "GIF":
            raise ValueError(f"it is {image.format or 'not an image'}, not a GIF")
        delays: list[float] = []

        def frames() -> Iterator[np.ndarray]:
            for frame in ImageSequence.Iterator(image):  # Pillow applies each frame's disposal
                delay = frame.info.get("duration") or 0
                delays.append(delay if delay >= _GIF_MIN_DELAY_MS else _GIF_SLOW_DELAY_MS)
                yield _rgb_on_white(np.asarray(frame.convert("RGBA")))

        def fps() -> float:
            return 1000.0 / statistics.median(delays) if delays else 1000.0 / _GIF_SLOW_DELAY_MS

        count = image.n_frames  # skips through the blocks without decoding them
        yield _Source(frames(), image.height, image.width, count, count, fps)


def _rgb_on_white(rgba: np.ndarray) -> np.ndarray:
    """(h, w, 4) → (h, w, 3) uint8, transparent pixels showing white as on a web page."""
    alpha = rgba[..., 3:].astype(np.uint16)
    return ((rgba[..., :3] * alpha + 255 * (255 - alpha) + 127) // 255).astype(np.uint8)


def write_video(path: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """Write frames (T, H, W, C) uint8, C = 1 (gray) or 3 (RGB), at `info.extra["fps"]`.

    `.mp4`, `.mov`, `.mkv`: H.264; `.gif`: Pillow (see the module docstring for both formats' limits).
    """
    raw = np.asarray(raw)
    if raw.ndim != 4 or raw.shape[-1] not in (1, 3) or raw.dtype != np.uint8 or 0 in raw.shape:
        raise ValueError(f"write_video expects frames (T, H, W, 1 or 3) of uint8, got {raw.shape} {raw.dtype}")
    fps = float(info.extra.get("fps") or DEFAULT_FPS)
    suffix = path.suffix.lower()
    if suffix == ".gif":
        _write_gif(path, raw, fps)
    elif suffix in H264_SUFFIXES:
        _write_h264(path, raw, fps)
    else:
        raise UserError(f"cannot write a video as {suffix or '(no suffix)'!r}; "
                        f"use one of {', '.join(H264_SUFFIXES + ('.gif',))}")


def _write_h264(path: Path, raw: np.ndarray, fps: float) -> None:
    av = _import_av()

    _, height, width, channels = raw.shape
    if channels == 1:
        raw = np.repeat(raw, 3, axis=-1)  # R = G = B: YUV keeps it as luma with neutral chroma
    # faststart moves the index to the front so a browser can play the file while it loads.
    options = {"movflags": "+faststart"} if path.suffix.lower() in (".mp4", ".mov") else {}
    with av.open(str(path), "w", options=options) as container:
        stream = container.add_stream("libx264", rate=Fraction(fps).limit_denominator(65535))
        stream.height, stream.width = height, width
        stream.pix_fmt = "yuv420p" if height % 2 == 0 and width % 2 == 0 else "yuv444p"
        stream.options = {"crf": str(_CRF), "preset": "medium"}
        for frame in raw:
            container.mux(stream.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(frame), format="rgb24")))
        container.mux(stream.encode(None))  # flush the frames the encoder still holds


def _write_gif(path: Path, raw: np.ndarray, fps: float) -> None:
    from PIL import Image

    delay = max(_GIF_MIN_DELAY_MS, round(100 / fps) * 10)  # GIF stores hundredths of a second
    images = [Image.fromarray(frame[..., 0] if frame.shape[-1] == 1 else frame) for frame in raw]
    images[0].save(path, format="GIF", save_all=True, append_images=images[1:], duration=delay, loop=0)


def sample_video_path(name: str) -> Path:
    """The file of the built-in video sample `name` (`sample:gif`: scikit-image's animated GIF)."""
    if name not in _SAMPLE_FILES:
        raise UserError(f"unknown video sample {name!r}; built-in video samples: {', '.join(_SAMPLE_FILES)}")
    import skimage.data

    path = Path(skimage.data.__file__).parent / _SAMPLE_FILES[name]
    if not path.is_file():
        raise UserError(f"sample:{name} needs {path.name}, which this scikit-image install lacks")
    return path


def _read(path: Path, request: ReadRequest) -> Signal:
    return read_video(path, max_frames=request.max_frames, max_size=request.max_size, span=request.span)


def _read_sample(name: str, request: ReadRequest) -> Signal:
    signal = _read(sample_video_path(name), request)
    return dataclasses.replace(signal, info=dataclasses.replace(signal.info, source=request.spec))


def _content_suffix(info: SignalInfo) -> str:
    """A GIF stays a GIF (its palette holds the colours exactly); every other video becomes H.264 MP4."""
    return ".gif" if info.extra.get("format") == "gif" else ".mp4"


def _example() -> tuple[np.ndarray, SignalInfo]:
    raw = np.zeros((3, 6, 8, 3), np.uint8)  # (t, h, w, c): a white square moving right on black
    for t in range(3):
        raw[t, 2:4, 2 * t:2 * t + 2] = 255
    info = Signal.from_array(raw, kind="video", source="example.gif",
                             extra={"fps": 10.0, "format": "gif", "frames_total": 3}).info
    return raw, info


register_modality(Modality(
    name="video", dims=3, suffixes=VIDEO_SUFFIXES, read=_read, write=write_video,
    output_suffixes=(*H264_SUFFIXES, ".gif"), reconstruction_suffix=".mp4", content_suffix=_content_suffix,
    limits=("--max-size", "--max-frames"), rate="fps", metrics=("psnr", "frame_psnr"),
    samples=(GIF_SAMPLE,), read_sample=_read_sample, example=_example,
    render_bytes=44,  # 41.2 measured for MP4, plus 5% (`Modality.render_bytes`)
))
