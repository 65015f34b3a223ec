"""pathpipe: whole-slide pathology images from tiles to explanations.

Heavy dependencies (torch, open3d, shap, diffusers, radiomics) are imported
inside the stages that need them, so importing :mod:`pathpipe` stays fast.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pathpipe.errors import (
    ConfigError,
    MissingMPPError,
    PathpipeError,
    SlideError,
    SlideOpenError,
    SlideReadError,
    StorageError,
)

try:
    __version__ = version("pathpipe")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0+unknown"

__all__ = [
    "ConfigError",
    "MissingMPPError",
    "PathpipeError",
    "SlideError",
    "SlideOpenError",
    "SlideReadError",
    "StorageError",
    "__version__",
]
