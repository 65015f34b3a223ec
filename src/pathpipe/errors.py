"""The pathpipe error hierarchy.

Every *expected* failure (bad config, unreadable slide, missing MPP, bad store)
raises a subclass of :class:`PathpipeError`. The CLI turns these into one line,
``ERROR: <message>``, and a non-zero exit status without a traceback. Any other
exception is a bug and keeps its traceback.

Messages say what was received and what was expected.
"""

from __future__ import annotations

__all__ = [
    "ConfigError",
    "MissingMPPError",
    "PathpipeError",
    "SlideError",
    "SlideOpenError",
    "SlideReadError",
    "StorageError",
]


class PathpipeError(Exception):
    """Base class of every expected pathpipe failure."""


class ConfigError(PathpipeError):
    """A config file, slide sheet or command-line parameter is invalid."""


class SlideError(PathpipeError):
    """A slide cannot be used. Always names the file and the cause."""

    def __init__(self, path: object, cause: str) -> None:
        self.path = str(path)
        self.cause = cause
        super().__init__(f"slide {self.path!r}: {cause}")


class SlideOpenError(SlideError):
    """The slide file cannot be opened (missing, unsupported or corrupt header)."""


class SlideReadError(SlideError):
    """The slide opened but its pixel data cannot be decoded."""


class MissingMPPError(SlideError):
    """The slide has no physical resolution and none was supplied."""


class StorageError(PathpipeError):
    """A Zarr store, table or image output is missing, incomplete or malformed."""
