"""Never destroy what is not ours: what `--force` may replace, locks on outputs, safe temporary files.

Every folder fieldlab writes (a field DIR, a store, a run folder) holds a marker file, `.fieldlab`, with
JSON `{"kind": "field" | "store" | "run", "version": 1}`. `check_output_folder` is the one rule every
command applies before it writes a folder:

- a non-empty folder is replaced (`--force`) or written into (`--resume`) only when fieldlab wrote it: it
  holds the marker, or (written by an older fieldlab) a field.json, zarr.json or run.json of ours;
- never the current folder, a folder above it, the home folder or the root;
- never a folder that is, or holds, one of the command's inputs.

`OutputLock` holds an exclusive `flock` on `.NAME.lock` beside the target while it is written, so a second
writer stops with one line; the kernel drops it when the process dies, so kill -9 leaves no stale lock.
`replace_file` writes a file under an unpredictable name beside its target and renames it into place.
An interrupt (SIGINT, or SIGTERM, which the CLI turns into one) removes what is half-written on its way out;
what a harder kill leaves (`leftovers`) is removed by the next writer of the same target as it takes the lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from pathlib import Path
from typing import Callable, Iterable, Iterator

from fieldlab import distributed
from fieldlab._errors import UserError

MARKER = ".fieldlab"
_HELD: set[Path] = set()  # lock files this process holds: its own checks do not wait on them
MARKER_VERSION = 1
# What older fieldlab wrote before the marker existed: (file, where its format key sits, the formats).
LEGACY = (("field.json", (), ("fieldlab.field",), "field"),
          ("zarr.json", ("attributes",), ("fieldlab.fieldstore",), "store"),
          (".zattrs", (), ("fieldlab.fieldstore",), "store"),  # a store written with zarr 2
          ("run.json", (), ("fieldlab.run", "fieldlab.sdf-run"), "run"))
# Errors of the final writes that are the user's to fix (a full disk, a read-only or immutable target).
USER_WRITE_ERRORS = {errno.ENOSPC, errno.EACCES, errno.EROFS, errno.EPERM, errno.EISDIR, errno.EDQUOT,
                     errno.ENOTDIR, errno.EEXIST, errno.ELOOP, errno.ENAMETOOLONG}


def write_marker(folder: Path, kind: str) -> None:
    """Mark `folder` (fieldlab's own, just made) as written by fieldlab; an existing marker is kept."""
    path = Path(folder) / MARKER
    if path.is_file() and not path.is_symlink():
        return
    text = json.dumps({"kind": kind, "version": MARKER_VERSION}) + "\n"
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
    with os.fdopen(fd, "w") as file:
        file.write(text)


def owner_kind(folder: Path) -> str | None:
    """The kind of fieldlab folder `folder` is ("field", "store", "run"), or None when fieldlab did not write it."""
    folder = Path(folder)
    marker = _small_json(folder / MARKER)
    if isinstance(marker, dict) and marker.get("kind") in ("field", "store", "run"):
        return marker["kind"]
    for name, keys, formats, kind in LEGACY:
        data = _small_json(folder / name)
        for key in keys:
            data = data.get(key) if isinstance(data, dict) else None
        if isinstance(data, dict) and data.get("format") in formats:
            return kind
    return None


def _small_json(path: Path) -> object:
    """A small JSON file's content, or None for anything else (missing, a link, large, binary, invalid)."""
    try:
        if path.is_symlink() or not path.is_file() or path.stat().st_size > 2**20:
            return None
        return json.loads(path.read_bytes().decode("utf-8"))
    except (OSError, ValueError, RecursionError):
        return None


def check_output_folder(out: Path, *, force: bool = False, resume: bool = False, resumable: bool = False,
                        inputs: Iterable = (), flag: str = "--out") -> None:
    """The one rule for a folder fieldlab is about to write (`force`: replace it; `resume`: write into it;
    `resumable`: the command has --resume): refuse, with one line and before anything is touched, anything
    that is not ours to change."""
    out = Path(out)
    _refuse_protected(out, flag)
    _refuse_inputs(out, inputs, flag)
    if out.is_symlink() and (force or resume) and out.exists():
        raise UserError(f"{flag} {out} is a symbolic link; give the folder it points to")
    if out.exists() and not out.is_dir():
        raise UserError(f"{flag} {out} exists and is not a folder")
    if out.is_dir() and _not_empty(out):
        if not (force or resume):
            how = "pass --resume to continue it or --force to replace it" if resumable else "pass --force to replace it"
            raise UserError(f"{flag} {out} is not empty; {how}")
        if owner_kind(out) is None:
            raise UserError(f"{flag} {out} is a folder fieldlab did not write (no {MARKER} marker); "
                            f"{'--resume' if resume and not force else '--force'} only touches fieldlab's own "
                            "folders: choose a new folder")
    if not out.absolute().parent.is_dir():
        raise UserError(f"the parent folder of {flag} {out} does not exist")
    # Fail now, not after reading a large input (other torchrun ranks write what rank 0 holds).
    if distributed.is_main() and OutputLock(out, flag).path not in _HELD:
        OutputLock(out, flag).acquire().release()


def _not_empty(folder: Path) -> bool:
    try:
        return any(folder.iterdir())
    except OSError as error:
        raise UserError(f"cannot read {folder} ({error.strerror})") from None


def _refuse_protected(out: Path, flag: str) -> None:
    """The current folder, any folder above it, home and the root are never an output folder."""
    target = out.resolve()
    cwd = Path.cwd().resolve()
    if target == cwd:
        raise UserError(f"{flag} {out} is the current folder; fieldlab writes a folder of its own: give a new name")
    if target in cwd.parents:
        raise UserError(f"{flag} {out} holds the current folder; fieldlab writes a folder of its own: give a new name")
    with contextlib.suppress(RuntimeError, KeyError):
        if target == Path.home().resolve():
            raise UserError(f"{flag} {out} is the home folder; give a new folder")
    if target == Path(target.anchor):
        raise UserError(f"{flag} {out} is the root folder; give a new folder")


def _refuse_inputs(out: Path, inputs: Iterable, flag: str) -> None:
    """An output folder that is, or holds, one of the command's inputs would be replaced under it."""
    targets = {Path(os.path.abspath(out)), out.resolve()}
    for given in inputs:
        if given is None or str(given).startswith("sample:"):
            continue
        path = Path(given)
        if not os.path.lexists(path):
            continue
        for place in {Path(os.path.abspath(path)), path.resolve()}:
            if place in targets or targets & set(place.parents):
                raise UserError(f"{flag} {out} {'is' if place in targets else 'holds'} the input {given}; "
                                "write the output elsewhere")


def check_output_file(out: Path, *, force: bool, inputs: Iterable = (), flag: str = "--out") -> None:
    """The rule for a file fieldlab writes: never a folder, never an input or a file inside an input
    folder, an existing file only with `force`."""
    out = Path(out)
    if out.is_dir():
        raise UserError(f"{flag} {out} is a folder; name the file to write inside it")
    if os.path.lexists(out) and not force:
        raise UserError(f"{flag} {out} exists; pass --force to overwrite it")
    for given in inputs:
        path = Path(given)
        if os.path.lexists(path) and os.path.lexists(out):
            resolved, own = path.resolve(), out.resolve()
            if own == resolved or resolved in own.parents:
                raise UserError(f"{flag} {out} is {'the input' if own == resolved else 'a file of the input'} "
                                f"{given}; write the output elsewhere")
    if not out.absolute().parent.is_dir():
        raise UserError(f"the folder of {flag} {out} does not exist")


def refuse_links_inside(folder: Path, what: str) -> None:
    """Refuse a folder holding a symbolic link anywhere inside: writing through it would land outside."""
    for root, dirs, files in os.walk(folder, followlinks=False):
        for name in dirs + files:
            if os.path.islink(os.path.join(root, name)):
                inside = Path(root, name).relative_to(folder)
                raise UserError(f"{what} {folder} holds a symbolic link, {inside}; fieldlab writes only "
                                "inside its own folders: remove the link")


class OutputLock:
    """An exclusive lock on writing `target`, held through `.NAME.lock` beside it (removed on release).

        with OutputLock(out):
            ...  # no other fieldlab process writes `out` meanwhile
    """

    def __init__(self, target: Path, flag: str = "--out"):
        self.target = Path(target)
        self.flag = flag
        self.path = self.target.absolute().parent / f".{self.target.name}.lock"
        self.fd: int | None = None

    def acquire(self) -> OutputLock:
        while self.fd is None:
            fd = self._open()
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 32, 0).decode(errors="replace").strip()
                os.close(fd)
                pid = f" (process {holder})" if holder.isdigit() else ""
                raise UserError(f"{self.flag} {self.target} is being written by another fieldlab process{pid}; "
                                "wait for it to finish or choose another folder") from None
            # The previous holder removes the file as it releases: a lock on that removed file is no lock.
            try:
                same = os.stat(self.path, follow_symlinks=False).st_ino == os.fstat(fd).st_ino
            except FileNotFoundError:
                same = False
            if not same:
                os.close(fd)
                continue
            os.ftruncate(fd, 0)
            os.pwrite(fd, str(os.getpid()).encode(), 0)
            self.fd = fd
            _HELD.add(self.path)
            remove_leftovers(self.target)  # no other writer of the target runs now: what is there is a kill's
        return self

    def _open(self) -> int:
        try:
            return os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644)
        except OSError as error:
            if error.errno == errno.ELOOP:
                raise UserError(f"the lock file {self.path} is a symbolic link; remove it") from None
            if error.errno == errno.ENOENT:
                raise UserError(f"the folder of {self.flag} {self.target} does not exist") from None
            raise UserError(f"cannot lock {self.flag} {self.target}: cannot create {self.path} "
                            f"({error.strerror})") from None

    def release(self) -> None:
        if self.fd is None:
            return
        with contextlib.suppress(OSError):
            os.unlink(self.path)
        os.close(self.fd)  # closing drops the flock
        self.fd = None
        _HELD.discard(self.path)

    def __enter__(self) -> OutputLock:
        return self.acquire()

    def __exit__(self, *exc) -> None:
        self.release()

    def __del__(self) -> None:
        self.release()


