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
does not exist.

Reader::

    store = FieldStore(path)
    store.config, store.signal, store.num_fields, store.rows(split="train")
    store.read(rows) -> {name: tensor (len(rows), *shape)};  store.shared() -> {name: tensor}
    store.stack(rows) -> FieldStack (evaluate with coords (f, n, d) → values (f, n, c))
    FieldStoreDataset(store, split=...) with ChunkSampler(dataset, shuffle=True, seed=0) in a DataLoader
"""

from __future__ import annotations

import json
import math
import os
import platform
import shutil
import tempfile
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np
import torch

from fieldlab._errors import UserError, missing_extra
from fieldlab.fields import FieldConfig, FieldStack, get_config_class
from fieldlab.signals import SignalInfo
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


def _versions() -> dict[str, str]:
    from fieldlab import __version__

    return {"fieldlab": __version__, "torch": torch.__version__, "zarr": _zarr().__version__,
            "python": platform.python_version()}


def _open_group(path: Path, mode: str):
    zarr = _zarr()
    try:
        group = zarr.open_group(str(path), mode=mode)
    except (FileNotFoundError, ValueError, KeyError, OSError) as error:
        raise UserError(f"{path} is not a field store ({type(error).__name__})") from None
    if group.attrs.get("format") != FORMAT:
        raise UserError(f"{path} is not a fieldlab field store (format {group.attrs.get('format')!r})")
    if int(group.attrs.get("format_version", 0)) > FORMAT_VERSION:
        raise UserError(f"{path} was written by a newer fieldlab (format {group.attrs.get('format_version')})")
    return group


class FieldStoreWriter:
    """Writes chunks of fitted fields into a store made by `create` (or reopened by `open`)."""

    def __init__(self, path: Path, group):
        self.path = Path(path)
        self.group = group
        self.attrs = dict(group.attrs)
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
            for name, shape in per_field.items():
                group.full(name=f"params/{name}", shape=(num_fields, *shape), chunks=(chunk_fields, *shape),
                           dtype="float32", fill_value=0.0)
            for name, tensor in (shared or {}).items():
                array = tensor.detach().cpu().float().numpy()
                _shared_array(group, name, array.shape)[...] = array
            for name, (dtype, fill) in ROW_ARRAYS.items():
                group.full(name=name, shape=(num_fields,), chunks=(chunk_fields,), dtype=dtype, fill_value=fill)
            group.full(name="done", shape=(num_fields,), chunks=(chunk_fields,), dtype="bool", fill_value=False)
            group.attrs.update({
                "format": FORMAT, "format_version": FORMAT_VERSION,
                "field": {"name": config.name, "config": config.to_dict()}, "signal": signal.to_dict(),
                "num_fields": int(num_fields), "chunk_fields": int(chunk_fields),
                "per_field": {k: list(v) for k, v in per_field.items()}, "shared": sorted(shared or {}),
                "label_names": list(label_names), "split_names": list(split_names), "versions": _versions(),
                **(attrs or {}),
            })
            if path.exists():
                shutil.rmtree(path)
            os.replace(tmp, path)
        except BaseException:
            shutil.rmtree(tmp, ignore_errors=True)
            raise
        return cls(path, zarr.open_group(str(path), mode="r+"))

    @classmethod
    def open(cls, path: str | Path, *, expect: dict[str, Any] | None = None) -> FieldStoreWriter:
        """Reopen a store to resume it (or to join as another rank); `expect` attrs must match exactly."""
        path = Path(path)
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
        """Chunks not yet complete, in order."""
        done = _read_done(self.group, self.num_fields, self.chunk_fields)
        return [c for c in range(self.num_chunks) if not done[self.chunk_rows(c).start:self.chunk_rows(c).stop].all()]

    def write_shared(self, shared: dict[str, torch.Tensor]) -> None:
        """(Re)write the shared tensors (one process only, before any chunk that depends on them)."""
        for name, tensor in shared.items():
            array = tensor.detach().cpu().float().numpy()
            if f"shared/{name}" not in self.group:
                _shared_array(self.group, name, array.shape)
            self.group[f"shared/{name}"][...] = array
        self.group.attrs["shared"] = sorted(set(self.group.attrs.get("shared", [])) | set(shared))

    def write_chunk(self, chunk: int, *, params: dict[str, torch.Tensor], psnr, labels=None, split=None,
                    augment=None, source_index=None, steps=None) -> None:
        """Write chunk `chunk` (every row of it): the per-field tensors and row arrays, then the mask."""
        rows = self.chunk_rows(chunk)
        n = len(rows)
        if set(params) != set(self.per_field):
            raise ValueError(f"chunk {chunk} has tensors {sorted(params)}, the store holds {sorted(self.per_field)}")
        for name, tensor in params.items():
            array = tensor.detach().cpu().float().numpy()
            if array.shape != (n, *self.per_field[name]):
                raise ValueError(f"{name}: expected {(n, *self.per_field[name])}, got {array.shape}")
            self.group[f"params/{name}"][rows.start:rows.stop] = array
        given = {"labels": labels, "split": split, "augment": augment, "source_index": source_index,
                 "psnr": psnr, "steps": steps}
        for name, values in given.items():
            if values is not None:
                dtype = ROW_ARRAYS[name][0]
                values = np.asarray(values.cpu() if isinstance(values, torch.Tensor) else values).astype(dtype)
                self.group[name][rows.start:rows.stop] = values.reshape(n)
        self.group["done"][rows.start:rows.stop] = np.ones(n, dtype=bool)  # last: marks the chunk complete


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


def check_store_path(path: Path, *, force: bool, resume: bool) -> None:
    """Refuse to overwrite a non-empty `path` unless forced or resumed, before any work is done."""
    check_out_dir(path, force or resume, resumable=True)


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
        self.attrs = dict(self.group.attrs)
        try:
            self.config = get_config_class(self.attrs["field"]["name"]).from_dict(self.attrs["field"]["config"])
            self.signal = SignalInfo.from_dict(self.attrs["signal"])
            self.num_fields = int(self.attrs["num_fields"])
            self.chunk_fields = int(self.attrs["chunk_fields"])
            self.per_field = {k: tuple(v) for k, v in self.attrs["per_field"].items()}
        except (KeyError, TypeError) as error:
            raise UserError(f"{path} is a damaged field store ({type(error).__name__}: {error})") from None
        self.label_names: list[str] = list(self.attrs.get("label_names", []))
        self.split_names: list[str] = list(self.attrs.get("split_names", ["train"]))
        self.done = _read_done(self.group, self.num_fields, self.chunk_fields)

    def require_complete(self) -> None:
        """Refuse a store that an interrupted `fit-dataset` left with rows unfitted: learning from the rows
        that happen to be done would silently change the data set (and its held-out split)."""
        missing = int((~self.done).sum())
        if missing:
            raise UserError(f"{self.path} is incomplete: {self.num_fields - missing} of {self.num_fields} fields "
                            "are fitted; finish it with the same fit-dataset command and --resume")

    def column(self, name: str) -> np.ndarray:
        """A whole row array (labels, split, augment, source_index, psnr, steps) of all N rows."""
        return np.asarray(self.group[name][:])

    def rows(self, split: str | None = None) -> np.ndarray:
        """Ids of the completed rows (of one split), ascending."""
        mask = self.done.copy()
        if split is not None:
            if split not in self.split_names:
                raise UserError(f"no split {split!r} in {self.path}; it has {', '.join(self.split_names)}")
            mask &= self.column("split") == self.split_names.index(split)
        return np.flatnonzero(mask)

    def read(self, rows: Sequence[int] | np.ndarray | slice) -> dict[str, torch.Tensor]:
        """Per-field tensors of `rows`: {name: (len(rows), *shape)}; contiguous rows are one slice read."""
        if isinstance(rows, slice):
            return {name: torch.from_numpy(np.asarray(self.group[f"params/{name}"][rows])) for name in self.per_field}
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        if len(rows) and (rows.min() < 0 or rows.max() >= self.num_fields):
            raise IndexError(f"rows {rows[(rows < 0) | (rows >= self.num_fields)][:5].tolist()} are outside "
                             f"{self.path}'s {self.num_fields} fields")
        if len(rows) and np.all(np.diff(rows) == 1):
            return self.read(slice(int(rows[0]), int(rows[-1]) + 1))
        return {name: torch.from_numpy(np.asarray(self.group[f"params/{name}"].get_orthogonal_selection(rows)))
                for name in self.per_field}

    def shared(self) -> dict[str, torch.Tensor]:
        return {name: torch.from_numpy(np.asarray(self.group[f"shared/{name}"][...]))
                for name in self.attrs.get("shared", [])}

    def stack(self, rows, device: str | torch.device = "cpu") -> FieldStack:
        """Fields `rows` as a `FieldStack` (shared tensors held once)."""
        template = self.config.build()
        tensors = self.read(rows)
        f = len(next(iter(tensors.values())))
        buffers = {}
        for name, value in template.named_buffers():  # per-field buffers are stored; others are rebuilt
            stored = tensors.pop(name, None)
            buffers[name] = (stored.to(value.dtype) if stored is not None else value.expand(f, *value.shape).clone()).to(device)
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
