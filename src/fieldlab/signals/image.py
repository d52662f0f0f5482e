"""Images: PNG, JPEG, TIFF (8- or 16-bit; gray, RGB or RGBA) through imageio, and float EXR and Radiance
HDR through `signals.hdr` (the `hdr` extra).

Pillow (imageio's PNG backend) reduces 16-bit colour PNGs to 8 bits, so those go through pypng, which
reads and writes every PNG bit depth exactly.

Before any pixel is decoded, the header's size is checked against `LIMITS.pixels` and the memory left, so a
small file that declares a huge image (a decompression bomb) is refused. With `--max-size` far below the
image, it is first shrunk by whole blocks (mean of k x k pixels) while it is decoded, which keeps memory
near the decoded file and time near decoding; the anti-aliased resize then does the rest.
"""

from __future__ import annotations

import contextlib
import logging
from pathlib import Path
from typing import Iterable, NamedTuple

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError
from fieldlab.signals._modality import Modality, ReadRequest, refuse_limits, register_modality
from fieldlab.signals._signal import Normalization, Signal, SignalInfo
from fieldlab.signals.hdr import HDR_SUFFIXES, hdr_format, hdr_size, read_hdr_image, tone_map, write_hdr_image
from fieldlab.signals.samples import IMAGE_SAMPLES, sample_array

log = logging.getLogger("fieldlab")

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".webp", *HDR_SUFFIXES)
AXES = ("row", "column", "channel")


def image_signal(raw: np.ndarray, *, source: str, max_size: int | None = None,
                 normalization: Normalization | None = None, extra: dict | None = None) -> Signal:
    """An image signal from an array (H, W) or (H, W, C), downsampled with anti-aliasing to `max_size`.
    `normalization` is the original file's when `raw` was already shrunk (so a reconstruction keeps its
    dtype)."""
    if raw.ndim == 2:
        raw = raw[..., None]
    if raw.ndim != 3 or raw.shape[-1] not in (1, 2, 3, 4) or min(raw.shape[:2]) < 1:
        raise UserError(f"{source}: expected an image of shape (H, W) or (H, W, C≤4), got {raw.shape}")
    _validate.require_finite(raw, source, AXES)
    normalization = normalization or Normalization.for_array(raw)
    if max_size and max(raw.shape[:2]) > max_size:
        from skimage.transform import resize

        factor = max_size / max(raw.shape[:2])
        shape = tuple(max(1, round(n * factor)) for n in raw.shape[:2])
        unit = (raw.astype(np.float64) - normalization.offset) / normalization.scale
        small = resize(unit, shape, order=1, anti_aliasing=True, preserve_range=True)
        raw = small * normalization.scale + normalization.offset  # stays float: no rounding before fitting
    return Signal.from_array(raw, kind="image", source=source, normalization=normalization, extra=extra)


def block_factor(size: tuple[int, int], max_size: int | None) -> int:
    """The whole factor k by which an image of `size` (H, W) is first shrunk for `max_size`: the largest
    that leaves at least twice `max_size`, so the anti-aliased resize still has a factor ≥ 2 to smooth."""
    return max(1, max(size) // (2 * max_size)) if max_size else 1


def block_mean(rows: Iterable[np.ndarray], k: int) -> np.ndarray:
    """Means of k x k blocks (partial blocks at the edges averaged over what they hold) of an image given
    as rows (W, C), holding k rows in memory at a time: float64 (ceil(H / k), ceil(W / k), C)."""
    out, chunk = [], []
    for row in rows:
        chunk.append(np.asarray(row, dtype=np.float64))
        if len(chunk) == k:
            out.append(_chunk_mean(chunk, k))
            chunk = []
    if chunk:
        out.append(_chunk_mean(chunk, k))
    return np.stack(out)


def _chunk_mean(chunk: list[np.ndarray], k: int) -> np.ndarray:
    total = np.sum(chunk, axis=0)  # (W, C)
    starts = np.arange(0, total.shape[0], k)
    counts = np.diff(np.append(starts, total.shape[0]))
    return np.add.reduceat(total, starts, axis=0) / (counts[:, None] * len(chunk))


def _is_deep_colour_png(path: Path) -> bool:
    """True for a PNG with 16 bits per sample and more than one channel (IHDR's bit depth, colour type)."""
    with open(path, "rb") as f:
        header = f.read(26)
    return header[:8] == b"\x89PNG\r\n\x1a\n" and len(header) == 26 and header[24] == 16 and header[25] in (2, 4, 6)


def _png_reader(path: Path):
    import png

    return png.Reader(filename=str(path))


def _read_png_exact(path: Path, k: int = 1) -> np.ndarray:
    """A PNG of any bit depth through pypng, row by row; with k > 1 its k x k block means (float64)."""
    width, height, rows, info = _png_reader(path).asDirect()
    dtype = np.uint16 if info["bitdepth"] > 8 else np.uint8
    planes = info["planes"]
    rows = (np.asarray(row, dtype=dtype).reshape(width, planes) for row in rows)
    return block_mean(rows, k) if k > 1 else np.stack(list(rows))


class _Header(NamedTuple):
    height: int
    width: int
    channels: int
    itemsize: int
    orientation: int = 1
    """EXIF orientation (1-8; 1: as stored): how a viewer turns the stored pixels to show the photo."""
    mode: str = ""
    """Pillow's mode ("" for a 16-bit colour PNG, read by pypng)."""


def _header(path: Path) -> _Header | None:
    """(H, W, C, bytes per sample, EXIF orientation) of the stored pixels from the header alone, or None when
    no reader tells it cheaply."""
    if _is_deep_colour_png(path):
        import png

        reader = _png_reader(path)
        try:
            reader.preamble()
        except (png.Error, OSError, ValueError, EOFError) as error:
            raise UserError(f"cannot read {path} as a PNG ({' '.join(str(error).split())[:120]})") from None
        return _Header(reader.height, reader.width, reader.planes, 2)
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            width, height = image.size
            channels, mode = len(image.getbands()), image.mode
            orientation = exif_orientation(image)
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError):
        return None  # imageio may still read it (a float RGB TIFF); it then says what is wrong
    return _Header(height, width, channels, {"I;16": 2, "I;16B": 2, "I": 4, "F": 4}.get(mode, 1), orientation, mode)


