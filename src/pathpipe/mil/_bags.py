"""Validation of bags and slide labels shared by the AMIL model and the baseline (numpy only).

A *bag* is one slide: a ``(K, F)`` array of its ``K`` tiles' ``F`` preprocessed
features. Labels are class indices ``0 .. n_classes - 1``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError

__all__ = ["check_bags", "check_labels", "check_positive_int", "check_seed"]


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
