"""Seeded, structure-aware damage to signal files: PNG chunks, float TIFF and EXR pixels, WAV header fields,
OBJ tokens, EXR and Radiance HDR declared sizes. Like `mutate`, each mutator changes `path` in place and
returns what it did."""

from __future__ import annotations

import functools
import math
import random
import struct
import zlib
from pathlib import Path

import numpy as np

from _fuzz.mutate import mutate_bytes, plant_non_finite

# ---------------------------------------------------------------------------------------------- images, audio, meshes


def _png_chunks(data: bytes) -> list[list]:
    chunks, at = [], 8
    while at + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[at:at + 8])
        chunks.append([kind, bytearray(data[at + 8:at + 8 + length])])
        at += 12 + length
    return chunks


def _png_bytes(chunks: list[list]) -> bytes:
    out = bytearray(b"\x89PNG\r\n\x1a\n")
    for kind, body in chunks:
        out += struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))
    return bytes(out)


@functools.lru_cache(maxsize=None)
def _zeros_compressed(side: int) -> bytes:
    """The IDAT stream of a side x side 8-bit gray image of zeros (each row: filter byte 0, then zeros)."""
    packer, row, parts = zlib.compressobj(1), b"\x00" * (side + 1), []
    for _ in range(side):
        parts.append(packer.compress(row))
    return b"".join(parts) + packer.flush()


def mutate_png(path: Path, rng: random.Random) -> str:
    """Chunk-aware damage with valid checksums, so the decoder, not the CRC check, meets it."""
    if rng.random() < 0.4:
        return "png: " + mutate_bytes(path, rng)
    chunks = _png_chunks(path.read_bytes())
    header = chunks[0][1]
    op = rng.choice(["size", "size", "depth", "colour", "idat", "no_idat", "no_iend", "bomb"])
    if op == "size":
        width, height = rng.choice([(2**31 - 1, 1), (100_000, 100_000), (0, 16), (16, 0), (65_535, 65_535), (17, 16)])
        header[0:8] = struct.pack(">II", width, height)
        what = f"IHDR {width}x{height}"
    elif op == "depth":
        header[8] = rng.choice([0, 3, 7, 32, 255])
        what = f"bit depth {header[8]}"
    elif op == "colour":
        header[9] = rng.choice([1, 5, 7, 255])
        what = f"colour type {header[9]}"
    elif op == "idat":
        body = next(body for kind, body in chunks if kind == b"IDAT")
        body[rng.randrange(len(body))] ^= 0xFF
        what = "a damaged IDAT byte"
    elif op == "no_idat":
        chunks = [c for c in chunks if c[0] != b"IDAT"]
        what = "no IDAT"
    elif op == "no_iend":
        chunks = chunks[:-1]
        what = "no IEND"
    else:
        # A real decompression bomb: 20000x20000 gray pixels of zeros compress to about 400 KB.
        side = 20_000
        header[0:13] = struct.pack(">IIBBBBB", side, side, 8, 0, 0, 0, 0)
        raw = _zeros_compressed(side)
        chunks = [chunks[0], [b"IDAT", bytearray(raw)], [b"IEND", bytearray()]]
        what = f"a {side}x{side} decompression bomb of {len(raw):,} bytes"
    path.write_bytes(_png_bytes(chunks))
    return f"png {op}: {what}"


def mutate_float_tiff(path: Path, rng: random.Random) -> str:
    import tifffile

    if rng.random() < 0.5:
        return "tiff: " + mutate_bytes(path, rng)
    array = tifffile.imread(path)
    op = rng.choice(["plant", "plant", "constant", "extreme"])
    if op == "plant":
        array, what = plant_non_finite(array, rng)
    elif op == "constant":
        array, what = np.full_like(array, 0.5), "constant 0.5"
    else:
        array, what = (array * 3e38).astype(np.float32), "values near the float32 limit"
    tifffile.imwrite(path, array)
    return f"tiff {op}: {what}"


WAV_FIELDS = {"riff size": (4, "<I"), "channels": (22, "<H"), "sample rate": (24, "<I"), "byte rate": (28, "<I"),
              "block align": (32, "<H"), "bits": (34, "<H"), "data size": (40, "<I")}
"""Offsets of a canonical 44-byte WAV header's fields."""


