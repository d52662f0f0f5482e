"""Audio: WAV, FLAC and Ogg through soundfile (libsndfile), mono or multi-channel, at any sample rate.

A signal of n samples and c channels has shape (n,) and values (n, c). Field values are the samples
on the usual full-scale convention, field = raw / 2^(bits-1), so silence is exactly 0:

- integer PCM is read as int16 (8- and 16-bit) or int32 (24- and 32-bit). libsndfile aligns narrower
  samples to the top bits (8-bit PCM as multiples of 2^8 in int16, 24-bit as multiples of 2^8 in
  int32), so the normalization depends on the dtype alone. Its scale is a power of two, 2^bits rather
  than `Normalization.for_array`'s 2^bits - 1: encoding is then a shift of the binary exponent, exact
  in float32 for every sample of up to 24 significant bits, and raw 0 lands on field 0. The price is
  that the largest positive sample, 2^(bits-1) - 1, sits just below field 1 (field 1 decodes, clipped,
  to it). 32-bit PCM cannot round-trip exactly: float32 field values hold 24 significant bits, so
  decoding is exact to within 2^-24 of a sample's magnitude (at most 64 of 2^31 steps).
- float, double, Vorbis, Opus and compressed subtypes are read as float32 with the fixed
  normalization field = raw, which is exact for samples of magnitude 2^-29 or more (the float64
  arithmetic of `Normalization` adds 1), and off by less than 2^-53 below that.
"""

from __future__ import annotations

import struct
from pathlib import Path

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._modality import Modality, register_modality
from fieldlab.signals._signal import Normalization, Signal, SignalInfo

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
PCM_BITS = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
"""Bits per sample of the integer PCM subtypes, which are read (and written) exactly."""
FLOAT_NORMALIZATION = Normalization("float32", -1.0, 2.0)
"""field = raw: float audio's full scale is already [-1, 1]."""
MAX_CHANNELS = 64  # third-order ambisonics has 16, a 22.2 layout 24; more is a damaged header
"""7.1 surround is the widest layout players know; a header declaring more is far likelier damaged than real."""


def _soundfile():
    try:
        import soundfile
    except ImportError:
        raise missing_extra("soundfile", "audio") from None
    return soundfile


def pcm_normalization(dtype: str) -> Normalization:
    """field = raw / 2^(bits-1) for an integer dtype of `bits` bits (see the module docstring)."""
    bits = np.iinfo(dtype).bits
    return Normalization(dtype, -float(2 ** (bits - 1)), float(2 ** bits))


def read_audio(path: Path) -> Signal:
    """An audio signal of shape (n,) with c channels, exactly as stored for integer PCM."""
    sf = _soundfile()
    try:
        with sf.SoundFile(path) as f:
            bits = PCM_BITS.get(f.subtype)
            dtype = "float32" if bits is None else "int16" if bits <= 16 else "int32"
            _check_header(path, f.samplerate, f.channels, f.frames, np.dtype(dtype).itemsize)
            raw = f.read(dtype=dtype, always_2d=True)  # (n, c)
            declared = f.frames
            extra = {"sample_rate": int(f.samplerate), "subtype": f.subtype, "format": f.format}
    except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
        reason = getattr(error, "error_string", "") or str(error) or type(error).__name__
        raise UserError(f"cannot read {path} as audio ({reason.strip().rstrip('.')})") from None
    if extra["format"] == "WAV":  # libsndfile quietly shrinks a cut WAV's frame count to the bytes it holds
        declared = max(declared, _wav_declared_frames(path) or 0)
    if raw.shape[0] < declared:
        raise UserError(f"{path} is truncated: its header says {declared:,} samples, the file holds {raw.shape[0]:,}")
    if raw.shape[0] == 0:
        raise UserError(f"{path} holds no samples")
    _validate.require_finite(raw, str(path), axes=("sample", "channel"))
    normalization = FLOAT_NORMALIZATION if bits is None else pcm_normalization(dtype)
    return Signal.from_array(raw, kind="audio", source=str(path), normalization=normalization, extra=extra)


def _check_header(path: Path, sample_rate: int, channels: int, frames: int, itemsize: int) -> None:
    """Refuse a header whose rate, channels or length make no sense, before its samples are read."""
    if sample_rate <= 0:
        raise UserError(f"{path} declares a sample rate of {sample_rate} Hz; audio needs a positive rate")
    if not 0 < channels <= MAX_CHANNELS:
        raise UserError(f"{path} declares {channels} channels; fieldlab reads 1 to {MAX_CHANNELS}")
    if frames * channels > _validate.LIMITS.samples:
        raise UserError(f"{path} declares {frames:,} samples of {channels} channels, more than the limit of "
                        f"{_validate.LIMITS.samples:,} values")
    _validate.check_memory(frames * channels * itemsize, f"the {frames:,} samples of {path}")


