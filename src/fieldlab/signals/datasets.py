"""Datasets of signals for `fit-dataset`: labelled images of one shape, read by index.

Sources (`open_source(spec)`):

- a folder in ImageFolder layout: `ROOT/<class>/<image>` (classes sorted by name give the labels), or in
  torchvision's split layout `ROOT/train/<class>/…` + `ROOT/test/<class>/…` (or `val/`), whose test items
  are the source's own test split (`ImageSource.split`);
- CIFAR-10/100's binary version, a folder or one `.bin` file (`signals/sources_cifar.py`);
- a Hugging Face dataset: a `save_to_disk` folder, `.arrow`/`.parquet` files or a folder of them
  (`signals/sources_hf.py`, pyarrow);
- a segmentation folder `ROOT/images/…` + `ROOT/masks/…` (`signals/sources_segmentation.py`);
- `.npz` with `images` (N, H, W[, C]) and optional `labels` (N,), `label_names` and `masks` (N, H, W) of
  per-pixel classes (a segmentation source; `label_names` then name the mask classes); `.npy` images alone;
- `sample:digits` (scikit-learn's 1,797 labelled 8×8 digits), `sample:lfw` (scikit-image's 200 25×25
  crops, face / non-face), `sample:patches[:N]` (N seeded 32×32 RGB crops of scikit-image's colour
  photos, labelled by photo; 10,000 by default), `sample:shapes[:N]` (N seeded 16×16 scenes of discs,
  squares and triangles, `fieldlab.signals.shapes`; 1,000 by default): a segmentation source, its items
  unlabelled (-1), `label_names` naming the mask classes and `masks(i)` giving item i's per-pixel classes;
  `sample:balls[:N]` (N seeded 32×32 renders of 2-D ball scenes' soft occupancy, `fieldlab.signals.balls`;
  200 by default): the input of `fieldlab train-sdf --store`, unlabelled.

`Augmented(source, copies, seed)` lists every item `copies` times: copy 0 is the item itself, copy a > 0 is
a random horizontal flip and a 1.25× upscale cropped back to size, drawn from a generator seeded by
(seed, item, a) alone, so any process computes the same augmentation for a row (no per-worker RNG state).
Values are in the field range [-1, 1] through one `Normalization` for the whole source.

A spec may end in options, `PATH:key=value,key=value` (CIFAR-100's `label=coarse`, a Hugging Face
dataset's `image=COLUMN,label=COLUMN`); they are part of the spec a store records. The sources of
`sources_*.py` are tried in turn (`_format_opener`) before the ImageFolder and NumPy readers here.
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import zipfile
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

from fieldlab import _validate
from fieldlab._errors import UserError, missing_extra
from fieldlab.signals._signal import Normalization, SignalInfo

PATCH_PHOTOS = ("astronaut", "chelsea", "coffee", "rocket", "retina", "immunohistochemistry", "hubble_deep_field")
PATCH_SIZE = 32
DEFAULT_PATCHES = 10_000
DATASET_SAMPLES = ("digits", "lfw", "patches", "shapes", "balls")


@dataclasses.dataclass
class ImageSource:
    """N images of one shape (H, W, C); `raw(i)` is item i in the source's own dtype."""

    spec: str
    shape: tuple[int, ...]
    """(H, W) of an image; (T,) of an audio clip; (D, H, W) of a volume or a mesh's occupancy grid."""
    channels: int
    normalization: Normalization
    labels: np.ndarray
    """(N,) int64; -1 where an item has no label."""
    label_names: list[str]
    raw: Callable[[int], np.ndarray]
    identity: dict[str, Any]
    """What makes the source itself: spec, size, and a digest of the labels (checked on --resume)."""
    masks: Callable[[int], np.ndarray] | None = None
    """Per-pixel classes (H, W) int64 of item i (indexing `label_names`), for segmentation sources."""
    split: np.ndarray | None = None
    """(N,) bool, True for the items of the source's own test split (a train/ and test/ layout); None when
    the source has none and `--test-fraction` chooses."""
    kind: str = "image"
    """The modality of every item (`signals/_modality.py`); sources of other kinds: `signals/modal_sources.py`."""
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)
    """Kind-specific facts every item shares (an audio source's sample rate), as `SignalInfo.extra`."""
    domain: tuple[tuple[float, float], ...] | None = None
    """The items' domain (`SignalInfo.domain`); None: the sample grid, [0, n) per axis."""
    raw_items: Callable[[np.ndarray], np.ndarray] | None = None
    """Items (f, *shape, C) of an int64 index array in one call, for a source that holds them in one array
    (one gather instead of f calls of `raw`); None: `items` stacks `raw(i)` item by item."""

    def __len__(self) -> int:
        return len(self.labels)

    def items(self, indices: np.ndarray) -> np.ndarray:
        """Items `indices` stacked, (f, *shape, C), in the source's own dtype."""
        if self.raw_items is not None:
            return self.raw_items(indices)
        return np.stack([self.raw(int(i)) for i in indices])

    def info(self) -> SignalInfo:
        """The `SignalInfo` that every item shares."""
        return SignalInfo(kind=self.kind, shape=self.shape, channels=self.channels, normalization=self.normalization,
                          domain=self.domain or tuple((0.0, float(n)) for n in self.shape), source=self.spec,
                          extra=dict(self.extra))


