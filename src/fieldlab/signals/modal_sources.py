"""Datasets of audio clips, volumes and meshes for `fit-dataset`: folders of files of one modality.

A folder is laid out as an ImageFolder, `ROOT/<class>/<file>` (classes sorted by name give the labels), or
flat, `ROOT/<file>` (every item unlabelled, -1). Its modality is that of its files' suffixes (the registry,
`signals/_modality.py`); other files (a mesh's texture, a README) are ignored, and a folder whose only
files are images is an image folder (`signals/datasets.py`).

- **audio clips** (.wav, .flac, .ogg; `signals/audio.py`'s reader): items of shape (T,) with C channels at
  one sample rate. Every clip is read once first (one at a time), so mixed sample rates (fieldlab does not
  resample), mixed channel counts (unless `mono`: every clip mixed down to one channel) and unreadable or
  truncated clips stop the job before anything is written. T is `clip_seconds` of samples, by default the shortest clip's length:
  longer clips are cut after T samples, shorter ones end in silence. Values are full-scale samples
  (field = raw, as float audio), whatever each file's sample format.
- **volumes** (.npy of (D, H, W) or (D, H, W, C≤4); `signals/volume.py`'s reader): every volume is read
  once before fitting, to check shapes and dtypes agree and to normalize all of them over their joint range.
- **meshes** (.obj, .ply, .stl, .off, .glb; `signals/mesh.py`): each mesh is placed in the canonical cube
  as `fit` places one (`Mesh`: its bounding box centred, longest side on [-0.9, 0.9]) and labelled inside
  or outside by the winding number at the centres of an R³ grid over [-1, 1]³ (R = `mesh_resolution`),
  counted by ray crossings (`signals/mesh_grid.py`);
  items are these occupancy grids, stored as kind mesh with values ±1 (bool normalization: inside ⇔ value
  ≥ 0, as a fitted mesh field's logit). Open (non-watertight) meshes need no repair: the generalized
  winding number degrades gracefully on holes. Meshes are read when their chunk is fitted; the first is
  read up front, so a folder of unreadable files stops before the store is made.
"""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Callable

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError
from fieldlab.signals._modality import get_modality, modalities
from fieldlab.signals._signal import Normalization, grid_coords
from fieldlab.signals.datasets import ImageSource, _like_first, _subfolders, items, open_source, refuse_mixed_layout

log = logging.getLogger("fieldlab")
MODAL_KINDS = ("audio", "volume", "mesh")
"""The modalities a folder of this module holds (images: `signals/datasets.py`)."""
DEFAULT_MESH_RESOLUTION = 32
MAX_MESH_RESOLUTION = 512
MAX_CLIP_SECONDS = 86_400.0


def open_dataset(spec: str, *, image_size: int | None = None, rgb: bool = False, clip_seconds: float | None = None,
                 mono: bool = False, mesh_resolution: int | None = None, progress: bool = False) -> ImageSource:
    """The dataset `spec` names: a folder of audio clips, volumes or meshes here, anything else by
    `open_source`; an option of another modality than the source's is refused."""
    path = Path(spec)
    kind = folder_kind(path) if not spec.startswith("sample:") and path.is_dir() else "image"
    given = {"--image-size": (image_size is not None, "image"), "--rgb": (bool(rgb), "image"), "--clip-seconds": (clip_seconds is not None, "audio"),
             "--mono": (bool(mono), "audio"), "--mesh-resolution": (mesh_resolution is not None, "mesh")}
    for flag, (is_given, applies) in given.items():
        if is_given and applies != kind:
            raise UserError(f"{flag} applies to datasets of {applies} files; {spec} is a dataset of {kind} files")
    if kind == "image":
        return open_source(spec, image_size=image_size, rgb=rgb, progress=progress)
    files, labels, classes = _listing(path, kind)
    if kind == "audio":
        return _audio_source(path, files, labels, classes, clip_seconds, mono)
    if kind == "volume":
        return _volume_source(path, files, labels, classes)
    return _mesh_source(path, files, labels, classes, mesh_resolution)


