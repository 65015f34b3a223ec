"""SHAP explanations of a trained gated attention MIL model (:mod:`pathpipe.mil.model`).

SHAP values (Lundberg & Lee 2017, "A unified approach to interpreting model
predictions", NeurIPS) are the Shapley values of a coalition game whose value
``v(S)`` is the model output when only the features in ``S`` are present.

**Output explained** everywhere: the log-odds of the positive class
``classes[1]``, ``f = logit_1 - logit_0`` of the model in eval mode (the
additive space of the two-class softmax: ``p = sigm(f)``).

**Estimator**: :class:`shap.PermutationExplainer`, antithetic permutation
sampling (Štrumbelj & Kononenko 2014, "Explaining prediction models and
individual predictions with feature contributions", KAIS 41): for each of
``n_permutations`` random feature orders, features are switched on one at a
time (forward) and off again (backward), and each feature is credited the
change of ``f`` at its step; the credits are averaged over the ``2 ·
n_permutations`` passes. Each pass telescopes, so efficiency (local accuracy)
holds exactly, ``Σ_j φ_j = v(all) − v(∅)``, and the values are exact for models
with at most pairwise interactions. A pass costs ``2F + 1`` evaluations of
``f`` (``F`` features), so ``max_evals = n_permutations · (2F + 1)``. shap
draws the orders from NumPy's global generator; it is seeded with ``seed``
for every slide or tile and restored afterwards, so a slide's values do not
depend on the other slides explained with it.

1. **Slide level.** A slide's *aggregated representation* is the
   attention-weighted mean of its preprocessed tile features,
   ``r_j = Σ_k a_k x_kj`` (Ilse et al. 2018 eq. 8 applied to the inputs), the
   feature values of the beeswarm plots. The SHAP value of feature ``j`` for a
   slide is that of the game on the actual AMIL model in which feature ``j``
   *absent* means column ``j`` of *every* tile of the bag is replaced by the
   background value ``b_j``, the mean of feature ``j`` over the training tiles
   (≈ 0 after standardisation). For a coalition mask ``z ∈ {0,1}^F`` the bag
   is ``B ⊙ z + b ⊙ (1 − z)``; the game is played by the explainer on
   ``x = 1_F`` against the single background row ``0_F``
   (:class:`shap.maskers.Independent`), and the bags of all masks of a pass
   are classified together (:func:`_coalition_game`). Efficiency:
   ``Σ_j φ_j = f(slide) − f(every tile = b)``; the base value ``f(b)`` is the
   same for every slide (a bag of identical tiles pools to their encoding
   whatever its size).
2. **Tile level.** ``f`` of a tile classified as a bag of one tile (attention
   1), explained with standard tabular SHAP: absent features take the values
   of each of a seeded sample of ``n_background`` training tiles in turn and
   ``f`` is averaged (interventional expectation, as
   :class:`shap.maskers.Independent` does), so the base value is the mean of
   ``f`` over those tiles. The game is played on masks as in item 1.
3. **Importance table**: per feature, the mean ``|φ_j|`` over the
   training (development) slides and over the test slides, and the direction
   of its effect: the sign of the Spearman correlation, over the training
   slides, between ``r_j`` and ``φ_j`` (``"+"``: higher values push towards
   ``classes[1]``; ``"0"`` when undefined).

"Train" in the file names means the development slides the final model was
trained on, as listed in the model's config.
"""

from __future__ import annotations

import contextlib
import io
import logging
import math
import os
import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil._bags import check_bags, check_positive_int, check_seed

__all__ = [
    "explain_cohort",
    "feature_families",
    "shap_family_importance",
    "shap_importance",
    "slide_representation",
    "slide_shap",
    "tile_shap",
]

log = logging.getLogger(__name__)

