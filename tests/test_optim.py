"""fieldlab's Adam against torch.optim.Adam: the same parameters step for step, the same state, and no
torch._dynamo import (the point of having it)."""

from __future__ import annotations

import copy
import functools
import math
import subprocess
import sys

import pytest
import torch

from fieldlab._optim import Adam


DEVICES = ["cpu", *(["cuda"] if torch.cuda.is_available() else [])]
"""The fused kernel's devices: its CPU version here, CUDA too where there is one (`pytest tests/test_optim.py`
on a GPU machine checks the path GPU fits take)."""


def _field(seed: int = 0, device: str = "cpu") -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(2, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3)).to(device)


def _steps(field: torch.nn.Module, optimizer: torch.optim.Optimizer, count: int, seed: int = 1) -> None:
    generator = torch.Generator().manual_seed(seed)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 0.97 ** step)
    device = next(field.parameters()).device
    for _ in range(count):
        x = torch.rand(32, 2, generator=generator).to(device)
        loss = (field(x) - x.sum(-1, keepdim=True)).square().mean()
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        scheduler.step()


def test_steps_are_bit_equal_to_torch_adam_on_cpu():
    ours, theirs = _field(), _field()
    _steps(ours, Adam(ours.parameters(), lr=3e-2, betas=(0.8, 0.99), eps=1e-7), 25)
    _steps(theirs, torch.optim.Adam(theirs.parameters(), lr=3e-2, betas=(0.8, 0.99), eps=1e-7), 25)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


def test_weight_decay_steps_are_bit_equal_to_torch_adamw_on_cpu():
    """`train`'s optimizer: the decay is decoupled, as AdamW's (a coupled decay would differ here)."""
    ours, theirs = _field(), _field()
    _steps(ours, Adam(ours.parameters(), lr=3e-2, weight_decay=0.1), 25)
    _steps(theirs, torch.optim.AdamW(theirs.parameters(), lr=3e-2, weight_decay=0.1), 25)
    plain = _field()
    _steps(plain, Adam(plain.parameters(), lr=3e-2), 25)
    for a, b, c in zip(ours.parameters(), theirs.parameters(), plain.parameters()):
        assert torch.equal(a, b) and not torch.equal(a, c)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_weight_decay_equals_torch_fused_adamw(device):
    ours, theirs = _field(device=device), _field(device=device)
    _steps(ours, Adam(ours.parameters(), lr=3e-2, weight_decay=0.1, fused=True), 10)
    _steps(theirs, torch.optim.AdamW(theirs.parameters(), lr=3e-2, weight_decay=0.1, fused=True), 10)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_steps_equal_torch_fused_adam(device):
    """The CUDA path's kernel, which torch also has for CPU tensors."""
    ours, theirs = _field(device=device), _field(device=device)
    _steps(ours, Adam(ours.parameters(), lr=3e-2, eps=1e-7, fused=True), 10)
    _steps(theirs, torch.optim.Adam(theirs.parameters(), lr=3e-2, eps=1e-7, fused=True), 10)
    for a, b in zip(ours.parameters(), theirs.parameters()):
        assert torch.equal(a, b)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_under_grad_scaler_equals_torch_fused_adam_and_skips_an_inf_step(device):
    """The GradScaler hands the fused kernel its scale and inf flag, as it does torch's fused Adam."""
    fields = _field(device=device), _field(device=device)
    optimizers = (Adam(fields[0].parameters(), lr=1e-2, fused=True),
                  torch.optim.Adam(fields[1].parameters(), lr=1e-2, fused=True))
    assert optimizers[0]._step_supports_amp_scaling
    for field, optimizer in zip(fields, optimizers):
        scaler = torch.amp.GradScaler(device, init_scale=2.0 ** 12)
        for step in range(4):
            loss = field(torch.full((4, 2), 0.5 + step, device=device)).square().mean()
            optimizer.zero_grad()
            scaler.scale(loss * (math.inf if step == 2 else 1.0)).backward()
            scaler.step(optimizer)
            scaler.update()
    for a, b in zip(*(f.parameters() for f in fields)):
        assert torch.equal(a, b)
    assert float(optimizers[0].state[fields[0][0].weight]["step"]) == 3  # the inf step was skipped


@pytest.mark.parametrize("first, second", [(Adam, torch.optim.Adam), (torch.optim.Adam, Adam),
                                           (torch.optim.Adam, functools.partial(Adam, fused=True))])
def test_state_dict_round_trips_between_the_two_optimizers(first, second):
    """A checkpoint of either optimizer resumes in the other, and the resumed fit steps on identically (the
    fused kernel's update is the same maths, within float rounding)."""
    field = _field()
    optimizer = first(field.parameters(), lr=1e-2)
    _steps(field, optimizer, 5)
    # deep copies, as a checkpoint file is: a state_dict shares its tensors with the optimizer
    saved, weights = copy.deepcopy(optimizer.state_dict()), copy.deepcopy(field.state_dict())
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
    assert saved["state"][0]["step"].device.type == "cpu" and float(saved["state"][0]["step"]) == 5

    resumed = _field(seed=3)
    resumed.load_state_dict(weights)
    other = second(resumed.parameters(), lr=1e-2)
    other.load_state_dict(saved)
    _steps(resumed, other, 4, seed=2)
    _steps(field, optimizer, 4, seed=2)
    for a, b in zip(field.parameters(), resumed.parameters()):
        torch.testing.assert_close(a, b, rtol=0, atol=0 if not isinstance(second, functools.partial) else 1e-6)


def test_only_parameters_with_gradients_step():
    field = _field()
    frozen = field[2].weight.detach().clone()
    optimizer = Adam(field.parameters(), lr=1e-2)
    field(torch.ones(4, 2)).sum().backward()
    field[2].weight.grad = None
    optimizer.step()
    assert torch.equal(field[2].weight, frozen) and field[2].weight not in optimizer.state
    assert not torch.equal(field[0].weight, _field()[0].weight)


def test_works_under_grad_scaler_and_rejects_a_closure():
    field = _field()
    optimizer = Adam(field.parameters(), lr=1e-2)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 10)
    scaler.scale(field(torch.ones(4, 2)).square().mean()).backward()
    before = field[0].weight.detach().clone()
    scaler.step(optimizer)
    scaler.update()
    assert not torch.equal(field[0].weight, before)
    with pytest.raises(ValueError, match="closure"):
        optimizer.step(lambda: 0.0)


@pytest.mark.parametrize("device", DEVICES)
def test_fused_is_chosen_for_cuda_parameters_only(device):
    assert Adam(_field(device=device).parameters(), lr=1e-3).defaults["fused"] is (device == "cuda")


def test_a_fit_step_does_not_import_torch_dynamo():
    code = ("import sys, torch\n"
            "from fieldlab._optim import Adam\n"
            "field = torch.nn.Linear(2, 3)\n"
            "optimizer = Adam(field.parameters(), lr=1e-3)\n"
            "scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: 1.0)\n"
            "field(torch.ones(4, 2)).sum().backward()\n"
            "optimizer.step(); scheduler.step(); optimizer.zero_grad()\n"
            "optimizer.load_state_dict(optimizer.state_dict())\n"
            "print('torch._dynamo' in sys.modules)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
