"""The hash encoding's Triton kernels (`kernels.hashgrid`) against the reference path, through Triton's
interpreter on the CPU; tests/gpu/check_hashgrid.py checks them compiled."""

from __future__ import annotations

import threading

import pytest
import torch

from fieldlab.encodings import HashGridEncoding
from fieldlab.fields import FieldStack, make_config
from fieldlab.kernels import fused
from fieldlab.kernels import hashgrid as hash_kernels

fused.use_interpreter()  # before anything imports the kernels compiled


def _encoding(in_dim, *, table_size=64, levels=4, features=2, base=2, top=16, seed=0):
    torch.manual_seed(seed)
    encoding = HashGridEncoding(in_dim=in_dim, num_levels=levels, features_per_level=features,
                                table_size=table_size, base_resolution=base, max_resolution=top)
    with torch.no_grad():
        encoding.table.uniform_(-1, 1)  # values far from zero, so a wrong row or weight shows
    return encoding


def _coords(n, in_dim, seed=1):
    generator = torch.Generator().manual_seed(seed)
    x = torch.rand(n, in_dim, generator=generator) * 2.4 - 1.2  # some outside [-1, 1]: clamped
    x[0], x[1] = -1.0, 1.0  # both borders: 1 lands in the last cell
    return x


@pytest.mark.parametrize("in_dim,features", [(1, 2), (2, 2), (3, 1), (2, 4)])
def test_values_and_table_gradient_match_the_reference(in_dim, features):
    encoding = _encoding(in_dim, features=features, table_size={1: 8, 2: 64, 3: 200}[in_dim])
    assert encoding.hashed.any() and not encoding.hashed.all()  # both kinds of level are exercised
    x = _coords(300, in_dim)  # not a multiple of the block
    reference = encoding(x)  # CPU: the reference path
    grad = torch.randn_like(reference)
    (table_grad,) = torch.autograd.grad(reference, encoding.table, grad)

    table = encoding.table.detach().clone().requires_grad_(True)
    out = hash_kernels.encode(x, table, encoding.levels)
    (kernel_grad,) = torch.autograd.grad(out, table, grad)
    assert out.shape == reference.shape
    assert torch.allclose(out, reference, atol=1e-6, rtol=1e-6)
    assert torch.allclose(kernel_grad, table_grad, atol=1e-5, rtol=1e-5)
    assert kernel_grad.abs().sum() > 0


def test_a_field_fits_the_same_through_the_kernel(monkeypatch):
    """A hash-grid field's steps with the encoding on the kernels (forced on the CPU) follow the reference."""
    config = make_config("hashgrid", in_dim=2, out_dim=3, table_size=64, num_levels=4, base_resolution=2,
                         max_resolution=16, hidden_dim=16)
    torch.manual_seed(0)
    reference = config.build()
    kernel = config.build()
    kernel.load_state_dict(reference.state_dict())
    x, y = _coords(200, 2), torch.rand(200, 3)

    def fit(model):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(5):
            loss = (model(x) - y).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        return loss.item(), model.encoding.table.detach().clone()

    loss_ref, table_ref = fit(reference)
    calls = []

    def forced(coords, table, levels):
        calls.append(1)
        return hash_kernels.applicable(coords, table)

    monkeypatch.setattr(hash_kernels, "usable", forced)
    loss_kernel, table_kernel = fit(kernel)
    assert len(calls) == 5
    assert loss_kernel == pytest.approx(loss_ref, rel=1e-4)
    assert torch.allclose(table_kernel, table_ref, atol=1e-5)


def test_the_reference_path_is_kept_where_the_kernels_do_not_apply():
    encoding = _encoding(2)
    x = _coords(10, 2)
    table = encoding.table
    assert hash_kernels.applicable(x, table)
    assert not hash_kernels.usable(x, table, encoding.levels)  # the CPU
    assert not hash_kernels.applicable(x.double(), table)
    assert not hash_kernels.applicable(x.requires_grad_(True), table)  # no gradient for the coordinates
    assert not hash_kernels.applicable(_coords(10, 5), _encoding(5).table)
    seen = []
    points = _coords(4, 2)

    def probe(t):
        seen.append(hash_kernels.applicable(points, t))
        return t.sum()

    torch.func.vmap(probe)(table[None].detach().expand(2, *table.shape))
    assert seen == [False]  # inside vmap (the batched path's FieldStack)
    torch.use_deterministic_algorithms(True)
    try:
        assert not hash_kernels.applicable(points, table)
    finally:
        torch.use_deterministic_algorithms(False)


