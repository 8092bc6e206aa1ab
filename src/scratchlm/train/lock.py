"""One writer per run directory: `RUN_DIR/.lock`, held by `scratchlm train` for as long as it runs.

The lock file records its holder (pid, host, start time) and stays open under an exclusive `flock`,
which the kernel drops when the holder dies, however it dies (SIGKILL included). So a second trainer:
- finds the flock held: the directory is in use -> RunLockedError naming the holder;
- finds the flock free but a lock file left behind: its writer died without cleaning up. A lock written
  on this host is taken over with a warning. One written on another host is refused (not every shared
  file system passes flocks between hosts, so that process may be alive); the message says which file to
  delete once that run is known to be gone.
Where the file system cannot flock at all, liveness falls back to the recorded pid on this host.

`exclusive_run_dir` is what the trainer uses: the lock, plus the clean-up only a sole writer may do.
"""

from __future__ import annotations

import contextlib
import datetime
import errno
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from scratchlm.errors import RunLockedError
from scratchlm.fileio import make_dirs, remove_stale_temp_files

log = logging.getLogger(__name__)

LOCK_NAME = ".lock"


def read_lock_holder(run_dir: str | os.PathLike) -> dict[str, Any] | None:
    """The holder record of `run_dir/.lock` ({"pid", "host", "started"}), or None if absent or unreadable."""
    try:
        record = json.loads((Path(run_dir) / LOCK_NAME).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return record if isinstance(record, dict) else None


def holder_running(run_dir: str | os.PathLike) -> bool | None:
    """Whether the trainer recorded in `run_dir/.lock` still runs: True or False when it ran on this host, None
    when that cannot be told (no readable record, or another host's process)."""
    holder = read_lock_holder(run_dir)
    if holder is None or holder.get("host") != socket.gethostname():
        return None
    pid = holder.get("pid")
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return None
    return _pid_alive(pid)


class RunLock:
    """`with RunLock(run_dir): ...` -- exclusive use of an existing run directory, released on exit.

    Raises RunLockedError when another live process holds it. Not re-entrant: a second RunLock on the same
    directory conflicts even within one process.
    """

    def __init__(self, run_dir: str | os.PathLike) -> None:
        self.run_dir = Path(run_dir)
        self.path = self.run_dir / LOCK_NAME
        self._fd: int | None = None

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.release()

    @property
    def held(self) -> bool:
        return self._fd is not None

    def acquire(self) -> None:
        if self._fd is not None:
            raise RuntimeError(f"{self.path} is already held by this RunLock.")
        while True:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
            try:
                flocked = _try_flock(fd)
            except BaseException:
                os.close(fd)
                raise
            if flocked is False:
                os.close(fd)
                raise RunLockedError(_in_use_message(self.run_dir, read_lock_holder(self.run_dir)))
            # A holder that was releasing may have unlinked the file we opened: then lock the new file.
            if _same_file(fd, self.path):
                break
            os.close(fd)
        try:
            self._check_previous_holder(flocked)
            _write_record(fd)
        except BaseException:
            os.close(fd)
            raise
        self._fd = fd

    def release(self) -> None:
        """Remove the lock file and drop the lock (a no-op when not held)."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.path):  # unlink while still holding the flock, then let go
                with contextlib.suppress(FileNotFoundError):
                    self.path.unlink()
        finally:
            os.close(fd)

    def _check_previous_holder(self, flocked: bool | None) -> None:
        previous = read_lock_holder(self.run_dir)
        if previous is None:
            return
        host, pid = previous.get("host"), previous.get("pid")
        if host == socket.gethostname() and pid == os.getpid():  # this process's own, released earlier
            return
        if host != socket.gethostname():
            raise RunLockedError(
                f"{self.path} says process {pid} on host {host} is training in {self.run_dir}, which cannot be "
                f"checked from {socket.gethostname()}; if that run is no longer running, delete {self.path} and "
                "try again."
            )
        if flocked is None and isinstance(pid, int) and _pid_alive(pid):  # no flock here: trust the pid
            raise RunLockedError(_in_use_message(self.run_dir, previous))
        log.warning(
            "taking over %s from process %s (started %s), which is no longer running",
            self.path,
            pid,
            previous.get("started", "?"),
        )


@contextlib.contextmanager
def exclusive_run_dir(run_dir: str | os.PathLike) -> Iterator[None]:
    """Create `run_dir` if needed and hold its lock; meanwhile nobody else writes there, so temporary files
    of writers killed mid-write are removed first. A directory created here and still empty at the end
    (the run failed before writing anything) is removed again."""
    run_dir = Path(run_dir)
    created = not run_dir.exists()
    make_dirs(run_dir)
    try:
        with RunLock(run_dir):
            for directory in (run_dir, run_dir / "checkpoints"):
                for path in remove_stale_temp_files(directory):
                    log.info("removed %s, left by an interrupted write", path)
            yield
    finally:
        if created and run_dir.is_dir() and not any(run_dir.iterdir()):
            run_dir.rmdir()


def _try_flock(fd: int) -> bool | None:
    """True: locked; False: another process holds it; None: this file system cannot flock."""
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return False
    except OSError as exc:
        if exc.errno in (errno.ENOLCK, errno.EOPNOTSUPP, errno.EINVAL):
            return None
        raise
    return True


def _same_file(fd: int, path: Path) -> bool:
    try:
        on_disk = os.stat(path)
    except FileNotFoundError:
        return False
    held = os.fstat(fd)
    return (held.st_dev, held.st_ino) == (on_disk.st_dev, on_disk.st_ino)


def _write_record(fd: int) -> None:
    record = {
        "pid": os.getpid(),
        "host": socket.gethostname(),
        "started": datetime.datetime.now().astimezone().isoformat(timespec="seconds"),
    }
    data = (json.dumps(record) + "\n").encode("utf-8")
    os.ftruncate(fd, 0)
    os.pwrite(fd, data, 0)


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, owned by someone else
        return True
    return True


def _in_use_message(run_dir: Path, holder: dict[str, Any] | None) -> str:
    who = "another process"
    if holder:
        who = f"process {holder.get('pid')} on host {holder.get('host')} (started {holder.get('started', '?')})"
    return (
        f"run directory {run_dir} is in use by {who}; wait for that run to finish or stop it, "
        "or train into another --out."
    )
