"""Crash-safe file writing: write a temporary file beside the target, fsync, then rename over it.

A reader (or a resumed run) sees either the complete old file or the complete new one, never half of
either; on any error the temporary file is removed and the old file is untouched.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from typing import IO, Any


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "wb", **open_kwargs: Any) -> Iterator[IO[Any]]:
    """`with atomic_write("out.bin") as fh: fh.write(...)` -- the file appears at `path` only on success."""
    if "w" not in mode:
        raise ValueError(f"atomic_write needs a write mode such as 'w' or 'wb', got {mode!r}.")
    target = os.path.abspath(os.fspath(path))
    directory = os.path.dirname(target)
    os.makedirs(directory, exist_ok=True)
    fd, tmp_path = tempfile.mkstemp(prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=directory)
    try:
        with os.fdopen(fd, mode, **open_kwargs) as fh:
            yield fh
            fh.flush()
            os.fsync(fh.fileno())
        # mkstemp creates 0600 files; give the result the permissions a plain open() would have.
        os.chmod(tmp_path, 0o666 & ~_current_umask())
        os.replace(tmp_path, target)  # atomic on POSIX within one filesystem
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_path)
        raise


def _current_umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
