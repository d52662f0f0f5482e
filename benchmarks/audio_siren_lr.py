"""The audio SIREN's learning rate on a GPU: bach.wav (200k parameters, ω₀ = 3000, TF32 + compile, 40 s).

Behind `fit.job.KIND_LR`: the image rate 1e-3 diverges on the full clip, 3e-4 does not. Needs
`.bench_media/bach.npz` (`python benchmarks/fit_modalities.py --prepare ../shared/data`).
"""

import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
from fieldlab.fields import make_config  # noqa: E402
from fieldlab.fit import FitConfig  # noqa: E402
from fieldlab.fit.loop import fit  # noqa: E402
from fieldlab.signals import Signal  # noqa: E402
from fieldlab.signals.audio import FLOAT_NORMALIZATION  # noqa: E402

data = np.load(".bench_media/bach.npz")
signal = Signal.from_array(data["samples"], kind="audio", normalization=FLOAT_NORMALIZATION,
                           extra={"sample_rate": int(data["rate"])})
config = make_config("siren", in_dim=1, out_dim=1, first_omega0=3000.0).with_params(200_000)
out = Path(os.environ.get("OUT", "."))
for lr in (1e-3, 3e-4):
    tick = time.perf_counter()
    result = fit(signal, config, FitConfig(steps=5000, max_seconds=40, lr=lr, device="cuda", precision="tf32",
                                           compile=True, log_every=250), log_path=out / f"log_{lr:g}.jsonl")
    print(f"lr {lr:g}: {result.metrics['steps']} steps, {result.metrics['psnr']:.2f} dB, "
          f"{time.perf_counter() - tick:.1f} s with compilation", flush=True)
