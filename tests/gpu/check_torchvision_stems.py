"""Truncated torchvision stems translate to DI-Nets exactly (run where torchvision imports, e.g. the GPU
image; PyPI's torchvision does not import beside the CPU build of torch that CI uses).

    python tests/gpu/check_torchvision_stems.py     # exit status 1 if a stem differs
"""

from __future__ import annotations

import sys
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "learn"))

from fieldlab.learn.translate import torchvision_stem  # noqa: E402
from test_translate import _randomize_norms, _run_both  # noqa: E402


def main() -> int:
    failures = 0
    for name in ("resnet18", "efficientnet_b0", "convnext_tiny"):
        torch.manual_seed(0)
        cnn = _randomize_norms(torchvision_stem(name, blocks=3))
        out, ref = _run_both(cnn, (32, 32))
        error = (out - ref).abs().max().item()
        ok = error < 1e-4 * max(1.0, ref.abs().max().item())
        failures += not ok
        print(f"{'ok  ' if ok else 'FAIL'} {name}: max |DI-Net − CNN| {error:.2e}")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