def exif_orientation(image) -> int:
    """The EXIF orientation tag of an open Pillow image (1 where it has none or a value outside 1-8). A PNG
    whose header holds no eXIf chunk has none: Pillow's getexif would decode the whole image to look after the
    pixels (242 µs a 32×32 file against 36 µs for its header)."""
    if image.format == "PNG" and "exif" not in image.info:
        return 1
    try:
        value = image.getexif().get(0x0112, 1)
    except Exception:  # a damaged EXIF block: the pixels as stored
        return 1
    return value if isinstance(value, int) and 1 <= value <= 8 else 1


def oriented(raw: np.ndarray, orientation: int) -> np.ndarray:
    """Stored pixels (H, W[, C]) turned as EXIF `orientation` says a viewer shows them (as Pillow's
    `ImageOps.exif_transpose`): 2 mirrored, 3 turned 180°, 4 flipped, 5 transposed, 6 turned 90° clockwise,
    7 transverse, 8 turned 90° counter-clockwise."""
    if orientation == 2:
        raw = raw[:, ::-1]
    elif orientation == 3:
        raw = raw[::-1, ::-1]
    elif orientation == 4:
        raw = raw[::-1]
    elif orientation == 5:
        raw = raw.swapaxes(0, 1)
    elif orientation == 6:
        raw = raw.swapaxes(0, 1)[:, ::-1]
    elif orientation == 7:
        raw = raw.swapaxes(0, 1)[::-1, ::-1]
    elif orientation == 8:
        raw = raw.swapaxes(0, 1)[::-1]
    return np.ascontiguousarray(raw)


_said_turned = False


def _say_turned(path: Path, orientation: int) -> None:
    """One line a process: images are turned as their EXIF orientation says (a folder of phone photos would
    say it for every file)."""
    global _said_turned
    if orientation != 1 and not _said_turned:
        _said_turned = True
        log.info("%s is turned as its EXIF orientation (%d) says, as viewers show it (so is every such image)",
                 path, orientation)


_READ_CHANNELS = {"1": 1, "L": 1, "I;16": 1, "I;16B": 1, "I": 1, "F": 1, "LA": 2, "RGB": 3, "RGBA": 4, "P": 3}
"""Channels `read_image` returns for an image of each PIL mode (a palette as its RGB colours, a transparent
entry included); other modes (CMYK, …) are left to the reading."""


class Declared(NamedTuple):
    """An image file as `read_image` returns it, from its header alone."""

    height: int
    width: int
    channels: int | None
    """None where reading converts (a palette to its colours)."""
    bits: int
    """Bits per sample as read: 1 (a bilevel image, read as booleans), 8, 16 or 32."""


def declared(path: Path) -> Declared | None:
    """The (turned) size, channels and bits per sample of an image file from its header, or None for a file no
    reader describes cheaply (an HDR image; one only imageio reads)."""
    if hdr_format(path) is not None:
        return None
    header = _header(path)
    if header is None:
        return None
    height, width = (header.width, header.height) if header.orientation >= 5 else (header.height, header.width)
    channels = _READ_CHANNELS.get(header.mode) if header.mode else header.channels
    return Declared(height, width, channels, 1 if header.mode == "1" else 8 * header.itemsize)


