"""Importance tables of slide-level SHAP values: per feature and per feature family.

* :func:`shap_importance`: per feature, the mean ``|φ_j|`` over the training
  (development) slides and over the test slides, and the direction of its
  effect: the sign of the Spearman correlation, over the training slides,
  between the aggregated representation ``r_j`` (the attention-weighted mean
  feature, :func:`~pathpipe.mil.explain_shap.slide_representation`) and ``φ_j``
  (``"+"``: higher values push towards ``classes[1]``; ``"0"`` when undefined).
* :func:`shap_family_importance`: the same for the sum of each feature family's
  values (:func:`feature_families`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError

__all__ = ["feature_families", "shap_family_importance", "shap_importance"]


def _spearman_columns(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Spearman correlation of each column of ``a`` with the same column of ``b`` (NaN if undefined)."""
    from scipy.stats import rankdata

    ra, rb = rankdata(a, axis=0), rankdata(b, axis=0)
    ra -= ra.mean(axis=0)
    rb -= rb.mean(axis=0)
    den = np.sqrt((ra**2).sum(axis=0) * (rb**2).sum(axis=0))
    with np.errstate(invalid="ignore", divide="ignore"):
        r = (ra * rb).sum(axis=0) / den
    return np.where(den > 1e-12, np.clip(r, -1.0, 1.0), np.nan)


#: Families of the tile-level features (not aggregates of a nuclear feature), by prefix.
_TILE_FAMILIES = (
    ("graph_", "graph"),
    ("nn_dist", "neighbours"),
    ("n_", "composition"),
    ("density_", "composition"),
    ("fraction_", "composition"),
)


def feature_families(names: Sequence[str]) -> list[str]:
    """The CellFiNet family of each tile feature name.

    A tile feature ``<nuclear>_med`` / ``<nuclear>_std`` (also per phenotype,
    ``<nuclear>_<phenotype>_med``) takes the family of its nuclear feature
    (geometry, intensity, texture, morphology, chromatin, boundary;
    ``docs/features.md``); the tile-level features are ``composition``
    (counts, densities, fractions), ``neighbours`` (nearest-neighbour
    distances) and ``graph`` (cell-graph statistics). Anything else (e.g.
    embedding dimensions) is ``other``.

    Parameters
    ----------
    names : sequence of str

    Returns
    -------
    list of str
    """
    from pathpipe.features.params import FeatureParams
    from pathpipe.features.run import feature_specs

    nuclear = sorted(
        ((spec.name, spec.family) for spec in feature_specs(FeatureParams())),
        key=lambda item: -len(item[0]),
    )
    out = []
    for name in map(str, names):
        family = next((f for prefix, f in _TILE_FAMILIES if name.startswith(prefix)), None)
        if family is None:
            family = next((f for n, f in nuclear if name.startswith(n + "_")), "other")
        out.append(family)
    return out


def shap_family_importance(
    values_train: Any, families: Sequence[str], *, values_test: Any | None = None
) -> Any:
    """Mean ``|SHAP|`` of each feature family, its features' SHAP values summed per slide.

    SHAP values are additive, so the sum over a family's features is the
    family's contribution to a slide's log-odds; with hundreds of correlated
    features this reads more reliably than single-feature ranks.

    Parameters
    ----------
    values_train : (n, F) array-like
        Slide SHAP values of the training slides.
    families : sequence of str
        ``F`` family names (:func:`feature_families`).
    values_test : (m, F) array-like, optional

    Returns
    -------
    pandas.DataFrame
        One row per family, by decreasing ``mean_abs_shap_train``: ``family``,
        ``n_features``, ``mean_abs_shap_train``, ``mean_abs_shap_test`` (NaN
        without test slides), ``share_train`` (the family's fraction of the
        summed mean ``|SHAP|`` over families).
    """
    import pandas as pd

    v = np.asarray(values_train, dtype=np.float64)
    fam = np.asarray([str(f) for f in families])
    if v.ndim != 2 or v.shape[1] != len(fam) or v.shape[0] < 1:
        raise ConfigError(
            f"values_train {v.shape} with {len(fam)} families; expected (n >= 1, {len(fam)})"
        )
    t = None if values_test is None else np.asarray(values_test, dtype=np.float64)
    rows = []
    for name in dict.fromkeys(fam.tolist()):
        cols = fam == name
        rows.append(
            {
                "family": name,
                "n_features": int(cols.sum()),
                "mean_abs_shap_train": float(np.abs(v[:, cols].sum(axis=1)).mean()),
                "mean_abs_shap_test": (
                    float(np.abs(t[:, cols].sum(axis=1)).mean())
                    if t is not None and len(t)
                    else math.nan
                ),
            }
        )
    table = pd.DataFrame(rows).sort_values("mean_abs_shap_train", ascending=False)
    total = table["mean_abs_shap_train"].sum()
    table["share_train"] = table["mean_abs_shap_train"] / total if total > 0 else math.nan
    return table.reset_index(drop=True)


def shap_importance(
    values_train: Any,
    repr_train: Any,
    feature_names: Sequence[str],
    *,
    values_test: Any | None = None,
) -> Any:
    """Mean ``|SHAP|`` per feature with the direction of its effect (module docstring).

    Parameters
    ----------
    values_train : (n, F) array-like
        Slide SHAP values of the training slides, ``n >= 1``.
    repr_train : (n, F) array-like
        Their aggregated representations (:func:`slide_representation`).
    feature_names : sequence of str
        ``F`` names.
    values_test : (m, F) array-like, optional
        Slide SHAP values of the test slides; none (or ``m = 0``) gives NaN.

    Returns
    -------
    pandas.DataFrame
        One row per feature, by decreasing ``mean_abs_shap_train``: ``feature``,
        ``mean_abs_shap_train``, ``mean_abs_shap_test``, ``direction`` (``"+"``,
        ``"-"`` or ``"0"``), ``correlation`` (Spearman, ``r_j`` vs ``φ_j`` over
        the training slides) and ``rank`` (1 = most important).
    """
    import pandas as pd

    names = [str(n) for n in feature_names]
    v = np.asarray(values_train, dtype=np.float64)
    r = np.asarray(repr_train, dtype=np.float64)
    shape = (v.shape[0], len(names)) if v.ndim == 2 else None
    if v.ndim != 2 or v.shape[0] < 1 or v.shape != shape or r.shape != shape:
        raise ConfigError(
            f"values_train {v.shape} and repr_train {r.shape} with {len(names)} feature names; "
            f"expected two (n >= 1, {len(names)}) arrays"
        )
    test_mean = np.full(len(names), np.nan)
    if values_test is not None:
        t = np.asarray(values_test, dtype=np.float64)
        if t.ndim != 2 or t.shape[1] != len(names):
            raise ConfigError(f"values_test has shape {t.shape}; expected (m, {len(names)})")
        if len(t):
            test_mean = np.abs(t).mean(axis=0)
    corr = _spearman_columns(r, v)
    direction = np.where(
        np.isnan(corr) | (corr == 0), "0", np.where(np.nan_to_num(corr) > 0, "+", "-")
    )
    table = pd.DataFrame(
        {
            "feature": names,
            "mean_abs_shap_train": np.abs(v).mean(axis=0),
            "mean_abs_shap_test": test_mean,
            "direction": direction,
            "correlation": corr,
        }
    )
    table = table.sort_values("mean_abs_shap_train", ascending=False, kind="stable")
    table["rank"] = np.arange(1, len(table) + 1)
    return table.reset_index(drop=True)