def _array_source(spec: str, images: np.ndarray, labels: np.ndarray | None, label_names=None, normalization=None,
                  extra: dict | None = None) -> ImageSource:
    """A source over an array of images; `label_names` None names the classes 0 … max label."""
    if images.ndim == 3:
        images = images[..., None]
    if images.ndim != 4 or images.shape[-1] not in (1, 2, 3, 4) or len(images) == 0:
        raise UserError(f"{spec}: expected images shaped (N, H, W) or (N, H, W, C≤4), got {images.shape}")
    if images.dtype.kind not in "biuf":
        raise UserError(f"{spec}: images must hold numbers, not {images.dtype}")
    # Checked once here: one NaN would make the whole source's normalization, and so every field, NaN.
    _validate.require_finite(images, f"{spec}: images", axes=("item", "row", "column", "channel"))
    labels, label_names = _labels(spec, labels, label_names, len(images))
    source = _lazy_source(spec, len(images), images.shape[1:], lambda i: images[i], labels, label_names,
                          normalization or Normalization.for_array(images), extra)
    source.raw_items = images.__getitem__  # a chunk's items are one gather of the array
    return source


def _lazy_source(spec: str, count: int, shape: tuple[int, ...], raw: Callable[[int], np.ndarray],
                 labels: np.ndarray, label_names, normalization: Normalization, extra: dict | None = None) -> ImageSource:
    """A source of `count` images of `shape` (H, W, C), item i made by `raw(i)` only when asked for."""
    identity = {"spec": spec, "count": count, "shape": list(shape),
                "labels_sha1": hashlib.sha1(labels.astype(np.int64).tobytes()).hexdigest(), **(extra or {})}
    return ImageSource(spec, tuple(shape[:2]), shape[2], normalization, labels.astype(np.int64),
                       [str(n) for n in label_names], raw, identity)


def _like_first(read: Callable[[int], np.ndarray], first: np.ndarray, name: Callable[[int], Any],
                what: str = "images", hint: Callable[[np.ndarray], str] | None = None) -> Callable[[int], np.ndarray]:
    """`read`, refusing an item whose shape or dtype is not `first`'s (item 0's); `name(i)` names item i, and
    `hint(item)` says what would make it match."""
    def checked(i: int) -> np.ndarray:
        item = read(i)
        if item.shape != first.shape or item.dtype != first.dtype:
            raise UserError(f"{name(i)} is {item.shape} {item.dtype}, but {name(0)} is {first.shape} {first.dtype}; "
                            f"{what} of a dataset must match{hint(item) if hint else ''}")
        return item
    return checked


