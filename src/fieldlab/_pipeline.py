"""Overlap a job's reading and writing with its computing, one worker thread for each.

A GPU fits a chunk of fields in a fraction of a second; reading the next chunk (decoding images) and writing
the last one (compressing into zarr) are CPU work that would otherwise leave it idle. `read_ahead` reads item
k + 1 while the caller works on item k; `WriteBehind` writes chunk k while the caller fits chunk k + 1. Each
holds at most one piece of work in flight, so memory stays at about three chunks, and order is kept.
"""

from __future__ import annotations

import concurrent.futures
from typing import Any, Callable, Iterator, Sequence, TypeVar

T = TypeVar("T")
V = TypeVar("V")


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
