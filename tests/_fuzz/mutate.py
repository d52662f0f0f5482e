"""Seeded ways to damage a file: raw bytes, or the structure of JSON, TOML, .npy, .npz and safetensors files
(signal formats: `mutate_media`). Each mutator changes `path` in place and returns a short description of what it did, so a
failing case can say what it fed fieldlab."""

from __future__ import annotations

import ast
import io
import json
import math
import random
import struct
import zipfile
from pathlib import Path

import numpy as np

# ---------------------------------------------------------------------------------------------- raw bytes


def mutate_bytes(path: Path, rng: random.Random) -> str:
    data = bytearray(path.read_bytes())
    op = rng.choice(["flip", "insert", "delete", "truncate", "duplicate", "ff", "random", "empty"])
    n = len(data)
    start = rng.randrange(max(n, 1))
    length = rng.choice([1, 2, 4, 16, 64, 1024])
    stop = min(n, start + length)
    if op == "flip":
        for i in rng.sample(range(n), min(n, rng.randint(1, 8))):
            data[i] ^= 1 << rng.randrange(8)
    elif op == "insert":
        data[start:start] = rng.randbytes(length)
    elif op == "delete":
        del data[start:stop]
    elif op == "truncate":
        del data[start:]
    elif op == "duplicate":
        data[stop:stop] = data[start:stop]
    elif op == "ff":
        data[start:stop] = b"\xff" * (stop - start)
    elif op == "random":
        data[start:stop] = rng.randbytes(stop - start)
    else:
        data = bytearray()
    path.write_bytes(bytes(data))
    return f"bytes {op} at {start} (+{length}) of {n}"


# ---------------------------------------------------------------------------------------------- JSON and TOML

HOSTILE = [10**12, 10**30, -1, -10**12, 0, 2**63, math.nan, math.inf, -math.inf, 1e308, 0.5, -0.0,
           "../../outside", "/tmp/absolute", "a/../../b", "", "x" * 5000, "NaN", "1e30", [[[[1]]]], [], {},
           {"nested": {"deeper": [1, None]}}, None, True, False, [10**12, 10**12], [-1, 8]]
"""Values of other types, sizes and signs than any a fieldlab file holds."""

WHOLE = [b"[1, 2, 3]", b"42", b'"a string"', b"null", b"\x00\xff\xfe binary \x80", b"", b"[" * 100_000,
         b'{"a": 1', "\ufeff{}".encode(), b"{}"]
"""Documents that replace a whole file."""


def nodes(doc, path=()):
    """(path, value) of every value inside `doc`, the root excluded."""
    items = doc.items() if isinstance(doc, dict) else enumerate(doc) if isinstance(doc, list) else ()
    for key, value in items:
        yield path + (key,), value
        yield from nodes(value, path + (key,))


def _parent(doc, path):
    for key in path[:-1]:
        doc = doc[key]
    return doc


def mutate_document(doc, rng: random.Random, focus: str | None = None) -> str:
    """Change one value of a parsed JSON document in place (under `doc[focus]` most of the time)."""
    paths = [p for p, _ in nodes(doc)]
    if focus and isinstance(doc, dict) and focus in doc and rng.random() < 0.8:
        paths = [p for p in paths if p[0] == focus and len(p) > 1] or paths
    if not paths:
        return "nothing to change"
    path = rng.choice(paths)
    parent = _parent(doc, path)
    op = rng.choices(["replace", "delete", "add"], [7, 2, 1])[0]
    if op == "delete" and isinstance(parent, dict):
        del parent[path[-1]]
        return f"deleted {'/'.join(map(str, path))}"
    if op == "add" and isinstance(parent, dict):
        key = rng.choice(["../escape", "extra", "", "layers", "num_fields", "shape"])
        parent[key] = rng.choice(HOSTILE)
        return f"added {'/'.join(map(str, path[:-1] + (key,)))} = {parent[key]!r:.40}"
    numbers = [p for p in paths if isinstance(_parent(doc, p)[p[-1]], int)]
    if numbers and rng.random() < 0.5:  # declared sizes and counts are where a reader trusts a file most
        path = rng.choice(numbers)
        parent = _parent(doc, path)
    parent[path[-1]] = rng.choice(HOSTILE)
    return f"set {'/'.join(map(str, path))} = {parent[path[-1]]!r:.40}"


def mutate_json(path: Path, rng: random.Random, focus: str | None = None) -> str:
    choice = rng.random()
    if choice < 0.1:
        return "json: " + mutate_bytes(path, rng)
    if choice < 0.2:
        whole = rng.choice(WHOLE)
        path.write_bytes(whole)
        return f"json: whole document {whole[:20]!r}"
    doc = json.loads(path.read_text())
    what = mutate_document(doc, rng, focus)
    path.write_text(json.dumps(doc))  # NaN and Infinity become the literals Python's json writes
    return "json: " + what