def folder_kind(root: Path) -> str:
    """The modality of a dataset folder: the one of `MODAL_KINDS` whose files it holds, else image."""
    kinds = {path: _kind_of(path) for path in _files(root)}
    found = {kind for kind in kinds.values() if kind in MODAL_KINDS}
    if len(found) > 1:
        raise UserError(f"{root} holds files of several kinds ({', '.join(sorted(found))}); a dataset folder "
                        "holds one kind of signal")
    kind = found.pop() if found else "image"
    left_out = [path for path, other in kinds.items() if other not in (None, kind)]
    if left_out:  # a signal of another kind (a .gif is a video here) is left out, never silently
        what = sorted({kinds[path] for path in left_out})
        log.warning("%s: left out %d %s file%s (%s), which a dataset of %s files does not read", root, len(left_out),
                    "/".join(what), "s" if len(left_out) > 1 else "",
                    ", ".join(sorted({path.suffix.lower() for path in left_out})), kind)
    return kind


def _files(root: Path):
    for path in root.rglob("*"):
        if path.is_file() and not any(part.startswith(".") for part in path.relative_to(root).parts):
            yield path


def _kind_of(path: Path) -> str | None:
    """The first modality (registry order: a .tif is an image) whose suffixes hold `path`'s."""
    suffix = path.suffix.lower()
    return next((m.name for m in modalities() if suffix in m.suffixes), None)


def _listing(root: Path, kind: str) -> tuple[list[Path], np.ndarray, list[str]]:
    """(files, labels (N,), class names) of a folder's `kind` files: per class folder, or flat (labels -1)."""
    suffixes = get_modality(kind).suffixes
    flat = items(root.iterdir(), suffixes)
    classes = sorted(p.name for p in _subfolders(root))
    per_class = [items(_files(root / name), suffixes) for name in classes]
    if flat and any(per_class):
        refuse_mixed_layout(root, kind, flat[0])
    if flat:
        return flat, np.full(len(flat), -1, dtype=np.int64), []
    keep = [k for k, found in enumerate(per_class) if found]
    files = [f for k in keep for f in per_class[k]]
    labels = np.concatenate([np.full(len(per_class[k]), i, dtype=np.int64) for i, k in enumerate(keep)])
    return files, labels, [classes[k] for k in keep]


def _source(root: Path, kind: str, files: list[Path], labels: np.ndarray, classes: list[str],
            shape: tuple[int, ...], raw: Callable[[int], np.ndarray], normalization: Normalization,
            extra: dict, **more) -> ImageSource:
    identity = {"spec": str(root), "kind": kind, "count": len(files), "shape": list(shape), "classes": classes,
                "files_sha1": hashlib.sha1("\n".join(str(f.relative_to(root)) for f in files).encode()).hexdigest(),
                **extra}
    return ImageSource(str(root), tuple(shape[:-1]), shape[-1], normalization, labels, classes, raw, identity,
                       kind=kind, extra=extra, **more)