def check_image_size(path: Path, height: int, width: int, channels: int, itemsize: int) -> None:
    """Refuse, before decoding, an image over `LIMITS.pixels` or one whose decoding would not fit in memory."""
    pixels = height * width
    if pixels > _validate.LIMITS.pixels:
        raise UserError(f"{path} declares a {width}x{height} image ({pixels:,} pixels; at most "
                        f"{_validate.LIMITS.pixels:,}), refused before decoding")
    _validate.check_memory(pixels * channels * itemsize, f"decoding the {width}x{height} image in {path}")


def read_image(path: Path, *, max_size: int | None = None) -> Signal:
    fmt = hdr_format(path)
    if fmt is not None:
        height, width, channels = hdr_size(path, fmt)
        check_image_size(path, height, width, channels, 4)
        return image_signal(read_hdr_image(path, fmt), source=str(path), max_size=max_size, extra={"format": fmt})
    header = _header(path)
    orientation = header.orientation if header is not None else 1
    _say_turned(path, orientation)
    if header is not None:
        check_image_size(path, *header[:4])
        k = block_factor(header[:2], max_size)
        if k > 1:
            return _read_shrunk(path, k, max_size, orientation)
    try:
        raw = _read_png_exact(path) if _is_deep_colour_png(path) else np.asarray(_imread(path))
    except Exception as error:  # imageio raises many types for a bad file; all mean the same to a user
        raise _unreadable(path, error) from None
    if raw.shape[:1] == (1,) and (raw.ndim == 4 or raw.ndim == 3 and raw.shape[-1] > 4):  # one page (1, H, W[, C])
        raw = raw[0]
    return image_signal(oriented(raw, orientation), source=str(path), max_size=max_size)


def _imread(path: Path) -> np.ndarray:
    import imageio.v3 as iio

    return iio.imread(path)


_DECODER_NOISE = ("Could not find a backend", "need at least one array", "tuple index out of range",
                  "cannot identify image file")
"""Library messages that say how a decoder failed, not what is wrong with the file: they read as "not an image"."""


def _unreadable(path: Path, error: BaseException) -> UserError:
    """One line for an image file that does not decode: an empty file says so, and decoder internals read as what
    they mean (the file is no image any installed reader knows), instead of their own words."""
    with contextlib.suppress(OSError):
        if Path(path).stat().st_size == 0:
            return UserError(f"cannot read {path} as an image: the file is empty (0 bytes)")
    reason = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
    if any(noise in reason for noise in _DECODER_NOISE):
        reason = f"not an image file that Pillow or imageio can decode{_suffix_hint(path)}"
    return UserError(f"cannot read {path} as an image ({reason})")


def _suffix_hint(path: Path) -> str:
    """For a file whose suffix names another modality (bach.wav given as an image): which one."""
    from fieldlab.signals._modality import modalities

    kind = next((m.name for m in modalities() if Path(path).suffix.lower() in m.suffixes and m.name != "image"), None)
    return f"; its suffix is a {kind} file's" if kind else ""