def _labels(spec: str, labels, names, count: int) -> tuple[np.ndarray, list[str]]:
    """(labels (count,) int64, class names): integer labels are class indices ≥ 0 or -1 for none; string
    labels become indices into `names`, or into their sorted distinct values when no names are given."""
    if labels is None:
        return np.full(count, -1, dtype=np.int64), list(names or [])
    labels = np.asarray(labels)
    if labels.shape != (count,):
        raise UserError(f"{spec}: labels must be {count} values, one per image, got shape {labels.shape}")
    if labels.dtype.kind in "US":
        labels = labels.astype(str)
        names = [str(n) for n in names] if names is not None else sorted(set(labels.tolist()))
        index = {name: i for i, name in enumerate(names)}
        strings = labels.tolist()
        unknown = next((i for i, label in enumerate(strings) if label not in index), None)
        if unknown is not None:
            raise UserError(f"{spec}: the label {strings[unknown]!r} of item {unknown} is not in label_names")
        return np.array([index[label] for label in strings], dtype=np.int64), names
    if labels.dtype.kind not in "iu":
        raise UserError(f"{spec}: labels must be integers (class indices, -1 for none) or strings, "
                        f"got {labels.dtype}")
    bad = np.flatnonzero((labels < -1) | (labels > _validate.LIMITS.label))
    if bad.size:
        raise UserError(f"{spec}: the label {labels[bad[0]]} of item {bad[0]} is not a class index from 0 to "
                        f"{_validate.LIMITS.label:,} (or -1 for none)")
    return labels.astype(np.int64), _default_names(spec, labels, names, "labels")


def _default_names(spec: str, classes: np.ndarray, names, what: str) -> list[str]:
    """`names`, or "0" … "K-1" for classes up to K-1 (bounded: a store keeps every name); given names must name
    every class that occurs (a store whose classes outnumber its names would train a head too small for them)."""
    if names is not None:
        top = int(classes.max()) + 1 if classes.size else 0
        if top > len(names):
            where = int(np.flatnonzero(classes >= len(names))[0])
            raise UserError(f"{spec}: {what} reach class {top - 1} (item {where}), but label_names names "
                            f"{len(names)} class{'es' if len(names) != 1 else ''}: give a name for each class")
        return [str(n) for n in names]
    top = int(classes.max()) + 1 if classes.size else 0
    if top > _validate.LIMITS.classes:
        raise UserError(f"{spec}: {what} reach {top - 1:,}, more than {_validate.LIMITS.classes:,} classes; "
                        "number the classes from 0 or give label_names")
    return [str(k) for k in range(top)]


def open_source(spec: str, *, image_size: int | None = None, rgb: bool = False, progress: bool = False) -> ImageSource:
    """The dataset `spec` names (see the module docstring); `image_size` resizes a folder's images, `rgb`
    converts them to RGB (grey replicated, alpha dropped); `progress`: a bar over a large folder's headers."""
    if image_size is not None:
        _validate.bounded_int(image_size, "--image-size", 1, math.isqrt(_validate.LIMITS.pixels))
    sample = spec.startswith("sample:")
    where, options = (spec, {}) if sample else spec_options(spec)
    path = Path(where)
    if not sample and not path.exists():
        raise UserError(f"no such dataset: {where}")
    opener = None if sample else _format_opener(path)
    if sample or opener is not None or not path.is_dir():  # --image-size and --rgb: a folder's image files only
        for flag, given in (("--image-size", image_size is not None), ("--rgb", rgb)):
            if given:
                raise UserError(f"{flag} applies to a folder of image files, not to {spec}")
    if sample:
        return _sample_source(spec)
    if opener is not None:
        return opener(spec, path, dict(options))
    if options:
        raise UserError(f"{spec}: options after ':' apply to CIFAR and Hugging Face sources, not to {where}")
    if path.is_dir():
        return _folder_source(path, image_size, rgb, progress)
    if path.suffix.lower() in (".npz", ".npy"):
        return _numpy_source(path)
    raise UserError(f"{spec} is not a dataset: give a folder (of class folders, CIFAR .bin files, Hugging Face "
                    "arrow/parquet files, or images/ and masks/), a .npz/.npy/.parquet file or sample:NAME")


