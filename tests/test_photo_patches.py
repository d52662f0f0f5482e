"""benchmarks/protocols/photo_patches.py refuses what cannot make a labelled set (a count below 1, a file that
is not an image, a photo too small for a 32×32 crop in its test band) in one line, exit 2, before writing."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "benchmarks" / "protocols" / "photo_patches.py"


def make_photo(path: Path, height: int, width: int = 64) -> None:
    from PIL import Image

    Image.fromarray(np.full((height, width, 3), 128, np.uint8)).save(path)


@pytest.mark.parametrize("case", ["zero crops", "not an image", "too short", "too narrow"])
def test_a_photo_set_that_cannot_be_made_is_refused_before_anything_is_written(tmp_path, case):
    make_photo(tmp_path / "a.png", 128)
    extra = []
    if case == "zero crops":
        extra = ["--test-per-photo", "0"]
    elif case == "not an image":
        (tmp_path / "b.png").write_text("not a png")
    else:
        # 124 rows: a test band of 31 (rows 93-123); 31 columns: no crop fits across
        make_photo(tmp_path / "b.png", *((124,) if case == "too short" else (128, 31)))
    out = tmp_path / "patches"
    done = subprocess.run([sys.executable, str(SCRIPT), "--images", str(tmp_path / "*.png"), "--out", str(out),
                           *extra], cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 2, done.stderr
    assert "photo_patches.py: error:" in done.stderr.strip().splitlines()[-1]
    assert "Traceback" not in done.stderr
    assert not out.exists()  # the good photo a.png was not cropped either


def test_the_smallest_photo_gives_crops_to_both_splits(tmp_path):
    make_photo(tmp_path / "a.png", 128, 32)
    done = subprocess.run([sys.executable, str(SCRIPT), "--images", str(tmp_path / "a.png"), "--out",
                           str(tmp_path / "patches"), "--train-per-photo", "2", "--test-per-photo", "2"],
                          cwd=tmp_path, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "patches").glob("*/*/*.png"))) == 4


def test_every_crop_is_recorded_where_it_was_cut(tmp_path):
    """crops.csv: one row per crop file, and the photo read at (top, left) gives that file's pixels."""
    import csv

    from PIL import Image

    rng = np.random.default_rng(3)
    photos = {name: rng.integers(0, 256, (h, w, 3), dtype=np.uint8) for name, h, w in (("a", 128, 48), ("b", 160, 40))}
    for name, photo in photos.items():
        Image.fromarray(photo).save(tmp_path / f"{name}.png")
    out = tmp_path / "patches"
    done = subprocess.run([sys.executable, str(SCRIPT), "--images", str(tmp_path / "*.png"), "--out", str(out),
                           "--train-per-photo", "5", "--test-per-photo", "3"], cwd=tmp_path, capture_output=True,
                          text=True)
    assert done.returncode == 0, done.stderr
    with open(out / "crops.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert sorted(r["file"] for r in rows) == sorted(str(p.relative_to(out)) for p in out.glob("*/*/*.png"))
    assert len(rows) == 2 * (5 + 3)
    for r in rows:
        photo = photos[Path(r["photo"]).stem]
        top, left, size = int(r["top"]), int(r["left"]), int(r["size"])
        assert (int(r["height"]), int(r["width"]), size) == (*photo.shape[:2], 32)
        assert r["file"].startswith(f"{r['split']}/{r['class']}/")
        assert (top >= int(0.75 * photo.shape[0])) == (r["split"] == "test")  # test crops from the bottom band
        saved = np.asarray(Image.open(out / r["file"]).convert("RGB"))
        assert np.array_equal(saved, photo[top:top + size, left:left + size])
