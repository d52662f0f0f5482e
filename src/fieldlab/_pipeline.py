"""Overlap a job's reading and writing with its computing, one worker thread for each.

A GPU fits a chunk of fields in a fraction of a second; reading the next chunk (decoding images) and writing
the last one (compressing into zarr) are CPU work that would otherwise leave it idle. `read_ahead` reads item
k + 1 while the caller works on item k; `WriteBehind` writes chunk k while the caller fits chunk k + 1. Each
holds at most one piece of work in flight, so memory stays at about three chunks, and order is kept.
`Forked` runs CPU-bound tasks that hold the interpreter (drawing pictures) in child processes beside the
caller's own writing, where the machine has cores to spare.
"""

from __future__ import annotations

import concurrent.futures
import logging
import os
import signal
import sys
import time
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
V = TypeVar("V")

log = logging.getLogger("fieldlab")


def read_ahead(items: Sequence[T], read: Callable[[T], V]) -> Iterator[tuple[T, V]]:
    """(item, read(item)) for each item in order; the next item's read runs on a worker thread while the
    caller holds the current one. An error of a read is raised when its item is reached. A caller that stops
    early waits for the one read in flight (it is never abandoned half-done)."""
    if not items:
        return
    with concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fieldlab-read") as pool:
        future = pool.submit(read, items[0])
        for index, item in enumerate(items):
            value = future.result()
            if index + 1 < len(items):
                future = pool.submit(read, items[index + 1])
            yield item, value


class WriteBehind:
    """Runs `write(*args)` calls in order on one worker thread, one at a time.

    `submit` first waits for the write before it, so at most one is in flight and its error (say, a
    refused non-finite chunk) reaches the caller at its next `submit` or at the end of the `with` block.
    Leaving the block, by error or interruption too, waits for the write in flight: a chunk that was
    fitted is not lost to a Ctrl-C that came while it was being written.
    """

    def __init__(self) -> None:
        self._pool = concurrent.futures.ThreadPoolExecutor(1, thread_name_prefix="fieldlab-write")
        self._pending: concurrent.futures.Future | None = None

    def submit(self, write: Callable[..., Any], *args: Any, **kwargs: Any) -> None:
        self.wait()
        self._pending = self._pool.submit(write, *args, **kwargs)

    def wait(self) -> None:
        """Block until the write in flight is done; raise its error, if it had one."""
        pending, self._pending = self._pending, None
        if pending is not None:
            pending.result()

    def __enter__(self) -> WriteBehind:
        return self

    def __exit__(self, kind, error, trace) -> None:
        try:
            if error is None:
                self.wait()
            elif self._pending is not None:
                concurrent.futures.wait([self._pending])  # finish it; the error already raised wins
        finally:
            self._pool.shutdown(wait=True)


FORK_MIN_CPUS = 4
"""`Forked` forks only where this process may use at least this many CPUs: on two cores a child drawing a
picture and the parent writing files take turns on the cores, and nothing is gained (a thread gained nothing
there either: BENCHMARKS.md, "Command overhead of a single fit, second part")."""
FORK_TIMEOUT = 30.0
"""Seconds `Forked.wait` gives a child before it is killed and its task runs in this process instead."""


def can_fork() -> bool:
    """Whether `Forked` runs tasks in child processes here: Linux (fork without exec is unsafe on macOS and
    absent on Windows) with `FORK_MIN_CPUS` usable CPUs."""
    return sys.platform.startswith("linux") and len(os.sched_getaffinity(0)) >= FORK_MIN_CPUS


class Forked:
    """Each task (a call with no arguments, run for its files) in a forked child process, beside what the
    caller does next; `wait()` joins them. Matplotlib holds the interpreter while it draws, so a thread would
    not overlap it with the caller's work, a process does. Where `can_fork()` is False, or `parallel` is,
    `wait()` runs the tasks here in turn.

    A child sees this process's memory as it was at the fork, so a task may only read what is ready then, must
    not touch a GPU (the child inherits no usable CUDA context) and must write its files whole (as
    `_safety.replace_file` does). A child that fails, or is not done within `FORK_TIMEOUT` s, is killed and
    its task runs again here, so a task's error is raised, and its result is the same, as if run in turn.
    Leaving by an error (Ctrl-C too) kills the children still running.
    """

    def __init__(self, tasks: Sequence[Callable[[], Any]], *, parallel: bool = True) -> None:
        self._pending: list[tuple[int | None, Callable[[], Any]]] = []
        fork = parallel and can_fork()
        if fork:
            for stream in (sys.stdout, sys.stderr):  # buffered output would otherwise be written twice
                stream.flush()
        for task in tasks:
            self._pending.append((_fork(task) if fork else None, task))

    def wait(self) -> None:
        pending, self._pending = self._pending, []
        try:
            while pending:
                pid, task = pending[0]
                done = pid is not None and _joined(pid, time.monotonic() + FORK_TIMEOUT)
                pending.pop(0)  # reaped: its pid may be another process's now, and is never signalled again
                if not done:
                    task()
        finally:
            for pid, _ in pending:  # left by an error: none may outlive the command
                _kill(pid)

    def __enter__(self) -> Forked:
        return self

    def __exit__(self, kind, error, trace) -> None:
        if error is None:
            self.wait()
        else:
            for pid, _ in self._pending:
                _kill(pid)
            self._pending = []


def _fork(task: Callable[[], Any]) -> int | None:
    """A child running `task` (exit 0 when it returned), or None where the fork failed."""
    try:
        pid = os.fork()
    except OSError as error:  # no memory or process slots: the task runs here instead
        log.debug("no fork for a task (%s): it runs in this process", error)
        return None
    if pid:
        return pid
    code = 1
    try:
        # SIGTERM (the parent's timeout) and Ctrl-C raise, so a file half-written is removed on the way out
        signal.signal(signal.SIGTERM, _raise_exit)
        signal.signal(signal.SIGINT, signal.default_int_handler)
        torch = sys.modules.get("torch")
        if torch is not None:  # the parent's OpenMP pool did not survive the fork: a parallel op would hang
            torch.set_num_threads(1)
        task()
        code = 0
    except BaseException:  # noqa: BLE001 -- the parent runs the task again and raises its error there
        pass
    finally:
        os._exit(code)  # no exit handlers, no flushes, nothing of the parent's torn down twice


def _raise_exit(signum, frame) -> None:
    raise SystemExit(1)


def _joined(pid: int, deadline: float) -> bool:
    """Whether child `pid` ended well before `deadline` (else it is killed)."""
    while True:
        done, status = os.waitpid(pid, os.WNOHANG)
        if done:
            return os.waitstatus_to_exitcode(status) == 0
        if time.monotonic() > deadline:
            log.debug("a forked task took over %.0f s: killed, and run in this process", FORK_TIMEOUT)
            _kill(pid)
            return False
        time.sleep(0.002)


def _kill(pid: int | None, grace: float = 2.0) -> None:
    """End child `pid`: SIGTERM, which lets it remove what it half-wrote, then SIGKILL after `grace` s."""
    if pid is None:
        return
    try:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + grace
        while not os.waitpid(pid, os.WNOHANG)[0]:
            if time.monotonic() > deadline:
                os.kill(pid, signal.SIGKILL)
                os.waitpid(pid, 0)
                return
            time.sleep(0.002)
    except (ProcessLookupError, ChildProcessError):
        pass
