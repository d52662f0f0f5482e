"""Hugging Face datasets of labelled images, read with pyarrow alone (`pip install 'fieldlab[hf]'`).

Layouts:

- a folder written by `Dataset.save_to_disk` (`state.json`, `dataset_info.json`, `data-*.arrow`), or by
  `DatasetDict.save_to_disk` (`dataset_dict.json` and one such folder per split);
- a `.parquet` or `.arrow` file, or a folder of parquet files (as on the Hub: `data/train-00000-of-00001.parquet`,
  `plain_text/test/0000.parquet`); a file's split is the first word of its name or its folder's name.

Items of the `test` split (else of `validation`) are the source's own test split. The image column is
`image` or `img`, the label column `label`, `labels` or `fine_label`, unless the spec names them:
`PATH:image=COLUMN,label=COLUMN` (`label=none`: unlabelled). An image cell is HF's `Image` feature (a
struct of `bytes` and `path`) or plain encoded bytes, decoded with Pillow when the item is asked for.
Class names come from the label's `ClassLabel` feature in the schema's metadata when it has one.

Arrow files are memory-mapped (nothing is read until a cell is asked for); parquet is read one row group
of the image column at a time, the last one kept.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._signal import Normalization

IMAGE_COLUMNS = ("image", "img")
LABEL_COLUMNS = ("label", "labels", "fine_label")
SPLITS = ("train", "validation", "valid", "val", "test")
SUFFIXES = (".parquet", ".arrow")


def recognizes(path: Path) -> bool:
    if path.is_file():
        return path.suffix in SUFFIXES
    return (path / "state.json").is_file() or (path / "dataset_dict.json").is_file() or \
        any(True for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet") for _ in path.glob(pattern))


def open_hf(spec: str, path: Path, options: dict[str, str]):
    """The source of the Hugging Face dataset at `path` (see the module docstring)."""
    from fieldlab.signals.datasets import _labels, _lazy_source, _like_first

    try:
        import pyarrow  # noqa: F401
    except ImportError:
        raise missing_extra("pyarrow", "hf") from None
    image_column, label_column = options.pop("image", None), options.pop("label", None)
    if options:
        raise UserError(f"{spec}: a Hugging Face source takes the options image=COLUMN and label=COLUMN, "
                        f"not {', '.join(options)}")
    files = _files(path)
    parts = [Part(f) for f, _ in files]
    schema = parts[0].schema
    for part in parts[1:]:
        if part.schema.names != schema.names:
            raise UserError(f"{part.path} has the columns {', '.join(part.schema.names)}, but {parts[0].path} "
                            f"has {', '.join(schema.names)}")
    image_column = _column(spec, schema, image_column, IMAGE_COLUMNS, "image")
    label_column = None if label_column == "none" else _column(spec, schema, label_column, LABEL_COLUMNS, "label",
                                                                 required=label_column is not None)
    _check_image_type(spec, schema, image_column)
    starts = np.cumsum([0] + [part.count for part in parts])
    if starts[-1] == 0:
        raise UserError(f"{spec} holds no rows")
    labels, names = None, None
    if label_column is not None:
        labels = np.concatenate([part.labels(label_column) for part in parts])
        names = _class_names(schema, path, label_column)
        if names is not None and labels.dtype.kind in "iu" and labels.size and labels.max() >= len(names):
            bad = int(np.argmax(labels >= len(names)))
            raise UserError(f"{spec}: the label {labels[bad]} of row {bad} is not one of the {len(names)} classes "
                            f"that the {label_column!r} column's ClassLabel names")
    labels, names = _labels(spec, labels, names, int(starts[-1]))

    def raw(i: int) -> np.ndarray:
        k = int(np.searchsorted(starts, i, side="right")) - 1
        return decode(parts[k].cell(i - int(starts[k]), image_column), f"{parts[k].path}: row {i - starts[k]}")

    first = raw(0)

    kind = "arrow" if all(f.suffix == ".arrow" for f, _ in files) else "parquet"
    extra = {"format": f"hugging face {kind}", "image_column": image_column, "label_column": label_column,
             "files": [[str(f.relative_to(path)) if f != path else f.name, f.stat().st_size] for f, _ in files]}
    source = _lazy_source(spec, int(starts[-1]), first.shape, _like_first(raw, first, lambda i: f"{spec}: the image of row {i}"), labels, names,
                          Normalization.for_array(first), extra)
    split = np.repeat([test for _, test in files], [part.count for part in parts])
    source.split = split if len({test for _, test in files}) > 1 else None
    return source


class Part:
    """One arrow or parquet file: its row count and schema up front, a cell when asked for."""

    def __init__(self, path: Path):
        import pyarrow as pa
        import pyarrow.parquet as pq

        self.path = path
        self._group: tuple[int, Any] | None = None
        try:
            if path.suffix == ".parquet":
                self._parquet = pq.ParquetFile(path)
                self.schema = self._parquet.schema_arrow
                sizes = [self._parquet.metadata.row_group(g).num_rows for g in range(self._parquet.num_row_groups)]
                self._group_starts = np.cumsum([0] + sizes)
                self.count = int(self._group_starts[-1])
            else:
                self._parquet = None
                self._table = _read_arrow(pa.memory_map(str(path)))
                self.schema, self.count = self._table.schema, self._table.num_rows
        except (pa.ArrowException, OSError) as error:
            raise _unreadable(path, error) from None

    def labels(self, column: str) -> np.ndarray:
        """The whole label column (only it is read): ints with -1 for a missing label, or strings."""
        import pyarrow as pa

        try:
            values = self._parquet.read(columns=[column]).column(0) if self._parquet else self._table.column(column)
            if pa.types.is_integer(values.type):
                return values.fill_null(-1).to_numpy().astype(np.int64)
            if pa.types.is_string(values.type) or pa.types.is_large_string(values.type):
                if values.null_count:
                    raise UserError(f"{self.path}: the label column {column!r} has empty cells")
                return np.asarray(values.to_pylist(), dtype=str)
        except pa.ArrowException as error:
            raise _unreadable(self.path, error) from None
        raise UserError(f"{self.path}: the label column {column!r} holds {values.type}, not integers or strings")

    def cell(self, row: int, column: str) -> Any:
        import pyarrow as pa

        try:
            if self._parquet is None:
                return self._table.column(column)[row].as_py()
            group = int(np.searchsorted(self._group_starts, row, side="right")) - 1
            if self._group is None or self._group[0] != group:
                self._group = group, self._parquet.read_row_group(group, columns=[column]).column(0)
            return self._group[1][row - int(self._group_starts[group])].as_py()
        except pa.ArrowException as error:
            raise _unreadable(self.path, error) from None


def _read_arrow(mapped):
    """The table of an arrow file as `datasets` writes it (IPC stream) or as an IPC file, without copying."""
    import pyarrow as pa

    try:
        return pa.ipc.open_stream(mapped).read_all()
    except pa.ArrowInvalid:
        mapped.seek(0)
        return pa.ipc.open_file(mapped).read_all()


def _unreadable(path: Path, error: BaseException) -> UserError:
    reason = " ".join(str(error).split())[:160] or type(error).__name__
    return UserError(f"cannot read {path} as {path.suffix.lstrip('.') or 'arrow'} ({reason})")


def _files(path: Path) -> list[tuple[Path, bool]]:
    """(file, in the test split) of every data file, train splits first."""
    if path.is_file():
        return [(path, False)]
    if (path / "dataset_dict.json").is_file():
        info = _validate.read_json(path / "dataset_dict.json")
        splits = info.get("splits")
        if not isinstance(splits, list) or not all(isinstance(s, str) for s in splits):
            raise UserError(f"{path / 'dataset_dict.json'} is damaged: 'splits' must be a list of names")
        found = [(f, split) for split in splits
                 for f in _saved_files(path / _validate.safe_name(split, "split", where=path))]
    elif (path / "state.json").is_file():
        found = [(f, None) for f in _saved_files(path)]
    else:
        found = [(f, _split_of(f)) for pattern in ("*.parquet", "*/*.parquet", "*/*/*.parquet")
                 for f in sorted(path.glob(pattern))]
    test = next((s for s in ("test", "validation", "valid", "val") if any(split == s for _, split in found)), None)
    files = [(f, split == test and test is not None) for f, split in found]
    return sorted(files, key=lambda item: item[1])  # stable: train first, in their order


def _saved_files(folder: Path) -> list[Path]:
    """The arrow files of a `save_to_disk` folder, in the order its state.json lists them."""
    state = _validate.read_json(folder / "state.json", f"{folder / 'state.json'}")
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not entries:
        raise UserError(f"{folder / 'state.json'} is damaged: it lists no _data_files")
    files = []
    for entry in entries:
        name = entry.get("filename") if isinstance(entry, dict) else None
        file = folder / _validate.safe_name(name, "data file", where=folder / "state.json")
        if not file.is_file():
            raise UserError(f"{file} is missing (state.json lists it)")
        files.append(file)
    return files


def _split_of(file: Path) -> str | None:
    """The split a Hub parquet file belongs to: `test-00000-of-00001.parquet` or `test/0000.parquet`."""
    word = file.stem.split("-")[0]
    return word if word in SPLITS else file.parent.name if file.parent.name in SPLITS else None


def _column(spec: str, schema, asked: str | None, candidates: tuple[str, ...], what: str,
            required: bool = True) -> str | None:
    """The column `asked` for, else the first of `candidates` the schema has; None for an absent label."""
    if asked is not None:
        if asked not in schema.names:
            raise UserError(f"{spec} has no column {asked!r} (its columns: {', '.join(schema.names)})")
        return asked
    found = next((c for c in candidates if c in schema.names), None)
    if found is None and (what == "image" or required):
        raise UserError(f"{spec} has no {what} column {' or '.join(candidates)} (its columns: "
                        f"{', '.join(schema.names)}); name one with {spec}:{what}=COLUMN")
    return found


def _check_image_type(spec: str, schema, column: str) -> None:
    import pyarrow as pa

    kind = schema.field(column).type
    binary = (pa.types.is_binary, pa.types.is_large_binary)
    if any(test(kind) for test in binary) or pa.types.is_struct(kind) and kind.get_field_index("bytes") >= 0 and \
            any(test(kind.field("bytes").type) for test in binary):
        return
    raise UserError(f"{spec}: the column {column!r} holds {kind}, not encoded images (Hugging Face's Image feature "
                    "or bytes); name the image column with :image=COLUMN")


def _class_names(schema, root: Path, column: str) -> list[str] | None:
    """The names of the `column`'s ClassLabel feature, from the schema's metadata or dataset_info.json."""
    metadata = (schema.metadata or {}).get(b"huggingface")
    features = None
    if metadata:
        try:
            features = json.loads(metadata).get("info", {}).get("features")
        except (ValueError, AttributeError):
            features = None
    if features is None and root.is_dir() and (root / "dataset_info.json").is_file():
        features = _validate.read_json(root / "dataset_info.json").get("features")
    feature = features.get(column) if isinstance(features, dict) else None
    names = feature.get("names") if isinstance(feature, dict) else None
    if isinstance(names, list) and names and all(isinstance(n, str) for n in names):
        if len(names) > _validate.LIMITS.classes:
            raise UserError(f"{root}: the ClassLabel of {column!r} names more than {_validate.LIMITS.classes:,} classes")
        return names
    return None


def decode(cell: Any, where: str) -> np.ndarray:
    """The image (H, W, C) encoded in an HF Image cell ({bytes, path}) or in plain bytes."""
    from PIL import Image, UnidentifiedImageError

    data = cell.get("bytes") if isinstance(cell, dict) else cell
    if not isinstance(data, bytes) or not data:
        raise UserError(f"{where}: the image cell holds no encoded bytes (an image stored only as a path is "
                        "not read; save the dataset with its images embedded)")
    try:
        with Image.open(io.BytesIO(data)) as image:
            width, height = image.size
            if width * height > _validate.LIMITS.pixels:
                raise UserError(f"{where}: a {width}x{height} image is more than {_validate.LIMITS.pixels:,} pixels")
            if image.mode not in ("L", "LA", "RGB", "RGBA", "I;16", "I", "F"):
                image = image.convert("RGBA" if "transparency" in image.info or "A" in image.mode else "RGB")
            array = np.asarray(image)
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        reason = " ".join(str(error).split())[:120] or type(error).__name__
        raise UserError(f"{where}: cannot decode its image ({reason})") from None
    array = array[..., None] if array.ndim == 2 else array
    _validate.require_finite(array, where, axes=("row", "column", "channel"))
    return array
