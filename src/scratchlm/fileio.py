"""Crash-safe file writing: write a temporary file beside the target, fsync, then rename over it.

A reader (or a resumed run) sees either the complete old file or the complete new one, never half of
either; on any error the temporary file is removed and the old file is untouched. A process killed with
SIGKILL cannot remove its temporary file: `remove_stale_temp_files` clears them once the writer is known
to be gone (the trainer calls it while holding the run directory's lock).

An OSError while writing (disk full, permission denied, read-only file system, ...) becomes a
`WriteError` whose message names the file and the meaning of the errno, e.g. "cannot write
runs/a/checkpoints/last.pt: disk full (ENOSPC); ...".

Test hook: when the environment variable `SCRATCHLM_TEST_WRITE_DELAY_S` holds a number of seconds, every
atomic write sleeps that long after writing its temporary file and before renaming it, so crash tests can
kill a process in the middle of a checkpoint write. Unset (the default) it does nothing.

`signals_deferred` holds Ctrl-C and SIGTERM while a write that an exception cannot cut cleanly (torch.save's
zip writer) runs, then acts on them once the write is done.
"""

from __future__ import annotations

import contextlib
import errno
import os
import re
import shutil
import signal
import stat
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import IO, Any

from scratchlm.errors import DataError, ScratchLMError, WriteError

WRITE_DELAY_ENV = "SCRATCHLM_TEST_WRITE_DELAY_S"
DEFERRED_SIGNALS = (signal.SIGINT, signal.SIGTERM)
_deferring = False  # inside a signals_deferred block (main thread only)
# mkstemp names: ".<target name>.<8 random characters>.tmp"
_TEMP_NAME = re.compile(r"^\..+\.[a-z0-9_]{8}\.tmp$")

# errno -> (what it means to a user, what to do about it)
_MEANINGS: dict[int, tuple[str, str]] = {
    errno.ENOSPC: ("disk full", "free some space or write somewhere else"),
    errno.EDQUOT: ("disk quota exceeded", "free some space or write somewhere else"),
    errno.EACCES: ("permission denied", "choose a location you can write to"),
    errno.EPERM: ("operation not permitted", "choose a location you can write to"),
    errno.EROFS: ("read-only file system", "choose a writable location"),
    errno.ENOENT: ("no such file or directory", "check the path"),
    errno.ENOTDIR: ("a component of the path is not a directory", "check the path"),
    errno.EISDIR: ("it is a directory", "give a file path"),
    errno.ENAMETOOLONG: ("file name too long", "use a shorter path"),
    errno.EMFILE: ("too many open files", "raise the open-file limit (ulimit -n)"),
    errno.EIO: ("input/output error", "check the disk"),
    errno.EFBIG: ("file too large for the file system or the process's file-size limit", "check `ulimit -f`"),
}


def describe_os_error(
    exc: OSError, path: str | os.PathLike | None = None, action: str = "write", note: str = ""
) -> str:
    """One sentence naming the file, what the errno means, and the fix: 'cannot write X: disk full (ENOSPC); ...'.

    `note` (e.g. "the previous file is intact") goes between the cause and the fix.
    """
    where = os.fspath(path) if path is not None else (exc.filename or "a file")
    code = exc.errno
    name = errno.errorcode.get(code, "") if code is not None else ""
    default = os.strerror(code) if code is not None else (str(exc) or type(exc).__name__)
    meaning, fix = _MEANINGS.get(code, (default[:1].lower() + default[1:], ""))
    parts = [f"cannot {action} {where}: {meaning}" + (f" ({name})" if name else ""), note, fix]
    return "; ".join(part for part in parts if part) + "."


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """`with atomic_write("out.bin") as fh: fh.write(...)` -- the file appears at `path` only on success.

    Raises WriteError (an OSError) naming `path` when the operating system refuses the write; the previous
    content of `path`, if any, is then left as it was.
    """
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode such as 'w' or 'wb', got {mode!r}.")
    # A symlink is written through (the rename would replace the link itself), and a device, pipe or socket
    # is refused: renaming over /dev/null or a named pipe would replace it with a file.
    target = os.path.realpath(os.path.abspath(os.fspath(path)))
    if not os.path.isdir(target):  # a directory fails in the rename below, as EISDIR
        refuse_special_file(target, "output")
    directory = os.path.dirname(target)
    tmp_path = None
    try:
        _makedirs(directory)
        fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            _test_delay()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)  # atomic on POSIX within one filesystem
    except BaseException as exc:
        if tmp_path is not None:
            with contextlib.suppress(OSError):
                os.unlink(tmp_path)
        if isinstance(exc, OSError) and not isinstance(exc, ScratchLMError):
            note = "the previous file is intact" if os.path.exists(target) else ""
            raise WriteError(describe_os_error(exc, os.fspath(path), note=note), exc.errno, os.fspath(path)) from exc
        raise


