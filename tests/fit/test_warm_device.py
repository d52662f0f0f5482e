"""`fit.loop.warm_device`: a CUDA device's context is made on a daemon thread, once, and never on a CPU;
`kernels.fused.prepare_compiler`: Triton's key is computed once, on a thread, and waited for."""

import threading
import time

import pytest
import torch

from fieldlab.fit import loop
from fieldlab.kernels import fused


def _made(monkeypatch, fail: bool = False, available: bool = True):
    calls = []

    def zeros(*args, device=None, **kwargs):
        calls.append((threading.current_thread().name, device))
        if fail:
            raise RuntimeError("no driver")
        return torch.tensor([0.0])

    monkeypatch.setattr(loop.torch, "zeros", zeros)
    monkeypatch.setattr(loop.torch.cuda, "is_available", lambda: available)
    monkeypatch.setattr(fused, "prepare_compiler", lambda: calls.append(("compiler", threading.current_thread().name)))
    monkeypatch.setattr(loop, "_WARMED", set())
    return calls


def _join():
    for thread in threading.enumerate():
        if thread.name == "fieldlab-cuda-context":
            thread.join(timeout=10)


def test_a_cuda_context_is_made_on_a_thread_once_per_device(monkeypatch):
    calls = _made(monkeypatch)
    device = torch.device("cuda", 0)
    loop.warm_device(device)
    loop.warm_device(device)
    loop.warm_device(torch.device("cuda", 1))
    _join()
    assert sorted(calls, key=str) == [("compiler", "fieldlab-cuda-context")] * 2 + [
        ("fieldlab-cuda-context", "cuda:0"), ("fieldlab-cuda-context", "cuda:1")]


@pytest.mark.parametrize("available", [True, False])
def test_auto_asks_for_cuda_on_the_thread(monkeypatch, available):
    """A --device name not yet resolved: whether CUDA is there is asked on the thread, and without it
    nothing is made or prepared."""
    calls = _made(monkeypatch, available=available)
    loop.warm_device("auto")
    _join()
    expected = [("compiler", "fieldlab-cuda-context"), ("fieldlab-cuda-context", "cuda")] if available else []
    assert calls == expected


def test_nothing_is_started_on_a_cpu(monkeypatch):
    calls = _made(monkeypatch)
    before = threading.active_count()
    loop.warm_device(torch.device("cpu"))
    loop.warm_device("cpu")
    assert calls == [] and threading.active_count() == before


def test_a_failure_on_the_thread_stays_quiet(monkeypatch):
    """The command's own first CUDA call reports it; the thread raises nothing (no excepthook call)."""
    calls = _made(monkeypatch, fail=True)
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    loop.warm_device(torch.device("cuda", 0))
    _join()
    assert len(calls) == 2 and seen == []


def test_tritons_key_is_computed_once_on_a_thread_and_waited_for(monkeypatch):
    cache = pytest.importorskip("triton.runtime.cache")
    calls = []

    def key():
        time.sleep(0.2)
        calls.append(threading.current_thread().name)
        return "key"

    monkeypatch.setattr(cache, "triton_key", key)
    monkeypatch.setattr(fused, "_COMPILER", None)
    monkeypatch.delenv("TRITON_INTERPRET", raising=False)
    fused.prepare_compiler()
    fused.prepare_compiler()
    fused.compiler_prepared()  # returns only once the key is there
    assert calls == ["fieldlab-triton-key"]


def test_no_key_is_prepared_for_the_interpreter(monkeypatch):
    monkeypatch.setattr(fused, "_COMPILER", None)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    fused.prepare_compiler()
    assert fused._COMPILER is None
    fused.compiler_prepared()  # nothing to wait for