def test_a_stack_of_hash_grids_still_evaluates():
    config = make_config("hashgrid", in_dim=2, out_dim=1, table_size=64, num_levels=3, hidden_dim=8,
                         max_resolution=8)
    stack = FieldStack.from_config(config, 2)
    assert stack(torch.rand(2, 7, 2) * 2 - 1).shape == (2, 7, 1)


@pytest.fixture
def fresh(monkeypatch):
    """No encoding shape prepared yet in this process."""
    monkeypatch.setattr(hash_kernels, "_PREPARED", {})


def test_the_kernels_are_prepared_on_a_thread_and_taken_once_ready(fresh, monkeypatch):
    encoding = _encoding(2)
    x, levels = _coords(10, 2), encoding.levels
    release, launched = threading.Event(), []
    launch = hash_kernels._launch

    def slow_launch(*args, **kwargs):  # the thread's first launches wait for the test
        release.wait(timeout=60)
        launched.append(kwargs["backward"])
        return launch(*args, **kwargs)

    monkeypatch.setattr(hash_kernels, "_launch", slow_launch)
    assert not hash_kernels.ready(x, encoding.table, levels)  # started, not done: the reference path
    assert not hash_kernels.ready(x, encoding.table, levels)  # still preparing: no second thread
    release.set()
    [t.join(timeout=60) for t in threading.enumerate() if t.name == "fieldlab-hash-kernels"]
    assert launched == [False, True]  # the forward and the backward kernel, once each
    assert hash_kernels.ready(x, encoding.table, levels)
    other = _encoding(3)  # another shape of encoding: prepared for itself
    assert not hash_kernels.ready(_coords(10, 3), other.table, other.levels)
    [t.join(timeout=60) for t in threading.enumerate() if t.name == "fieldlab-hash-kernels"]
    assert hash_kernels.ready(_coords(10, 3), other.table, other.levels)
    assert launched == [False, True, False, True]


def test_kernels_that_fail_to_prepare_leave_the_reference_path_for_good(fresh, monkeypatch):
    encoding = _encoding(2)
    x, levels = _coords(10, 2), encoding.levels
    monkeypatch.setattr(hash_kernels, "BACKGROUND", False)

    def broken(*args, **kwargs):
        raise RuntimeError("no kernel here")

    monkeypatch.setattr(hash_kernels, "_launch", broken)
    assert not hash_kernels.ready(x, encoding.table, levels)
    assert not hash_kernels.ready(x, encoding.table, levels)


def test_a_fit_that_changes_paths_between_steps_follows_the_reference(fresh, monkeypatch):
    """The first steps on the reference path while the kernels are prepared, the rest on them: no seam."""
    config = make_config("hashgrid", in_dim=2, out_dim=3, table_size=64, num_levels=4, base_resolution=2,
                         max_resolution=16, hidden_dim=16)
    torch.manual_seed(0)
    reference, switching = config.build(), config.build()
    switching.load_state_dict(reference.state_dict())
    x, y = _coords(200, 2), torch.rand(200, 3)
    release = threading.Event()
    prepare = hash_kernels._prepare
    monkeypatch.setattr(hash_kernels, "_prepare", lambda *a: (release.wait(timeout=60), prepare(*a)))

    def fit(model, steps=6, on_step=None):
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
        losses = []
        for step in range(steps):
            loss = (model(x) - y).square().mean()
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            losses.append(loss.item())
            if on_step:
                on_step(step)
        return losses

    expected = fit(reference)
    paths = []
    usable = hash_kernels.usable

    def on_cpu(coords, table, levels):  # as on CUDA: applicable, then ready
        taken = hash_kernels.applicable(coords, table) and hash_kernels.ready(coords, table, levels)
        paths.append("kernels" if taken else "reference")
        return taken

    monkeypatch.setattr(hash_kernels, "usable", on_cpu)

    def after(step):
        if step == 1:
            release.set()
            [t.join(timeout=60) for t in threading.enumerate() if t.name == "fieldlab-hash-kernels"]

    got = fit(switching, on_step=after)
    monkeypatch.setattr(hash_kernels, "usable", usable)
    assert paths == ["reference", "reference"] + ["kernels"] * 4
    assert got == pytest.approx(expected, rel=1e-5)
