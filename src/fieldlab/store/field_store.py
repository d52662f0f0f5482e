"""FieldStore: a dataset of fields in one zarr store, written chunk by chunk and read lazily.

Layout (a zarr v3 group; every per-field array has N rows cut into chunks of `chunk_fields` rows)::

    STORE/zarr.json          attrs: format, field {name, config}, signal (one item's SignalInfo),
                             fit options, source identity, seed, label and split names, versions
    STORE/params/<name>      float32 (N, *shape)  per-field tensors: a field's whole parameter set
                             (SIREN, …) or only its latent (functa), named as in the module
    STORE/shared/<name>      float32 (*shape)     tensors every field shares (functa's network); may be empty
    STORE/labels             int64 (N,)           class label (-1: none)
    STORE/split              int8 (N,)            index into attrs["split_names"]
    STORE/augment            int16 (N,)           augmentation id (0: the original item)
    STORE/source_index       int64 (N,)           the item of the source this row was fitted to
    STORE/psnr, STORE/steps  float32, int32 (N,)  per-field quality and the steps it took
    STORE/done               bool (N,)            the completion mask
    STORE/checksums          uint64 (chunks, A)   per chunk, crc32 of each array's rows (see store._integrity)

Writer (one process, or one per torchrun rank writing disjoint chunks)::

    writer = FieldStoreWriter.create(path, config=..., signal=..., num_fields=N, chunk_fields=C,
                                     per_field={"layers.0.weight": (32, 2), ...}, shared={...}, attrs={...})
    # or, to resume or to join as another rank: FieldStoreWriter.open(path, expect=identity)
    for chunk in writer.pending_chunks():           # chunks whose mask is not fully set
        rows = writer.chunk_rows(chunk)             # range of row ids
        writer.write_chunk(chunk, params={name: (len(rows), *shape)}, psnr=..., labels=..., ...)

`write_chunk` writes every array of the chunk first and the completion mask last; zarr writes each chunk
file atomically (temporary file + rename), so a process killed at any point leaves either a complete chunk
or one whose mask is unset, which `--resume` fits again: at most the chunk in flight is lost, and a
reader never sees a zero row that was not fitted (`FieldStore.rows()` lists completed rows only).
`create` builds the store under a temporary name and renames it, so a store either has its full schema or
does not exist. Between a chunk's arrays and its mask, `write_chunk` records their checksums; every read
checks the chunks it touches (`store info --verify` all of them) and `--resume` refits a complete chunk
whose values no longer match (`fieldlab.store._integrity`). Non-finite parameters are never written.

Reader::

    store = FieldStore(path)
    store.config, store.signal, store.num_fields, store.rows(split="train")
    store.read(rows) -> {name: tensor (len(rows), *shape)};  store.shared() -> {name: tensor}
    store.stack(rows) -> FieldStack (evaluate with coords (f, n, d) → values (f, n, c))
    FieldStoreDataset(store, split=...) with ChunkSampler(dataset, shuffle=True, seed=0) in a DataLoader
"""

from __future__ import annotations

import json
import os
import math
import platform
import shutil
import tempfile
import threading
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from fieldlab import _validate as v
from fieldlab._errors import UserError, missing_extra
from fieldlab._safety import refuse_links_inside, replace_folder, write_marker
from fieldlab.fields import FieldConfig, FieldStack, restore_buffer
from fieldlab.signals import SignalInfo
from fieldlab.store._integrity import (CHECKSUM, UNREADABLE, checked_attrs, checked_config, checked_signal,
                                       checksum, chunk_file, damage, read_records)
from fieldlab.store.field_dir import check_out_dir

FORMAT = "fieldlab.fieldstore"
FORMAT_VERSION = 1
ROW_ARRAYS = {"labels": ("int64", -1), "split": ("int8", 0), "augment": ("int16", 0),
              "source_index": ("int64", -1), "psnr": ("float32", float("nan")), "steps": ("int32", 0)}


def _zarr():
    try:
        import zarr
    except ImportError:
        raise missing_extra("zarr", "datasets") from None
    return zarr


def require_zarr() -> None:
    """Import zarr now (0.35 s on an H100's host), or refuse with the extra that installs it: a job that
    writes a store calls it where it would otherwise wait (for a GPU's first call and Triton's key)."""
    _zarr()