_RANDOM = r"[a-z0-9_]{8}"  # the part tempfile.mkstemp and mkdtemp draw


def leftovers(target: Path) -> list[Path]:
    """What a killed writer of `target` can leave: its temporary folder or file (`.NAME.XXXXXXXX.tmp`), the
    old copy it had moved aside (`.NAME.XXXXXXXX.old`), a checkpoint's partial write beside it, and
    `replace_file`'s partial files inside it when it is a folder of ours."""
    target = Path(target).absolute()
    name = re.escape(target.name)
    beside = re.compile(rf"\.{name}\.{_RANDOM}\.(tmp|old)|\.\.{name}\.checkpoint\.{_RANDOM}\.partial\.pt")
    found = [p for p in _listing(target.parent) if beside.fullmatch(p.name)]
    if target.is_dir() and not target.is_symlink() and owner_kind(target) is not None:
        inside = re.compile(rf"\..+\.{_RANDOM}\.partial(\.[^.]+)?")
        found += [p for p in _listing(target) if inside.fullmatch(p.name) and not p.is_dir()]
    return sorted(found)


def remove_leftovers(target: Path) -> None:
    """Remove what a killed writer of `target` left (see `leftovers`); call it holding the target's lock.
    An old copy is removed only when the new one is in place; else it is put back, being the only copy."""
    target = Path(target).absolute()
    for path in leftovers(target):
        with contextlib.suppress(OSError):
            if path.name.endswith(".old") and not os.path.lexists(target):
                os.replace(path, target)
            elif path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()