_CHUNK_TILES = 32768  # model inputs (tiles) per forward pass of a coalition game
_MAX_DISPLAY = 12  # features shown per beeswarm / waterfall
_TOP_TILE_FEATURES = 5  # features listed per tile in shap_tiles.tsv
_META_COLUMNS = ("slide_id", "role", "n_tiles", "probability", "log_odds", "base_value")
_FILES = (
    "shap_values.parquet",
    "shap_importance.tsv",
    "shap_families.tsv",
    "shap_tiles.tsv",
    "shap_beeswarm_train.png",
    "shap_beeswarm_test.png",
    "shap_waterfall.png",
)
_TILE_COLUMNS = (
    "slide_id",
    "role",
    "tile",
    "l0_x",
    "l0_y",
    "attention",
    "probability",
    "tile_log_odds",
    "base_value",
    "top_features",
)


# ------------------------------------------------------------------ pure layer
def _check_model(model: Any) -> None:
    from pathpipe.mil.model import GatedAttentionMIL

    if not isinstance(model, GatedAttentionMIL):
        raise ConfigError(f"model is a {type(model).__name__}; expected a GatedAttentionMIL")
    if model.n_classes != 2:
        raise ConfigError(
            f"model has {model.n_classes} classes; expected 2 (SHAP explains the log-odds "
            "of the positive class)"
        )
    model.eval()


def _log_odds(logits: Any) -> np.ndarray:
    return (logits[:, 1] - logits[:, 0]).double().cpu().numpy()


@contextlib.contextmanager
def _numpy_rng_restored() -> Iterator[None]:
    """shap seeds and draws from NumPy's global generator; leave the caller's state as it was."""
    state = np.random.get_state()  # noqa: NPY002 - the legacy generator shap uses
    try:
        yield
    finally:
        np.random.set_state(state)  # noqa: NPY002


def _background_value(background: Any, n_features: int) -> np.ndarray:
    b = np.asarray(background, dtype=np.float64)
    if b.ndim == 2 and b.shape[0] >= 1:
        b = b.mean(axis=0)
    if b.shape != (n_features,) or not np.isfinite(b).all():
        raise ConfigError(
            f"background has shape {np.shape(background)}; expected finite training tiles "
            f"(M, {n_features}) or background values ({n_features},)"
        )
    return b


def slide_representation(model: Any, bags: Sequence[Any]) -> np.ndarray:
    """Attention-weighted mean of each slide's tile features, ``r_j = Σ_k a_k x_kj``.

    Parameters
    ----------
    model : GatedAttentionMIL
        Binary model; put in eval mode.
    bags : sequence of (K_i, F) array-like
        Preprocessed tile features of each slide.

    Returns
    -------
    (n, F) float64 ndarray
    """
    from pathpipe.mil.train import predict_amil

    _check_model(model)
    checked = check_bags(bags, n_features=model.n_features)
    _, attention = predict_amil(model, checked)
    return np.stack([a.astype(np.float64) @ x for a, x in zip(attention, checked, strict=True)])


