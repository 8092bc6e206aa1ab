"""One exception family for every mistake a user can make.

Each error carries a single sentence that names the offending argument and says how to fix it. The CLI
prints that sentence (no traceback) and exits with status 2; library callers can catch `ScratchLMError`.
The concrete classes also derive from the builtin a caller would expect (ValueError for bad values,
RuntimeError for an unusable device) so generic `except ValueError` code keeps working.
"""

from __future__ import annotations


class ScratchLMError(Exception):
    """Base class: a problem with the user's input, with a message that says how to fix it."""


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