def _wav_declared_frames(path: Path) -> int | None:
    """The frame count a RIFF WAV's data chunk declares (None where it does not say: a streamed WAV, RF64)."""
    with open(path, "rb") as f:
        if f.read(4) != b"RIFF" or len(f.read(4)) != 4 or f.read(4) != b"WAVE":
            return None
        frame_bytes = None
        while len(head := f.read(8)) == 8:
            chunk, size = head[:4], struct.unpack("<I", head[4:])[0]
            if chunk == b"fmt " and size >= 14:
                frame_bytes = struct.unpack("<H", f.read(14)[12:14])[0]  # the fmt chunk's block align
                f.seek(size - 14 + size % 2, 1)
            elif chunk == b"data":
                if not frame_bytes or size in (0, 0xFFFFFFFF):  # writers that never went back to fill it in
                    return None
                return size // frame_bytes
            else:
                f.seek(size + size % 2, 1)  # RIFF pads chunks to even sizes
    return None


def _output_subtype(sf, file_format: str, source_subtype: str) -> str:
    """The source's PCM subtype where the format has it, else the nearest PCM with as many bits; float
    sources get FLOAT where the format has it, else its deepest PCM (FLAC), else its default (Vorbis)."""
    supported = [s for s in PCM_BITS if sf.check_format(file_format, s)]
    bits = PCM_BITS.get(source_subtype)
    if bits is not None and supported:
        if source_subtype in supported:
            return source_subtype
        deeper = [s for s in supported if PCM_BITS[s] >= bits]
        return deeper[0] if deeper else supported[-1]
    if sf.check_format(file_format, "FLOAT"):
        return "FLOAT"
    return supported[-1] if supported else sf.default_subtype(file_format)


def _full_scale(raw: np.ndarray) -> np.ndarray:
    """Samples as float64 with full scale [-1, 1] (integers divided by 2^(bits-1))."""
    if np.issubdtype(raw.dtype, np.integer):
        return raw.astype(np.float64) / 2.0 ** (np.iinfo(raw.dtype).bits - 1)
    return raw.astype(np.float64)


def _as_pcm(raw: np.ndarray, bits: int) -> np.ndarray:
    """int32 samples holding `bits`-bit PCM in their top bits, rounded to nearest: libsndfile
    would otherwise truncate when it drops the low bits."""
    step = 2.0 ** (32 - bits)
    top = np.rint(np.clip(_full_scale(raw), -1.0, 1.0) * 2.0 ** 31 / step) * step
    return np.clip(top, -(2.0 ** 31), 2.0 ** 31 - step).astype(np.int32)


def write_audio(path: Path, raw: np.ndarray, info: SignalInfo) -> None:
    """Write raw samples (n, c) or (n,) of any dtype at `info.extra["sample_rate"]`; format from the suffix."""
    sf = _soundfile()
    file_format = _FORMATS.get(path.suffix.lower())
    if file_format is None:
        raise UserError(f"cannot write audio as {path.suffix or '(none)'!r}; use one of {', '.join(AUDIO_SUFFIXES)}")
    subtype = _output_subtype(sf, file_format, info.extra.get("subtype", ""))
    bits = PCM_BITS.get(subtype)
    data = _full_scale(raw).astype(np.float32) if bits is None else _as_pcm(raw, bits)
    sf.write(path, data, int(info.extra["sample_rate"]), subtype=subtype, format=file_format)


def _example() -> tuple[np.ndarray, SignalInfo]:
    t = np.arange(800)[:, None] / 8000  # (n, c): a 200 Hz tone in two channels of 16-bit PCM
    raw = np.rint(np.array([1.0, 0.5]) * 12000 * np.sin(2 * np.pi * 200 * t)).astype(np.int16)
    info = Signal.from_array(raw, kind="audio", source="example.wav", normalization=pcm_normalization("int16"),
                             extra={"sample_rate": 8000, "subtype": "PCM_16", "format": "WAV"}).info
    return raw, info


register_modality(Modality(
    name="audio", dims=1, suffixes=AUDIO_SUFFIXES, read=lambda path, request: read_audio(path), write=write_audio,
    output_suffixes=AUDIO_SUFFIXES, kept_suffixes=AUDIO_SUFFIXES, reconstruction_suffix=".wav",
    rate="sample_rate", rate_required=True, metrics=("psnr", "snr"),
    # A 1D clip of 10⁵ samples needs a far higher first-layer frequency than a 512² image (SIREN's audio
    # experiments use ω₀ = 3000); and with ω₀ = 3000 a 200k-parameter SIREN diverges at its image rate 1e-3
    # on a full clip (stuck at SNR 0 from step 250 on an H100) and reaches 55.6 dB at 3e-4.
    field_defaults={"siren": {"first_omega0": 3000.0}, "local-global": {"first_omega0": 3000.0}},
    field_lr={"siren": 3e-4}, example=_example,
    render_bytes=46,  # 43.5 measured for 8-bit mono WAV, plus 5% (`Modality.render_bytes`)
))