def _uncompressed(zarr) -> dict[str, Any]:
    """`group.full`'s arguments for chunks kept as plain bytes. Fitted float32 weights are nearly random bits:
    zstd (zarr's default) saved 8% of a SIREN's chunk and made writing and reading it several times slower
    (CPU, 4,096 fields of 32×32 weights: 70-85 ms against 13-23 ms to write), on the thread that must keep
    up with a GPU's fitting. Row arrays (labels, split, done) do compress and stay compressed."""
    if int(zarr.__version__.split(".")[0]) >= 3:
        return {"codecs": [zarr.codecs.BytesCodec()]}
    return {"compressor": None}


def _versions() -> dict[str, str]:
    from fieldlab import __version__

    return {"fieldlab": __version__, "torch": torch.__version__, "zarr": _zarr().__version__,
            "python": platform.python_version()}


def _open_group(path: Path, mode: str):
    zarr = _zarr()
    if (path / "zarr.json").is_file():  # zarr trusts its own metadata's shape; a crafted one must not reach it
        v.check_keys(v.read_json(path / "zarr.json", f"{path}/zarr.json"), {"attributes": dict},
                     f"{path}/zarr.json")
    try:
        group = zarr.open_group(str(path), mode=mode)
    except (FileNotFoundError, ValueError, KeyError, OSError, TypeError, AttributeError) as error:
        raise UserError(f"{path} is not a field store ({type(error).__name__})") from None
    if group.attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not a fieldlab field store (format {group.attrs.get('format')!r})")
    if v.bounded_int(group.attrs.get("format_version", 0), "format_version", 0, where=path) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer fieldlab (format {group.attrs.get('format_version')})")
    return group