def describe_source(identity: dict[str, Any], label_names: list[str]) -> str:
    """One line naming a store's source from its recorded identity: 'cifar-10 binary, 60,000 items,
    10 classes, PATH'."""
    spec = str(identity.get("spec", "an unrecorded source"))
    # a folder of clips, volumes or meshes records its modality (`modal_sources`); one of images records none
    kind = identity.get("format") or ("built-in sample" if spec.startswith("sample:") else
                                      "NumPy file" if spec.lower().endswith((".npz", ".npy")) else
                                      f"{identity.get('kind', 'image')} folder")
    if "splits" in identity:
        kind += " (" + "/".join(map(str, identity["splits"])) + ")"
    count = identity.get("count")
    items = f"{count:,} items" if isinstance(count, int) else "items"
    classes = f"{len(label_names):,} class{'es' if len(label_names) > 1 else ''}" if label_names else "unlabelled"
    return f"{kind}, {items}, {classes}, {spec}"


def spec_options(spec: str) -> tuple[str, dict[str, str]]:
    """(path, options) of `PATH:key=value,key=value` (a path that exists as written has no options)."""
    head, colon, tail = spec.rpartition(":")
    if not colon or Path(spec).exists() or not all("=" in part for part in tail.split(",")):
        return spec, {}
    options = dict(part.split("=", 1) for part in tail.split(","))
    for key in options:
        if not key.isidentifier():
            raise UserError(f"{spec}: {key!r} is not an option name (options are PATH:key=value,key=value)")
    return head, options


def _format_opener(path: Path) -> Callable[[str, Path, dict], ImageSource] | None:
    """The opener of `path`'s format if one of signals/sources_*.py recognizes it (CIFAR binary, Hugging Face
    arrow/parquet, an images/ + masks/ folder), else None."""
    from fieldlab.signals import sources_cifar, sources_hf, sources_segmentation

    for recognizes, opener in ((sources_cifar.recognizes, sources_cifar.open_cifar),
                               (sources_hf.recognizes, sources_hf.open_hf),
                               (sources_segmentation.recognizes, sources_segmentation.open_segmentation)):
        if recognizes(path):
            return opener
    return None


def _sample_source(spec: str) -> ImageSource:
    name, _, count = spec.removeprefix("sample:").partition(":")
    if name == "digits":
        try:
            from sklearn.datasets import load_digits
        except ImportError:
            raise missing_extra("scikit-learn", "datasets") from None
        digits = load_digits()
        # Pixel values are counts 0..16 (sums of 4×4 blocks of the original bitmaps).
        return _array_source(spec, digits.images, digits.target, [str(d) for d in range(10)],
                             Normalization("float64", 0.0, 16.0))
    if name == "lfw":
        import skimage.data

        faces = skimage.data.lfw_subset()  # 100 faces, then 100 non-faces
        labels = np.repeat(np.arange(2), 100)
        return _array_source(spec, faces, labels, ["face", "non-face"], Normalization("float64", 0.0, 1.0))
    if name == "patches":
        return _patch_source(spec, _sample_count(spec, name, count, DEFAULT_PATCHES, 10**6))
    # Scenes are drawn one by one when asked for, so `--limit 4` of a million draws 4.
    if name == "shapes":
        from fieldlab.signals.shapes import DEFAULT_SCENES, DEFAULT_SIZE, SHAPE_CLASSES, shapes_scene

        n = _sample_count(spec, name, count, DEFAULT_SCENES, 10**6)
        source = _lazy_source(spec, n, (DEFAULT_SIZE, DEFAULT_SIZE, 1), lambda i: shapes_scene(i)[0][..., None],
                              np.full(n, -1), SHAPE_CLASSES, Normalization("float32", 0.0, 1.0))
        source.masks = lambda i: shapes_scene(i)[1]
        return source
    if name == "balls":
        from fieldlab.signals.balls import BALLS_SIZE, DEFAULT_BALL_SCENES, ball_images

        n = _sample_count(spec, name, count, DEFAULT_BALL_SCENES, 10**6)
        return _lazy_source(spec, n, (BALLS_SIZE, BALLS_SIZE, 1), lambda i: ball_images(1, index=[i])[0][..., None],
                            np.full(n, -1), [], Normalization("float32", -1.0, 1.0))
    raise UserError(f"unknown dataset sample {name!r}; built-in datasets: "
                    + ", ".join(f"sample:{s}" for s in DATASET_SAMPLES))