def replace_folder(new: Path, target: Path) -> Path | None:
    """Put the finished folder `new` at `target`. A folder already there is first renamed aside, to the
    `.NAME.XXXXXXXX.old` that `remove_leftovers` handles if this process is killed, and put back if the swap
    fails; it is returned for the caller to delete (None when `target` did not exist)."""
    if not target.exists():
        os.replace(new, target)
        return None
    old = Path(tempfile.mkdtemp(prefix=f".{target.name}.", suffix=".old", dir=target.absolute().parent))
    os.replace(target, old)
    try:
        os.replace(new, target)
    except OSError:
        os.replace(old, target)
        raise
    return old


def _listing(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError:
        return []


def lock_output(target: Path, flag: str = "--out"):
    """A context manager locking `target` in the main process (other torchrun ranks write disjoint parts
    of what rank 0 holds)."""
    return OutputLock(target, flag) if distributed.is_main() else contextlib.nullcontext()


@contextlib.contextmanager
def user_write_errors(path: Path) -> Iterator[None]:
    """Turn the errors of a final write that the user can fix (full disk, read-only, a folder in the way)
    into one line naming `path`."""
    try:
        yield
    except OSError as error:
        raise write_error(error, path) from None


def write_error(error: OSError, path: Path) -> BaseException:
    """The one-line UserError for `error` writing `path`, or `error` itself when it is not the user's."""
    if error.errno not in USER_WRITE_ERRORS:
        return error
    return UserError(f"cannot write {path}: {error.strerror or error}")


def replace_file(path: Path, write: Callable[[Path], None]) -> None:
    """Write `path` whole or not at all: `write(tmp)` fills a new file of an unpredictable name beside it
    (created exclusively, never through a link; same suffix, so a writer that picks its format by suffix
    still does), which is then renamed over `path`."""
    path = Path(path)
    with user_write_errors(path):
        fd, name = tempfile.mkstemp(prefix=f".{path.stem}.", suffix=f".partial{path.suffix}", dir=path.absolute().parent)
        os.close(fd)
        tmp = Path(name)
        try:
            os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes it private; the result gets the usual mode
            write(tmp)
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
