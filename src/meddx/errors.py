"""User-facing errors: one clear line naming the file and the problem.

The CLI catches `MeddxError` and prints `meddx: error: <message>` on stderr with a
non-zero exit code instead of a traceback. `MeddxError` is a `ValueError` (bad input or request
values), so callers that already handle `ValueError` keep working.
"""

from __future__ import annotations

from contextlib import contextmanager
from pathlib import Path
from typing import Iterator


class MeddxError(ValueError):
    """A problem with the user's input or request (not a bug in meddx); a ValueError."""

    exit_code = 2

    def __init__(self, message: str, path: str | Path | None = None):
        self.path = str(path) if path is not None else None
        text = f"{self.path}: {message}" if self.path else message
        # Keep it to one line whatever the underlying library said.
        super().__init__(" ".join(str(text).split()))


class InputError(MeddxError):
    """An input file or folder cannot be read or is not what was expected."""


class DataError(MeddxError):
    """A dataset is inconsistent: missing keys, unknown labels, empty splits..."""


class ConfigError(MeddxError):
    """A command-line option or config file value is invalid."""


class NetworkError(MeddxError):
    """A download failed (no network, bad checksum)."""


@contextmanager
def naming(path: str | Path) -> Iterator[None]:
    """Re-raise a MeddxError that names no file as the same error naming `path` (the input being processed)."""
    try:
        yield
    except MeddxError as e:
        if e.path is not None:
            raise
        err = type(e)(str(e), path)
        err.exit_code = e.exit_code
        raise err from e
