"""CIFAR-10 and CIFAR-100 in their binary version, read record by record from memory-mapped files.

A folder (the unpacked `cifar-10-batches-bin/` or `cifar-100-binary/`, or a folder holding one of them) or
one of its files:

- CIFAR-10: `data_batch_1.bin` … `data_batch_5.bin` and `test_batch.bin`; a record is 1 label byte and
  3,072 pixel bytes (the red, green and blue 32×32 planes); `batches.meta.txt` names the 10 classes.
- CIFAR-100: `train.bin` and `test.bin`; a record is a coarse and a fine label byte, then 3,072 pixel bytes;
  `fine_label_names.txt` / `coarse_label_names.txt` name the 100 / 20 classes. The fine labels are read
  unless the spec says `PATH:label=coarse`.

In a folder the test file's items are the source's own test split. Only the label bytes are read up front;
an image is cut out of its file's map when asked for. The pickled python version (`data_batch_1` without
`.bin`, `cifar-100-python/train`) is refused: fieldlab never unpickles a user's file.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from fieldlab._errors import UserError
from fieldlab.signals._signal import Normalization

SIDE = 32
PIXELS = 3 * SIDE * SIDE
PICKLE_PROTOCOL = 0x80
"""The first byte of a pickle of protocol 2 or later, as CIFAR's python version is written."""


@dataclasses.dataclass(frozen=True)
class Variant:
    name: str
    train: tuple[str, ...]
    test: str
    label_bytes: int
    labels: dict[str, tuple[int, int, str]]
    """label option → (byte of the record, number of classes, names file)."""
    archive: str
    pickled: tuple[str, ...]
    """File names of the pickled python version of this variant."""


CIFAR10 = Variant("CIFAR-10", tuple(f"data_batch_{k}.bin" for k in range(1, 6)), "test_batch.bin", 1,
                  {"fine": (0, 10, "batches.meta.txt")}, "cifar-10-binary.tar.gz",
                  ("data_batch_1", "test_batch", "batches.meta"))
CIFAR100 = Variant("CIFAR-100", ("train.bin",), "test.bin", 2,
                   {"fine": (1, 100, "fine_label_names.txt"), "coarse": (0, 20, "coarse_label_names.txt")},
                   "cifar-100-binary.tar.gz", ("train", "test", "meta"))
VARIANTS = (CIFAR10, CIFAR100)
SUBFOLDERS = ("cifar-10-batches-bin", "cifar-100-binary", "cifar-10-batches-py", "cifar-100-python")


def recognizes(path: Path) -> bool:
    """Whether `path` is (or holds) CIFAR in either version, binary or pickled."""
    if path.is_file():
        pickled_name = path.name.startswith("data_batch_") or any(path.name in v.pickled for v in VARIANTS)
        return path.suffix == ".bin" or pickled_name and _is_pickle(path)
    folder = _folder(path)
    return any((folder / name).is_file() for v in VARIANTS for name in (*v.train, v.test)) or \
        _pickled_variant(folder) is not None


def open_cifar(spec: str, path: Path, options: dict[str, str]):
    """The source of CIFAR at `path` (see the module docstring)."""
    from fieldlab.signals.datasets import _lazy_source

    variant, files, split = _files(path)
    label = options.pop("label", "fine")
    if options:
        raise UserError(f"{spec}: a CIFAR source takes only the option label=fine|coarse, not {', '.join(options)}")
    if label not in variant.labels:
        raise UserError(f"{spec}: {variant.name} has labels {' or '.join(variant.labels)}, not {label!r}")
    byte, classes, names_file = variant.labels[label]
    record = variant.label_bytes + PIXELS
    maps = [_map(f, record) for f in files]
    starts = np.cumsum([0] + [len(m) for m in maps])
    labels = np.concatenate([np.asarray(m[:, byte], dtype=np.int64) for m in maps])
    names = _names(files[0].parent / names_file, classes, variant.name)
    bad = np.flatnonzero(labels >= classes)
    if bad.size:
        k = int(np.searchsorted(starts, bad[0], side="right")) - 1
        raise UserError(f"{files[k]}: the label {labels[bad[0]]} of record {bad[0] - starts[k]} is not one of "
                        f"{variant.name}'s {classes} classes; is it a {variant.name} file?")

    def raw(i: int) -> np.ndarray:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        planes = maps[k][i - starts[k], variant.label_bytes:].reshape(3, SIDE, SIDE)  # (c, H, W)
        return np.ascontiguousarray(planes.transpose(1, 2, 0))  # (H, W, c)

    extra = {"format": f"{variant.name.lower()} binary",
             "files": [[f.name, f.stat().st_size] for f in files], "label": label}
    source = _lazy_source(spec, int(starts[-1]), (SIDE, SIDE, 3), raw, labels, names,
                          Normalization("uint8", 0.0, 255.0), extra)
    source.split = split
    return source