class FieldStoreWriter:
    """Writes chunks of fitted fields into a store made by `create` (or reopened by `open`)."""

    def __init__(self, path: Path, group):
        self.path = Path(path)
        self.group = group
        self.attrs = checked_attrs(group, self.path, list(ROW_ARRAYS))
        self.num_fields = int(self.attrs["num_fields"])
        self.chunk_fields = int(self.attrs["chunk_fields"])
        self.per_field = {k: tuple(v) for k, v in self.attrs["per_field"].items()}

    @classmethod
    def create(cls, path: str | Path, *, config: FieldConfig, signal: SignalInfo, num_fields: int, chunk_fields: int,
               per_field: dict[str, Sequence[int]], shared: dict[str, torch.Tensor] | None = None,
               attrs: dict[str, Any] | None = None, label_names: Sequence[str] = (),
               split_names: Sequence[str] = ("train",), force: bool = False) -> FieldStoreWriter:
        """A new, empty store at `path` (an existing non-empty `path` needs `force`)."""
        zarr = _zarr()
        path = Path(path)
        check_store_path(path, force=force, resume=False)
        if num_fields <= 0 or chunk_fields <= 0:
            raise UserError(f"a store needs at least one field and one field per chunk, got {num_fields}, {chunk_fields}")
        tmp = Path(tempfile.mkdtemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.resolve().parent))
        try:
            group = zarr.open_group(str(tmp), mode="w")
            write_marker(tmp, "store")  # fieldlab's own (--force may replace it), under zarr 2 and 3 alike
            for name, shape in per_field.items():
                # a chunk side of at least 1: zarr 2 divides by it (a field may hold an empty tensor)
                group.full(name=f"params/{name}", shape=(num_fields, *shape),
                           chunks=(chunk_fields, *(max(1, side) for side in shape)),
                           dtype="float32", fill_value=0.0, **_uncompressed(zarr))
            for name, tensor in (shared or {}).items():
                array = tensor.detach().cpu().float().numpy()
                _shared_array(group, name, array.shape)[...] = array
            for name, (dtype, fill) in ROW_ARRAYS.items():
                group.full(name=name, shape=(num_fields,), chunks=(chunk_fields,), dtype=dtype, fill_value=fill)
            group.full(name="done", shape=(num_fields,), chunks=(chunk_fields,), dtype="bool", fill_value=False)
            summed = [f"params/{name}" for name in per_field] + list(ROW_ARRAYS)
            group.full(name="checksums", shape=(math.ceil(num_fields / chunk_fields), len(summed)),
                       chunks=(1, len(summed)), dtype="uint64", fill_value=0)  # one chunk file per store chunk
            group.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "field": {"name": config.name, "config": config.to_dict()}, "signal": signal.to_dict(),
                "num_fields": int(num_fields), "chunk_fields": int(chunk_fields),
                "per_field": {k: list(v) for k, v in per_field.items()}, "shared": sorted(shared or {}),
                "label_names": list(label_names), "split_names": list(split_names), "versions": _versions(),
                "checksums": {"algorithm": CHECKSUM, "arrays": summed,
                              "shared": {k: checksum(t.detach().cpu().float().numpy()) for k, t in (shared or {}).items()}},
                **(attrs or {}),
            })
            _replace_store(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path, zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open(cls, path: str | Path, *, expect: dict[str, Any] | None = None) -> FieldStoreWriter:
        """Reopen a store to resume it (or to join as another rank); `expect` attrs must match exactly."""
        path = Path(path)
        refuse_links_inside(path, "the store")  # zarr would write a chunk through a link, outside the store
        group = _open_group(path, "r+")
        for key, value in (expect or {}).items():
            stored = json.loads(json.dumps(group.attrs.get(key)))
            value = json.loads(json.dumps(value))
            if stored != value:
                where, was, now = _first_difference(stored, value, key)
                raise UserError(f"--resume: {path} was written with a different {where} ({json.dumps(was)[:80]}, "
                                f"now {json.dumps(now)[:80]}); use the same options or a new --out")
        return cls(path, group)

    @property
    def num_chunks(self) -> int:
        return math.ceil(self.num_fields / self.chunk_fields)

    def chunk_rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_fields, min((chunk + 1) * self.chunk_fields, self.num_fields))

    def pending_chunks(self) -> list[int]:
        """Chunks not yet complete, in order; a complete one whose values fail their checksum is fitted again."""
        done = _read_done(self.group, self.num_fields, self.chunk_fields)
        complete = [c for c in range(self.num_chunks) if done[self.chunk_rows(c).start:self.chunk_rows(c).stop].all()]
        pending = sorted(set(range(self.num_chunks)) - set(complete))
        # only complete chunks can fail a checksum: a new store's resume decodes nothing
        return sorted(set(pending) | set(FieldStore(self.path).damaged_chunks(complete) if complete else ()))

    def write_shared(self, shared: dict[str, torch.Tensor]) -> None:
        """(Re)write the shared tensors (one process only, before any chunk that depends on them)."""
        for name, tensor in shared.items():
            array = tensor.detach().cpu().float().numpy()
            if f"shared/{name}" not in self.group:
                _shared_array(self.group, name, array.shape)
            self.group[f"shared/{name}"][...] = array
        self.group.attrs["shared"] = sorted(set(self.group.attrs.get("shared", [])) | set(shared))
        if "checksums" in self.attrs:
            sums = dict(self.group.attrs["checksums"])
            sums["shared"] = {**sums.get("shared", {}),
                              **{k: checksum(t.detach().cpu().float().numpy()) for k, t in shared.items()}}
            self.group.attrs["checksums"] = sums

    def write_chunk(self, chunk: int, *, params: dict[str, torch.Tensor], psnr, labels=None, split=None,
                    augment=None, source_index=None, steps=None) -> None:
        """Write chunk `chunk` (every row of it): the per-field tensors and row arrays, then the mask."""
        rows = self.chunk_rows(chunk)
        n = len(rows)
        if set(params) != set(self.per_field):
            raise ValueError(f"chunk {chunk} has tensors {sorted(params)}, the store holds {sorted(self.per_field)}")
        arrays = {}
        for name, tensor in params.items():
            array = tensor.detach().cpu().float().numpy()
            if array.shape != (n, *self.per_field[name]):
                raise ValueError(f"{name}: expected {(n, *self.per_field[name])}, got {array.shape}")
            arrays[f"params/{name}"] = array
        self._refuse_non_finite(chunk, rows, arrays)
        given = {"labels": labels, "split": split, "augment": augment, "source_index": source_index,
                 "psnr": psnr, "steps": steps}
        for name, values in given.items():
            dtype, fill = ROW_ARRAYS[name]
            if values is None:  # written too: a refitted chunk must not keep an earlier fit's values
                values = np.full(n, fill, dtype=dtype)
            values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).astype(dtype)
            arrays[name] = values.reshape(n)
        for name, array in arrays.items():
            self.group[name][rows.start:rows.stop] = array
        if "checksums" in self.attrs:  # before the mask: a done chunk always has its record
            summed = self.attrs["checksums"]["arrays"]
            self.group["checksums"][chunk] = np.array([checksum(arrays[name]) for name in summed], dtype=np.uint64)
        self.group["done"][rows.start:rows.stop] = np.ones(n, dtype=bool)  # last: marks the chunk complete
        release_replaced(self.path)  # the new store holds finished work: the one it replaced can go

    def _refuse_non_finite(self, chunk: int, rows: range, arrays: dict[str, np.ndarray]) -> None:
        """A store holds finite fields only: a NaN field would be read, trained on and counted complete."""
        bad = np.zeros(len(rows), dtype=bool)
        for array in arrays.values():
            bad |= ~np.isfinite(array.reshape(len(rows), -1)).all(axis=1)
        if bad.any():
            ids = [rows.start + int(i) for i in np.flatnonzero(bad)]
            listed = ", ".join(map(str, ids[:8])) + (", …" if len(ids) > 8 else "")
            raise UserError(f"{self.path}: the fitted fields of rows {listed} ({len(ids)} of chunk {chunk}) have "
                            "non-finite parameters; nothing of the chunk was written")