def _sample_count(spec: str, name: str, count: str, default: int, most: int) -> int:
    """The N of `sample:NAME:N` (`default` when absent), a whole number in [1, most]."""
    try:
        n = int(count) if count else default
    except ValueError:
        raise UserError(f"{spec}: the count after sample:{name}: must be a whole number") from None
    if not 0 < n <= most:
        raise UserError(f"{spec}: the count must be between 1 and {most}")
    return n


def _patch_source(spec: str, count: int, seed: int = 0) -> ImageSource:
    """`count` PATCH_SIZE² crops at seeded positions of scikit-image's colour photos (label = photo); only
    the positions are drawn up front, a crop is cut when asked for."""
    import skimage.data

    photos = [np.asarray(getattr(skimage.data, name)())[..., :3] for name in PATCH_PHOTOS]
    rng = np.random.default_rng(seed)
    labels = rng.integers(len(photos), size=count)
    tops = np.array([rng.integers(photos[k].shape[0] - PATCH_SIZE + 1) for k in labels], dtype=np.int64)
    lefts = np.array([rng.integers(photos[k].shape[1] - PATCH_SIZE + 1) for k in labels], dtype=np.int64)

    def crop(i: int) -> np.ndarray:
        top, left = tops[i], lefts[i]
        return photos[labels[i]][top:top + PATCH_SIZE, left:left + PATCH_SIZE]

    return _lazy_source(spec, count, (PATCH_SIZE, PATCH_SIZE, 3), crop, labels, PATCH_PHOTOS,
                        Normalization("uint8", 0.0, 255.0), {"seed": seed})


def _numpy_source(path: Path) -> ImageSource:
    if path.suffix.lower() == ".npy":
        with open(path, "rb") as f:
            _validate.npy_header(f, str(path), path.stat().st_size)
        return _array_source(str(path), _load(path, lambda: np.load(path, allow_pickle=False)), None)
    arrays = _read_npz(path)
    images, labels, names, masks = (arrays.get(k) for k in ("images", "labels", "label_names", "masks"))
    if names is not None:
        if names.ndim != 1 or names.dtype.kind not in "USiu":
            raise UserError(f"{path}: label_names must be a list of names, got {names.shape} of {names.dtype}")
        names = [str(n) for n in names.tolist()]
    if masks is None:
        return _array_source(str(path), images, labels, names)
    if masks.shape != images.shape[:3] or not np.issubdtype(masks.dtype, np.integer) or masks.min() < 0:
        raise UserError(f"{path}: masks must be non-negative integers shaped {images.shape[:3]}, "
                        f"got {masks.shape} of {masks.dtype}")
    names = _default_names(str(path), masks, names, "mask classes")
    source = _array_source(str(path), images, labels, names, extra={"masks_sha1": hashlib.sha1(masks.tobytes()).hexdigest()})
    source.masks = lambda i: masks[i]
    return source


_NPZ_KEYS = {"images": ("images", "x", "X", "data"), "labels": ("labels", "y", "targets"),
             "label_names": ("label_names",), "masks": ("masks",)}
"""The arrays an .npz source reads, each under the first of its names that the file has."""