def _folder(path: Path) -> Path:
    """`path`, or the one CIFAR folder that the archive unpacks to inside it."""
    inside = [path / name for name in SUBFOLDERS if (path / name).is_dir()]
    return inside[0] if len(inside) == 1 else path


def _variant_of_file(name: str) -> Variant | None:
    return next((v for v in VARIANTS if name in (*v.train, v.test)), None)


def _files(path: Path) -> tuple[Variant, list[Path], np.ndarray | None]:
    """(variant, its files in order, test split per item or None) of a folder or one file."""
    if path.is_file():
        variant = _variant_of_file(path.name)
        if variant is None:
            if _is_pickle(path):
                raise _pickled(path, _pickled_variant(path.parent) or CIFAR10)
            raise UserError(f"{path} is not a CIFAR binary file: CIFAR-10's are named data_batch_1.bin … "
                            "data_batch_5.bin and test_batch.bin, CIFAR-100's train.bin and test.bin")
        _refuse_pickle(path, variant)
        return variant, [path], None
    folder = _folder(path)
    found = [(v, [folder / n for n in (*v.train, v.test) if (folder / n).is_file()]) for v in VARIANTS]
    found = [(v, files) for v, files in found if files]
    if not found:
        raise _pickled(folder, _pickled_variant(folder))
    if len(found) > 1:
        raise UserError(f"{folder} holds both CIFAR-10 and CIFAR-100 files; give the folder of one of them")
    variant, files = found[0]
    for f in files:
        _refuse_pickle(f, variant)
    sizes = [f.stat().st_size // (variant.label_bytes + PIXELS) for f in files]
    split = np.repeat([f.name == variant.test for f in files], sizes)
    return variant, files, split if split.any() else None


def _is_pickle(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(1) == bytes([PICKLE_PROTOCOL])


def _pickled_variant(folder: Path) -> Variant | None:
    return next((v for v in VARIANTS if all((folder / n).is_file() for n in v.pickled)), None)


def _pickled(path: Path, variant: Variant) -> UserError:
    train = f"{variant.train[0]} … {variant.train[-1]}" if len(variant.train) > 1 else variant.train[0]
    return UserError(f"{path} is CIFAR's pickled python version, which fieldlab never unpickles; download the "
                     f"binary version ({variant.archive}, holding {train} and {variant.test}) and give its folder")


def _refuse_pickle(path: Path, variant: Variant) -> None:
    if _is_pickle(path):
        raise _pickled(path, variant)


def _map(path: Path, record: int) -> np.memmap:
    """The records (n, record) of `path`, memory-mapped (nothing is read until an item is asked for)."""
    size = path.stat().st_size
    if size == 0 or size % record:
        raise UserError(f"{path} is truncated or not a CIFAR binary file: its {size:,} bytes are not a whole "
                        f"number of {record:,}-byte records")
    return np.memmap(path, dtype=np.uint8, mode="r", shape=(size // record, record))


def _names(path: Path, classes: int, name: str) -> list[str]:
    """The class names in `path` (one a line), or "0" … when the file is absent."""
    if not path.is_file():
        return [str(k) for k in range(classes)]
    if path.stat().st_size > 2**20:
        raise UserError(f"{path} is too large to be a list of {classes} class names")
    try:
        names = [line.strip() for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    except UnicodeDecodeError:
        raise UserError(f"{path} is not UTF-8 text (one class name a line)") from None
    if len(names) != classes:
        raise UserError(f"{path} names {len(names)} classes, but {name}'s labels are {classes} classes")
    return names
