"""Spatial functa on CIFAR-10 (Bauer et al. 2023): reconstruction PSNR of an 8×8×16 latent grid (1,024
values) on the test split, then a transformer on the latent cells and its test accuracy; table.csv,
table.png and commands.txt into --out.

    python benchmarks/protocols/spatial_functa_cifar10.py --source data/cifar-10-batches-bin --seconds 900 --out OUT
    python benchmarks/protocols/spatial_functa_cifar10.py --smoke --out OUT

The paper's numbers (reference/functa.md): 39.0 dB and 90.3% top-1 (a transformer on latents of 50
augmented copies per image, 3×10⁵ steps), with an 8×8×16 grid, a 6×256 SIREN at ω₀ 10 and a 1×1 conv:
those are the defaults here (one copy per image unless --copies). The classifier is `--net transformer`
with one token per latent cell (`--token-dim` = the latent channels). Options, splits and precision as
functa_cifar10.py.
"""

from __future__ import annotations

import _functa
import _protocol as P

PAPER = {"psnr": 39.0, "accuracy": 90.3}


def main() -> None:
    p = P.parser(__doc__)
    _functa.add_options(p, classifier="transformer")
    p.add_argument("--grid-size", type=int, default=8, help="latent cells per axis (S)")
    p.add_argument("--latent-channels", type=int, default=16, help="latent values per cell (C)")
    args = p.parse_args()
    if args.smoke:
        args.grid_size, args.latent_channels = 4, 4
    size = args.grid_size ** 2 * args.latent_channels
    _functa.run(args, field="spatial_functa", latent_size=size, paper=PAPER,
                latent_options=["--grid-size", args.grid_size, "--latent-channels", args.latent_channels],
                classifier_options=classifier_options(args),
                title=f"spatial functa, {args.grid_size}×{args.grid_size}×{args.latent_channels} latents: "
                      "test PSNR and classifier accuracy")


def classifier_options(args) -> list:
    if args.classifier != "transformer":
        return []
    small = ["--width", 16, "--depth", 1] if args.smoke else []
    return ["--token-dim", args.latent_channels, *small]  # one token per latent cell


if __name__ == "__main__":
    main()