def _coalition_game(model: Any, present: Any, absent: Any, *, one_bag: bool) -> Any:
    """The value function of a binary-mask game, for :class:`shap.PermutationExplainer`.

    For each row ``z`` of a 0/1 matrix, the ``R`` model inputs
    ``where(z, present, absent)`` (``(R, F)`` tensors, broadcast) are

    * ``one_bag=True``: one bag of ``R`` tiles, and the game's value is ``f`` of
      that bag (slide level);
    * ``one_bag=False``: ``R`` bags of one tile (attention 1, so the pooled
      encoding is the tile's, Ilse et al. 2018 eq. 8), and the value is the
      mean of their ``f`` (tile level: the expectation over background rows).

    Consecutive masks of a permutation pass differ in one feature and the
    encoder's first layer is linear, so its output is updated along the rows,
    ``W x_r(z_m) = W x_r(z_{m−1}) + Σ_j (z_mj − z_{m−1,j}) (present_rj − absent_rj) W_{:,j}``
    (``R·H`` operations per flipped feature instead of ``R·F·H`` per row); the
    rest of the network runs on it as in :meth:`GatedAttentionMIL.forward_bags`
    (eqs. 8-9, vectorised for bags of equal size).
    """
    import torch

    present, absent = torch.broadcast_tensors(present, absent)
    n_rows = present.shape[0]
    first, rest = model.encoder[0], model.encoder[1:]
    weight_t, delta_t = first.weight.T, (present - absent).T  # (F, H), (F, R)
    rows_per_pass = max(2, _CHUNK_TILES // n_rows)

    def value(z: np.ndarray) -> np.ndarray:
        masks = torch.as_tensor(np.asarray(z) > 0.5, device=present.device)
        out = []
        with torch.no_grad():
            for s in range(0, len(masks), rows_per_pass):
                chunk = masks[s : s + rows_per_pass].float()
                u = torch.zeros((len(chunk), n_rows, weight_t.shape[1]), device=present.device)
                u[0] = first(torch.where(chunk[0] > 0.5, present, absent))
                flips = chunk[1:] - chunk[:-1]
                row, feat = flips.nonzero(as_tuple=True)
                step = flips[row, feat, None, None] * delta_t[feat, :, None] * weight_t[feat, None]
                u.index_add_(0, row + 1, step)
                h = rest(u.cumsum(dim=0).reshape(-1, u.shape[-1]))
                if one_bag:
                    scores = model._scores(h).view(-1, n_rows)
                    pooled = torch.softmax(scores, dim=1).unsqueeze(-1) * h.view(*u.shape[:2], -1)
                    out.append(_log_odds(model.classifier(pooled.sum(dim=1))))
                else:
                    out.append(_log_odds(model.classifier(h)).reshape(-1, n_rows).mean(axis=1))
        return np.concatenate(out)

    return value


def _play(
    model: Any, games: Iterator[Any], n_permutations: int, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """SHAP values and base values of each game, by :class:`shap.PermutationExplainer`.

    Each game is explained at ``x = 1_F`` against the background row ``0_F``
    (:class:`shap.maskers.Independent`): mask entry 1 means "present".
    """
    import shap

    n_feat = model.n_features
    masker = shap.maskers.Independent(np.zeros((1, n_feat)), max_samples=1)
    values, base = [], []
    with _numpy_rng_restored():
        for game in games:
            explainer = shap.PermutationExplainer(game, masker, seed=seed)
            expl = explainer(
                np.ones((1, n_feat)), max_evals=n_permutations * (2 * n_feat + 1), silent=True
            )
            values.append(expl.values[0])
            base.append(expl.base_values[0])
    return np.array(values, np.float64).reshape(-1, n_feat), np.array(base, np.float64)


def slide_shap(
    model: Any,
    bags: Sequence[Any],
    *,
    background: Any,
    n_permutations: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Slide-level SHAP values of the AMIL log-odds (see the module docstring, item 1).

    Parameters
    ----------
    model : GatedAttentionMIL
        Binary model; put in eval mode.
    bags : sequence of (K_i, F) array-like
        Preprocessed tile features of each slide to explain.
    background : (M, F) or (F,) array-like
        Training tiles, whose column means are the background values ``b``,
        or ``b`` itself.
    n_permutations : int
        Antithetic permutation passes per slide (``n_permutations · (2F + 1)``
        evaluations of a bag of ``K_i`` tiles).
    seed : int
        Seed of the feature orders (the same for every slide).

    Returns
    -------
    values : (n, F) float64 ndarray
        ``φ_j`` of each slide; each row sums to ``f(slide) − base``.
    base : (n,) float64 ndarray
        ``f`` of the bag whose tiles all equal ``b``.
    """
    import torch

    _check_model(model)
    checked = check_bags(bags, n_features=model.n_features)
    b = _background_value(background, model.n_features)
    n_permutations = check_positive_int("n_permutations", n_permutations)
    seed = check_seed(seed)
    dev = next(model.parameters()).device
    b_t = torch.as_tensor(b, dtype=torch.float32, device=dev)
    games = (
        _coalition_game(model, torch.from_numpy(bag).to(dev), b_t, one_bag=True) for bag in checked
    )
    return _play(model, games, n_permutations, seed)


def tile_shap(
    model: Any,
    tiles: Any,
    *,
    background: Any,
    n_permutations: int = 10,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray]:
    """Tile-level SHAP values of the log-odds of single-tile bags (module docstring, item 2).

    The values are those of ``shap.PermutationExplainer`` with
    ``shap.maskers.Independent(background)`` on the single-tile model: absent
    features take each background tile's values in turn and ``f`` is averaged.

    Parameters
    ----------
    model : GatedAttentionMIL
        Binary model; put in eval mode.
    tiles : (n, F) array-like
        Preprocessed features of the tiles to explain.
    background : (M, F) array-like
        Background tiles (e.g. a sample of training tiles); every one is used.
    n_permutations : int
        Antithetic permutation passes per tile (each of ``2F + 1`` evaluations
        on ``M`` background rows).
    seed : int
        Seed of the feature orders (the same for every tile).

    Returns
    -------
    values : (n, F) float64 ndarray
        Each row sums to ``f(tile) − base``.
    base : (n,) float64 ndarray
        Mean of ``f`` over the background tiles.
    """
    import torch

    _check_model(model)
    x = check_bags([tiles], what="tiles", n_features=model.n_features)[0]
    bg = check_bags([background], what="background", n_features=model.n_features)[0]
    n_permutations = check_positive_int("n_permutations", n_permutations)
    seed = check_seed(seed)
    dev = next(model.parameters()).device
    bg_t = torch.from_numpy(bg).to(dev)
    games = (
        _coalition_game(model, torch.from_numpy(tile).to(dev), bg_t, one_bag=False) for tile in x
    )
    return _play(model, games, n_permutations, seed)


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
    from pathpipe.features.run import FeatureParams, feature_specs

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
    """Mean ``|SHAP|`` per feature with the direction of its effect (module docstring, item 3).

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


# ------------------------------------------------------------------------ plots
def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    from pathpipe.io.storage import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def _plot_beeswarm(path: Path, expl: Any, title: str) -> None:
    """Beeswarm of a slide-level Explanation; a note instead when it has no slides."""
    import shap

    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(10, 0.4 * _MAX_DISPLAY + 2))
    try:
        if len(expl.values) == 0:
            ax.axis("off")
            ax.text(0.5, 0.5, f"{title}\n\nno slides in this set", ha="center", va="center")
        else:
            shap.plots.beeswarm(
                expl,
                max_display=_MAX_DISPLAY,
                ax=ax,
                show=False,
                plot_size=None,
                color_bar_label="Aggregated representation value",
            )
            ax.set_title(title, fontsize=11)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


def _plot_waterfalls(path: Path, panels: list[tuple[Any, str]]) -> None:
    """One PNG with the waterfall plot of each ``(Explanation, title)``, two per row.

    :func:`shap.plots.waterfall` draws into the current figure and sizes it, so
    each is rendered alone to an in-memory PNG and the images are tiled.
    """
    import matplotlib.image
    import shap

    plt = _pyplot()
    images = []
    for expl, _ in panels:
        fig = plt.figure()
        try:
            shap.plots.waterfall(expl, max_display=_MAX_DISPLAY, show=False)
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=100, bbox_inches="tight")
        finally:
            plt.close(fig)
        buf.seek(0)
        images.append(matplotlib.image.imread(buf, format="png"))
    ncol = min(2, max(1, len(images)))
    nrow = max(1, math.ceil(len(images) / ncol))
    height, width = max((im.shape[:2] for im in images), default=(300, 600))
    fig, axes = plt.subplots(
        nrow, ncol, figsize=(ncol * width / 100, nrow * (height / 100 + 0.5)), squeeze=False
    )
    try:
        for ax in axes.flat:
            ax.axis("off")
        if not images:
            axes[0, 0].text(0.5, 0.5, "no tiles selected", ha="center", va="center")
        for ax, img, (_, title) in zip(axes.flat, images, panels, strict=False):
            ax.imshow(img)
            ax.set_title(title, fontsize=11)
        fig.tight_layout()
        _save(fig, path)
    finally:
        plt.close(fig)


# ------------------------------------------------------------------ path level
def _model_slides(model_dir: Any, config: dict[str, Any], pre: Any) -> tuple[list, set, set]:
    """``classes`` and the development and test slide ids of a ``pathpipe mil train`` model."""
    slides, classes = config.get("slides"), config.get("classes")
    where = f"model {str(model_dir)!r}"
    if not isinstance(slides, dict) or not all(
        isinstance(slides.get(k), list) for k in ("development", "test")
    ):
        raise ConfigError(
            f"{where}: config has slides={slides!r}; expected {{'development': [...], "
            "'test': [...]}} (a model written by `pathpipe mil train`)"
        )
    if pre is None or not isinstance(classes, list) or len(classes) != 2:
        raise ConfigError(
            f"{where}: preprocessing={pre is not None}, classes={classes!r}; expected feature "
            "preprocessing and two classes (a model written by `pathpipe mil train`)"
        )
    return classes, {str(s) for s in slides["development"]}, {str(s) for s in slides["test"]}


def _pick_tiles(
    ids: list[str],
    frames: list[Any],
    proba: np.ndarray,
    attention: list[np.ndarray],
    labelled: np.ndarray,
    n_waterfall: int,
    explicit: Sequence[tuple[str, Any]] | None,
) -> list[tuple[int, int]]:
    """(slide index, table row) of the tiles to explain (see :func:`explain_cohort`)."""
    if explicit is None:
        order = [i for i in np.argsort(-proba, kind="stable") if labelled[i] or not labelled.any()]
        n_pos = (n_waterfall + 1) // 2
        pos = [i for i in order if proba[i] >= 0.5][:n_pos]
        neg = [i for i in reversed(order) if proba[i] < 0.5][: n_waterfall - n_pos]
        return [(int(i), int(np.argmax(attention[i]))) for i in pos + neg]
    picks = []
    for sid, tile in explicit:
        if str(sid) not in ids:
            raise ConfigError(
                f"waterfall tile ({sid!r}, {tile!r}): no slide {sid!r} with tiles among {ids[:10]}"
            )
        i = ids.index(str(sid))
        tile_ids = (
            frames[i]["tile"].tolist() if "tile" in frames[i] else list(range(len(frames[i])))
        )
        if tile not in tile_ids:
            raise ConfigError(
                f"waterfall tile ({sid!r}, {tile!r}): slide {sid!r} has no tile {tile!r}; "
                f"expected one of its {len(tile_ids)} tile ids"
            )
        picks.append((i, tile_ids.index(tile)))
    return picks


def explain_cohort(
    model_dir: str | os.PathLike[str],
    tables: Mapping[str, str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    n_permutations: int = 10,
    n_background: int = 100,
    n_waterfall: int = 4,
    waterfall_tiles: Sequence[tuple[str, Any]] | None = None,
    seed: int = 0,
    device: str = "cpu",
) -> dict[str, Any]:
    """Explain a model written by ``pathpipe mil train`` on its slides (module docstring).

    Files written to ``out_dir``, each atomically::

        shap_values.parquet        one row per slide: slide_id, role ("development",
                                   "test" or "unlabelled"), n_tiles, probability,
                                   log_odds, base_value, then φ_j per feature
        shap_importance.tsv        see shap_importance (train = development slides)
        shap_families.tsv          see shap_family_importance
        shap_beeswarm_train.png    slide-level beeswarm, development slides
        shap_beeswarm_test.png     the same, test slides (a note when there are none)
        shap_waterfall.png         waterfall plot of each selected tile
        shap_tiles.tsv             selected tiles: slide_id, role, tile, l0_x, l0_y,
                                   attention, probability (of the slide),
                                   tile_log_odds, base_value, top_features

    Parameters
    ----------
    model_dir : path-like
        The ``model/`` directory of ``pathpipe mil train``.
    tables : mapping of str to path-like
        ``slide_id`` → ``tile_features.parquet``; slides with no tiles are
        skipped with a warning. Slides in neither the model's development nor
        its test list are explained with role ``"unlabelled"`` (not plotted).
    out_dir : path-like
    n_permutations : int
        Permutation passes per slide and per tile.
    n_background : int
        Training tiles sampled (seeded) as the tile-level background.
    n_waterfall : int
        Tiles selected by default: the highest-attention tile of each of the
        ``ceil(n/2)`` slides with the highest probability of ``classes[1]``
        (among those predicted ``classes[1]``) and of the ``floor(n/2)`` with
        the lowest (among those predicted ``classes[0]``), among the
        development and test slides (unlabelled slides are chosen only by
        ``waterfall_tiles``).
    waterfall_tiles : sequence of (slide_id, tile), optional
        Explicit selection instead (``tile`` as in the table's ``tile`` column).
    seed : int
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.

    Returns
    -------
    dict
        ``classes``, ``n_slides`` per role, ``skipped_empty``, ``n_features``,
        ``base_value``, ``top_features`` (first 10 rows of the importance
        table), ``tiles`` (rows of ``shap_tiles.tsv``), ``files``, ``seconds``.

    Raises
    ------
    ConfigError
        A model without ``slides``, preprocessing or two classes; no
        development slide with tiles in ``tables``; invalid options.
    StorageError
        Unreadable model or tables.
    """
    import pandas as pd

    from pathpipe.io.storage import atomic_file, provenance, write_parquet
    from pathpipe.mil.cohort import read_slide_bags
    from pathpipe.mil.io import load_amil
    from pathpipe.mil.train import predict_amil

    t0 = time.perf_counter()
    n_permutations = check_positive_int("n_permutations", n_permutations)
    n_background = check_positive_int("n_background", n_background)
    if not (isinstance(n_waterfall, int) and not isinstance(n_waterfall, bool)) or n_waterfall < 0:
        raise ConfigError(f"n_waterfall={n_waterfall!r}; expected a non-negative integer")
    seed = check_seed(seed)
    model, config, pre = load_amil(model_dir, device=device)
    classes, dev_set, test_set = _model_slides(model_dir, config, pre)
    names = list(pre.features)
    if set(names) & set(_META_COLUMNS):
        raise ConfigError(
            f"feature names {sorted(set(names) & set(_META_COLUMNS))} clash with the columns "
            f"{list(_META_COLUMNS)} of shap_values.parquet; expected other feature names"
        )
    ids, frames, bags, empty = read_slide_bags(tables, pre)
    roles = np.array(
        ["development" if s in dev_set else "test" if s in test_set else "unlabelled" for s in ids]
    )
    is_dev, is_test = roles == "development", roles == "test"
    if not is_dev.any():
        raise ConfigError(
            f"none of the {len(dev_set)} development slides of model {str(model_dir)!r} has "
            f"tiles in the given tables ({sorted(ids)[:10]}); expected the tile tables of the "
            "slides the model was trained on (they define the background)"
        )
    if dev_set - set(ids):
        log.warning(
            "background from %d of the %d development slides; missing: %s",
            int(is_dev.sum()),
            len(dev_set),
            ", ".join(sorted(dev_set - set(ids))),
        )
    background = np.concatenate([b for b, d in zip(bags, is_dev, strict=True) if d])

    # Slide level (module docstring, items 1 and 3).
    proba, attention = predict_amil(model, bags)
    rep = np.stack([a.astype(np.float64) @ x for a, x in zip(attention, bags, strict=True)])
    values, base = slide_shap(
        model, bags, background=background, n_permutations=n_permutations, seed=seed
    )
    importance = shap_importance(
        values[is_dev], rep[is_dev], names, values_test=values[is_test] if is_test.any() else None
    )

    # Tile level (item 2): a seeded sample of the training tiles as background.
    rng = np.random.default_rng([seed, 0x5AB])
    tile_bg = background[
        np.sort(rng.choice(len(background), min(n_background, len(background)), replace=False))
    ]
    picks = _pick_tiles(
        ids, frames, proba, attention, is_dev | is_test, n_waterfall, waterfall_tiles
    )
    tile_rows, panels = [], []
    if picks:
        x = np.stack([bags[i][r] for i, r in picks])
        t_values, t_base = tile_shap(
            model, x, background=tile_bg, n_permutations=n_permutations, seed=seed
        )
    for n, (i, r) in enumerate(picks):
        row = _tile_row(ids[i], str(roles[i]), frames[i], r, t_values[n], t_base[n], names)
        row.update(attention=float(attention[i][r]), probability=float(proba[i]))
        tile_rows.append(row)
        title = (
            f"slide {ids[i]}, tile {row['tile']}, attention {row['attention']:.2f}, "
            f"p({classes[1]})={row['probability']:.2f}"
        )
        panels.append((_explanation(t_values[n], t_base[n], x[n], names), title))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "model_dir": str(model_dir),
        "n_permutations": n_permutations,
        "n_background": n_background,
        "n_waterfall": n_waterfall,
        "waterfall_tiles": None if waterfall_tiles is None else [list(t) for t in waterfall_tiles],
        "seed": seed,
        "device": device,
    }
    meta = {
        "slide_id": ids,
        "role": roles,
        "n_tiles": [len(b) for b in bags],
        "probability": proba,
        "log_odds": base + values.sum(axis=1),
        "base_value": base,
    }
    record = provenance(
        stage="mil",
        params=params,
        step="explain",
        classes=classes,
        output=f"log-odds of {classes[1]!r}",
        background_tiles=len(background),
    )
    write_parquet(
        pd.concat([pd.DataFrame(meta), pd.DataFrame(values, columns=names)], axis=1),
        out / "shap_values.parquet",
        record,
    )
    with atomic_file(out / "shap_importance.tsv") as tmp:
        importance.to_csv(tmp, sep="\t", index=False)
    families = shap_family_importance(
        values[is_dev],
        feature_families(names),
        values_test=values[is_test] if is_test.any() else None,
    )
    with atomic_file(out / "shap_families.tsv") as tmp:
        families.to_csv(tmp, sep="\t", index=False)
    with atomic_file(out / "shap_tiles.tsv") as tmp:
        pd.DataFrame(tile_rows, columns=list(_TILE_COLUMNS)).to_csv(tmp, sep="\t", index=False)
    for part, mask, who in (("train", is_dev, "development (training)"), ("test", is_test, "test")):
        _plot_beeswarm(
            out / f"shap_beeswarm_{part}.png",
            _explanation(values[mask], base[mask], rep[mask], names),
            f"Slide-level SHAP, {who} slides (n={int(mask.sum())})\n"
            f"output: log-odds of {classes[1]!r}; colour: attention-weighted mean feature",
        )
    _plot_waterfalls(out / "shap_waterfall.png", panels)
    return {
        "classes": classes,
        "n_slides": {r: int((roles == r).sum()) for r in ("development", "test", "unlabelled")},
        "skipped_empty": empty,
        "n_features": len(names),
        "base_value": float(base[0]),
        "top_features": importance.head(10).to_dict(orient="records"),
        "tiles": tile_rows,
        "files": [str(out / f) for f in _FILES],
        "seconds": time.perf_counter() - t0,
    }


def _tile_row(
    slide_id: str, role: str, frame: Any, r: int, v: np.ndarray, base: float, names: list[str]
) -> dict[str, Any]:
    """Row of ``shap_tiles.tsv`` (without attention and probability) for table row ``r``."""

    def cell(column: str, default: Any) -> Any:
        return np.asarray(frame[column].iloc[r]).item() if column in frame else default

    top = np.argsort(-np.abs(v), kind="stable")[:_TOP_TILE_FEATURES]
    return {
        "slide_id": slide_id,
        "role": role,
        "tile": cell("tile", r),
        "l0_x": cell("l0_x", None),
        "l0_y": cell("l0_y", None),
        "attention": None,
        "probability": None,
        "tile_log_odds": float(base + v.sum()),
        "base_value": float(base),
        "top_features": "; ".join(f"{names[j]} ({v[j]:+.3g})" for j in top),
    }


def _explanation(values: np.ndarray, base: Any, data: np.ndarray, names: list[str]) -> Any:
    import shap

    return shap.Explanation(values=values, base_values=base, data=data, feature_names=names)