def mutate_toml(path: Path, rng: random.Random) -> str:
    import tomllib

    from _fuzz.fixtures import toml_text

    choice = rng.random()
    if choice < 0.15:
        return "toml: " + mutate_bytes(path, rng)
    if choice < 0.25:
        whole = rng.choice([b"\x00\xff\xfe binary", b"[table", b"key = ", b"= 1", b"a = 1\na = 2", b"x = [" * 5000])
        path.write_bytes(whole)
        return f"toml: whole document {whole[:20]!r}"
    doc = tomllib.loads(path.read_text())
    key = rng.choice(list(doc) + ["params", "max_size", "steps", "num_layers", "batch_size", "target_psnr",
                                  "max_seconds", "precision", "device", "span", "modality"])
    value = rng.choice([v for v in HOSTILE if v is not None])
    doc[key] = value
    path.write_text(toml_text(doc))
    return f"toml: set {key} = {value!r:.40}"


def mutate_config_json(path: Path, rng: random.Random) -> str:
    """A --config JSON: besides damaging what is there, give a known option a hostile value."""
    if rng.random() < 0.4:
        doc = json.loads(path.read_text())
        key = rng.choice(["params", "max_size", "steps", "num_layers", "hidden_dim", "batch_size", "seed",
                          "omega0", "target_psnr", "max_seconds", "precision", "span", "modality", "lr"])
        doc[key] = rng.choice(HOSTILE)
        path.write_text(json.dumps(doc))
        return f"json: set {key} = {doc[key]!r:.40}"
    return mutate_json(path, rng)


# ---------------------------------------------------------------------------------------------- numpy

NPY_SHAPES = [(10**6, 10**6, 10**6), (2**62,), (2**31, 2**31), (8, 8), (8, 8, 8, 8), (), (0, 8, 8), (8, 8, 9),
              (1, 1, 1), (3,), (-1, 8, 8), (8, 8, 8, 5), (512, 512, 512)]
NPY_DESCRS = ["<f8", "|O", "<c8", "|b1", "<U4", ">f4", "<i8", "|V4", "<f2", "|u1", "bogus", "<M8[s]", "<f16"]


def npy_bytes_mutated(data: bytes, rng: random.Random) -> tuple[bytes, str]:
    """A .npy file's bytes with its header's shape, dtype or order changed (the data left as it was)."""
    if data[:6] != b"\x93NUMPY" or len(data) < 10:
        return data, "npy: no header to change"
    major = data[6]
    size_format, start = ("<H", 10) if major == 1 else ("<I", 12)
    length = struct.unpack(size_format, data[8:start])[0]
    header = ast.literal_eval(data[start:start + length].decode("latin1"))
    op = rng.choice(["shape", "shape", "descr", "descr", "fortran", "garbage", "drop"])
    if op == "shape":
        header["shape"] = rng.choice(NPY_SHAPES)
    elif op == "descr":
        header["descr"] = rng.choice(NPY_DESCRS)
    elif op == "fortran":
        header["fortran_order"] = True
    elif op == "drop":
        del header[rng.choice(sorted(header))]
    text = repr(header) if op != "garbage" else rng.choice(["{'descr': ", "__import__('os')", "[1, 2]", "\x00"])
    # Pad as numpy does: the data starts on a 64-byte boundary, the header ends with a newline.
    text += " " * ((64 - (start + len(text) + 1) % 64) % 64) + "\n"
    encoded = text.encode("latin1")
    mutated = data[:8] + struct.pack(size_format, len(encoded)) + encoded + data[start + length:]
    return mutated, f"npy header {op}: {text.strip()[:80]}"


def plant_non_finite(array: np.ndarray, rng: random.Random) -> tuple[np.ndarray, str]:
    """A float copy of `array` with NaN, Inf or -Inf at one random position."""
    planted = array.astype(np.float32 if array.dtype.itemsize <= 4 else array.dtype)
    flat = planted.reshape(-1)
    index = rng.randrange(flat.size)
    value = rng.choice([math.nan, math.inf, -math.inf])
    flat[index] = value
    return planted, f"{value} at flat index {index} of shape {array.shape}"


def mutate_npy(path: Path, rng: random.Random) -> str:
    op = rng.choice(["header", "header", "plant", "constant", "huge", "bytes"])
    if op == "header":
        data, what = npy_bytes_mutated(path.read_bytes(), rng)
        path.write_bytes(data)
        return what
    if op == "bytes":
        return "npy: " + mutate_bytes(path, rng)
    array = np.load(path)
    if op == "plant":
        array, what = plant_non_finite(array, rng)
    elif op == "constant":
        array, what = np.full_like(array, rng.choice([0.0, 0.5, 1.0, -3.0])), "constant"
    else:
        array, what = array * rng.choice([1e38, 1e-38, -1e30]), "scaled to extreme values"
    np.save(path, array)
    return f"npy {op}: {what}"