# -- audio ----------------------------------------------------------------------------------------------
def _audio_source(root: Path, files, labels, classes, clip_seconds: float | None, mono: bool) -> ImageSource:
    from fieldlab.signals.audio import FLOAT_NORMALIZATION, read_audio

    heads = [_audio_facts(read_audio(f)) for f in files]  # (sample rate, channels, frames)
    for f, (rate, channels, frames) in zip(files, heads):
        if rate != heads[0][0]:
            raise UserError(f"{f} is at {rate:,} Hz but {files[0]} at {heads[0][0]:,} Hz; the clips of a dataset "
                            "share one sample rate (fieldlab does not resample: convert them first)")
        if channels != heads[0][1] and not mono:
            raise UserError(f"{f} has {channels} channel(s) but {files[0]} {heads[0][1]}; --mono mixes every clip "
                            "down to one channel")
    rate = heads[0][0]
    if clip_seconds is None:
        length = min(frames for _, _, frames in heads)
    else:
        seconds = _validate.bounded_float(clip_seconds, "--clip-seconds", 0, MAX_CLIP_SECONDS)
        length = round(seconds * rate)
        if length < 1:
            raise UserError(f"--clip-seconds {seconds:g} is less than one sample at {rate:,} Hz")
    channels = 1 if mono else heads[0][1]
    _validate.check_shape([length, channels], f"the clips of {root}")

    def raw(i: int) -> np.ndarray:
        """Clip i's full-scale samples (length, channels), cut or padded with silence."""
        signal = read_audio(files[i])
        if signal.info.extra["sample_rate"] != rate:  # the file changed since it was first read
            raise UserError(f"{files[i]} is no longer at {rate:,} Hz")
        samples = signal.values.numpy()  # full scale: field values are the samples
        if mono:
            samples = samples.mean(axis=1, keepdims=True)
        elif samples.shape[1] != channels:
            raise UserError(f"{files[i]} no longer has {channels} channel(s)")
        out = np.zeros((length, channels), dtype=np.float32)
        out[:min(length, len(samples))] = samples[:length]
        return out

    extra = {"sample_rate": rate, "clip_seconds": length / rate, "mono": bool(mono), "subtype": "FLOAT",
             "format": "WAV"}
    return _source(root, "audio", files, labels, classes, (length, channels), raw, FLOAT_NORMALIZATION, extra)


def _audio_facts(clip) -> tuple[int, int, int]:
    return int(clip.info.extra["sample_rate"]), clip.info.channels, clip.shape[0]


# -- volumes --------------------------------------------------------------------------------------------
def _volume_source(root: Path, files, labels, classes) -> ImageSource:
    from fieldlab.signals.volume import read_volume

    def read(i: int) -> np.ndarray:
        signal = read_volume(files[i])
        return signal.info.normalization.decode(signal.values)  # (D, H, W, C), the file's own values

    first = read(0)
    low, high = float(first.min()), float(first.max())
    checked = _like_first(read, first, files.__getitem__, "the volumes")
    for i in range(1, len(files)):  # one at a time: the joint range, and every file checked before the store
        volume = checked(i)
        low, high = min(low, float(volume.min())), max(high, float(volume.max()))
    normalization = Normalization("bool", 0.0, 1.0) if first.dtype == np.bool_ else \
        Normalization.for_range(first.dtype.name, low, high)
    return _source(root, "volume", files, labels, classes, first.shape, read, normalization,
                   {"channel_axis": True})


# -- meshes ---------------------------------------------------------------------------------------------
def _mesh_source(root: Path, files, labels, classes, resolution: int | None) -> ImageSource:
    side = _validate.bounded_int(DEFAULT_MESH_RESOLUTION if resolution is None else resolution,
                                 "--mesh-resolution", 2, MAX_MESH_RESOLUTION)
    domain = ((-1.0, 1.0),) * 3  # the canonical cube every mesh is placed in
    coords = grid_coords(domain, domain, (side,) * 3)  # (R³, 3), in the order of the items' values

    def raw(i: int) -> np.ndarray:
        """Mesh i's occupancy (R, R, R, 1) bool at the grid's sample centres."""
        from fieldlab.signals.mesh import inside, read_mesh
        from fieldlab.signals.mesh_grid import label_grid

        mesh = read_mesh(files[i])
        labels = label_grid(mesh, side)  # None for a triangle soup
        if labels is None:
            labels = inside(mesh, coords)
        return labels.reshape(side, side, side, 1).numpy()

    raw(0)  # a folder of unreadable meshes stops here, before the store is made
    extra = {"occupancy": True, "resolution": side}
    return _source(root, "mesh", files, labels, classes, (side, side, side, 1), raw,
                   Normalization("bool", 0.0, 1.0), extra, domain=domain)