def mutate_wav(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    op = rng.choice(["header", "header", "plant", "truncate_data", "bytes"])
    if op == "bytes" or data[36:40] != b"data":  # soundfile writes a longer header for float: plant in its data
        if op == "plant" and data[:4] == b"RIFF":
            return "wav: " + _plant_float_sample(path, data, rng)
        return "wav: " + mutate_bytes(path, rng)
    if op == "header":
        name = rng.choice(sorted(WAV_FIELDS))
        offset, fmt = WAV_FIELDS[name]
        value = rng.choice([0, 1, 3, 255, 65_535] if fmt == "<H" else [0, 1, 2**31, 2**32 - 1, 7])
        data[offset:offset + struct.calcsize(fmt)] = struct.pack(fmt, value)
        path.write_bytes(bytes(data))
        return f"wav header {name} = {value}"
    if op == "truncate_data":
        keep = rng.randrange(44, len(data))
        path.write_bytes(bytes(data[:keep]))
        return f"wav cut to {keep} of {len(data)} bytes (header unchanged)"
    return "wav: " + mutate_bytes(path, rng)


def _plant_float_sample(path: Path, data: bytearray, rng: random.Random) -> str:
    at = data.find(b"data")
    start = at + 8
    count = (len(data) - start) // 4
    index = rng.randrange(count)
    value = rng.choice([math.nan, math.inf, -math.inf])
    data[start + 4 * index:start + 4 * index + 4] = struct.pack("<f", value)
    path.write_bytes(bytes(data))
    return f"float sample {index} = {value}"


OBJ_TOKENS = ["nan", "inf", "-inf", "1e308", "-1e308", "0", "-7", "999999", "1e-320", "x", "", "0/0", "1//",
              "2147483648", "-999999"]


def mutate_obj(path: Path, rng: random.Random) -> str:
    if rng.random() < 0.25:
        return "obj: " + mutate_bytes(path, rng)
    lines = path.read_text().splitlines()
    op = rng.choice(["token", "token", "token", "drop_line", "dup_line", "all_faces", "no_faces"])
    index = rng.randrange(len(lines))
    if op == "token":
        words = lines[index].split()
        slot = rng.randrange(1, len(words))
        words[slot] = rng.choice(OBJ_TOKENS)
        lines[index] = " ".join(words)
        what = f"line {index + 1} -> {lines[index]!r}"
    elif op == "drop_line":
        what = f"dropped line {index + 1} {lines.pop(index)!r}"
    elif op == "dup_line":
        lines.insert(index, lines[index])
        what = f"duplicated line {index + 1}"
    elif op == "all_faces":
        lines = [line for line in lines if line.startswith("v ")] + ["f 1 1 1"] * 8
        what = "degenerate faces only"
    else:
        lines = [line for line in lines if line.startswith("v ")]
        what = "vertices only"
    path.write_text("\n".join(lines) + "\n")
    return f"obj {op}: {what}"


# ---------------------------------------------------------------------------------------------- HDR images

HUGE_SIDES = [(100_000, 100_000), (2**30, 1), (0, 16), (-5, 16), (16, 17), (1, 2**31 - 1)]


def mutate_exr(path: Path, rng: random.Random) -> str:
    """An OpenEXR file: its data window declared huge, empty or negative; planted NaN/Inf; or raw bytes."""
    op = rng.choice(["window", "window", "plant", "bytes", "bytes"])
    data = bytearray(path.read_bytes())
    at = data.find(b"dataWindow\x00box2i\x00")
    if op == "window" and at >= 0:
        start = at + len(b"dataWindow\x00box2i\x00") + 4  # past the attribute's size
        width, height = rng.choice(HUGE_SIDES)
        data[start:start + 16] = struct.pack("<iiii", 0, 0, width - 1, height - 1)
        path.write_bytes(bytes(data))
        return f"exr data window {width}x{height}"
    if op == "plant":
        from fieldlab.signals import write_image

        array, what = plant_non_finite(np.random.default_rng(0).random((16, 16, 3)) * 8, rng)
        write_image(path, array.astype(np.float32))
        return f"exr planted {what}"
    return "exr: " + mutate_bytes(path, rng)


def mutate_radiance(path: Path, rng: random.Random) -> str:
    """A Radiance .hdr file: its resolution line changed (a bomb, empty, negative, garbage), or raw bytes."""
    data = path.read_bytes()
    at = data.find(b"\n-Y ")
    if rng.random() < 0.5 or at < 0:
        return "hdr: " + mutate_bytes(path, rng)
    end = data.index(b"\n", at + 1)
    height, width = rng.choice(HUGE_SIDES + [("x", "y")])
    line = rng.choice([f"-Y {height} +X {width}", f"+Z {height} -X {width}", f"-Y {height}"]).encode()
    path.write_bytes(data[:at + 1] + line + data[end:])
    return f"hdr resolution line {line.decode()!r}"
