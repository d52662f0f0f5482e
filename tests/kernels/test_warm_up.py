"""`kernels.warm_up`: a command's first kernel launch prepared on a thread (CUDA only)."""

from __future__ import annotations

import threading

import pytest

from fieldlab.kernels import fused

NAME = "fieldlab-kernels-warm-up"


def _warm_threads():
    return [t for t in threading.enumerate() if t.name == NAME]


def test_nothing_starts_on_a_cpu():
    fused.warm_up("cpu")
    assert _warm_threads() == []


def test_on_cuda_triton_s_cache_key_is_computed_on_a_thread(monkeypatch):
    pytest.importorskip("triton")
    from triton.runtime.cache import triton_key

    monkeypatch.setattr(fused, "interpreted", lambda: False)  # as on a GPU machine
    triton_key.cache_clear()
    fused.warm_up("cuda")  # only the device's type is read: no GPU is needed to start it
    threads = _warm_threads()
    assert len(threads) == 1 and threads[0].daemon
    threads[0].join(timeout=60)
    assert triton_key.cache_info().currsize == 1
