"""Attention of a trained AMIL model, per tile: the table and its map over the slide (pure layer).

The gated attention MIL model (:mod:`pathpipe.mil.model`, Ilse et al. 2018,
eq. 9) gives every tile ``k`` of a slide's bag of ``K`` tiles a weight
``a_k`` (``Σ_k a_k = 1``). This module shows where on the slide that weight
lies and which tiles carry it:

* :func:`attention_table`: one row per tile with ``attention`` (``a_k``),
  ``attention_norm`` (``K · a_k``: 1 is uniform attention, 2 twice uniform)
  and ``rank`` (1 = highest), and the slide probability of ``classes[1]``;
* :func:`rasterize_tiles` and :func:`attention_heatmap`: each tile's level-0
  rectangle mapped onto a thumbnail of the slide and coloured by its value
  (:func:`colour_limits`);
* :func:`gallery_indices`: the ``n`` tiles of highest and of lowest attention.

The figures (:func:`~pathpipe.mil.attention_figures.attention_heatmap_figure`,
:func:`~pathpipe.mil.attention_figures.attention_gallery`) are in
:mod:`pathpipe.mil.attention_figures`; the path-level layer (model folder,
``tile_features.parquet``, ``tiles.zarr`` and slide in; ``attention.parquet``
and two PNGs out) is :func:`pathpipe.mil.attention.explain_slide_attention`.

Frames (prefixes as in :mod:`pathpipe.io.slide`): ``l0_`` level-0 pixels
``(x, y)``; ``th_`` pixels of the thumbnail. ``scale_xy`` is thumbnail pixels
per level-0 pixel: thumbnail pixel ``j`` covers level-0 ``[j / s, (j + 1) / s)``.
:meth:`pathpipe.io.slide.Slide.thumbnail_at_mpp` samples pixel ``j`` at level-0
``j · mpp / l0_mpp``, so ``s = l0_mpp / mpp`` exactly (its last row and column
may reach past the slide edge, as the thumbnail size is rounded up).

Colours. Attention of a trained model is usually concentrated on a few tiles
(``attention_norm`` spans orders of magnitude), so by default the heatmap
colours ``log2(attention_norm)`` with the diverging map ``RdYlBu_r`` centred on
uniform attention (yellow = 1; red above, blue below), and its limits are the
1st and 99th percentiles of the slide's values made symmetric about the centre.
Any matplotlib colour map, linear scaling, fixed limits (e.g. to compare slides
on one scale) or no centring can be chosen instead.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.bags import NON_FEATURE_COLUMNS

__all__ = [
    "attention_heatmap",
    "attention_table",
    "colour_limits",
    "gallery_indices",
    "rasterize_tiles",
]

log = logging.getLogger(__name__)

#: Floor of ``attention_norm`` before taking its logarithm (float32 softmax can underflow to 0).
_LOG_FLOOR = 1e-12


def attention_table(
    model: Any, preprocessor: Any, frame: Any, *, slide_id: str | None = None
) -> tuple[Any, float]:
    """Tile attention and slide probability of a binary AMIL model.

    Parameters
    ----------
    model : GatedAttentionMIL
        Trained, with two classes; run in eval mode on its own device.
    preprocessor : FeaturePreprocessor or None
        The preprocessing the model was trained with. None: the frame's numeric
        columns other than ``tile``, ``l0_x``, ``l0_y`` are used as they are.
    frame : pandas.DataFrame
        The slide's tile table (``tile_features.parquet``): ``tile``, ``l0_x``,
        ``l0_y`` and the feature columns, one row per tile.
    slide_id : str, optional
        Named in messages.

    Returns
    -------
    table : pandas.DataFrame
        One row per tile, in the frame's order: ``tile``, ``l0_x``, ``l0_y``
        (int64), ``attention`` (float64 ``a_k``, summing to 1),
        ``attention_norm`` (``K · a_k``; 1 = uniform), ``rank`` (int64, 1 =
        highest attention; ties in table order).
    probability : float
        Probability of the model's second class (``classes[1]``).

    Raises
    ------
    ConfigError
        A table with no rows ("all tiles filtered out"), missing coordinate
        columns, features that do not fit the model or preprocessing, or a
        model with more than two classes.

    Notes
    -----
    A bag of one tile is valid: its attention is trivially 1 (logged as a
    warning, since it says nothing about the slide).
    """
    import pandas as pd

    from pathpipe.mil.train import predict_amil

    name = "<unnamed>" if slide_id is None else slide_id
    if not isinstance(frame, pd.DataFrame):
        raise ConfigError(
            f"slide {name!r}: tile table is a {type(frame).__name__}; expected a pandas DataFrame"
        )
    missing = [c for c in NON_FEATURE_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"slide {name!r}: tile table lacks column(s) {missing}; expected "
            f"{list(NON_FEATURE_COLUMNS)} and the tile features"
        )
    if len(frame) == 0:
        raise ConfigError(
            f"slide {name!r}: tile table has no rows (all tiles filtered out); "
            "expected at least one tile to compute attention on"
        )
    if getattr(model, "n_classes", None) != 2:
        raise ConfigError(
            f"model has {getattr(model, 'n_classes', None)!r} classes; expected a binary "
            "GatedAttentionMIL (the mil stage is binary)"
        )
    try:
        if preprocessor is None:
            columns = [
                c
                for c in frame.columns
                if c not in NON_FEATURE_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
            ]
            bag = frame[columns].to_numpy(dtype=np.float32)
        else:
            bag = preprocessor.transform(frame)
        proba, attention = predict_amil(model, [bag])
    except ConfigError as exc:
        raise ConfigError(f"slide {name!r}: {exc}") from exc
    k = len(frame)
    if k == 1:
        log.warning(
            "slide %s has a single tile: its attention is trivially 1 and shows nothing", name
        )
    a = attention[0].astype(np.float64)
    a /= a.sum()  # exact in float64; the model's float32 softmax sums to 1 ± 1e-7
    order = np.argsort(-a, kind="stable")
    rank = np.empty(k, np.int64)
    rank[order] = np.arange(1, k + 1)
    table = pd.DataFrame(
        {
            "tile": frame["tile"].to_numpy(np.int64),
            "l0_x": frame["l0_x"].to_numpy(np.int64),
            "l0_y": frame["l0_y"].to_numpy(np.int64),
            "attention": a,
            "attention_norm": a * k,
            "rank": rank,
        }
    )
    return table, float(proba[0])


# -------------------------------------------------------------------- heatmap
def _scale_pair(scale_xy: float | Sequence[float]) -> tuple[float, float]:
    pair = (scale_xy, scale_xy) if isinstance(scale_xy, int | float) else tuple(scale_xy)
    if len(pair) != 2 or not all(
        isinstance(v, int | float | np.floating) and math.isfinite(v) and v > 0 for v in pair
    ):
        raise ConfigError(
            f"scale_xy={scale_xy!r}; expected a positive number or (sx, sy) "
            "(thumbnail pixels per level-0 pixel)"
        )
    return float(pair[0]), float(pair[1])


def _check_tiles(
    l0_xy: Any, l0_tile_size: Any, values: Any
) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    xy = np.asarray(l0_xy, dtype=np.float64)
    v = np.asarray(values, dtype=np.float64)
    if xy.ndim != 2 or xy.shape[1] != 2:
        raise ConfigError(f"l0_xy has shape {xy.shape}; expected (K, 2) level-0 (x, y)")
    if v.shape != (xy.shape[0],):
        raise ConfigError(f"values have shape {v.shape}; expected ({xy.shape[0]},), one per tile")
    if not (np.isfinite(xy).all() and np.isfinite(v).all()):
        raise ConfigError("l0_xy and values must be finite; received NaN or infinite entries")
    size = tuple(float(s) for s in np.atleast_1d(np.asarray(l0_tile_size, dtype=np.float64)))
    if len(size) == 1:
        size = (size[0], size[0])
    if len(size) != 2 or not all(math.isfinite(s) and s > 0 for s in size):
        raise ConfigError(
            f"l0_tile_size={l0_tile_size!r}; expected positive (width, height) in level-0 pixels"
        )
    return xy, (size[0], size[1]), v


def _axis_overlap(start: float, stop: float, n: int) -> tuple[int, np.ndarray]:
    """First pixel and overlap lengths of the pixels ``[j, j+1)`` with ``[start, stop)``."""
    j0 = max(0, math.floor(start))
    j1 = min(n, math.ceil(stop))
    if j1 <= j0:
        return j0, np.zeros(0)
    j = np.arange(j0, j1, dtype=np.float64)
    return j0, np.minimum(stop, j + 1) - np.maximum(start, j)


def rasterize_tiles(
    shape_hw: tuple[int, int],
    scale_xy: float | Sequence[float],
    l0_xy: Any,
    l0_tile_size: Any,
    values: Any,
) -> tuple[np.ndarray, np.ndarray]:
    """Map tile values onto thumbnail pixels, weighting by covered area.

    Tile ``k`` covers level-0 ``[x_k, x_k + w) × [y_k, y_k + h)``, i.e.
    thumbnail ``[s_x x_k, s_x (x_k + w)) × [s_y y_k, s_y (y_k + h))``. With
    ``c_k(p)`` the area of pixel ``p`` (in pixels, ``0..1``) that tile ``k``
    covers::

        coverage(p) = Σ_k c_k(p)
        mean(p)     = Σ_k c_k(p) v_k / coverage(p)

    so overlapping tiles (tiling overlap > 0) are averaged, and a pixel shared
    by two neighbouring tiles takes their area-weighted mean.

    Parameters
    ----------
    shape_hw : (int, int)
        Thumbnail ``(height, width)``.
    scale_xy : float or (float, float)
        Thumbnail pixels per level-0 pixel, ``(s_x, s_y)``.
    l0_xy : (K, 2) array-like
        Level-0 ``(x, y)`` of each tile's top-left corner.
    l0_tile_size : float or (float, float)
        Tile ``(w, h)`` in level-0 pixels.
    values : (K,) array-like of float

    Returns
    -------
    mean : (H, W) float64 ndarray
        Coverage-weighted mean value; NaN where no tile lies.
    coverage : (H, W) float64 ndarray
        Summed covered fraction of each pixel (1 inside one tile, above 1 where
        tiles overlap, 0 outside the bag).
    """
    h, w = (int(v) for v in shape_hw)
    if h < 1 or w < 1:
        raise ConfigError(f"shape_hw={shape_hw!r}; expected a positive (height, width)")
    sx, sy = _scale_pair(scale_xy)
    xy, (tw, th), v = _check_tiles(l0_xy, l0_tile_size, values)
    total = np.zeros((h, w))
    coverage = np.zeros((h, w))
    for (l0_x, l0_y), value in zip(xy, v, strict=True):
        c0, ox = _axis_overlap(l0_x * sx, (l0_x + tw) * sx, w)
        r0, oy = _axis_overlap(l0_y * sy, (l0_y + th) * sy, h)
        if ox.size == 0 or oy.size == 0:
            continue
        weight = np.outer(oy, ox)
        coverage[r0 : r0 + oy.size, c0 : c0 + ox.size] += weight
        total[r0 : r0 + oy.size, c0 : c0 + ox.size] += weight * value
    mean = np.full((h, w), np.nan)
    inside = coverage > 0
    mean[inside] = total[inside] / coverage[inside]
    return mean, coverage


def colour_limits(
    values: Any,
    *,
    log: bool = True,
    limits: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    centre: float | None = 1.0,
) -> tuple[float, float]:
    """Colour-scale limits of the heatmap, in the scale it colours.

    Parameters
    ----------
    values : (K,) array-like of float
        Typically ``attention_norm``.
    log : bool
        Colour ``log2(values)`` (values floored at 1e-12) instead of ``values``.
    limits : (float, float), optional
        Fixed ``(low, high)`` in value units (not logged); overrides
        ``percentiles`` and ``centre``. Use one pair for several slides to
        compare them on one scale.
    percentiles : (float, float)
        Percentiles of the (logged) values taken as limits when ``limits`` is
        None; values beyond them take the end colours.
    centre : float or None
        Value (not logged) put in the middle of the scale by widening the
        percentile limits symmetrically about it; 1 is uniform attention.
        None keeps the percentile limits as they are.

    Returns
    -------
    (low, high) : (float, float)
        In ``log2`` units when ``log``; ``low < high`` (a slide whose tiles all
        have one value gets ``value ± 1``).
    """
    v = _transform(np.asarray(values, dtype=np.float64), log)
    if limits is not None:
        lo, hi = (float(x) for x in limits)
        if not (math.isfinite(lo) and math.isfinite(hi) and lo < hi and (not log or lo > 0)):
            raise ConfigError(
                f"limits={limits!r}; expected finite (low, high) with low < high"
                + (" and low > 0 (log scale)" if log else "")
            )
        return float(_transform(np.array(lo), log)), float(_transform(np.array(hi), log))
    p_lo, p_hi = (float(p) for p in percentiles)
    if not 0 <= p_lo < p_hi <= 100:
        raise ConfigError(
            f"percentiles={percentiles!r}; expected (low, high) with 0 <= low < high <= 100"
        )
    if v.size == 0:
        raise ConfigError("values are empty; expected at least one tile")
    lo, hi = (float(x) for x in np.percentile(v, [p_lo, p_hi]))
    if centre is not None:
        if log and not centre > 0:
            raise ConfigError(f"centre={centre!r}; expected a positive value on a log scale")
        c = float(_transform(np.array(float(centre)), log))
        half = max(hi - c, c - lo)
        lo, hi = c - half, c + half
    if hi - lo < 1e-12:
        lo, hi = lo - 1.0, hi + 1.0
    return lo, hi


def _transform(v: np.ndarray, log: bool) -> np.ndarray:
    return np.log2(np.maximum(v, _LOG_FLOOR)) if log else v


def attention_heatmap(
    thumbnail: np.ndarray,
    scale_xy: float | Sequence[float],
    l0_xy: Any,
    l0_tile_size: Any,
    values: Any,
    *,
    cmap: str = "RdYlBu_r",
    log: bool = True,
    limits: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    centre: float | None = 1.0,
    alpha: float = 0.6,
) -> np.ndarray:
    """Tile values as colours blended over a slide thumbnail.

    Each thumbnail pixel gets the colour of its coverage-weighted mean value
    (:func:`rasterize_tiles`), scaled to the limits of :func:`colour_limits`,
    and is blended ``out = (1 - α') · thumbnail + α' · colour`` with
    ``α' = alpha · min(coverage, 1)`` (so pixels a tile only partly covers are
    partly tinted). Pixels outside every tile keep the thumbnail's colour.

    Parameters
    ----------
    thumbnail : (H, W, 3) uint8 ndarray
    scale_xy : float or (float, float)
        Thumbnail pixels per level-0 pixel, e.g. ``l0_mpp / thumbnail_mpp``.
    l0_xy : (K, 2) array-like
        Level-0 ``(x, y)`` of each tile's top-left corner.
    l0_tile_size : float or (float, float)
        Tile ``(w, h)`` in level-0 pixels (``attrs["pathpipe"]["l0_tile_size"]``
        of ``tiles.zarr``).
    values : (K,) array-like of float
        What to colour, e.g. ``attention_norm``.
    cmap : str
        Matplotlib colour map (``"RdYlBu_r"``, ``"inferno"``, ``"viridis"``...).
    log, limits, percentiles, centre :
        Colour scaling, see :func:`colour_limits`.
    alpha : float
        Opacity of the colour over fully covered pixels, in ``[0, 1]``.

    Returns
    -------
    (H, W, 3) uint8 ndarray
    """
    import matplotlib as mpl

    thumb = np.asarray(thumbnail)
    if thumb.ndim != 3 or thumb.shape[2] != 3 or thumb.dtype != np.uint8:
        raise ConfigError(
            f"thumbnail has shape {thumb.shape} and dtype {thumb.dtype}; expected (H, W, 3) uint8"
        )
    if not (isinstance(alpha, int | float) and 0 <= alpha <= 1):
        raise ConfigError(f"alpha={alpha!r}; expected a number in [0, 1]")
    try:
        colour_map = mpl.colormaps[cmap]
    except KeyError as exc:
        raise ConfigError(f"cmap={cmap!r} is not a matplotlib colour map") from exc
    mean, coverage = rasterize_tiles(thumb.shape[:2], scale_xy, l0_xy, l0_tile_size, values)
    lo, hi = colour_limits(values, log=log, limits=limits, percentiles=percentiles, centre=centre)
    inside = coverage > 0
    unit = np.zeros_like(mean)
    unit[inside] = np.clip((_transform(mean[inside], log) - lo) / (hi - lo), 0.0, 1.0)
    colour = colour_map(unit)[..., :3] * 255.0
    a = (alpha * np.minimum(coverage, 1.0))[..., None]
    out = (1.0 - a) * thumb.astype(np.float64) + a * colour
    return np.clip(np.rint(out), 0, 255).astype(np.uint8)


# -------------------------------------------------------------------- gallery
def gallery_indices(attention: Any, n: int = 5) -> tuple[np.ndarray, np.ndarray]:
    """Positions of the tiles a gallery shows.

    Parameters
    ----------
    attention : (K,) array-like of float
    n : int
        Tiles per row.

    Returns
    -------
    top : (m,) int64 ndarray
        The ``m = min(n, K)`` highest-attention positions, highest first.
    bottom : (m,) int64 ndarray
        The ``m`` lowest, lowest first. With ``K < 2n`` the rows share tiles (a
        slide of 3 tiles shows all 3 in both rows, in opposite orders).
    """
    a = np.asarray(attention, dtype=np.float64)
    if a.ndim != 1 or a.size == 0:
        raise ConfigError(f"attention has shape {a.shape}; expected (K,) with K >= 1")
    if not (isinstance(n, int) and not isinstance(n, bool) and n >= 1):
        raise ConfigError(f"n={n!r}; expected a positive integer")
    order = np.argsort(-a, kind="stable")
    m = min(n, a.size)
    return order[:m].astype(np.int64), order[::-1][:m].astype(np.int64)
