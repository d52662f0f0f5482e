"""Checks every registered field gets automatically: driven by the registry."""

import pytest
import torch

from fieldlab.fields import FieldStack, get_config_class, list_fields, make_config
from fieldlab.fit import FitConfig, Fitter

FIELDS = list_fields()


def small(name, **options):
    return make_config(name, in_dim=2, out_dim=3, **options).with_params(4000).adapt((24, 24))


@pytest.mark.parametrize("name", FIELDS)
def test_forward_backward_every_parameter_gets_a_gradient(name):
    field = small(name).build()
    coords = torch.rand(2, 7, 2) * 2 - 1
    values = field(coords)
    assert values.shape == (2, 7, 3)
    assert torch.isfinite(values).all()
    values.square().sum().backward()
    for pname, p in field.named_parameters():
        assert p.grad is not None, f"{name}: {pname} gets no gradient"
        assert torch.isfinite(p.grad).all(), f"{name}: {pname} has a non-finite gradient"
        assert p.grad.abs().sum() > 0, f"{name}: {pname} gets a zero gradient"


@pytest.mark.parametrize("name", FIELDS)
def test_num_params_counts_the_built_module(name):
    config = small(name)
    assert config.num_params() == sum(p.numel() for p in config.build().parameters())


@pytest.mark.parametrize("name", FIELDS)
@pytest.mark.parametrize("target", [20_000, 200_000])
def test_with_params_solves_the_budget(name, target):
    config = make_config(name, in_dim=2, out_dim=3).adapt((512, 512)).with_params(target)
    knob = type(config).size_knob
    count = config.num_params()
    # The knob is an integer: the count is the closest reachable one, whichever side of the target; a width
    # from 64 up is a multiple of 8 (aligned GPU matrices), the closest such one.
    value = getattr(config, knob)
    step = 8 if knob == "hidden_dim" and value >= 64 else 1
    assert value % step == 0
    neighbours = [config.replace(**{knob: value + d}).num_params() for d in (-step, step) if value + d > 0]
    assert all(abs(count - target) <= abs(n - target) for n in neighbours)
    assert abs(count - target) / target < 0.1


@pytest.mark.parametrize("name", [n for n in FIELDS if get_config_class(n).batched])
def test_batched_fits_equal_single_fits(name, camera32):
    """N fields fitted together through the batched path equal the same N fitted one by one.

    In float64 and over few steps: the first steps of Gauss and WIRE are chaotic (a rounding difference
    grows about tenfold per step), so a longer or float32 run would compare rounding, not the path.
    Fields grown by their own trainer (MINER: batched = False) have no stack; fit-dataset refuses them
    (tests/datasets/test_every_field.py).
    """
    config = make_config(name, in_dim=2, out_dim=1).with_params(3000).adapt(camera32.shape)
    coords, values = camera32.coords().double(), camera32.flat_values().double()
    fields = [config.build().double() for _ in range(3)]
    stack = FieldStack.from_modules(fields)
    fit_config = FitConfig(steps=8, device="cpu", batch_size=300, seed=1)
    lr = type(config).lr
    singles = []
    for field in fields:
        fitter = Fitter(field, coords, values, fit_config, lr=lr)
        while not fitter.should_stop():
            fitter.step()
        singles.append(fitter.predict())
    batched = Fitter(stack, coords.expand(3, -1, -1), values.expand(3, -1, -1), fit_config, lr=lr)
    while not batched.should_stop():
        batched.step()
    together = batched.predict()
    for i in range(3):
        assert torch.allclose(together[i], singles[i], atol=1e-6), name
        assert torch.allclose(stack.field(i).double()(coords), singles[i], atol=1e-6)
    assert not torch.allclose(singles[0], singles[1])  # the fields really are different


def test_shared_init_gives_identical_fields():
    stack = FieldStack.from_config(get_config_class("siren")(hidden_dim=8), 2, shared_init=True)
    x = torch.rand(1, 5, 2).expand(2, -1, -1)
    y = stack(x)
    assert torch.equal(y[0], y[1])
