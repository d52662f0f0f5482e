"""The one place that decides how a long phase reports itself: a tqdm bar on stderr (total, rate, ETA)
when the caller shows progress, else one `fieldlab` log line when the phase ends (what `--quiet` asks).

    with phase("labelling points inside/outside the mesh", total=len(points), unit="point", bar=progress) as advance:
        for i in range(0, len(points), block):
            ...
            advance(len(points[i:i + block]))

A bar redraws only when it advances (at most every `MININTERVAL` seconds), so a phase must come in
pieces that each take well under a second; a phase that is one call it cannot split (marching cubes)
is a bar of one step, which at least names what is running.
"""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from typing import Callable, Iterator

log = logging.getLogger("fieldlab")
MININTERVAL = 0.5
"""Seconds between redraws of a bar."""
QUIET_AFTER = 1.0
"""Seconds a phase must last to be logged when no bar is shown: shorter phases would only be noise."""


@contextlib.contextmanager
def phase(desc: str, total: int, *, unit: str = "step", bar: bool = True) -> Iterator[Callable[[int], None]]:
    """A phase of `total` units named `desc`; yields `advance(n, note=None)`, to call as each piece is done
    (`note`: a short status the bar shows after its count, such as a PSNR; the log line does not)."""
    start = time.perf_counter()
    if bar:
        from tqdm.auto import tqdm

        # sys.stderr of the moment (not of import): pytest and embedding programs swap it
        shown = tqdm(total=total, desc=desc, unit=unit, unit_scale=total >= 10_000, file=sys.stderr,
                     mininterval=MININTERVAL, dynamic_ncols=True, leave=False)

        def show(n: int = 1, note: str | None = None) -> None:
            if note is not None:
                shown.set_postfix_str(note, refresh=False)
            shown.update(n)

        try:
            yield show
        finally:
            shown.close()
        return
    done = [0]

    def advance(n: int = 1, note: str | None = None) -> None:
        done[0] += n

    yield advance
    seconds = time.perf_counter() - start
    if seconds >= QUIET_AFTER:  # what was done: a phase a time limit cut says so
        count = f"{done[0]:,}" + (f" of {total:,}" if done[0] < total else "")
        log.info("%s: %s %s(s) in %.1f s", desc, count, unit, seconds)


def in_pieces(desc: str, total: int, size: int, *, unit: str = "step", bar: bool = True,
              seconds: float | None = None, multiple: int = 1) -> Iterator[tuple[int, int]]:
    """(start, stop) of consecutive pieces of range(total), as one phase that advances by each piece once
    the caller asks for the next. Pieces hold `size` units; with `seconds` the first does, and later ones
    are resized to take about that long, in whole `multiple`s (the blocks the work is computed in, so that
    its result does not depend on the pieces)."""
    multiple = max(1, multiple)
    size = max(multiple, size // multiple * multiple)
    with phase(desc, total, unit=unit, bar=bar) as advance:
        start = 0
        while start < total:
            stop = min(start + size, total)
            tick = time.perf_counter()
            yield start, stop
            advance(stop - start)
            if seconds:
                ratio = seconds / max(time.perf_counter() - tick, 1e-6)
                size = max(multiple, int(size * min(4.0, max(0.25, ratio))) // multiple * multiple)
            start = stop
