"""`--between-weight 0` is the centres-only outer loss (functa's), without the jittered points' pass a step."""

import pytest
import torch

from fieldlab.fields import make_config
from fieldlab.fit.meta import MetaConfig, MetaLearner
from fieldlab.signals._signal import grid_coords

BOX = [(0, 1), (0, 1)]
GRID8 = grid_coords(BOX, BOX, (8, 8))
FUNCTA = make_config("functa", in_dim=2, out_dim=1, hidden_dim=16, num_layers=2, latent_dim=8)

pytestmark = pytest.mark.usefixtures("one_thread")


def _trained(jitter: float, between_weight: float) -> tuple[MetaLearner, list[torch.Tensor]]:
    torch.manual_seed(0)
    learner = MetaLearner(FUNCTA, GRID8, MetaConfig(steps=3, batch_size=4, lr=1e-3, warmup=1, jitter=jitter,
                                                    between_weight=between_weight, device="cpu"))
    learner.train(torch.rand(8, 64, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1)
    return learner, [p.detach().clone() for p in learner.parameters]


def test_a_zero_between_weight_skips_the_jittered_points_and_trains_as_no_jitter():
    weightless, trained = _trained(jitter=1.0, between_weight=0.0)
    _, centres_only = _trained(jitter=0.0, between_weight=0.03)
    weighted, jittered = _trained(jitter=1.0, between_weight=0.03)
    assert weightless.off_centre(4) is None and weighted.off_centre(4) is not None
    assert all(torch.equal(a, b) for a, b in zip(trained, centres_only))
    assert not all(torch.equal(a, b) for a, b in zip(trained, jittered))
