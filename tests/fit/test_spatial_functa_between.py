"""Spatial functa between its samples (issue 20): the jittered outer-loss term also reaches spatial functa,
whose `nearest` readout gives each pixel its own cell and local frame, so between the centres it is only as
smooth as meta-learning makes it."""

import pytest
import torch
from test_meta_between import GRID8, GRID32, smooth_items

from fieldlab.fields import make_config
from fieldlab.fit.meta import MetaConfig, MetaLearner

pytestmark = pytest.mark.usefixtures("one_thread")


def _between_and_fit(jitter: float) -> tuple[float, float]:
    """Held-out PSNR between the centres (32×32 against the true waves) and at the 8×8 centres, of a tiny
    spatial functa with one latent cell per sample (as `fit-dataset` builds it for 8×8 items). Weight 1, as
    in test_meta_between: this tiny network fits the centres to ~30 dB only."""
    torch.manual_seed(0)
    config = make_config("spatial_functa", in_dim=2, out_dim=1, hidden_dim=32, num_layers=3, grid_size=8,
                         latent_channels=4).adapt((8, 8))
    learner = MetaLearner(config, GRID8, MetaConfig(steps=60, lr=1e-3, warmup=10, jitter=jitter,
                                                    between_weight=1.0, device="cpu"))
    learner.train(smooth_items(256, GRID8, seed=0))
    latents, fit = learner.fit_latents(smooth_items(32, GRID8, seed=1))
    with torch.no_grad():
        fine = learner.stack(latents)(GRID32.expand(len(latents), -1, -1))
    error = (fine - smooth_items(32, GRID32, seed=1)).square().mean(dim=(1, 2))
    return float((10 * torch.log10(4 / error)).mean()), float(fit.mean())


def test_jittered_meta_learning_makes_spatial_functa_smooth_between_the_samples():
    between_centres, fit_centres = _between_and_fit(0.0)
    between_jitter, fit_jitter = _between_and_fit(1.0)
    message = (f"between the samples {between_centres:.2f} dB (centres) vs {between_jitter:.2f} dB (jitter); "
               f"at the centres {fit_centres:.2f} vs {fit_jitter:.2f} dB")
    assert between_jitter > between_centres + 3, message  # 18.9 → 26.3 dB when written
    assert fit_jitter > fit_centres - 2, message  # 29.2 → 35.4 dB
