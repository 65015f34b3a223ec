"""Cohort preprocessing of tile features, fitted on the training split only.

CellFiNet filters its tile-level features before the MIL model: near-constant
features are dropped, then one feature of each highly correlated pair, and the
rest are standardised. :class:`FeaturePreprocessor` does exactly that, is fitted
on the training slides' tiles only (so nothing leaks from validation or test
slides), and is saved as JSON next to the model that uses it.

Order of the filters:

1. drop features with a non-finite value in more than ``max_nan_fraction`` of the
   training tiles;
2. drop near-constant features: standard deviation below ``min_std`` or a single
   value in more than ``max_mode_fraction`` of the tiles;
3. drop highly correlated features: for each pair with ``|Pearson r|`` above
   ``max_correlation`` (on the training tiles, NaNs replaced by the median), the
   feature that comes later in the column order is dropped (greedy, in column
   order, as in caret's ``findCorrelation`` without the mean-correlation rule);
4. impute the remaining NaNs with the training median and standardise with the
   training mean and standard deviation.

The thresholds are :class:`PreprocessingParams` (config ``mil.preprocessing``).
:func:`preprocess_cohort` is the path-level layer of ``pathpipe mil
preprocess``: it fits the preprocessing on the training slides' tile tables and
writes it as JSON (the mil stage's training fits its own per fold,
:mod:`pathpipe.mil.crossval`).
"""

from __future__ import annotations

import dataclasses
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.params import check_params, param

__all__ = ["FeaturePreprocessor", "PreprocessingParams", "preprocess_cohort"]


@dataclass(frozen=True, kw_only=True)
class PreprocessingParams:
    """Thresholds of the feature filters (module docstring, steps 1-3)."""

    max_nan_fraction: float = param(
        0.5, "drop a feature undefined in more than this fraction of the training tiles", ge=0, le=1
    )
    min_std: float = param(
        1e-8, "drop a feature whose standard deviation over the training tiles is below this", ge=0
    )
    max_mode_fraction: float = param(
        0.95,
        "drop a feature whose most common value covers more than this fraction of the tiles",
        ge=0,
        le=1,
    )
    max_correlation: float = param(
        0.95, "of each pair with |Pearson r| above this, drop the later feature", ge=0, le=1
    )

    def __post_init__(self) -> None:
        check_params(self, "mil.preprocessing")


