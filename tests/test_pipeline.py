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
