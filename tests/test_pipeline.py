"""fieldlab._pipeline: reads ahead and writes behind keep order, overlap, surface errors and finish a write in
flight when the caller is interrupted."""

import threading
import time

import pytest

from fieldlab._pipeline import WriteBehind, read_ahead


def test_read_ahead_keeps_order_and_reads_the_next_item_while_the_caller_works():
    started = {}

    def read(item):
        started[item] = time.perf_counter()
        return item * 10

    seen = []
    for item, value in read_ahead([1, 2, 3], read):
        if item == 1:
            time.sleep(0.2)  # the caller's work on item 1; item 2's read has begun meanwhile
            assert 2 in started
        seen.append((item, value))
    assert seen == [(1, 10), (2, 20), (3, 30)]


def test_read_ahead_raises_a_read_error_at_its_item():
    def read(item):
        if item == 2:
            raise ValueError("bad item 2")
        return item

    got = []
    with pytest.raises(ValueError, match="bad item 2"):
        for item, _ in read_ahead([1, 2, 3], read):
            got.append(item)
    assert got == [1]


def test_write_behind_runs_writes_in_order_one_at_a_time():
    order, active, most = [], [0], [0]
    lock = threading.Lock()

    def write(k):
        with lock:
            active[0] += 1
            most[0] = max(most[0], active[0])
        time.sleep(0.02)
        order.append(k)
        with lock:
            active[0] -= 1

    with WriteBehind() as behind:
        for k in range(5):
            behind.submit(write, k)
    assert order == [0, 1, 2, 3, 4] and most[0] == 1


def test_write_behind_reports_a_failed_write_at_the_next_submit():
    def write(k):
        if k == 0:
            raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        with WriteBehind() as behind:
            behind.submit(write, 0)
            behind.submit(write, 1)


def test_an_interrupted_caller_still_finishes_the_write_in_flight():
    written = []

    def write(k):
        time.sleep(0.2)
        written.append(k)

    with pytest.raises(KeyboardInterrupt):
        with WriteBehind() as behind:
            behind.submit(write, 7)
            raise KeyboardInterrupt  # Ctrl-C while chunk 7 is being written
    assert written == [7]


# -- Forked: pictures drawn in child processes -------------------------------------------------------------
@pytest.fixture
def forking(monkeypatch):
    """Fork on this machine whatever its CPU count (CI has 2, where `Forked` would run tasks in turn)."""
    import sys

    from fieldlab import _pipeline

    if not sys.platform.startswith("linux"):
        assert not _pipeline.can_fork()  # elsewhere tasks always run in turn, which the tests below still check
    monkeypatch.setattr(_pipeline, "FORK_MIN_CPUS", 1)
    return _pipeline


def _pid_writer(path):
    import os

    return lambda: path.write_text(str(os.getpid()))


def test_forked_tasks_run_in_children_beside_the_caller(tmp_path, forking):
    import os

    paths = [tmp_path / "a", tmp_path / "b"]
    with forking.Forked([_pid_writer(p) for p in paths]) as tasks:
        assert tasks._pending and all(pid is not None for pid, _ in tasks._pending) == forking.can_fork()
    pids = [int(p.read_text()) for p in paths]
    assert len(set(pids)) == 2 and os.getpid() not in pids if forking.can_fork() else pids == [os.getpid()] * 2
    with forking.Forked([_pid_writer(tmp_path / "c")], parallel=False):
        pass
    assert int((tmp_path / "c").read_text()) == os.getpid()  # parallel=False: in turn, here


def test_a_task_that_fails_or_hangs_in_its_child_runs_again_here(tmp_path, forking, monkeypatch):
    import os

    from fieldlab._safety import replace_file

    parent = os.getpid()
    monkeypatch.setattr(forking, "FORK_TIMEOUT", 0.5)

    def fails_in_a_child():
        if os.getpid() != parent:
            raise RuntimeError("child")
        (tmp_path / "failed").write_text("here")

    def hangs_in_a_child():
        def write(tmp):
            tmp.write_text("partial")
            if os.getpid() != parent:
                time.sleep(30)  # killed by the timeout: its temporary file must not stay behind
        replace_file(tmp_path / "hung.txt", write)

    begin = time.perf_counter()
    forking.Forked([fails_in_a_child, hangs_in_a_child]).wait()
    assert (tmp_path / "failed").read_text() == "here" and (tmp_path / "hung.txt").read_text() == "partial"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["failed", "hung.txt"]
    assert time.perf_counter() - begin < 10

    def broken():
        raise ValueError("the task's own error")

    with pytest.raises(ValueError, match="own error"):  # raised here, as if the task had run in turn
        forking.Forked([broken]).wait()


def test_leaving_by_an_error_ends_the_children(tmp_path, forking):
    import os

    parent = os.getpid()

    def slow():
        if os.getpid() != parent:
            time.sleep(30)

    with pytest.raises(KeyboardInterrupt):
        with forking.Forked([slow]) as tasks:
            pids = [pid for pid, _ in tasks._pending if pid is not None]
            raise KeyboardInterrupt
    for pid in pids:
        with pytest.raises(ChildProcessError):  # reaped: no child outlives the command
            os.waitpid(pid, os.WNOHANG)


def test_a_fit_draws_the_same_pictures_in_children(tmp_path, forking, cli, monkeypatch):
    from PIL import Image

    joined, original = [], forking._joined
    monkeypatch.setattr(forking, "_joined", lambda pid, deadline: joined.append(original(pid, deadline)) or joined[-1])
    args = ["fit", "sample:camera", "--max-size", "32", "--field", "siren", "--steps", "3", "--quiet"]
    status, _, err = cli([*args, "--out", tmp_path / "forked"])
    assert status == 0, err
    assert joined == ([True, True] if forking.can_fork() else [])  # both pictures drawn by a child that ended well
    monkeypatch.setattr(forking, "FORK_MIN_CPUS", 10 ** 6)
    status, _, err = cli([*args, "--out", tmp_path / "in-turn"])
    assert status == 0, err
    for name in ("error.png", "reconstruction.png", "field.safetensors"):
        assert (tmp_path / "forked" / name).read_bytes() == (tmp_path / "in-turn" / name).read_bytes(), name
    with Image.open(tmp_path / "forked" / "training.png") as a, Image.open(tmp_path / "in-turn" / "training.png") as b:
        assert a.size == b.size  # its title carries the fit's seconds, which differ between the runs
    assert not [p for p in (tmp_path / "forked").iterdir() if "partial" in p.name]


def test_a_child_runs_torch_after_the_parent_used_its_thread_pool(tmp_path, forking, monkeypatch):
    """The parent's OpenMP pool does not survive a fork: a parallel op in the child hung until the timeout."""
    import torch

    monkeypatch.setattr(forking, "FORK_TIMEOUT", 10.0)
    big = torch.rand(4_000_000)
    big.mul(2).sum()  # the parent's pool, started
    joined, original = [], forking._joined
    monkeypatch.setattr(forking, "_joined", lambda pid, deadline: joined.append(original(pid, deadline)) or joined[-1])
    forking.Forked([lambda: (tmp_path / "sum").write_text(str(float(big.mul(2).sum())))]).wait()
    assert float((tmp_path / "sum").read_text()) == pytest.approx(float(big.mul(2).sum()), rel=1e-4)
    assert joined == ([True] if forking.can_fork() else [])