@dataclass
class FeaturePreprocessor:
    """Feature filter and standardiser (see the module docstring).

    Attributes
    ----------
    params : PreprocessingParams
        Thresholds of the filters.
    input_features : list of str
        Columns seen at fit time.
    features : list of str
        Columns kept, in input order.
    median, mean, std : (K,) float ndarray
        Training statistics of the kept columns.
    dropped : dict
        Why each dropped column went: ``"nan"``, ``"constant"`` or ``"correlated
        with <name>"``.
    """

    params: PreprocessingParams = field(default_factory=PreprocessingParams)
    input_features: list[str] = field(default_factory=list)
    features: list[str] = field(default_factory=list)
    median: np.ndarray = field(default_factory=lambda: np.zeros(0))
    mean: np.ndarray = field(default_factory=lambda: np.zeros(0))
    std: np.ndarray = field(default_factory=lambda: np.zeros(0))
    dropped: dict[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if not isinstance(self.params, PreprocessingParams):
            raise ConfigError(
                f"params is a {type(self.params).__name__}; expected PreprocessingParams"
            )

    # ------------------------------------------------------------------ fit
    def fit(self, table: Any, columns: Sequence[str] | None = None) -> FeaturePreprocessor:
        """Fit on the training tiles.

        Parameters
        ----------
        table : pandas.DataFrame
            One row per training tile.
        columns : sequence of str or None
            Feature columns (default: every numeric column).

        Returns
        -------
        self
        """
        p = self.params
        cols = list(columns) if columns is not None else _numeric_columns(table)
        if not cols:
            raise ConfigError("feature preprocessing: no feature columns were given")
        if len(table) < 2:
            raise ConfigError(
                f"feature preprocessing needs at least 2 training tiles, received {len(table)}"
            )
        x = table[cols].to_numpy(dtype=np.float64, copy=True)
        x[~np.isfinite(x)] = np.nan
        self.input_features = cols
        dropped: dict[str, str] = {}
        keep = []
        for j, name in enumerate(cols):
            v = x[:, j]
            finite = v[~np.isnan(v)]
            if 1 - finite.size / len(v) > p.max_nan_fraction:
                dropped[name] = "nan"
                continue
            if finite.size == 0 or np.std(finite) < p.min_std:
                dropped[name] = "constant"
                continue
            _, counts = np.unique(finite, return_counts=True)
            if counts.max() / finite.size > p.max_mode_fraction:
                dropped[name] = "constant"
                continue
            keep.append(j)
        xk = x[:, keep]
        med = np.nanmedian(xk, axis=0) if keep else np.zeros(0)
        filled = np.where(np.isnan(xk), med, xk)
        if len(keep) > 1:
            with np.errstate(invalid="ignore", divide="ignore"):
                r = np.corrcoef(filled, rowvar=False)
            r = np.nan_to_num(np.abs(r), nan=0.0)
            alive = np.ones(len(keep), bool)
            for a in range(len(keep)):
                if not alive[a]:
                    continue
                later = np.flatnonzero(alive & (r[a] > p.max_correlation))
                for b in later[later > a]:
                    alive[b] = False
                    dropped[cols[keep[b]]] = f"correlated with {cols[keep[a]]}"
            sel = np.flatnonzero(alive)
        else:
            sel = np.arange(len(keep))
        self.features = [cols[keep[i]] for i in sel]
        self.median = med[sel]
        self.mean = filled[:, sel].mean(axis=0)
        self.std = filled[:, sel].std(axis=0)
        self.std[self.std < 1e-12] = 1.0
        self.dropped = dropped
        return self

    # ------------------------------------------------------------- transform
    def transform(self, table: Any) -> np.ndarray:
        """Kept features of ``table``, imputed and standardised.

        Returns
        -------
        (n, K) float32 ndarray
        """
        if not self.features:
            raise ConfigError("feature preprocessing is not fitted (no features kept)")
        missing = [c for c in self.features if c not in table.columns]
        if missing:
            raise ConfigError(
                f"feature table lacks {len(missing)} column(s) the preprocessing was fitted "
                f"with, e.g. {missing[:5]}; expected the same feature extraction settings"
            )
        x = table[self.features].to_numpy(dtype=np.float64, copy=True)
        x[~np.isfinite(x)] = np.nan
        x = np.where(np.isnan(x), self.median, x)
        return ((x - self.mean) / self.std).astype(np.float32)

    def summary(self) -> dict[str, int]:
        """How many features came in, went out for each reason, and remain."""
        reasons = [r.split(" ")[0] for r in self.dropped.values()]
        return {
            "input": len(self.input_features),
            "dropped_nan": reasons.count("nan"),
            "dropped_constant": reasons.count("constant"),
            "dropped_correlated": reasons.count("correlated"),
            "kept": len(self.features),
        }

    # ------------------------------------------------------------------ I/O
    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "pathpipe.FeaturePreprocessor/1",
            **dataclasses.asdict(self.params),
            "input_features": self.input_features,
            "features": self.features,
            "median": self.median.tolist(),
            "mean": self.mean.tolist(),
            "std": self.std.tolist(),
            "dropped": self.dropped,
        }

    def save(self, path: str | os.PathLike[str]) -> None:
        from pathpipe.io.storage import write_json

        write_json(path, self.to_dict())

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> FeaturePreprocessor:
        p = Path(path)
        try:
            d = json.loads(p.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(f"cannot read feature preprocessing {p}: {exc}") from exc
        if d.get("format") != "pathpipe.FeaturePreprocessor/1":
            raise StorageError(
                f"{p} is not a pathpipe feature preprocessing file (format {d.get('format')!r})"
            )
        try:
            params = PreprocessingParams(
                max_nan_fraction=d["max_nan_fraction"],
                min_std=d["min_std"],
                max_mode_fraction=d["max_mode_fraction"],
                max_correlation=d["max_correlation"],
            )
        except (KeyError, ConfigError) as exc:
            raise StorageError(f"{p}: invalid thresholds: {exc}") from exc
        obj = cls(params)
        obj.input_features = list(d["input_features"])
        obj.features = list(d["features"])
        obj.median = np.asarray(d["median"], dtype=np.float64)
        obj.mean = np.asarray(d["mean"], dtype=np.float64)
        obj.std = np.asarray(d["std"], dtype=np.float64)
        obj.dropped = dict(d["dropped"])
        if not (len(obj.features) == len(obj.median) == len(obj.mean) == len(obj.std)):
            raise StorageError(f"{p}: feature names and statistics differ in length")
        return obj


def _numeric_columns(table: Any) -> list[str]:
    import pandas as pd

    return [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])]


def preprocess_cohort(
    tables: Any,
    train: Sequence[str],
    out: str | os.PathLike[str],
    *,
    params: PreprocessingParams | None = None,
) -> FeaturePreprocessor:
    """Fit the preprocessing on the training slides' tile tables and write it as JSON.

    Parameters
    ----------
    tables : mapping of str to path-like, or sequence of path-like
        The slides' ``tile_features.parquet`` (see
        :func:`~pathpipe.mil.bags.slide_tables`); every column but ``tile``,
        ``l0_x`` and ``l0_y`` is a feature.
    train : sequence of str
        Ids of the training slides, each with a table.
    out : path-like
        JSON to write (:meth:`FeaturePreprocessor.save`).
    params : PreprocessingParams, optional

    Returns
    -------
    FeaturePreprocessor
    """
    import pandas as pd

    from pathpipe.mil.bags import NON_FEATURE_COLUMNS, read_table, slide_tables

    by_slide = slide_tables(tables)
    missing = [s for s in train if s not in by_slide]
    if missing:
        raise ConfigError(
            f"training slides {missing} have no tile_features.parquet among the tables "
            f"(slides are named by the folder: {sorted(by_slide)[:5]}...)"
        )
    frame = pd.concat([read_table(s, by_slide[s]) for s in train], ignore_index=True)
    columns = [c for c in frame.columns if c not in NON_FEATURE_COLUMNS]
    pre = FeaturePreprocessor(params or PreprocessingParams()).fit(frame, columns)
    pre.save(out)
    return pre
