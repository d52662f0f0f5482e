"""The one learning-rate schedule: each path's arithmetic, float for float, and its shapes."""

import math

import pytest

from fieldlab.fit.schedule import Schedule


def test_exponential_decay_with_a_warm_up_is_fits_schedule_float_for_float():
    steps, lr, final, warmup = 300, 1e-3, 0.1, 25
    decay = math.log(final) / steps
    old = [lr * (min(1.0, (s + 1) / warmup) * math.exp(decay * s)) for s in range(steps)]
    assert Schedule(lr, steps, "exponential", final=final, warmup=warmup).lrs() == old


def test_exponential_decay_without_a_warm_up_is_fit_datasets_list_float_for_float():
    steps, lr, final = 500, 3e-4, 0.05
    decay = math.log(final) / steps
    assert Schedule(lr, steps, "exponential", final=final).lrs() == [lr * math.exp(decay * s) for s in range(steps)]


def test_the_learn_loops_warm_up_and_cosine_round_as_before():
    def old(step, lr, warmup, steps):
        if step < warmup:
            return lr * (step + 1) / warmup
        return lr * 0.5 * (1 + math.cos(math.pi * min(1.0, (step - warmup) / max(1, steps - warmup))))

    for lr, warmup, steps in [(2e-3, 30, 600), (1e-2, 20, 100), (1e-3, 0, 50)]:
        schedule = Schedule(lr, steps, "cosine", final=0.0, warmup=warmup)
        assert [schedule.lr(s) for s in range(steps + 5)] == [old(s, lr, warmup, steps) for s in range(steps + 5)]


def test_miners_cosine_forms_its_angle_first():
    lr, final, steps = 5e-3, 0.3, 300
    old = [lr * (final + (1 - final) * (0.5 * (1 + math.cos(math.pi * k / steps)))) for k in range(steps)]
    assert Schedule(lr, steps, "cosine", final=final, angle_first=True).lrs() == old


def test_warm_up_then_cosine_reaches_the_peak_and_ends_at_the_final_fraction():
    schedule = Schedule(1e-3, 100, "cosine", final=0.1, warmup=10)
    factors = [schedule.factor(s) for s in range(100)]
    assert factors[0] == pytest.approx(0.1) and factors[9] == 1.0 and max(factors) == 1.0
    assert factors[-1] == pytest.approx(0.1, abs=1e-3) and schedule.factor(1000) == pytest.approx(0.1)
    assert Schedule(1.0, 10, "constant", warmup=4).lrs() == [0.25, 0.5, 0.75, 1.0] + [1.0] * 6


def test_an_unknown_decay_is_refused():
    with pytest.raises(ValueError, match="constant, exponential or cosine"):
        Schedule(1e-3, 10, "linear")
