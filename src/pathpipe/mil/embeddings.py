"""User-provided per-tile embeddings for the "conventional AMIL" row of Table 1.

CellFiNet compares AMIL on interpretable cellular features with AMIL on tile
embeddings from a pretrained network (its "conventional AMIL"). pathpipe does
not ship or download such a network: the user extracts embeddings with the
model of their choice (e.g. a pathology foundation model, or CLAM's
``extract_features_fp.py``) and points the ``mil`` stage at one file per slide.

Accepted files, by suffix (one row per tile, ``D`` embedding dimensions):

==============  ==============================================================
``.h5``         CLAM's layout: dataset ``features`` ``(N, D)`` (``coords``
                ``(N, 2)`` level-0 x, y is optional and not needed); needs h5py
``.pt``         a ``(N, D)`` tensor saved with :func:`torch.save` (CLAM's
                ``pt_files``), read with ``weights_only=True``
``.npy``        a ``(N, D)`` array
``.parquet``    numeric columns are the dimensions; ``tile``, ``l0_x``,
                ``l0_y``, ``x``, ``y`` are ignored
==============  ==============================================================

The embeddings' tiles need not be pathpipe's tiles (AMIL only needs a bag per
slide), so embeddings extracted at another resolution or grid work as well.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError

__all__ = ["EMBEDDING_SUFFIXES", "embedding_paths", "read_embeddings"]

#: File types :func:`read_embeddings` reads.
EMBEDDING_SUFFIXES = (".h5", ".pt", ".npy", ".parquet")
_IGNORED_COLUMNS = ("tile", "l0_x", "l0_y", "x", "y")


def embedding_paths(pattern: str, slide_ids: list[str]) -> dict[str, Path]:
    """``{slide_id: path}`` from a pattern with a ``{slide}`` placeholder.

    Raises
    ------
    ConfigError
        A pattern without ``{slide}``, or missing files (all named at once).
    """
    if "{slide}" not in str(pattern):
        raise ConfigError(
            f"embeddings pattern {pattern!r} has no {{slide}} placeholder; expected e.g. "
            "'embeddings/{slide}.h5'"
        )
    paths = {sid: Path(str(pattern).replace("{slide}", sid)) for sid in slide_ids}
    missing = [f"{sid}: {p}" for sid, p in paths.items() if not p.is_file()]
    if missing:
        raise ConfigError(
            f"{len(missing)} embedding file(s) of pattern {pattern!r} not found: "
            + "; ".join(missing[:10])
            + "; expected one file per slide of the MIL cohort"
        )
    return paths


def read_embeddings(slide_id: str, path: str | os.PathLike[str]) -> np.ndarray:
    """Read one slide's tile embeddings.

    Parameters
    ----------
    slide_id : str
        For error messages.
    path : path-like
        A file of a type in :data:`EMBEDDING_SUFFIXES`.

    Returns
    -------
    (N, D) float32 ndarray
        ``N`` may be 0 (the caller decides what an empty bag means).

    Raises
    ------
    ConfigError
        An unsupported suffix, or h5py missing for ``.h5``.
    StorageError
        An unreadable file, a wrong shape, or non-finite values.
    """
    p = Path(path)
    suffix = p.suffix.lower()
    if suffix not in EMBEDDING_SUFFIXES:
        raise ConfigError(
            f"slide {slide_id!r}: embedding file {str(p)!r} has suffix {suffix!r}; "
            f"expected one of {list(EMBEDDING_SUFFIXES)}"
        )
    try:
        x = _READERS[suffix](p)
    except (OSError, ValueError, KeyError, RuntimeError) as exc:
        raise StorageError(f"slide {slide_id!r}: cannot read embeddings {str(p)!r}: {exc}") from exc
    x = np.asarray(x)
    if x.ndim != 2 or x.dtype.kind not in "iuf":
        raise StorageError(
            f"slide {slide_id!r}: embeddings {str(p)!r} have shape {x.shape} and dtype "
            f"{x.dtype}; expected a numeric (tiles, dimensions) array"
        )
    x = x.astype(np.float32, copy=False)
    if not np.isfinite(x).all():
        raise StorageError(
            f"slide {slide_id!r}: embeddings {str(p)!r} hold "
            f"{int((~np.isfinite(x)).sum())} non-finite values; expected finite numbers"
        )
    return x


def _read_h5(p: Path) -> Any:
    try:
        import h5py
    except ImportError as exc:
        raise ConfigError(
            f"reading {str(p)!r} needs h5py (pip install h5py); expected it installed "
            "for CLAM-style .h5 embeddings"
        ) from exc
    with h5py.File(p, "r") as f:
        if "features" not in f:
            raise KeyError(f"no dataset 'features' (found {sorted(f.keys())})")
        return f["features"][()]


def _read_pt(p: Path) -> Any:
    import torch

    value = torch.load(p, map_location="cpu", weights_only=True)
    if not isinstance(value, torch.Tensor):
        raise ValueError(f"holds a {type(value).__name__}, not a tensor")
    return value.float().numpy()


def _read_parquet(p: Path) -> Any:
    import pandas as pd

    frame = pd.read_parquet(p)
    cols = [
        c
        for c in frame.columns
        if c not in _IGNORED_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
    ]
    if not cols:
        raise ValueError("no numeric embedding columns")
    return frame[cols].to_numpy()


_READERS: Mapping[str, Any] = {
    ".h5": _read_h5,
    ".pt": _read_pt,
    ".npy": lambda p: np.load(p, allow_pickle=False),
    ".parquet": _read_parquet,
}