def _read_npz(path: Path) -> dict[str, np.ndarray]:
    """The arrays of `_NPZ_KEYS` in an .npz; each member's header is checked against its size and the limits
    before it is read, and a damaged zip or member is one `UserError`. Images stored uncompressed (`np.savez`)
    are memory-mapped, not read into a copy: integer images start at once, each chunk's items paged in by the
    thread that reads it while the chunk before is fitted; float images are still scanned whole at open, for
    NaN/Inf and their range, before the first chunk."""
    def read() -> dict[str, np.ndarray]:
        with zipfile.ZipFile(path) as archive:
            members = {name.removesuffix(".npy"): name for name in archive.namelist()}
            found = {key: next((m for m in names if m in members), None) for key, names in _NPZ_KEYS.items()}
            if found["images"] is None:
                raise UserError(f"{path} has no array named images (it has {', '.join(sorted(members)) or 'none'})")
            arrays = {}
            for key, member in found.items():
                if member is None:
                    continue
                info = archive.getinfo(members[member])
                with archive.open(info) as f:
                    shape, dtype = _validate.npy_header(f, f"{path}: {member}", info.file_size)
                mapped = _map_stored(path, info, shape, dtype) if key == "images" else None
                if mapped is not None:
                    arrays[key] = mapped
                    continue
                with archive.open(info) as f:
                    arrays[key] = np.lib.format.read_array(f, allow_pickle=False)
            return arrays

    return _load(path, read)


def _map_stored(path: Path, info: zipfile.ZipInfo, shape: tuple[int, ...], dtype: np.dtype) -> np.ndarray | None:
    """The .npy member `info` of the zip `path` as a read-only memory map, where it is stored as is (not
    compressed, not encrypted) and holds values; else None (the caller reads it)."""
    if info.compress_type != zipfile.ZIP_STORED or info.flag_bits & 1 or not math.prod(shape) or not dtype.itemsize:
        return None
    with open(path, "rb") as f:
        f.seek(info.header_offset)
        local = f.read(30)  # the member's local header: its own name and extra field lengths follow it
        if len(local) < 30 or local[:4] != b"PK\x03\x04":
            return None
        start = info.header_offset + 30 + int.from_bytes(local[26:28], "little") + int.from_bytes(local[28:30], "little")
        f.seek(start)
        version = np.lib.format.read_magic(f)
        read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
        declared, fortran, declared_dtype = read(f)
        offset = f.tell()
    if (tuple(declared), declared_dtype) != (shape, dtype) or offset + math.prod(shape) * dtype.itemsize > \
            start + info.file_size:
        return None  # not the member zipfile read (a crafted local header): read it the usual way
    return np.memmap(path, dtype=dtype, mode="r", offset=offset, shape=shape, order="F" if fortran else "C")


def _load(path: Path, read: Callable[[], Any]) -> Any:
    """`read()`, with any way a NumPy file can be damaged (a cut zip, a bad member, a short read) as one line."""
    try:
        return read()
    except UserError:
        raise
    except (zipfile.BadZipFile, zlib.error, ValueError, OSError, EOFError, KeyError) as error:
        reason = " ".join(str(error).split())[:160] or type(error).__name__
        raise UserError(f"cannot read {path} as a NumPy file ({reason})") from None


