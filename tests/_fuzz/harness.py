"""Run `fieldlab ARGV` in-process under a time limit and judge it by the bad-input contract: exit 0, or exit 2
with exactly one stderr line `fieldlab: error: …` and nothing written; never a traceback or a hang."""

from __future__ import annotations

import contextlib
import dataclasses
import io
import logging
import os
import resource
import signal
import sys
import tempfile
import time
import traceback
import warnings
from pathlib import Path

from fieldlab.cli.main import main


class TimeLimit(BaseException):
    """Raised by the alarm: a BaseException, so no `except Exception` in fieldlab can swallow it, and not a
    KeyboardInterrupt, which fieldlab's main turns into a clean exit."""


@dataclasses.dataclass
class Outcome:
    argv: list[str]
    code: object = None
    out: str = ""
    err: str = ""
    error: BaseException | None = None
    trace: str = ""
    seconds: float = 0.0

    def report(self) -> str:
        lines = [f"command: fieldlab {' '.join(self.argv)}", f"exit code: {self.code!r} after {self.seconds:.2f} s",
                 f"stderr: {self.err[-2000:]!r}"]
        if self.error is not None:
            lines.append(f"escaped: {type(self.error).__name__}: {str(self.error)[:300]}")
            lines.append(self.trace[-4000:])
        return "\n".join(lines)

    def origin(self) -> str:
        """Where the escaped exception was raised: the innermost frame, and the innermost frame of fieldlab
        when that is another library's ('' when nothing escaped)."""
        if self.error is None or self.error.__traceback__ is None:
            return ""
        frames = traceback.extract_tb(self.error.__traceback__)
        ours = [f for f in frames if "/fieldlab/" in f.filename and "/tests/" not in f.filename]
        where = _frame(frames[-1])
        return where if not ours or ours[-1] is frames[-1] else f"{where} via {_frame(ours[-1])}"


TESTS = Path(__file__).resolve().parents[1]


def _frame(frame: traceback.FrameSummary) -> str:
    path = Path(frame.filename).resolve()
    if path.is_relative_to(TESTS):  # a test's own frame, wherever the clone lies (CI copies it elsewhere)
        short = str(path.relative_to(TESTS.parent))
    else:  # the package's last `fieldlab` folder: src/fieldlab/… or site-packages/fieldlab/…
        parts = path.parts
        last = len(parts) - 1 - parts[::-1].index("fieldlab") if "fieldlab" in parts else len(parts) - 2
        short = "/".join(parts[last:])
    return f"{short}:{frame.lineno} in {frame.name}"


def run_cli(argv: list, time_limit: float) -> Outcome:
    """`fieldlab ARGV` in this process, its output captured, stopped after `time_limit` seconds."""
    outcome = Outcome([str(a) for a in argv])
    out, err = io.StringIO(), io.StringIO()

    def alarm(signum, frame):
        raise TimeLimit(f"still running after {time_limit:g} s")

    native, last_resort = _NativeStderr(), _LastResort()
    previous = signal.signal(signal.SIGALRM, alarm)
    signal.setitimer(signal.ITIMER_REAL, time_limit)
    start = time.perf_counter()
    try:
        # Python warnings are kept apart (pytest records them anyway), so a run judges the same in and out of it.
        with native, last_resort, contextlib.redirect_stdout(out), contextlib.redirect_stderr(err), \
                warnings.catch_warnings(record=True):
            warnings.simplefilter("default")
            main(outcome.argv)
        outcome.code = 0
    except SystemExit as exit_:
        outcome.code = 0 if exit_.code is None else exit_.code
    except BaseException as error:  # noqa: BLE001 - any other escape is what the fuzzer looks for
        outcome.error, outcome.trace = error, traceback.format_exc()
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)
    outcome.seconds = time.perf_counter() - start
    outcome.out, outcome.err = out.getvalue(), err.getvalue() + native.text
    return outcome


class _LastResort(logging.Handler):
    """Python's last-resort logging, which pytest's log capture replaces: a library's warning on a logger
    nobody handles (tifffile's, say) is printed on a person's stderr, so it is counted here too."""

    def __init__(self):
        super().__init__(logging.WARNING)

    def __enter__(self):
        logging.getLogger().addHandler(self)

    def __exit__(self, *exc):
        logging.getLogger().removeHandler(self)

    def emit(self, record):
        logger = logging.getLogger(record.name)
        while logger.parent is not None:  # stop below the root, whose handlers a person does not have
            if logger.handlers or not logger.propagate:
                return
            logger = logger.parent
        sys.stderr.write(self.format(record) + "\n")


class _NativeStderr:
    """Captures what C libraries (libpng, OpenEXR, FFmpeg) write straight to file descriptor 2: a person sees
    those lines too."""

    text = ""

    def __enter__(self):
        self.file = tempfile.TemporaryFile()
        self.saved = os.dup(2)
        os.dup2(self.file.fileno(), 2)
        return self

    def __exit__(self, *exc):
        os.dup2(self.saved, 2)
        os.close(self.saved)
        self.file.seek(0)
        self.text = self.file.read().decode("utf-8", "replace")
        self.file.close()


def broken_contract(outcome: Outcome) -> str:
    """Why `outcome` breaks the contract, or '' when it keeps it."""
    if isinstance(outcome.error, TimeLimit):
        return "hang: " + str(outcome.error)
    if outcome.error is not None:
        return f"traceback: {type(outcome.error).__name__} escaped main at {outcome.origin()}"
    if outcome.code == 0:
        return ""
    if outcome.code != 2:
        return f"exit code {outcome.code!r} (only 0 and 2 are allowed)"
    lines = outcome.err.splitlines()
    if len(lines) != 1 or not lines[0].startswith("fieldlab: error: "):
        return f"exit 2 but stderr is not one 'fieldlab: error:' line ({len(lines)} lines)"
    return ""


def snapshot(folder: Path) -> dict[str, tuple]:
    """Every entry under `folder` (links not followed) with its kind, size and modification time."""
    entries = {}
    for root, dirs, files in os.walk(folder):
        for name in dirs + files:
            path = Path(root, name)
            st = path.lstat()
            entries[str(path.relative_to(folder))] = (st.st_mode >> 12, st.st_size, st.st_mtime_ns)
    return entries


def changes(before: dict[str, tuple], after: dict[str, tuple]) -> list[str]:
    added = sorted(set(after) - set(before))
    removed = sorted(set(before) - set(after))
    changed = sorted(k for k in set(before) & set(after) if before[k] != after[k])
    return [f"+{k}" for k in added] + [f"-{k}" for k in removed] + [f"~{k}" for k in changed]


@contextlib.contextmanager
def address_space_cap(headroom: int):
    """Cap this process's address space at its current size plus `headroom` bytes, so a crafted header that
    makes fieldlab allocate without checking raises MemoryError here instead of exhausting a shared machine."""
    soft, hard = resource.getrlimit(resource.RLIMIT_AS)
    size = int(Path("/proc/self/statm").read_text().split()[0]) * resource.getpagesize()
    cap = size + headroom if hard == resource.RLIM_INFINITY else min(hard, size + headroom)
    resource.setrlimit(resource.RLIMIT_AS, (cap, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_AS, (soft, hard))