@contextlib.contextmanager
def signals_deferred(signums: tuple[int, ...] = DEFERRED_SIGNALS) -> Iterator[None]:
    """Hold Ctrl-C and SIGTERM until the block ends, then act on the first that arrived as it would have.

    For writes an exception cannot interrupt cleanly: KeyboardInterrupt raised inside torch.save's zip writer
    makes its cleanup raise an unrelated RuntimeError. A second signal while one is held acts at once, so a
    write that hangs can still be stopped; but a second SIGTERM is a copy of the first (torchrun forwards the
    scheduler's) and waits like it. An inner block inside an outer one adds nothing (signals wait for the
    outer one). Does nothing outside the main thread, where Python cannot set signal handlers.
    """
    global _deferring
    if _deferring or threading.current_thread() is not threading.main_thread():
        yield
        return
    handlers = {signum: signal.getsignal(signum) for signum in signums}
    # An ignored signal stays ignored; one whose handler was set outside Python (None) is left alone.
    previous = {signum: h for signum, h in handlers.items() if callable(h) or h == signal.SIG_DFL}
    pending: list[int] = []

    def hold(signum: int, frame: Any) -> None:
        if signum == signal.SIGTERM and signal.SIGTERM in pending:
            # A copy of the same request (a torchrun rank gets the scheduler's SIGTERM and torchrun's): the
            # checkpoint being written still finishes; a hung write is SIGKILLed by torchrun after its grace.
            return
        if pending:  # asked twice (a second Ctrl-C): stop waiting for the write
            _restore_handlers(previous)
            pending.clear()
            _deliver(signum, previous[signum])
            return  # delivered: a handler that returns must not see it again when the block ends
        pending.append(signum)

    for signum in previous:
        signal.signal(signum, hold)
    _deferring = True
    try:
        yield
    finally:
        _deferring = False
        _restore_handlers(previous)
        if pending:
            _deliver(pending[0], previous[pending[0]])


def _restore_handlers(handlers: dict[int, Any]) -> None:
    for signum, handler in handlers.items():
        signal.signal(signum, handler)


def _deliver(signum: int, handler: Callable[[int, Any], Any] | int) -> None:
    """Act on `signum` as `handler` (a Python handler, or SIG_DFL: the default action) would have."""
    if callable(handler):
        handler(signum, None)
    else:
        os.kill(os.getpid(), signum)


def refuse_special_file(path: str | os.PathLike, what: str) -> None:
    """DataError when `path` exists but is not a regular file (symlinks followed).

    A device, FIFO or socket (say a shared file replaced by a link to /dev/zero) could be read forever;
    a missing path is left to the caller, which knows the better message for it.
    """
    try:
        mode = os.stat(path).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return
    if not stat.S_ISREG(mode):
        kind = "a directory" if stat.S_ISDIR(mode) else "a device, pipe or socket"
        raise DataError(f"{what} {os.fspath(path)} is {kind}, not a regular file; point at the file itself.")


def make_dirs(path: str | os.PathLike) -> None:
    """`mkdir -p path`; WriteError naming `path` when the operating system refuses."""
    try:
        _makedirs(os.fspath(path))
    except OSError as exc:
        raise WriteError(describe_os_error(exc, os.fspath(path), action="create"), exc.errno, os.fspath(path)) from exc


def _makedirs(directory: str) -> None:
    try:
        os.makedirs(directory, exist_ok=True)
    except FileExistsError:  # a file sits where a directory of the path should be
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), directory) from None


def remove_stale_temp_files(directory: str | os.PathLike) -> list[Path]:
    """Delete the temporary files `atomic_write` leaves in `directory` when its process is killed.

    Only call this when no other process can be writing there (e.g. while holding the run lock).
    Returns the removed paths.
    """
    removed = []
    directory = Path(directory)
    if not directory.is_dir():
        return removed
    for entry in directory.iterdir():
        if _TEMP_NAME.match(entry.name) and entry.is_file():
            with contextlib.suppress(FileNotFoundError):
                entry.unlink()
                removed.append(entry)
    return removed


def _test_delay() -> None:
    delay = os.environ.get(WRITE_DELAY_ENV)
    if delay:
        time.sleep(float(delay))


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_copy(src: str | os.PathLike, dst: str | os.PathLike) -> None:
    """Copy `src` to `dst` through `atomic_write`: `dst` is the old file or the whole new one, never a part."""
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)
