"""Every protocol script of benchmarks/protocols/ runs end to end in its --smoke mode (built-in data, tiny
sizes), so none rots: a table with the expected rows and finite numbers, a plot and the command lines it ran.
A protocol whose real data is missing says where to put it in one line and exits 2."""

from __future__ import annotations

import csv
import math
import subprocess
import sys
from pathlib import Path

import pytest

PROTOCOLS = Path(__file__).resolve().parents[1] / "benchmarks" / "protocols"

# script: (rows of table.csv, columns that must hold finite numbers in every row)
SMOKE = {
    "functa_cifar10": (3, ("value", "paper", "latent", "count", "meta_steps")),
    "spatial_functa_cifar10": (3, ("value", "paper", "latent", "count", "meta_steps")),
    # dinet and nuft: 5 point sets × 2 resolutions; cnn4: grid × 2
    "dinet_classification": (22, ("value", "resolution", "points", "steps")),
    "dinet_segmentation": (18, ("value", "resolution", "points", "steps")),  # 3 segmenters × 3 sets × 2
    "local_global_parity": (6, ("psnr_db", "ssim", "params", "steps", "seconds")),  # 3 methods + their means
    "miner_images": (6, ("psnr_db", "ssim", "params", "steps", "seconds")),
}


def run(script: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(PROTOCOLS / f"{script}.py"), *args], cwd=cwd,
                          capture_output=True, text=True, timeout=300)


@pytest.mark.parametrize("script", sorted(SMOKE))
def test_protocol_smoke_writes_its_table_plot_and_commands(script, tmp_path):
    out = tmp_path / "out"
    done = run(script, "--smoke", "--out", str(out), cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-3000:]
    rows, numeric = SMOKE[script]
    with (out / "table.csv").open() as f:
        table = list(csv.DictReader(f))
    assert len(table) == rows
    for row in table:
        assert row["device"].startswith("cpu")  # every figure names its device
        for column in numeric:
            assert math.isfinite(float(row[column])), (column, row)
    assert (out / "table.png").stat().st_size > 0
    commands = [line for line in (out / "commands.txt").read_text().splitlines() if not line.startswith("#")]
    assert commands and all(line.startswith("fieldlab ") for line in commands)


def test_functa_protocol_without_cifar10_says_where_to_put_it_and_exits_2(tmp_path):
    done = run("functa_cifar10", "--out", str(tmp_path / "out"), cwd=tmp_path)
    assert done.returncode == 2
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and "CIFAR-10 not found at data/cifar-10-batches-bin" in lines[0]
    assert "cifar-10-binary.tar.gz" in lines[0]
    assert not (tmp_path / "out").exists()  # refused before anything is written


def test_image_protocols_without_their_images_say_where_and_exit_2(tmp_path):
    for script in ("local_global_parity", "miner_images"):
        done = run(script, "--out", str(tmp_path / script), cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and "not found at data/" in done.stderr
        assert not (tmp_path / script).exists()


def test_photo_patches_makes_an_imagefolder_whose_test_crops_come_from_a_held_out_band(tmp_path):
    from PIL import Image

    import numpy as np

    rows = np.arange(128, dtype=np.uint8)[:, None, None].repeat(64, 1).repeat(3, 2)  # a pixel's value is its row
    for name in ("a", "b"):
        Image.fromarray(rows).save(tmp_path / f"{name}.png")
    done = run("photo_patches", "--images", str(tmp_path / "*.png"), "--train-per-photo", "6",
               "--test-per-photo", "3", "--out", str(tmp_path / "patches"), cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    for split, count in (("train", 6), ("test", 3)):
        classes = sorted(p.name for p in (tmp_path / "patches" / split).iterdir())
        assert classes == ["00-" + tmp_path.name + "-a", "01-" + tmp_path.name + "-b"]
        crops = [np.asarray(Image.open(f)) for f in sorted((tmp_path / "patches" / split / classes[0]).iterdir())]
        assert len(crops) == count and all(c.shape == (32, 32, 3) for c in crops)
        if split == "train":
            assert max(int(c.max()) for c in crops) < 96  # no training pixel from the test band (rows 96-127)
        else:
            assert min(int(c.min()) for c in crops) >= 96
