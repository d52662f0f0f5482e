r"""A CIFAR-10-style dataset made from real photos, for the functa protocols where CIFAR-10 is not on the
machine: seeded 32×32 crops of every photo given, labelled by photo, written as an ImageFolder with its own
split (OUT/train/<photo>/*.png, OUT/test/<photo>/*.png). Test crops come from the bottom quarter of each
photo and training crops from the rest, so no test pixel is ever seen in training.

Every crop's position is recorded in OUT/crops.csv, one row per crop file: `file` (relative to OUT, e.g.
train/00-natural512-a/00000.png), `split`, `class` (the photo's folder name), `photo` (its path as given),
`height` and `width` (the photo's), `size` (the crop's side), `top` and `left` (the crop's first row and column).
So `photo[top:top + size, left:left + size]` is the crop, and a validation cut can be placed by position
(`benchmarks/dinet_sweep.py --cut band`). The csv sits beside the split folders, not in a class folder, so an
ImageFolder reader does not see it.

    python benchmarks/protocols/photo_patches.py --out patches \
        --images '../shared/data/images/natural512/*.png,../shared/data/images/text512/*.png'
    python benchmarks/protocols/functa_cifar10.py --source patches --out OUT

With the 16 natural and 16 text photos of ../shared/data (512×512 each): 32 classes, 40,000 training and
8,000 test crops by default.
"""

from __future__ import annotations

import argparse
import csv
import glob
import sys
from pathlib import Path
from typing import NoReturn

import numpy as np

SIZE = 32
TEST_SHARE = 0.25
CROPS = "crops.csv"
COLUMNS = ("file", "split", "class", "photo", "height", "width", "size", "top", "left")


def fail(message: str) -> NoReturn:
    print(f"photo_patches.py: error: {message}", file=sys.stderr)
    sys.exit(2)


def positive(text: str) -> int:
    if not text.isdigit() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"expected a whole number of crops of at least 1, got {text!r}")
    return int(text)


def read_photo(path: str) -> np.ndarray:
    """The photo as RGB uint8 (h, w, 3), refused when it cannot give a 32×32 crop to both splits."""
    from PIL import Image

    try:
        photo = np.asarray(Image.open(path).convert("RGB"))
    except OSError as error:  # PIL's UnidentifiedImageError included
        fail(f"cannot read {path} as an image ({error})")
    border = band_start(photo.shape[0])
    if min(border, photo.shape[0] - border, photo.shape[1]) < SIZE:
        fail(f"{path} is {photo.shape[0]}x{photo.shape[1]} pixels, too small for {SIZE}x{SIZE} crops in both "
             f"splits (its bottom {TEST_SHARE:.0%} of rows is the test band)")
    return photo


def band_start(height: int) -> int:
    """The first row of the held-out test band."""
    return int(height * (1 - TEST_SHARE))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0], epilog=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--images", required=True, help="image files or globs, comma-separated (one class each)")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--train-per-photo", type=positive, default=1250)
    p.add_argument("--test-per-photo", type=positive, default=250)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args()

    paths = [path for part in args.images.split(",") for path in sorted(glob.glob(part))]
    if not paths:
        fail(f"no image matches {args.images}")
    if args.out.exists() and any(args.out.iterdir()):
        fail(f"{args.out} is not empty; give a new --out")
    photos = [read_photo(path) for path in paths]  # every photo checked before anything is written
    from PIL import Image

    rng = np.random.default_rng(args.seed)
    args.out.mkdir(parents=True, exist_ok=True)
    table = open(args.out / CROPS, "w", newline="")
    record = csv.writer(table)
    record.writerow(COLUMNS)
    for index, (path, photo) in enumerate(zip(paths, photos)):
        name = f"{index:02d}-{Path(path).parent.name}-{Path(path).stem}"  # a class per photo, sorted as given
        border = band_start(photo.shape[0])
        for split, rows, count in (("train", (0, border), args.train_per_photo),
                                   ("test", (border, photo.shape[0]), args.test_per_photo)):
            folder = args.out / split / name
            folder.mkdir(parents=True)
            tops = rng.integers(rows[0], rows[1] - SIZE + 1, count)
            lefts = rng.integers(0, photo.shape[1] - SIZE + 1, count)
            for k, (top, left) in enumerate(zip(tops, lefts)):
                Image.fromarray(photo[top:top + SIZE, left:left + SIZE]).save(folder / f"{k:05d}.png")
                record.writerow((f"{split}/{name}/{k:05d}.png", split, name, path, *photo.shape[:2], SIZE, top, left))
        table.flush()
        print(f"{path}: {args.train_per_photo} train and {args.test_per_photo} test crops -> {name}", flush=True)
    table.close()


if __name__ == "__main__":
    main()
