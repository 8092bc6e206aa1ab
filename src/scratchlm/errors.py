"""One exception family for every mistake a user can make, and the exit status each one maps to.

Each error carries a single sentence that names the offending argument and says how to fix it. The CLI
prints that sentence (no traceback unless `--debug`) and exits with the class's `exit_code`; library
callers can catch `ScratchLMError`. The concrete classes also derive from the builtin a caller would
expect (ValueError for bad values, RuntimeError for an unusable device, OSError for a failed write) so
generic `except ValueError` code keeps working. The exit statuses are documented, as a table, in
`scratchlm.cli`.
"""

from __future__ import annotations

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug in scratchlm
EXIT_BAD_INPUT = 2  # arguments, config, data / tokenizer / checkpoint files, resume conflicts
EXIT_NONFINITE = 3  # training stopped: NaN/Inf loss or gradients
EXIT_OUT_OF_MEMORY = 4
EXIT_IO = 5  # the operating system refused a read or write
EXIT_LOCKED = 6  # another live process trains in the run directory
EXIT_INTERRUPTED = 130  # Ctrl-C (128 + SIGINT)
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE: the reader of our output went away (`| head`)
EXIT_TERMINATED = 143  # 128 + SIGTERM


class ScratchLMError(Exception):
    """Base class: a problem with the user's input, with a message that says how to fix it."""

    exit_code = EXIT_BAD_INPUT


class ConfigError(ScratchLMError, ValueError):
    """A configuration value or key is invalid."""


class ShapeError(ScratchLMError, ValueError):
    """A tensor argument has the wrong shape, dtype or contents."""


class DataError(ScratchLMError, ValueError):
    """A data file or array cannot be used as given."""


class DeviceError(ScratchLMError, RuntimeError):
    """The requested device does not exist on this machine."""


class CheckpointError(ScratchLMError, RuntimeError):
    """A checkpoint cannot be read, written or applied."""


class NonFiniteLossError(ScratchLMError, RuntimeError):
    """The loss or the gradients became NaN/Inf; `step` is the first bad update when known."""

    exit_code = EXIT_NONFINITE

    def __init__(self, message: str, step: int | None = None) -> None:
        super().__init__(message)
        self.step = step


class OutOfMemoryError(ScratchLMError, RuntimeError):
    """A step needed more device memory than there is."""

    exit_code = EXIT_OUT_OF_MEMORY


class RunLockedError(ScratchLMError, RuntimeError):
    """Another live process is writing to the same run directory."""

    exit_code = EXIT_LOCKED


class WriteError(ScratchLMError, OSError):
    """The operating system refused a write (disk full, permission denied, read-only file system, ...).

    `errno` and `filename` are those of the underlying OSError; `str()` is the one-sentence message.
    """

    exit_code = EXIT_IO

    def __init__(self, message: str, errno: int | None = None, filename: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.errno = errno
        self.filename = filename

    def __str__(self) -> str:
        return self.message


class Terminated(BaseException):
    """SIGTERM arrived (the CLI's handler raises it): unwinds like KeyboardInterrupt, so locks are released
    and partial writes removed."""


class ReportedElsewhere(ScratchLMError):
    """A failure of a torchrun job that another rank (rank 0, or the rank it happened on) reports: the CLI
    exits with `exit_code` and prints nothing, so the job shows one error line, not one per process."""

    def __init__(self, exit_code: int) -> None:
        super().__init__("another process of this torchrun job reports this failure (see its error line).")
        self.exit_code = exit_code


class RankFailedError(ScratchLMError):
    """Rank 0's report of an error another rank met (`all_ranks_agree`); keeps that error's exit status."""

    def __init__(self, message: str, exit_code: int) -> None:
        super().__init__(message)
        self.exit_code = exit_code


class PeerLostError(ScratchLMError, RuntimeError):
    """Another process of the torchrun job died or lost its connection (exits like a SIGTERM'd run: resumable)."""

    exit_code = EXIT_TERMINATED


def first_line(exc: BaseException, limit: int = 200) -> str:
    """The first line of an exception's message (empty for a bare EOFError), cut to `limit` characters."""
    return (str(exc).splitlines() or [""])[0][:limit]


def is_out_of_memory(exc: BaseException) -> bool:
    """Whether `exc` is an allocation the machine refused: Python's MemoryError, PyTorch's CUDA or CPU
    allocator (torch.OutOfMemoryError says "out of memory"; the CPU allocator's RuntimeError "can't allocate
    memory"), recognised by class name and message so this module needs no torch."""
    if isinstance(exc, MemoryError) or any(cls.__name__ == "OutOfMemoryError" for cls in type(exc).__mro__):
        return True
    text = str(exc)
    return "out of memory" in text or "can't allocate memory" in text
