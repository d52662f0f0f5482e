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

from pathlib import Path

import numpy as np

from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._signal import Normalization, Signal, SignalInfo

AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
_FORMATS = {".wav": "WAV", ".flac": "FLAC", ".ogg": "OGG"}
PCM_BITS = {"PCM_U8": 8, "PCM_S8": 8, "PCM_16": 16, "PCM_24": 24, "PCM_32": 32}
"""Bits per sample of the integer PCM subtypes, which are read (and written) exactly."""
FLOAT_NORMALIZATION = Normalization("float32", -1.0, 2.0)
"""field = raw: float audio's full scale is already [-1, 1]."""


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
            raw = f.read(dtype=dtype, always_2d=True)  # (n, c)
            extra = {"sample_rate": int(f.samplerate), "subtype": f.subtype, "format": f.format}
    except (RuntimeError, OSError) as error:  # soundfile's LibsndfileError is a RuntimeError
        reason = getattr(error, "error_string", "") or str(error) or type(error).__name__
        raise UserError(f"cannot read {path} as audio ({reason.strip().rstrip('.')})") from None
    if raw.shape[0] == 0:
        raise UserError(f"{path} holds no samples")
    if bits is None and not np.isfinite(raw).all():
        raise UserError(f"{path} holds NaN or infinite samples")
    normalization = FLOAT_NORMALIZATION if bits is None else pcm_normalization(dtype)
    return Signal.from_array(raw, kind="audio", source=str(path), normalization=normalization, extra=extra)


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
