"""A Cityscapes-style segmentation folder: `ROOT/images/<name>.<ext>` and `ROOT/masks/<name>.<ext>`.

An image and its mask share their path below `images/` and `masks/` up to the suffix (`a/b.jpg` and
`a/b.png`). A mask holds one integer class id per pixel (8- or 16-bit grey or palette PNG); 255 marks
pixels to ignore, which `masks(i)` gives as -1 and training and scoring skip. `ROOT/classes.txt` (one name
a line) or `ROOT/classes.json` (a list of names) names the classes; without one they are "0" … the
largest id. When `images/` holds `train/` and `test/` (or `val/`) folders, the items below `test/` (else
`val/`) are the source's own test split.

Opening the source checks every pair before anything is written: names that do not pair up, an image
and mask of different sizes, images of different sizes, a class id that no name covers. Masks are decoded
one at a time for that check and again when asked for; images only when asked for.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np

from fieldlab import _validate
from fieldlab._errors import UserError

IGNORE = 255
"""The mask value of pixels that belong to no class (Cityscapes' convention)."""


def recognizes(path: Path) -> bool:
    return path.is_dir() and (path / "images").is_dir() and (path / "masks").is_dir()


def open_segmentation(spec: str, path: Path, options: dict[str, str]):
    """The segmentation source of the folder `path` (see the module docstring)."""
    from fieldlab.signals.datasets import _default_names, _lazy_source, _like_first
    from fieldlab.signals._signal import Normalization
    from fieldlab.signals.image import read_image

    if options:
        raise UserError(f"{spec}: an images/ + masks/ folder takes no options, got {', '.join(options)}")
    images, masks = _pairs(path)
    keys = sorted(images)
    size = read_mask(masks[keys[0]]).shape
    digest = hashlib.sha1()
    top = -1
    for key in keys:
        for file in (images[key], masks[key]):
            if _size(file) not in (size, None):
                raise UserError(f"{file} is {_size(file)[1]}x{_size(file)[0]}, but {images[keys[0]]} is "
                                f"{size[1]}x{size[0]}; the images and masks of a dataset must all be one size")
        mask = read_mask(masks[key])
        digest.update(mask.tobytes())
        top = max(top, int(mask[mask != IGNORE].max(initial=0)))
    names = _class_names(path)
    if names is not None and top >= len(names):
        raise UserError(f"{_largest(masks, keys, top)} holds the class id {top}, but {_names_file(path).name} names "
                        f"only {len(names)} classes (0 to {len(names) - 1}; {IGNORE} is ignored)")
    names = _default_names(spec, np.arange(top + 1), names, "mask classes")

    def raw(i: int) -> np.ndarray:
        signal = read_image(images[keys[i]])
        image = signal.info.normalization.decode(signal.values)
        if image.shape[:2] != size:
            raise UserError(f"{images[keys[i]]} is {image.shape[1]}x{image.shape[0]}, but its mask is "
                            f"{size[1]}x{size[0]}")
        return image

    def mask(i: int) -> np.ndarray:
        classes = read_mask(masks[keys[i]]).astype(np.int64)
        classes[classes == IGNORE] = -1
        return classes

    first = raw(0)
    extra = {"format": "image+mask folder", "masks_sha1": digest.hexdigest(),
             "files_sha1": hashlib.sha1("\n".join(keys).encode()).hexdigest()}
    checked = _like_first(raw, first, lambda i: images[keys[i]])
    source = _lazy_source(spec, len(keys), first.shape, checked, np.full(len(keys), -1),
                          names, Normalization.for_array(first), extra)
    source.masks = mask
    source.split = _split(keys)
    return source


def _pairs(root: Path) -> tuple[dict[str, Path], dict[str, Path]]:
    """{name without suffix: file} of images/ and of masks/, checked to pair up one to one."""
    images, masks = _listing(root / "images"), _listing(root / "masks")
    if not images:
        raise UserError(f"{root / 'images'} holds no images")
    alone = sorted(set(images) - set(masks))
    if alone:
        raise UserError(f"{images[alone[0]]} has no mask {root / 'masks' / alone[0]}.png ({len(alone):,} images "
                        "lack one; a mask shares its image's name)")
    alone = sorted(set(masks) - set(images))
    if alone:
        raise UserError(f"{masks[alone[0]]} has no image in {root / 'images'} ({len(alone):,} masks lack one)")
    return images, masks


def _listing(folder: Path) -> dict[str, Path]:
    from fieldlab.signals.image import IMAGE_SUFFIXES

    found: dict[str, Path] = {}
    for file in sorted(folder.rglob("*")):
        if file.suffix.lower() in IMAGE_SUFFIXES and file.is_file():
            key = file.relative_to(folder).with_suffix("").as_posix()
            if key in found:
                raise UserError(f"{found[key]} and {file} have one name; keep one file per name")
            found[key] = file
    return found


def _size(file: Path) -> tuple[int, int] | None:
    """(H, W) as read (turned as its EXIF orientation says) from the file's header, or None when the header
    does not tell (the image's reader checks it)."""
    from fieldlab.signals.image import declared

    image = declared(file)
    return None if image is None else (image.height, image.width)


def read_mask(file: Path) -> np.ndarray:
    """The class ids (H, W) of a mask image."""
    from PIL import Image, UnidentifiedImageError

    from fieldlab.signals.image import exif_orientation, oriented

    try:
        with Image.open(file) as image:
            if image.mode not in ("1", "L", "P", "I;16", "I;16B", "I"):
                raise UserError(f"{file} is an image of mode {image.mode}; a mask holds one integer class id per "
                                "pixel (a grey or palette PNG), not colours")
            if image.size[0] * image.size[1] > _validate.LIMITS.pixels:
                raise UserError(f"{file} is more than {_validate.LIMITS.pixels:,} pixels")
            ids = np.asarray(image).astype(np.uint8) if image.mode == "1" else np.asarray(image)
            ids = oriented(ids, exif_orientation(image))  # as its image is read: as viewers show it
    except UserError:
        raise
    except (UnidentifiedImageError, OSError, ValueError, Image.DecompressionBombError) as error:
        raise UserError(f"cannot read {file} as a mask ({' '.join(str(error).split())[:120]})") from None
    if ids.min(initial=0) < 0:
        raise UserError(f"{file} holds negative class ids")
    return ids


def _class_names(root: Path) -> list[str] | None:
    file = _names_file(root)
    if file is None:
        return None
    if file.suffix == ".json":
        names = _validate.read_json(file, kind=list)
    else:
        if file.stat().st_size > _validate.LIMITS.json_bytes:
            raise UserError(f"{file} is too large to be a list of class names")
        try:
            names = [line.strip() for line in file.read_text(encoding="utf-8").splitlines() if line.strip()]
        except UnicodeDecodeError:
            raise UserError(f"{file} is not UTF-8 text (one class name a line)") from None
    if not names or not all(isinstance(n, str) for n in names) or len(names) > _validate.LIMITS.classes:
        raise UserError(f"{file} must list class names (at most {_validate.LIMITS.classes:,})")
    return names


def _names_file(root: Path) -> Path | None:
    return next((root / n for n in ("classes.txt", "classes.json") if (root / n).is_file()), None)


def _largest(masks: dict[str, Path], keys: list[str], top: int) -> Path:
    return next(masks[k] for k in keys if (read_mask(masks[k]) == top).any())


def _split(keys: list[str]) -> np.ndarray | None:
    """Test items when images/ holds train/ and test/ (or val/) folders, else None."""
    tops = [key.split("/", 1)[0] if "/" in key else "" for key in keys]
    present = set(tops)
    test = "test" if "test" in present else "val" if "val" in present else None
    if test is None or "train" not in present or not present <= {"train", "val", "test"}:
        return None
    return np.array([top == test for top in tops])