def _folder_source(root: Path, image_size: int | None, rgb: bool = False, progress: bool = False) -> ImageSource:
    from fieldlab.signals.image import IMAGE_SUFFIXES, read_image

    parts = _split_folders(root)
    names = sorted({p.name for folder, _ in parts for p in _subfolders(folder)})
    found = {(folder, name): items((folder / name).rglob("*"), IMAGE_SUFFIXES) for folder, _ in parts for name in names}
    classes = [name for name in names if any(found[folder, name] for folder, _ in parts)]  # as clips' folders: an
    files, labels, test = [], [], []  # empty folder is no class (it would be one the network can never see)
    for folder, is_test in parts:
        for label, name in enumerate(classes):
            files += found[folder, name]
            labels += [label] * len(found[folder, name])
            test += [is_test] * len(found[folder, name])
    flat = items(root.iterdir(), IMAGE_SUFFIXES) if len(parts) == 1 else []
    if flat and files:
        refuse_mixed_layout(root, "image", flat[0])
    if flat:  # a flat folder of images, as of clips, volumes or meshes: every item unlabelled (-1)
        files, labels, test, classes = flat, [-1] * len(flat), [False] * len(flat), []
    if not files:
        raise UserError(f"{root} has no images (expected {root}/<image>.png, or {root}/<class>/<image>.png for "
                        "labels)")

    _refuse_mismatched_headers(files, image_size, rgb, progress)

    def load(i: int) -> np.ndarray:
        signal = read_image(files[i])
        raw = signal.info.normalization.decode(signal.values)
        if rgb:
            raw = to_rgb(raw)
        if image_size and raw.shape[:2] != (image_size, image_size):
            from PIL import Image

            mode = {1: "L", 3: "RGB", 4: "RGBA"}.get(raw.shape[-1])
            if mode is None or raw.dtype != np.uint8:
                raise UserError(f"{files[i]}: --image-size resizes 8-bit grey, RGB or RGBA images only")
            image = Image.fromarray(raw[..., 0] if mode == "L" else raw, mode)
            raw = np.asarray(image.resize((image_size, image_size), Image.Resampling.BICUBIC)).reshape(
                image_size, image_size, -1)
        return raw

    first = load(0)
    shape, channels = first.shape[:2], first.shape[2]
    raw = _like_first(load, first, files.__getitem__, hint=lambda item: _image_hint(
        item.shape[:2] != first.shape[:2], item.shape[2:] != first.shape[2:], item.dtype != first.dtype))

    identity = {"spec": str(root), "count": len(files), "shape": list(first.shape), "classes": classes,
                "files_sha1": hashlib.sha1("\n".join(str(f.relative_to(root)) for f in files).encode()).hexdigest()}
    split = None
    if len(parts) > 1:
        identity["splits"] = [folder.name for folder, _ in parts]
        split = np.asarray(test, dtype=bool)
    return ImageSource(str(root), tuple(shape), channels, Normalization.for_array(first),
                       np.asarray(labels, dtype=np.int64), classes, raw, identity, split=split)


HEADERS_PER_BAR = 20_000
"""Image headers a folder must hold for their check to show a bar (about a second of reading)."""


def _refuse_mismatched_headers(files: list[Path], image_size: int | None, rgb: bool, progress: bool) -> None:
    """Before anything is written, each image's header against the first's: its size (unless `image_size`
    resizes them), channels (unless `rgb` converts them) and bit depth. Files whose header does not say (a
    palette's channels, an HDR image) are checked as they are read."""
    from fieldlab._progress import in_pieces
    from fieldlab.signals.image import declared

    first = None
    for start, stop in in_pieces("reading the images' headers", len(files), 1000, unit="image",
                                 bar=progress and len(files) >= HEADERS_PER_BAR):
        for path in files[start:stop]:
            this = declared(path)
            if this is not None and first is None:
                first = path, this
            elif this is not None:
                _refuse_unlike(path, this, *first, image_size=image_size, rgb=rgb)


def _refuse_unlike(path: Path, this, reference: Path, that, *, image_size: int | None, rgb: bool) -> None:
    """One line when the image `path` declares another size, channel count or bit depth than `reference`."""
    size = this[:2] != that[:2] and not image_size
    channels = None not in (this.channels, that.channels) and this.channels != that.channels and not rgb
    depth = this.bits != that.bits
    if size or channels or depth:
        raise UserError(f"{path} is {_declared(this)}, but {reference} is {_declared(that)}; images of a dataset "
                        f"must match{_image_hint(size, channels, depth)}")


def _declared(image) -> str:
    channels = f", {image.channels} channel{'s' if image.channels != 1 else ''}" if image.channels else ""
    return f"{image.width}x{image.height}{channels}, {image.bits} bit{'s' if image.bits != 1 else ''}"


def _image_hint(size: bool, channels: bool, depth: bool) -> str:
    """What makes an image folder's item match the first: --image-size N for another size, --rgb for another
    channel count; another bit depth has to be converted beforehand."""
    flags = [flag for flag, differs in (("--image-size N resizes them", size), ("--rgb converts them to RGB", channels),
                                        ("convert them to one bit depth first", depth)) if differs]
    return f" ({'; '.join(flags)})" if flags else ""


def to_rgb(raw: np.ndarray) -> np.ndarray:
    """An image's raw values (H, W, C) as RGB: grey (and grey + alpha) replicated, an alpha channel dropped
    (what torchvision's ImageFolder does with PIL's convert("RGB"))."""
    if raw.shape[-1] in (1, 2):
        return np.repeat(raw[..., :1], 3, axis=-1)
    return raw[..., :3]


