"""One time limit for a whole command (`--max-seconds`), which every phase consults.

The CLI marks when a command started (`command_started`); a job given `--max-seconds S` makes the
limit active for its phases (`limit(S)`), counted from that start, so reading, fitting, the final
evaluation and writing together end within S (plus the little a phase cannot split). A phase asks
`active()`: fitting stops early leaving `reserve` seconds for what follows it, a phase in pieces stops
(or subsamples) when `out_of_time()`, and each says so once (`cut`), in one log line and in the
metrics (`report`).

    with limit(job.max_seconds) as deadline:
        while not done and deadline.left() > deadline.reserve(after=estimate):
            ...
        metrics.update(deadline.report())
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
import math
import time
from typing import Iterator

log = logging.getLogger("fieldlab")

IMPORTED = time.perf_counter()
"""When fieldlab began to import (the package imports this module before anything else). A command run as its own
process counts `--max-seconds` from here (`cli.main`): its imports, torch's above all, take seconds that the
user's clock counts too."""
RESERVE_FRACTION = 0.15
"""Share of the limit kept, at least, for the phases after fitting (evaluation, plots, writing)."""

_COMMAND_START: contextvars.ContextVar[float | None] = contextvars.ContextVar("fieldlab_command_start", default=None)
_ACTIVE: contextvars.ContextVar["Deadline | None"] = contextvars.ContextVar("fieldlab_deadline", default=None)


class Deadline:
    """`seconds` (0: none) from `start` (a `time.perf_counter()` reading)."""

    def __init__(self, seconds: float = 0.0, start: float | None = None):
        self.seconds = float(seconds or 0.0)
        self.start = time.perf_counter() if start is None else start
        self.cuts: list[str] = []

    @property
    def bounded(self) -> bool:
        return self.seconds > 0

    def elapsed(self) -> float:
        return time.perf_counter() - self.start

    def left(self) -> float:
        """Seconds left (inf without a limit; negative once past it)."""
        return self.seconds - self.elapsed() if self.bounded else math.inf

    def reserve(self, after: float = 0.0) -> float:
        """Seconds to keep for the phases that follow: their estimated cost `after`, and at least a share of
        the limit (estimates of writing and plotting are rough)."""
        return max(RESERVE_FRACTION * self.seconds, 1.5 * after) if self.bounded else 0.0

    def bounded_by(self, seconds: float) -> "Deadline":
        """This deadline where it has a limit; else one of `seconds` (0: none): this command's deadline given
        them (a limit chosen after the command began, e.g. a device's default), or a new one from now."""
        if self.bounded or not seconds:
            return self
        if self is UNBOUNDED:  # no limit opened: from the command's start where a command runs
            return Deadline(seconds, command_start())
        self.seconds = float(seconds)
        return self

    def out_of_time(self, keep: float = 0.0) -> bool:
        """Whether fewer than `keep` seconds are left (never without a limit)."""
        return self.bounded and self.left() <= keep

    def cut(self, what: str) -> None:
        """Say once that the phase `what` was cut short by the limit (a log line; `report` lists it)."""
        if what not in self.cuts:
            self.cuts.append(what)
            log.info("--max-seconds %g: %s", self.seconds, what)

    def report(self) -> dict:
        """What the metrics record of the limit: itself and whether it stopped anything."""
        if not self.bounded:
            return {}
        return {"max_seconds": self.seconds, "stopped_by_time_limit": bool(self.cuts),
                **({"time_limit_cuts": list(self.cuts)} if self.cuts else {})}


UNBOUNDED = Deadline(0.0, start=0.0)


def duration(seconds: float) -> str:
    """A time a cut line names: whole minutes from two minutes on ("26 min"), else seconds ("45 s")."""
    return f"{seconds / 60:.0f} min" if seconds >= 120 else f"{seconds:.0f} s"


def command_start() -> float | None:
    return _COMMAND_START.get()


@contextlib.contextmanager
def command_started(since: float | None = None) -> Iterator[None]:
    """Marks the start of a command (the CLI's entry point), from which its `--max-seconds` counts: now, or
    `since` (a `time.perf_counter()` reading: when the process began to import fieldlab)."""
    token = _COMMAND_START.set(time.perf_counter() if since is None else since)
    try:
        yield
    finally:
        _COMMAND_START.reset(token)


@contextlib.contextmanager
def limit(seconds: float | None) -> Iterator[Deadline]:
    """The active deadline for the phases inside: `seconds` from the command's start (or from now when no
    command marked one: a library call). Without `seconds`, an enclosing limit stays in force."""
    outer = _ACTIVE.get()
    if outer is not None and (not seconds or outer.bounded):  # the command's limit is already in force
        yield outer
        return
    deadline = Deadline(seconds or 0.0, command_start())
    token = _ACTIVE.set(deadline)
    try:
        yield deadline
    finally:
        _ACTIVE.reset(token)


def active() -> Deadline:
    """The deadline of the command running now (an unbounded one when none is set)."""
    return _ACTIVE.get() or UNBOUNDED
