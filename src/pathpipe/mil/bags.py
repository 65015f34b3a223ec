"""Bags: the tile tables of a cohort's slides, read and checked.

A *bag* is one slide: a ``(K, F)`` array of its ``K`` tiles' ``F`` preprocessed
features, made from the slide's ``tile_features.parquet`` (one row per tile:
``tile``, ``l0_x``, ``l0_y`` and numeric feature columns). Labels are class
indices ``0 .. n_classes - 1``.

* :func:`slide_tables`: slide id -> table path, from a mapping or from paths laid
  out as ``results/<slide>/tile_features.parquet``;
* :func:`read_table`, :func:`load_bags`, :func:`read_slide_bags`: reading the
  tables of a labelled cohort or of the slides a saved model is applied to;
* :func:`check_bags`, :func:`check_labels`, :func:`check_positive_int`,
  :func:`check_seed`: validation shared by the model, the baseline and SHAP
  (numpy only).

pandas is imported inside the functions that read tables.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError

__all__ = [
    "NON_FEATURE_COLUMNS",
    "check_bags",
    "check_labels",
    "check_positive_int",
    "check_seed",
    "feature_columns",
    "load_bags",
    "read_slide_bags",
    "read_table",
    "slide_tables",
]

log = logging.getLogger(__name__)

#: Columns of ``tile_features.parquet`` that are not features.
NON_FEATURE_COLUMNS = ("tile", "l0_x", "l0_y")


# ---------------------------------------------------------------------- tables
def slide_tables(tables: Any) -> dict[str, Path]:
    """Slide id -> tile table, from a mapping or from the tables' paths.

    Parameters
    ----------
    tables : mapping of str to path-like, or sequence of path-like
        A mapping is taken as it is (keys as str). Paths are named by their
        folder (:func:`pathpipe.io.storage.slide_id_of`), as the workflow lays
        them out: ``results/<slide>/tile_features.parquet``.

    Returns
    -------
    dict of str to pathlib.Path

    Raises
    ------
    ConfigError
        Two paths in the folder of one slide.
    """
    from pathpipe.io.storage import slide_id_of

    if isinstance(tables, Mapping):
        return {str(k): Path(v) for k, v in tables.items()}
    out: dict[str, Path] = {}
    for p in tables:
        slide = slide_id_of(p)
        if slide in out:
            raise ConfigError(
                f"two tables for slide {slide!r}: {out[slide]} and {p}; expected "
                "results/<slide>/tile_features.parquet, one per slide"
            )
        out[slide] = Path(p)
    return out


def read_table(slide_id: str, path: str | os.PathLike[str]) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"slide {slide_id!r}: cannot read tile features {str(path)!r}: {exc}"
        ) from exc


def feature_columns(slide_ids: list[str], frames: list[Any]) -> list[str]:
    """Numeric non-coordinate columns, identical across slides."""
    import pandas as pd

    def numeric(frame: Any) -> list[str]:
        return [
            c
            for c in frame.columns
            if c not in NON_FEATURE_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
        ]

    columns = numeric(frames[0])
    if not columns:
        raise ConfigError(
            f"slide {slide_ids[0]!r}: tile table has no numeric feature columns besides "
            f"{list(NON_FEATURE_COLUMNS)}; expected tile features"
        )
    for sid, frame in zip(slide_ids[1:], frames[1:], strict=True):
        other = numeric(frame)
        if other != columns:
            diff = sorted(set(columns) ^ set(other))
            raise ConfigError(
                f"slide {sid!r}: feature columns differ from slide {slide_ids[0]!r} "
                f"(e.g. {diff[:5] or 'order'}); expected the same feature extraction settings"
            )
    return columns


def load_bags(
    tables: Mapping[str, str | os.PathLike[str]], sheet: Any
) -> tuple[list[str], list[Any], list[Any]]:
    """Read the tile tables of the slide sheet's slides.

    Parameters
    ----------
    tables : mapping of str to path-like
        ``slide_id`` → its ``tile_features.parquet``. Tables of slides not in
        the sheet are ignored.
    sheet : pandas.DataFrame
        Slide sheet with at least ``slide_id`` and ``label``.

    Returns
    -------
    slide_ids : list of str
        Slides kept, in sheet order.
    frames : list of pandas.DataFrame
        Their tile tables (at least one tile each).
    labels : list
        Their labels.

    Raises
    ------
    ConfigError
        A missing column, a slide without a label or without a table, or a
        class left without slides after excluding slides with no tiles.
    StorageError
        An unreadable table.
    """
    import pandas as pd

    if not isinstance(sheet, pd.DataFrame):
        raise ConfigError(f"sheet is a {type(sheet).__name__}; expected a pandas DataFrame")
    missing = [c for c in ("slide_id", "label") if c not in sheet.columns]
    if missing:
        raise ConfigError(f"slide sheet lacks column(s) {missing}; expected slide_id and label")
    ids = sheet["slide_id"].astype(str).tolist()
    no_label = [
        sid
        for sid, lab in zip(ids, sheet["label"], strict=True)
        if pd.isna(lab) or str(lab).strip() == ""
    ]
    if no_label:
        raise ConfigError(
            f"{len(no_label)} slide(s) have no label: {no_label[:10]}; "
            "expected a label for every slide of the MIL cohort"
        )
    keys = {str(k): v for k, v in tables.items()}
    no_table = [sid for sid in ids if sid not in keys]
    if no_table:
        raise ConfigError(
            f"{len(no_table)} slide(s) of the sheet have no tile feature table: "
            f"{no_table[:10]}; expected one tile_features.parquet per slide"
        )
    kept_ids, frames, labels, empty = [], [], [], []
    for sid, lab in zip(ids, sheet["label"], strict=True):
        frame = read_table(sid, keys[sid])
        if len(frame) == 0:
            empty.append(sid)
            continue
        kept_ids.append(sid)
        frames.append(frame)
        labels.append(lab)
    if empty:
        log.warning(
            "excluding %d slide(s) whose tile table is empty (all tiles filtered out): %s",
            len(empty),
            ", ".join(empty),
        )
    single = [sid for sid, frame in zip(kept_ids, frames, strict=True) if len(frame) == 1]
    if single:
        log.warning(
            "%d slide(s) have a single tile (kept; their attention is trivially 1 and the "
            "slide is classified by that tile alone): %s",
            len(single),
            ", ".join(single[:10]),
        )
    lost = sorted(set(sheet["label"]) - set(labels), key=str)
    if lost or not kept_ids:
        raise ConfigError(
            f"after excluding {len(empty)} slide(s) with no tiles (all tiles filtered out: "
            f"{empty[:10]}), class(es) {lost} have no slide left; expected slides of every class"
        )
    feature_columns(kept_ids, frames)
    return kept_ids, frames, labels


def read_slide_bags(
    tables: Mapping[str, str | os.PathLike[str]], pre: Any, *, doing: str = "skipping"
) -> tuple[list[str], list[Any], list[np.ndarray], list[str]]:
    """Tile tables and preprocessed bags of the slides a saved model is applied to.

    Slides whose table is empty (all tiles filtered out) are skipped with one
    warning naming them, ``"<doing> N slide(s) ..."``.

    Returns
    -------
    ids, frames, bags, empty
        Slide ids with tiles, their tables, their ``pre.transform`` bags, and
        the ids skipped.
    """
    ids, frames, bags, empty = [], [], [], []
    for sid, path in tables.items():
        frame = read_table(str(sid), path)
        if len(frame) == 0:
            empty.append(str(sid))
            continue
        ids.append(str(sid))
        frames.append(frame)
        bags.append(pre.transform(frame))
    if empty:
        log.warning(
            "%s %d slide(s) whose tile table is empty (all tiles filtered out): %s",
            doing,
            len(empty),
            ", ".join(empty),
        )
    return ids, frames, bags, empty


# ------------------------------------------------------------------ validation
def check_bags(
    bags: Sequence[Any], *, what: str = "bags", n_features: int | None = None
) -> list[np.ndarray]:
    """Bags as float32 arrays, after checking shapes and values.

    Parameters
    ----------
    bags : sequence of (K_i, F) array-like
        One bag per slide.
    what : str
        How the bags are named in error messages (``"bags"``, ``"val_bags"``).
    n_features : int, optional
        Expected ``F`` (the model's); default: the first bag's.

    Returns
    -------
    list of (K_i, F) float32 ndarray

    Raises
    ------
    ConfigError
        No bags, a bag that is not 2-D, an empty bag (``K_i = 0``: all tiles of
        the slide were filtered out), a feature count that differs from
        ``n_features`` or between bags, or a non-finite value.
    """
    if isinstance(bags, np.ndarray) or not isinstance(bags, Sequence):
        raise ConfigError(
            f"{what} is a {type(bags).__name__}; expected a list of (tiles, features) arrays"
        )
    if len(bags) == 0:
        raise ConfigError(f"{what} is empty; expected at least one slide")
    out = []
    for i, bag in enumerate(bags):
        x = np.asarray(bag, dtype=np.float32)
        if x.ndim != 2:
            raise ConfigError(
                f"{what}[{i}] has shape {x.shape}; expected a (tiles, features) 2-D array"
            )
        if x.shape[0] == 0:
            raise ConfigError(
                f"{what}[{i}] (slide index {i}) has no tiles (all tiles filtered out); "
                "expected at least one tile per slide"
            )
        if n_features is None:
            n_features = x.shape[1]
        if x.shape[1] != n_features:
            raise ConfigError(
                f"{what}[{i}] has {x.shape[1]} features; expected {n_features} "
                "(the same preprocessed features for every slide)"
            )
        if not np.isfinite(x).all():
            raise ConfigError(
                f"{what}[{i}] (slide index {i}) holds {int((~np.isfinite(x)).sum())} "
                "non-finite values; expected finite, preprocessed features"
            )
        out.append(x)
    return out


def check_labels(
    labels: Any, n: int, *, what: str = "labels", n_classes: int | None = None
) -> np.ndarray:
    """Slide labels as int64 class indices.

    Parameters
    ----------
    labels : (n,) array-like of int
    n : int
        Number of bags the labels belong to.
    what : str
        Name used in error messages.
    n_classes : int, optional
        Labels must lie in ``0 .. n_classes - 1``; default: ``0 .. max``.

    Returns
    -------
    (n,) int64 ndarray

    Raises
    ------
    ConfigError
        Wrong length, non-integer or negative labels, or labels ``>= n_classes``.
    """
    y = np.asarray(labels)
    if y.ndim != 1 or y.shape[0] != n:
        raise ConfigError(f"{what} has shape {y.shape}; expected ({n},), one label per bag")
    if y.dtype.kind == "b" or y.dtype.kind not in "iuf":
        raise ConfigError(f"{what} has dtype {y.dtype}; expected integer class indices 0, 1, …")
    if y.dtype.kind == "f" and not np.array_equal(y, np.round(y)):
        raise ConfigError(f"{what} holds non-integer values; expected class indices 0, 1, …")
    y = y.astype(np.int64)
    hi = n_classes if n_classes is not None else int(y.max()) + 1
    bad = (y < 0) | (y >= hi)
    if bad.any():
        raise ConfigError(
            f"{what} holds {sorted(set(y[bad].tolist()))[:5]}; expected class indices in "
            f"0 .. {hi - 1}"
        )
    return y


def check_positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    """``value`` when it is a positive int (or None if allowed); ConfigError otherwise."""
    if value is None and allow_none:
        return None
    if not (isinstance(value, int | np.integer) and not isinstance(value, bool) and value >= 1):
        expected = "a positive integer or None" if allow_none else "a positive integer"
        raise ConfigError(f"{name}={value!r}; expected {expected}")
    return int(value)


def check_seed(seed: object) -> int:
    """``seed`` when it is a non-negative int; ConfigError otherwise."""
    if not (isinstance(seed, int | np.integer) and not isinstance(seed, bool) and seed >= 0):
        raise ConfigError(f"seed={seed!r}; expected a non-negative integer")
    return int(seed)
