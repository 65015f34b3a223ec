"""SHAP values of a trained gated attention MIL model (:mod:`pathpipe.mil.model`): the pure layer.

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

The importance tables are in :mod:`pathpipe.mil.explain_importance`, the
figures in :mod:`pathpipe.mil.explain_figures`, and the path-level layer
(model folder and tile tables in, files out) in :mod:`pathpipe.mil.explain`.
torch and shap are imported inside the functions.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.bags import check_bags, check_positive_int, check_seed

__all__ = ["slide_representation", "slide_shap", "tile_shap"]

_CHUNK_TILES = 32768  # model inputs (tiles) per forward pass of a coalition game


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