_REMOVALS: list[threading.Thread] = []
_REPLACED: dict[Path, Path] = {}
"""Stores that `create(force=True)` moved aside (`.NAME.XXXXXXXX.old`), by the path of the new store, kept until
the new one holds finished work (`release_replaced`) or is abandoned (`abandon_new`)."""


def _replace_store(tmp: Path, path: Path) -> None:
    """Put the new store `tmp` at `path`. A store there (`--force`) is renamed aside, which the next writer of
    `path` removes if this process is killed first, and kept until the new store holds a finished chunk: an input
    found bad before then (`abandon_new`) puts it back, so --force loses nothing for a command that fails."""
    old = replace_folder(tmp, path)
    if old is not None:
        _REPLACED[path.absolute()] = old


def release_replaced(path: Path) -> None:
    """Delete the store that the new one at `path` replaced, if any, on a thread: its hundreds of chunk files took
    0.8 s (CPU, 60,000 fields) that fitting need not wait for. `finish_removals` waits for those threads."""
    old = _REPLACED.pop(Path(path).absolute(), None)
    if old is None:
        return
    removal = threading.Thread(target=shutil.rmtree, args=(old,), kwargs={"ignore_errors": True},
                               name="fieldlab-remove")
    removal.start()
    _REMOVALS.append(removal)


def abandon_new(path: Path) -> None:
    """Remove the store `create` made at `path`, which holds no finished chunk, and put back the one it replaced
    (`--force`), if any: a command whose input turned out bad leaves `--out` as it found it."""
    path = Path(path).absolute()
    old = _REPLACED.pop(path, None)
    shutil.rmtree(path, ignore_errors=True)
    if old is not None and not os.path.lexists(path):
        os.replace(old, path)


def finish_removals() -> None:
    """Delete the stores still kept aside (the new ones stay) and wait until every replaced store is gone."""
    for path in list(_REPLACED):
        release_replaced(path)
    while _REMOVALS:
        _REMOVALS.pop().join()


def _first_difference(a: Any, b: Any, where: str) -> tuple[str, Any, Any]:
    """(dotted path, a's value, b's value) of the first place where two JSON values differ."""
    if isinstance(a, dict) and isinstance(b, dict):
        for key in list(a) + [k for k in b if k not in a]:
            if a.get(key) != b.get(key):
                return _first_difference(a.get(key), b.get(key), f"{where}.{key}")
    return where, a, b


def _shared_array(group, name: str, shape: tuple[int, ...]):
    # `full` with keyword arguments is the array constructor that zarr 2 and 3 share.
    return group.full(name=f"shared/{name}", shape=shape, chunks=shape or None, dtype="float32", fill_value=0.0)


def is_store(path: Path) -> bool:
    """True when `path` holds a zarr group (v3 or v2 metadata), the only thing `--resume` continues."""
    return (path / "zarr.json").is_file() or (path / ".zgroup").is_file()


def check_store_path(path: Path, *, force: bool, resume: bool, inputs: Sequence = ()) -> None:
    """Refuse to overwrite a non-empty `path` unless forced or resumed and fieldlab's own, or one holding an
    input (`inputs`), before any work is done."""
    check_out_dir(path, force, resume=resume, resumable=True, inputs=inputs)