def _read_shrunk(path: Path, k: int, max_size: int, orientation: int = 1) -> Signal:
    """The image first shrunk k times by block means while decoding (pypng row by row for a 16-bit colour
    PNG, which carries no EXIF orientation; else Pillow, whose JPEG decoder can skip detail itself, turned
    as `orientation` says), then resized to `max_size`."""
    from PIL import Image

    try:
        if _is_deep_colour_png(path):
            dtype = np.uint16
            small = _read_png_exact(path, k)
        else:
            with Image.open(path) as image:
                image.draft(image.mode, (image.width // k, image.height // k))  # JPEG: decode at 1/2..1/8
                small, dtype = _pillow_block_mean(image, max_size, orientation)
    except UserError:
        raise
    except Exception as error:
        raise _unreadable(path, error) from None
    # The file's dtype, not the means', decides the normalization, so a reconstruction keeps its bit depth.
    normalization = Normalization.for_array(small) if np.issubdtype(dtype, np.floating) else \
        Normalization.for_array(np.zeros(1, dtype))
    return image_signal(small, source=str(path), max_size=max_size, normalization=normalization)


def _pillow_block_mean(image, max_size: int, orientation: int = 1) -> tuple[np.ndarray, np.dtype]:
    """Block means of a Pillow image, by the factor that remains after `draft` decoded it smaller, turned as
    EXIF `orientation` says before the means (so that a partial block stays at the bottom and right)."""
    if image.mode in ("1", "P"):  # as imageio reads them: bilevel as 8-bit gray, a palette as its RGB colours
        image = image.convert("L" if image.mode == "1" else "RGB")
    array = oriented(np.asarray(image), orientation)
    if array.ndim == 2:
        array = array[..., None]
    return block_mean(iter(array), block_factor(array.shape[:2], max_size)), array.dtype


def write_image(path: Path, raw: np.ndarray) -> None:
    """Write (H, W, C) raw values; JPEG gets 8 bits, PNG and TIFF keep 16, TIFF keeps floats as float32.
    Floats go to PNG and JPEG as 8 bits: [0, 1] scaled by 255, [0, 255] as they are, any other range
    stretched from its min to its max (a view of the image, not its values). EXR and Radiance HDR get
    floats (`signals.hdr.write_hdr_image`)."""
    import imageio.v3 as iio

    if path.suffix.lower() in HDR_SUFFIXES:
        write_hdr_image(path, raw)
        return
    if raw.shape[-1] == 1:
        raw = raw[..., 0]
    tiff = path.suffix.lower() in (".tif", ".tiff")
    if raw.dtype == np.bool_:
        raw = raw.astype(np.uint8) * 255
    elif not np.issubdtype(raw.dtype, np.integer) and tiff:
        raw = raw.astype(np.float32)
    elif not np.issubdtype(raw.dtype, np.integer):
        low, high = float(raw.min(initial=0)), float(raw.max(initial=0))
        if low >= 0 and high <= 1:
            raw = raw * 255
        elif low < 0 or high > 255:
            raw = (raw - raw.min()) / ((float(raw.max()) - float(raw.min())) or 1.0) * 255
        raw = np.clip(np.rint(raw), 0, 255).astype(np.uint8)
    if path.suffix.lower() in (".jpg", ".jpeg") and raw.dtype != np.uint8:
        raw = (raw.astype(np.float64) / np.iinfo(raw.dtype).max * 255).round().astype(np.uint8)
    if path.suffix.lower() == ".png" and raw.dtype == np.uint16 and raw.ndim == 3:
        import png

        modes = {2: "LA", 3: "RGB", 4: "RGBA"}
        png.from_array(raw.reshape(raw.shape[0], -1), f"{modes[raw.shape[-1]]};16").save(str(path))
        return
    if raw.dtype not in (np.uint8, np.uint16, np.float32):
        raw = (raw.astype(np.float64) / np.iinfo(raw.dtype).max * 65535).round().astype(np.uint16)
    iio.imwrite(path, raw)


def _read(path: Path, request: ReadRequest) -> Signal:
    """An image file; a multi-page TIFF is a volume, unless --modality image says to read its first page."""
    if path.suffix.lower() in (".tif", ".tiff"):
        from fieldlab.signals.volume import read_tiff_stack, volume_signal

        stack = read_tiff_stack(path)
        if stack is not None and not request.forced:
            refuse_limits("volume", max_size=request.max_size, max_frames=request.max_frames)
            return volume_signal(stack, source=str(path))
    return read_image(path, max_size=request.max_size)


def _read_sample(name: str, request: ReadRequest) -> Signal:
    _, raw = sample_array(name)
    return image_signal(raw, source=request.spec, max_size=request.max_size)


def _content_suffix(info: SignalInfo) -> str | None:
    """EXR and Radiance HDR by content, whatever the input's suffix: their linear floats stay floats."""
    fmt = info.extra.get("format")
    return f".{fmt}" if fmt in ("exr", "hdr") else None


def _preview(name: str, raw: np.ndarray) -> tuple[str, np.ndarray] | None:
    """A tone-mapped PNG beside an EXR or HDR reconstruction, to look at (`signals.hdr.tone_map`)."""
    return ("reconstruction.png", tone_map(raw)) if name.endswith(HDR_SUFFIXES) else None


def _example() -> tuple[np.ndarray, SignalInfo]:
    raw = (np.arange(5 * 6 * 3).reshape(5, 6, 3) * 4).astype(np.uint8)  # (H, W, C)
    return raw, Signal.from_array(raw, kind="image", source="example.png").info


register_modality(Modality(
    name="image", dims=2, suffixes=IMAGE_SUFFIXES, read=_read, write=lambda path, raw, info: write_image(path, raw),
    output_suffixes=IMAGE_SUFFIXES, kept_suffixes=(".tif", ".tiff"), reconstruction_suffix=".png",
    content_suffix=_content_suffix, preview=_preview, limits=("--max-size",), metrics=("psnr", "ssim"),
    samples=IMAGE_SAMPLES, read_sample=_read_sample, log_image=True, example=_example,
    render_bytes=44,  # 39.8 measured for a 3-channel PNG, plus 5% (`Modality.render_bytes`)
))