def items(paths, suffixes) -> list[Path]:
    """The files among `paths` whose suffix is one of `suffixes`, sorted, leaving out hidden ones (macOS's `._`
    copies): the items of a dataset folder, of any modality."""
    return sorted(p for p in paths if p.suffix.lower() in suffixes and p.is_file() and not p.name.startswith("."))


def refuse_mixed_layout(root: Path, kind: str, example: Path) -> None:
    """A folder with `kind` files both beside its class folders (`example`) and in them: one line."""
    raise UserError(f"{root} holds {kind} files both beside its class folders ({example.name}) and in them; put "
                    "every file in a class folder, or none")


def _subfolders(folder: Path) -> list[Path]:
    """The folder's class folders: not hidden, and not one fieldlab wrote (a store or run made inside it)."""
    from fieldlab._safety import owner_kind

    return [p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".") and owner_kind(p) is None]


def _split_folders(root: Path) -> list[tuple[Path, bool]]:
    """[(folder of class folders, holds test items)]: ROOT/train and ROOT/test (or ROOT/val) when ROOT holds
    just those two and both hold class folders (torchvision's layout), else [(ROOT, False)]."""
    names = {p.name for p in _subfolders(root)}
    if names in ({"train", "test"}, {"train", "val"}) and all(_subfolders(root / n) for n in names):
        return [(root / "train", False), (root / (names - {"train"}).pop(), True)]
    return [(root, False)]


@dataclasses.dataclass
class Augmented:
    """Rows of a dataset of fields: every item of `source` `copies` times (row = item · copies + copy)."""

    source: ImageSource
    copies: int = 1
    seed: int = 0

    def __post_init__(self):
        if self.copies < 1:
            raise UserError(f"--copies must be at least 1, got {self.copies}")

    def __len__(self) -> int:
        return len(self.source) * self.copies

    def item(self, row: int | np.ndarray) -> tuple[int | np.ndarray, int | np.ndarray]:
        """(source item, augmentation id) of `row`, an int or an array of rows."""
        return row // self.copies, row % self.copies

    def values(self, rows) -> torch.Tensor:
        """Field-range values (f, H·W, C) of `rows`, in the order of `Signal.coords()`."""
        rows = np.asarray(rows, dtype=np.int64).reshape(-1)
        index, copy = self.item(rows)
        # One encode for all rows: elementwise, so each item's values are those it gets alone, without a
        # Python call per item (60,000 of them held the GIL that the fitting thread launches kernels with).
        images = self.source.normalization.encode(self.source.items(index))
        for at in np.flatnonzero(copy):  # only augmented copies are made one by one
            images[at] = augment(images[at], int(copy[at]), (self.seed, int(index[at])))
        return images.reshape(len(rows), -1, self.source.channels)

    def columns(self, rows) -> dict[str, np.ndarray]:
        """labels, augment and source_index of `rows` (the store's row arrays)."""
        index, copy = self.item(np.asarray(rows, dtype=np.int64))
        return {"labels": self.source.labels[index], "augment": copy, "source_index": index}


def augment(image: torch.Tensor, copy: int, key: tuple[int, int]) -> torch.Tensor:
    """Copy `copy` of `image` (H, W, C): a flip with probability 1/2, then a 1.25× bilinear upscale and a
    random crop back to (H, W), all drawn from a generator seeded by (key, copy)."""
    rng = np.random.default_rng([*key, copy])
    h, w = image.shape[:2]
    if rng.random() < 0.5:
        image = image.flip(1)
    big = (round(h * 1.25), round(w * 1.25))
    up = torch.nn.functional.interpolate(image.permute(2, 0, 1)[None], size=big, mode="bilinear",
                                         align_corners=False)[0].permute(1, 2, 0)
    top, left = int(rng.integers(big[0] - h + 1)), int(rng.integers(big[1] - w + 1))
    return up[top:top + h, left:left + w].clamp(-1, 1).contiguous()