def _read_done(group, num_fields: int, chunk_fields: int) -> np.ndarray:
    """The completion mask; a chunk of it that cannot be read counts as not done."""
    try:
        return np.asarray(group["done"][:], dtype=bool)
    except Exception:  # a damaged mask chunk (a file system without atomic rename): read chunk by chunk
        done = np.zeros(num_fields, dtype=bool)
        for start in range(0, num_fields, chunk_fields):
            try:
                done[start:start + chunk_fields] = group["done"][start:start + chunk_fields]
            except Exception:
                pass
        return done


class FieldStore:
    """Read access to a store: its description, the completed rows, and fields read by rows."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        if not self.path.is_dir():
            raise UserError(f"no field store at {path}")
        self.group = _open_group(self.path, "r")
        self.attrs = checked_attrs(self.group, self.path, list(ROW_ARRAYS))
        self.config = checked_config(self.attrs, self.path)
        self.signal = checked_signal(self.attrs, self.path)
        self.num_fields = int(self.attrs["num_fields"])
        self.chunk_fields = int(self.attrs["chunk_fields"])
        self.per_field = {k: tuple(v) for k, v in self.attrs["per_field"].items()}
        self.num_chunks = math.ceil(self.num_fields / self.chunk_fields)
        self.label_names: list[str] = list(self.attrs.get("label_names", []))
        self.split_names: list[str] = list(self.attrs.get("split_names", ["train"]))
        self.done = _read_done(self.group, self.num_fields, self.chunk_fields)
        self._records: np.ndarray | None = None
        self._verified: set[tuple[str, int]] = set()  # (array, chunk) pairs whose checksum matched once

    def require_complete(self) -> None:
        """Refuse a store that an interrupted `fit-dataset` left with rows unfitted: learning from the rows
        that happen to be done would silently change the data set (and its held-out split)."""
        missing = int((~self.done).sum())
        if missing:
            raise UserError(f"{self.path} is incomplete: {self.num_fields - missing} of {self.num_fields} fields "
                            "are fitted; finish it with the same fit-dataset command and --resume")

    def column(self, name: str) -> np.ndarray:
        """A whole row array (labels, split, augment, source_index, psnr, steps) of all N rows, checked."""
        try:
            values = np.asarray(self.group[name][:])
        except Exception:  # a chunk that zarr cannot decode: read chunk by chunk to name it
            return np.concatenate([self._chunk(name, chunk) for chunk in range(self.num_chunks)])
        for chunk in range(self.num_chunks):
            rows = self._chunk_rows(chunk)
            self._verify(name, chunk, values[rows.start:rows.stop])
        return values

    def rows(self, split: str | None = None) -> np.ndarray:
        """Ids of the completed rows (of one split), ascending."""
        mask = self.done.copy()
        if split is not None:
            if split not in self.split_names:
                raise UserError(f"no split {split!r} in {self.path}; it has {', '.join(self.split_names)}")
            mask &= self.column("split") == self.split_names.index(split)
        return np.flatnonzero(mask)

    def read(self, rows: Sequence[int] | np.ndarray | slice) -> dict[str, torch.Tensor]:
        """Per-field tensors of `rows`: {name: (len(rows), *shape)}, read a whole chunk at a time (as zarr
        decodes them) so that every chunk touched is checked against its checksum."""
        if isinstance(rows, slice):
            span = range(self.num_fields)[rows]
            rows = np.arange(span.start, span.stop, span.step, dtype=np.int64)
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_fields):
            raise IndexError(f"rows {rows[(rows < 0) | (rows >= self.num_fields)][:5].tolist()} are outside "
                             f"{self.path}'s {self.num_fields} fields")
        out = {name: np.empty((len(rows), *shape), dtype=np.float32) for name, shape in self.per_field.items()}
        chunk_of = rows // self.chunk_fields
        for chunk in np.unique(chunk_of):
            at = np.flatnonzero(chunk_of == chunk)
            for name in out:
                out[name][at] = self._chunk(f"params/{name}", int(chunk))[rows[at] - chunk * self.chunk_fields]
        return {name: torch.from_numpy(values) for name, values in out.items()}

    def shared(self) -> dict[str, torch.Tensor]:
        sums = self.attrs.get("checksums", {}).get("shared", {})
        out = {}
        for name in self.attrs.get("shared", []):
            try:
                values = np.asarray(self.group[f"shared/{name}"][...])
            except Exception as error:  # zarr and numcodecs raise many kinds of error on a garbage chunk
                raise self._shared_damage(name, f"unreadable: {type(error).__name__}") from None
            if name in sums and sums[name] != checksum(values):
                raise self._shared_damage(name, "checksum mismatch")
            out[name] = torch.from_numpy(values)
        return out

    def _shared_damage(self, name: str, reason: str) -> UserError:
        return UserError(f"{self.path}: the shared tensor {name} is damaged ({reason}); every field depends on it: "
                         "fit the store again")

    # -- integrity ------------------------------------------------------------------------------------
    def _chunk_rows(self, chunk: int) -> range:
        return range(chunk * self.chunk_fields, min((chunk + 1) * self.chunk_fields, self.num_fields))

    def _chunk(self, name: str, chunk: int) -> np.ndarray:
        """Array `name`'s rows of `chunk`, decoded and checked (the read boundary: one line, never a traceback)."""
        rows = self._chunk_rows(chunk)
        try:
            values = np.asarray(self.group[name][rows.start:rows.stop])
        except Exception as error:  # zarr and numcodecs raise many kinds of error on a garbage chunk
            raise damage(self.path, name, chunk, f"unreadable: {type(error).__name__}") from None
        self._verify(name, chunk, values)
        return values

    def _verify(self, name: str, chunk: int, values: np.ndarray) -> None:
        """Check a chunk against its checksum once per reader: a training epoch reads every chunk again, and
        a crc32 of a chunk costs about a quarter of decoding it."""
        if (name, chunk) in self._verified:
            return
        problem = self._mismatch(name, chunk, values)
        if problem:
            raise damage(self.path, name, chunk, problem)
        self._verified.add((name, chunk))

    def _mismatch(self, name: str, chunk: int, values: np.ndarray) -> str | None:
        """Why the values of a complete chunk differ from its record (None: they match, or nothing is recorded
        because the chunk is incomplete or the store predates checksums)."""
        rows = self._chunk_rows(chunk)
        if "checksums" not in self.attrs or not self.done[rows.start:rows.stop].all():
            return None
        if self._records is None:
            self._records = read_records(self.group, self.num_chunks)
        recorded = int(self._records[chunk, self.attrs["checksums"]["arrays"].index(name)])
        if recorded == 0:
            return "no checksum was recorded"
        if recorded == UNREADABLE:
            return "its checksum record is unreadable"
        if recorded == checksum(values):
            return None
        file = chunk_file(self.path, self.group, name, chunk)  # a deleted chunk file reads back as zeros
        return "missing" if file is not None and not file.exists() else "checksum mismatch"

    def problems(self, chunks: Sequence[int] | None = None) -> list[tuple[int, str]]:
        """(chunk, one line) for every chunk (of `chunks`, default all) of every array that cannot be decoded
        or fails its checksum."""
        found = []
        names = [f"params/{name}" for name in self.per_field] + list(ROW_ARRAYS)
        for chunk in range(self.num_chunks) if chunks is None else chunks:
            rows = self._chunk_rows(chunk)
            try:
                self.group["done"][rows.start:rows.stop]
            except Exception as error:
                found.append((chunk, f"{self.path}: chunk {chunk} of done is damaged (unreadable: "
                                     f"{type(error).__name__}), so its fields count as not fitted; run fit-dataset "
                                     "with --resume to refit it"))
            for name in names:
                try:
                    self._chunk(name, chunk)
                except UserError as error:
                    found.append((chunk, str(error)))
        return found

    def damaged_chunks(self, chunks: Sequence[int] | None = None) -> list[int]:
        """Chunks (of `chunks`, default all) that `--resume` must fit again although their mask says done."""
        return sorted({chunk for chunk, _ in self.problems(chunks)})

    def stack(self, rows, device: str | torch.device = "cpu") -> FieldStack:
        """Fields `rows` as a `FieldStack` (shared tensors held once)."""
        template = self.config.build()
        tensors = self.read(rows)
        f = len(next(iter(tensors.values())))
        buffers = {}
        for name, value in template.named_buffers():  # per-field buffers are stored; others are rebuilt
            stored = tensors.pop(name, None)
            buffers[name] = (restore_buffer(stored, value) if stored is not None
                             else value.expand(f, *value.shape).clone()).to(device)
        params = {k: v.to(device) for k, v in tensors.items()}
        shared = {k: v.to(device) for k, v in self.shared().items()}
        if shared:
            return FieldStack(template, params, buffers, shared=shared)
        return FieldStack(template, params, buffers)

    def summary(self) -> dict[str, Any]:
        """Counts, PSNR statistics and the description, for `fieldlab store info`."""
        done = self.done
        psnr = self.column("psnr")[done]
        labels = self.column("labels")[done]
        split = self.column("split")[done]
        finite = psnr[np.isfinite(psnr)]
        nan_psnr = int(np.isnan(psnr).sum())  # a diverged fit in a store written before write_chunk refused them
        stats = {k: round(float(f(finite)), 3) for k, f in
                 (("mean", np.mean), ("min", np.min), ("median", np.median), ("max", np.max))} if len(finite) else {}
        return {
            "path": str(self.path), "field": self.config.name, "config": self.config.to_dict(),
            "num_fields": self.num_fields, "complete": int(done.sum()), "missing": int((~done).sum()),
            "chunk_fields": self.chunk_fields,
            "params_per_field": int(sum(math.prod(s) for s in self.per_field.values())),
            "shared_params": int(sum(math.prod(self.group[f"shared/{k}"].shape) for k in self.attrs.get("shared", []))),
            "labelled": int((labels >= 0).sum()), "num_labels": len(np.unique(labels[labels >= 0])),
            "splits": {name: int((split == i).sum()) for i, name in enumerate(self.split_names)},
            "augmented": int((self.column("augment")[done] > 0).sum()),
            "psnr": stats, "signal": self.attrs["signal"], "source": self.attrs.get("source", {}),
            "fit": self.attrs.get("fit", {}), "meta": self.attrs.get("meta", {}), "label_names": self.label_names,
            "seed": self.attrs.get("seed"), "versions": self.attrs.get("versions", {}),
            "nan_psnr": nan_psnr, "checksums": CHECKSUM if "checksums" in self.attrs else None,
        }


