"""The stepper contract: every engine keeps it, and an engine's state carries a fit across an interruption."""

import pytest
import torch

from fieldlab.fields import FieldStack, make_config
from fieldlab.fit import FitConfig, Fitter
from fieldlab.fit.batched import init_params
from fieldlab.fit.engine import FusedEngine, StackEngine, Stepper
from fieldlab.fit.points import distinct_subset
from fieldlab.fit.schedule import Schedule

CONFIG = make_config("siren", in_dim=2, out_dim=1, hidden_dim=8, num_layers=1)
COORDS = torch.rand(32, 2, generator=torch.Generator().manual_seed(0)) * 2 - 1
VALUES = torch.rand(4, 32, 1, generator=torch.Generator().manual_seed(1)) * 2 - 1
ROWS = torch.arange(4)


def _engine(steps=8) -> StackEngine:
    template, params, buffers = init_params(CONFIG, ROWS.numpy(), "random", 0)
    return StackEngine(FieldStack(template, params, buffers), COORDS, VALUES,
                       Schedule(1e-2, steps, "exponential", final=0.1).lrs(), betas=(0.9, 0.999), eps=1e-8,
                       precision="fp32", points=lambda step, active: distinct_subset(ROWS[active], step, 32, 12, 0))


def test_every_engine_keeps_the_stepper_contract():
    fitter = Fitter(CONFIG.build(), COORDS, VALUES[0], FitConfig(steps=3, device="cpu"), lr=1e-3)
    assert isinstance(_engine(), Stepper) and isinstance(fitter, Stepper)
    members = [m for m in dir(Stepper) if not m.startswith("_")] + ["name"]
    assert all(hasattr(FusedEngine, m) for m in members if m != "step_count")


def test_a_stack_engine_resumed_from_its_state_steps_on_as_the_uninterrupted_one():
    whole = _engine()
    whole.run(0, 3)
    whole.select(torch.tensor([0, 2, 3]))
    whole.run(3, 8)
    first = _engine()
    first.run(0, 3)
    first.select(torch.tensor([0, 2, 3]))
    first.run(3, 5)
    resumed = _engine()  # all four fields: the state says which stay
    resumed.load_state_dict(first.state_dict())
    resumed.run(5, 8)
    assert torch.equal(resumed.active, torch.tensor([0, 2, 3]))
    assert all(torch.equal(resumed.parameters()[k], v) for k, v in whole.parameters().items())


def test_a_fitter_runs_on_from_where_it_is_as_its_steps_would():
    def fitter():
        torch.manual_seed(0)
        return Fitter(CONFIG.build(), COORDS, VALUES[0], FitConfig(steps=6, batch_size=8, device="cpu"), lr=1e-2)

    stepped, run = fitter(), fitter()
    for _ in range(5):
        stepped.step()
    run.run(0, 2)
    run.run(2, 5)
    assert all(torch.equal(run.parameters()[k], v) for k, v in stepped.parameters().items())
    resumed = fitter()
    resumed.load_state_dict(run.state_dict())
    resumed.step()
    stepped.step()
    assert all(torch.equal(resumed.parameters()[k], v) for k, v in stepped.parameters().items())


def test_a_compiling_first_step_is_not_taken_as_a_steps_cost():
    """The time limit estimates the final evaluation from a step's cost; a first step that compiled
    (--compile, or the fused kernel's first launch) made that estimate exceed the limit, and the fit stopped
    after one step."""
    import dataclasses

    fitter = Fitter(CONFIG.build(), COORDS, VALUES[0], FitConfig(steps=3, device="cpu"), lr=1e-3)
    fitter.config = dataclasses.replace(fitter.config, compile=True)  # the first step takes the compile path
    fitter.step()
    assert fitter.step_seconds == 0.0 and fitter.compile_seconds > 0
    fitter.step()
    assert fitter.step_seconds > 0


def test_a_final_evaluation_past_half_the_limit_takes_a_part_of_the_samples():
    """Under a limit, the fit keeps what the whole evaluation needs where that is at most `whole_share` of the
    limit (and then evaluates every sample); past it, at most `final_share`, and `final_samples` gives as many
    samples as 40% of the time left evaluates."""
    from fieldlab import _deadline
    from fieldlab.fit import loop

    with _deadline.limit(100.0):
        fitter = Fitter(CONFIG.build(), COORDS, VALUES[0], FitConfig(steps=3, device="cpu", max_seconds=100),
                        lr=1e-3)
        fitter.step_seconds = 0.01  # a step's time over its points: evaluating one point costs 0.01/n · after_share
        per_point = fitter.evaluation_seconds(1)
        small = int(0.4 * 100 / per_point)  # 40 s of evaluation: whole, with its margin kept
        fitter.final_points = small
        assert fitter.keep_seconds() >= fitter.step_seconds + 1.5 * 40 - 1e-6
        assert fitter.final_samples(small) == small
        large = int(10 * 100 / per_point)  # 1,000 s: a part, and the fit keeps at most 40 s of the limit
        fitter.final_points = large
        assert fitter.keep_seconds() == pytest.approx(fitter.step_seconds + loop.Fitter.final_share * 100)
        part = fitter.final_samples(large)
        left = fitter.deadline.left()
        assert part < large and fitter.evaluation_seconds(part) == pytest.approx(0.4 * left, rel=1e-3)
        assert fitter.final_samples(loop.FINAL_MIN_SAMPLES * 10**6) >= loop.FINAL_MIN_SAMPLES
    unbounded = Fitter(CONFIG.build(), COORDS, VALUES[0], FitConfig(steps=3, device="cpu", max_seconds=0), lr=1e-3)
    unbounded.step_seconds = 1.0
    assert unbounded.final_samples(10**9) == 10**9  # no limit: every sample, whatever it costs



def test_a_stack_engines_prediction_in_pieces_of_points_is_the_whole_one(monkeypatch):
    from fieldlab.fit import engine as engine_module

    stack = _engine()
    stack.run(0, 2)
    whole = stack.predict(COORDS)
    calls = []
    forward = stack.stack.forward
    monkeypatch.setattr(stack.stack, "forward", lambda x, *a, **k: calls.append(x.shape[1]) or forward(x, *a, **k))
    monkeypatch.setattr(engine_module, "PREDICT_POINTS", 4 * 10)  # 4 fields: 10 points a piece
    pieces = stack.predict(COORDS)
    assert calls == [10, 10, 10, 2] and pieces.shape == whole.shape == (4, 32, 1)
    torch.testing.assert_close(pieces, whole, rtol=0, atol=1e-6)