def mutate_npz(path: Path, rng: random.Random) -> str:
    """A dataset .npz: its arrays replaced by hostile ones, a member's header damaged, or its zip bytes."""
    op = rng.choice(["arrays", "arrays", "arrays", "member_header", "bytes"])
    if op == "bytes":
        return "npz: " + mutate_bytes(path, rng)
    if op == "member_header":
        return "npz: " + _mutate_npz_member(path, rng)
    with np.load(path) as data:
        arrays = {k: data[k] for k in data.files}
    images, labels = arrays["images"], arrays["labels"]
    change = rng.choice(["nan", "constant_float", "object_images", "string_labels", "object_labels", "huge_label",
                         "negative_label", "nan_label", "short_labels", "labels_2d", "images_1d", "images_5d",
                         "no_items", "drop_images", "drop_labels", "wide_image", "masks", "float_images_huge"])
    if change == "nan":
        arrays["images"], what = plant_non_finite(images, rng)
    elif change == "constant_float":
        arrays["images"], what = np.full(images.shape, 0.5, np.float32), "constant 0.5 float images"
    elif change == "object_images":
        arrays["images"], what = np.array([images[0], "x", None, 3], dtype=object), "object images"
    elif change == "string_labels":
        arrays["labels"], what = np.array(["cat", "dog", "../x", ""]), "string labels"
    elif change == "object_labels":
        arrays["labels"], what = np.array([1, "a", None, 2.5], dtype=object), "object labels"
    elif change == "huge_label":
        arrays["labels"], what = np.array([0, 1, 10**12, 1], np.int64), "a label of 10**12"
    elif change == "negative_label":
        arrays["labels"], what = np.array([0, -1, 1, 0], np.int64), "a label of -1"
    elif change == "nan_label":
        arrays["labels"], what = np.array([0, math.nan, 1, 0]), "a NaN label"
    elif change == "short_labels":
        arrays["labels"], what = labels[:2], "2 labels for 4 images"
    elif change == "labels_2d":
        arrays["labels"], what = labels.reshape(2, 2), "labels of shape (2, 2)"
    elif change == "images_1d":
        arrays["images"], what = images.reshape(-1), "images of one axis"
    elif change == "images_5d":
        arrays["images"], what = images.reshape(4, 2, 4, 8, 1, 1), "images of six axes"
    elif change == "no_items":
        arrays["images"], arrays["labels"], what = images[:0], labels[:0], "zero items"
    elif change == "drop_images":
        del arrays["images"]
        what = "no images array"
    elif change == "drop_labels":
        del arrays["labels"]
        what = "no labels array"
    elif change == "wide_image":
        arrays["images"], what = np.zeros((4, 1, 70_000), np.uint8), "images of 1x70000"
    elif change == "masks":
        arrays["masks"], what = np.full((4, 8, 8), rng.choice([-1, 255, 10**9]), np.int64), "bad masks"
    else:
        arrays["images"], what = images.astype(np.float64) * 1e300, "float images near the float64 limit"
    np.savez(path, **arrays)
    return f"npz arrays: {what}"


def _mutate_npz_member(path: Path, rng: random.Random) -> str:
    with zipfile.ZipFile(path) as archive:
        members = {name: archive.read(name) for name in archive.namelist()}
    name = rng.choice(sorted(members))
    members[name], what = npy_bytes_mutated(members[name], rng)
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for member, data in members.items():
            archive.writestr(member, data)
    path.write_bytes(buffer.getvalue())
    return f"member {name}: {what}"


# ---------------------------------------------------------------------------------------------- safetensors


def mutate_safetensors(path: Path, rng: random.Random) -> str:
    data = path.read_bytes()
    op = rng.choice(["header", "header", "length", "bytes"])
    if op == "bytes" or len(data) < 8:
        return "safetensors: " + mutate_bytes(path, rng)
    length = struct.unpack("<Q", data[:8])[0]
    if op == "length":
        value = rng.choice([0, 1, len(data), 2**63, 2**64 - 1, length + 1])
        path.write_bytes(struct.pack("<Q", value) + data[8:])
        return f"safetensors header length {value}"
    header = json.loads(data[8:8 + length])
    tensors = [k for k in header if k != "__metadata__"]
    name = rng.choice(tensors)
    field = rng.choice(["dtype", "shape", "data_offsets", "name"])
    if field == "dtype":
        header[name]["dtype"] = rng.choice(["F64", "I8", "BOOL", "XX", "F16", 7])
    elif field == "shape":
        header[name]["shape"] = rng.choice([[10**12], [], [-1], [2**40, 2**40], [1], "3"])
    elif field == "data_offsets":
        header[name]["data_offsets"] = rng.choice([[0, 2**60], [8, 4], [0, 0], [-8, 4], None])
    else:
        header[rng.choice(["../../escape", "", "layers.99.weight"])] = header.pop(name)
    body = json.dumps(header).encode()
    path.write_bytes(struct.pack("<Q", len(body)) + body + data[8 + length:])
    return f"safetensors {field} of {name}: {json.dumps(header.get(name, 'renamed'))[:80]}"