class FieldStoreDataset(torch.utils.data.Dataset):
    """The completed rows of a store (one split) as items {"params": {name: tensor}, "label", "row"}.

    Reads are lazy and chunk-aware: an item loads its whole chunk once and keeps it (one chunk per worker),
    so with `ChunkSampler` each chunk file is read once per epoch.
    """

    def __init__(self, store: FieldStore | str | Path, split: str | None = None):
        self.store = store if isinstance(store, FieldStore) else FieldStore(store)
        self.row_ids = self.store.rows(split)
        self.labels = self.store.column("labels")
        self._cache: tuple[int, dict[str, torch.Tensor]] | None = None

    def __len__(self) -> int:
        return len(self.row_ids)

    def chunk_of(self, index: int) -> int:
        return int(self.row_ids[index]) // self.store.chunk_fields

    def _chunk(self, chunk: int) -> dict[str, torch.Tensor]:
        if self._cache is None or self._cache[0] != chunk:
            c = self.store.chunk_fields
            self._cache = (chunk, self.store.read(slice(chunk * c, min((chunk + 1) * c, self.store.num_fields))))
        return self._cache[1]

    def __getitem__(self, index: int) -> dict[str, Any]:
        row = int(self.row_ids[index])
        chunk = self._chunk(row // self.store.chunk_fields)
        offset = row % self.store.chunk_fields
        return {"params": {k: v[offset] for k, v in chunk.items()}, "label": int(self.labels[row]), "row": row}


class ChunkSampler(torch.utils.data.Sampler[int]):
    """Indices of a `FieldStoreDataset` grouped by chunk: chunks in (shuffled) order, rows shuffled within
    each chunk, so reads stay sequential. Call `set_epoch` for a new order each epoch."""

    def __init__(self, dataset: FieldStoreDataset, *, shuffle: bool = True, seed: int = 0):
        self.dataset, self.shuffle, self.seed, self.epoch = dataset, shuffle, seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __len__(self) -> int:
        return len(self.dataset)

    def __iter__(self) -> Iterator[int]:
        chunks = np.asarray(self.dataset.row_ids) // self.dataset.store.chunk_fields
        order = np.unique(chunks)
        rng = np.random.default_rng([self.seed, self.epoch])
        if self.shuffle:
            order = rng.permutation(order)
        for chunk in order:
            members = np.flatnonzero(chunks == chunk)
            yield from (rng.permutation(members) if self.shuffle else members).tolist()
