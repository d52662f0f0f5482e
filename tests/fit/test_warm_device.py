"""`fit.loop.warm_device`: a CUDA device's context is made on a daemon thread, once, and never on a CPU."""

import threading

import torch

from fieldlab.fit import loop


def _made(monkeypatch, fail: bool = False):
    calls = []

    def zeros(*args, device=None, **kwargs):
        calls.append((threading.current_thread().name, device))
        if fail:
            raise RuntimeError("no driver")
        return torch.tensor([0.0])

    monkeypatch.setattr(loop.torch, "zeros", zeros)
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
    assert sorted(calls, key=str) == [("fieldlab-cuda-context", torch.device("cuda", 0)),
                                      ("fieldlab-cuda-context", torch.device("cuda", 1))]


def test_nothing_is_started_on_a_cpu(monkeypatch):
    calls = _made(monkeypatch)
    before = threading.active_count()
    loop.warm_device(torch.device("cpu"))
    assert calls == [] and threading.active_count() == before


def test_a_failure_on_the_thread_stays_quiet(monkeypatch):
    """The command's own first CUDA call reports it; the thread raises nothing (no excepthook call)."""
    calls = _made(monkeypatch, fail=True)
    seen = []
    monkeypatch.setattr(threading, "excepthook", lambda args: seen.append(args.exc_value))
    loop.warm_device(torch.device("cuda", 0))
    _join()
    assert len(calls) == 1 and seen == []
