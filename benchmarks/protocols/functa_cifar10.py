"""functa on CIFAR-10 (Dupont et al. 2022): reconstruction PSNR at 1,024 latents on the test split, then a
classifier on the latents and its test accuracy; table.csv, table.png and commands.txt into --out.

    python benchmarks/protocols/functa_cifar10.py --source data/cifar-10-batches-bin --seconds 900 --out OUT
    python benchmarks/protocols/functa_cifar10.py --smoke --out OUT          # CI: sample:patches, seconds

The paper's numbers (reference/functa.md): 38.1 dB at 1,024 latents (a 10×512 SIREN, 5×10⁵ outer steps)
and 68.3% top-1 with an MLP on latents of 50 augmented copies per training image. Defaults here: a 6×256
SIREN, meta batch 64, outer lr 1e-4 (benchmarks/functa.py's setting, fixed before this protocol), an MLP
on one copy per image; `--hidden-dim 512 --num-layers 10 --copies 50` is the paper's size. On CUDA the
meta-learning runs at TF32 and the classifier at bf16. Any fit-dataset source works: the CIFAR-10 binary
folder, an ImageFolder with train/ and test/, sample:patches; a source without its own test split holds out
a seeded sixth of its items.
"""

from __future__ import annotations

import _functa
import _protocol as P

PAPER = {"psnr": 38.1, "accuracy": 68.3}


def main() -> None:
    p = P.parser(__doc__)
    _functa.add_options(p, classifier="mlp")
    p.add_argument("--latent", type=int, default=1024, help="latent size (--latent-dim)")
    args = p.parse_args()
    _functa.run(args, field="functa", latent_options=["--latent-dim", args.latent], latent_size=args.latent,
                paper=PAPER, title=f"functa, {args.latent} latents: test PSNR and latent-classifier accuracy")


if __name__ == "__main__":
    main()
