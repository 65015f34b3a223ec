"""Attention of a trained AMIL model, per tile: table, heatmap over the slide, galleries.

The gated attention MIL model (:mod:`pathpipe.mil.model`, Ilse et al. 2018,
eq. 9) gives every tile ``k`` of a slide's bag of ``K`` tiles a weight
``a_k`` (``Σ_k a_k = 1``). This module shows where on the slide that weight
lies and which tiles carry it:

* :func:`attention_table`: one row per tile with ``attention`` (``a_k``),
  ``attention_norm`` (``K · a_k``: 1 is uniform attention, 2 twice uniform)
  and ``rank`` (1 = highest), and the slide probability of ``classes[1]``;
* :func:`rasterize_tiles` and :func:`attention_heatmap`: each tile's level-0
  rectangle mapped onto a thumbnail of the slide and coloured by its value;
  :func:`attention_heatmap_figure` adds the plain thumbnail and a colour bar;
* :func:`attention_gallery`: the ``n`` tiles of highest and of lowest attention;
* :func:`explain_slide_attention`: the path-level layer (model directory,
  ``tile_features.parquet``, ``tiles.zarr`` and slide in; ``attention.parquet``
  and two PNGs out).

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
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, SlideReadError, StorageError

__all__ = [
    "attention_gallery",
    "attention_heatmap",
    "attention_heatmap_figure",
    "attention_table",
    "colour_limits",
    "explain_slide_attention",
    "gallery_indices",
    "rasterize_tiles",
]

log = logging.getLogger(__name__)

#: Non-feature columns of ``tile_features.parquet`` (as in :mod:`pathpipe.mil.cohort`).
_COORD_COLUMNS = ("tile", "l0_x", "l0_y")
#: Floor of ``attention_norm`` before taking its logarithm (float32 softmax can underflow to 0).
_LOG_FLOOR = 1e-12


# ------------------------------------------------------------------ attention
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
    missing = [c for c in _COORD_COLUMNS if c not in frame.columns]
    if missing:
        raise ConfigError(
            f"slide {name!r}: tile table lacks column(s) {missing}; expected "
            f"{list(_COORD_COLUMNS)} and the tile features"
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
                if c not in _COORD_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
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


def attention_heatmap_figure(
    thumbnail: np.ndarray,
    scale_xy: float | Sequence[float],
    l0_xy: Any,
    l0_tile_size: Any,
    values: Any,
    *,
    title: str | None = None,
    cmap: str = "RdYlBu_r",
    log: bool = True,
    limits: tuple[float, float] | None = None,
    percentiles: tuple[float, float] = (1.0, 99.0),
    centre: float | None = 1.0,
    alpha: float = 0.6,
    label: str = "attention × K (1 = uniform)",
) -> Any:
    """The thumbnail and its :func:`attention_heatmap` side by side, with a colour bar.

    Parameters are those of :func:`attention_heatmap`, plus ``title`` (figure
    title) and ``label`` (colour-bar label, in the units of ``values``).

    Returns
    -------
    matplotlib.figure.Figure
        Not attached to pyplot; save it with ``fig.savefig``.
    """
    from matplotlib.cm import ScalarMappable
    from matplotlib.colors import LogNorm, Normalize
    from matplotlib.figure import Figure

    overlay = attention_heatmap(
        thumbnail, scale_xy, l0_xy, l0_tile_size, values, cmap=cmap, log=log,
        limits=limits, percentiles=percentiles, centre=centre, alpha=alpha,
    )  # fmt: skip
    lo, hi = colour_limits(values, log=log, limits=limits, percentiles=percentiles, centre=centre)
    h, w = overlay.shape[:2]
    panel_w = 5.5
    panel_h = panel_w * h / w
    if panel_h > 7.5:
        panel_h, panel_w = 7.5, 7.5 * w / h
    fig = Figure(figsize=(2 * panel_w + 1.3, panel_h + 0.9), layout="constrained")
    axes = fig.subplots(1, 2)
    for ax, img, name in zip(axes, (thumbnail, overlay), ("slide", "attention"), strict=True):
        ax.imshow(img, interpolation="nearest" if w < 400 else "antialiased")
        ax.set_title(name, fontsize=9)
        ax.set_xticks([])
        ax.set_yticks([])
    norm = LogNorm(2.0**lo, 2.0**hi) if log else Normalize(lo, hi)
    bar = fig.colorbar(ScalarMappable(norm=norm, cmap=cmap), ax=axes, shrink=0.85, label=label)
    if log:
        # Powers of two when the scale spans several; else five evenly spaced (in log) ticks.
        exps = np.arange(math.ceil(lo), math.floor(hi) + 1, dtype=np.float64)
        if exps.size > 9:
            exps = exps[:: math.ceil(exps.size / 9)]
        if exps.size < 3:
            exps = np.linspace(lo, hi, 5)
        bar.set_ticks([2.0**e for e in exps], labels=[f"{2.0**e:.3g}" for e in exps])
        bar.ax.minorticks_off()
    if title:
        fig.suptitle(title, fontsize=11)
    return fig


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


def attention_gallery(
    tiles: Any,
    attention: Any,
    *,
    n: int = 5,
    tile_ids: Any = None,
    title: str | None = None,
) -> Any:
    """Two rows of tiles: the ``n`` of highest attention and the ``n`` of lowest.

    Parameters
    ----------
    tiles : (K, T, T, 3) uint8 array-like
        The bag's tile images in the order of ``attention``. Only the rows
        shown are read (``tiles[i]``), so a lazy array (e.g. zarr) works.
    attention : (K,) array-like of float
        Attention weights ``a_k`` (summing to 1).
    n : int
        Tiles per row; with fewer than ``2n`` tiles the rows overlap (see
        :func:`gallery_indices`).
    tile_ids : (K,) array-like of int, optional
        Tile indices shown in the captions (default: positions ``0..K-1``).
    title : str, optional

    Returns
    -------
    matplotlib.figure.Figure
        Top row highest attention first (left to right), bottom row lowest
        first; each caption gives the rank, tile index, ``a_k`` and ``K · a_k``.
    """
    from matplotlib.figure import Figure

    a = np.asarray(attention, dtype=np.float64)
    top, bottom = gallery_indices(a, n)
    k = a.size
    if hasattr(tiles, "__len__") and len(tiles) != k:
        raise ConfigError(f"{len(tiles)} tiles for {k} attention values; expected one per tile")
    ids = np.arange(k) if tile_ids is None else np.asarray(tile_ids)
    if ids.shape != (k,):
        raise ConfigError(f"tile_ids have shape {ids.shape}; expected ({k},)")
    rank = np.empty(k, np.int64)
    rank[np.argsort(-a, kind="stable")] = np.arange(1, k + 1)
    m = top.size
    fig = Figure(figsize=(2.0 * m + 0.6, 4.9), layout="constrained")
    axes = fig.subplots(2, m, squeeze=False)
    rows = (("highest attention", top, "#b2182b"), ("lowest attention", bottom, "#2166ac"))
    for r, (name, idx, colour) in enumerate(rows):
        for c, i in enumerate(idx):
            ax = axes[r, c]
            ax.imshow(np.asarray(tiles[int(i)]), interpolation="antialiased")
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_color(colour)
                spine.set_linewidth(2.5)
            ax.set_title(
                f"#{rank[i]}  tile {ids[i]}\na = {a[i]:.3g}  (×K {a[i] * k:.2f})", fontsize=8
            )
        axes[r, 0].set_ylabel(name, fontsize=9, color=colour)
    if title:
        fig.suptitle(title, fontsize=10)
    return fig


# ----------------------------------------------------------------- path level
class _StoreTiles:
    """Tile images of the bag, read from ``tiles.zarr`` one at a time on access."""

    def __init__(self, array: Any, tile_index: np.ndarray) -> None:
        self._array = array
        self._index = tile_index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self._array[int(self._index[i])])


def _check_store_matches(
    table: Any, store: Any, *, store_path: str, table_path: str
) -> tuple[Any, tuple[float, float]]:
    """The store's ``tiles`` array and level-0 tile size, after checking the table fits it."""
    meta = store.attrs["pathpipe"]
    for name in ("tiles", "l0_xy"):
        if name not in store:
            raise StorageError(f"tiles store {store_path!r} lacks the array {name!r}")
    l0_tile = meta.get("l0_tile_size")
    if not (isinstance(l0_tile, list) and len(l0_tile) == 2):
        raise StorageError(
            f"tiles store {store_path!r} has l0_tile_size={l0_tile!r} in attrs['pathpipe']; "
            "expected [width, height] in level-0 pixels (rerun the tiling stage)"
        )
    store_xy = np.asarray(store["l0_xy"][:], dtype=np.int64)
    n_store = store_xy.shape[0]
    if store["tiles"].shape[0] != n_store:
        raise StorageError(
            f"tiles store {store_path!r} holds {store['tiles'].shape[0]} tiles but "
            f"{n_store} positions; expected one position per tile"
        )
    tile = table["tile"].to_numpy()
    bad = (tile < 0) | (tile >= n_store)
    if bad.any():
        raise StorageError(
            f"tile table {table_path!r} names tile index(es) {tile[bad][:5].tolist()} but the "
            f"tiles store {store_path!r} holds {n_store} tiles (0..{n_store - 1}); expected "
            "tile features computed from this tiles.zarr"
        )
    uniq, counts = np.unique(tile, return_counts=True)
    if (counts > 1).any():
        raise StorageError(
            f"tile table {table_path!r} lists tile index(es) {uniq[counts > 1][:5].tolist()} "
            "more than once; expected one row per tile"
        )
    table_xy = table[["l0_x", "l0_y"]].to_numpy(np.int64)
    differ = np.flatnonzero((store_xy[tile] != table_xy).any(axis=1))
    if differ.size:
        i = differ[0]
        raise StorageError(
            f"tile table {table_path!r} and tiles store {store_path!r} disagree on the level-0 "
            f"position of {differ.size} of {len(tile)} tiles (e.g. tile {tile[i]}: table "
            f"({table_xy[i, 0]}, {table_xy[i, 1]}), store ({store_xy[tile[i], 0]}, "
            f"{store_xy[tile[i], 1]})); expected tile features computed from this tiles.zarr "
            "(same slide and tiling)"
        )
    return store["tiles"], (float(l0_tile[0]), float(l0_tile[1]))


def _save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int) -> None:
    from pathpipe.io.storage import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def explain_slide_attention(
    model_dir: str | os.PathLike[str],
    table_path: str | os.PathLike[str],
    tiles_store: str | os.PathLike[str],
    slide_path: str | os.PathLike[str],
    *,
    heatmap_out: str | os.PathLike[str],
    gallery_out: str | os.PathLike[str],
    table_out: str | os.PathLike[str],
    slide_id: str | None = None,
    backend: str = "auto",
    slide_mpp: float | None = None,
    slide_mpp_source: str = "override",
    thumbnail_mpp: float = 8.0,
    device: str = "cpu",
    n_gallery: int = 5,
) -> dict[str, Any]:
    """Attention of a saved AMIL model on one slide: table, heatmap and gallery.

    Parameters
    ----------
    model_dir : path-like
        Model directory written by :func:`pathpipe.mil.cohort.write_mil_outputs`
        (``model.json`` config with two ``classes``).
    table_path : path-like
        The slide's ``tile_features.parquet``.
    tiles_store : path-like
        The ``tiles.zarr`` the table was computed from (tile images for the
        gallery, level-0 tile size for the heatmap).
    slide_path : path-like
        The slide file, for the thumbnail.
    heatmap_out, gallery_out : path-like
        PNGs to write (:func:`attention_heatmap_figure`, :func:`attention_gallery`).
    table_out : path-like
        ``attention.parquet`` to write (:func:`attention_table`), with the
        provenance (stage ``mil``, model directory, probability, predicted
        label) under the key ``pathpipe`` of its metadata.
    slide_id : str, optional
        Default: the name of the table's folder (``results/<slide>/``).
    backend, slide_mpp, slide_mpp_source :
        Passed to :func:`pathpipe.io.slide.open_slide`.
    thumbnail_mpp : float
        µm per pixel of the thumbnail under the heatmap.
    device : str
        ``"cpu"``, ``"auto"`` or ``"cuda[:n]"``.
    n_gallery : int
        Tiles per gallery row.

    Returns
    -------
    dict
        ``slide``, ``probability`` (of ``classes[1]``), ``positive_class``,
        ``predicted_label`` (``classes[1]`` when the probability is at least
        0.5), ``n_tiles``, ``thumbnail_shape``.

    Raises
    ------
    ConfigError
        Features that do not fit the model.
    StorageError
        Unreadable inputs; a model without two classes; a table naming tiles the
        store does not hold, or whose ``l0_x``/``l0_y`` differ from the store's
        (features from another tiling); a store made from a slide of other
        dimensions.
    SlideError
        The slide cannot be read.

    Notes
    -----
    Each output is written atomically; they are written only after every check
    has passed. A slide whose table has no tiles (all filtered out by tiling QC)
    is not classified: the heatmap shows its thumbnail under a title saying so,
    the gallery says so, the table is empty, a warning is logged and the
    summary's ``probability`` and ``predicted_label`` are None, so one such
    slide does not fail a cohort run.
    """
    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import open_store, provenance, source_record, write_parquet
    from pathpipe.mil.cohort import _read_table
    from pathpipe.mil.io import load_amil

    if not (isinstance(n_gallery, int) and not isinstance(n_gallery, bool) and n_gallery >= 1):
        raise ConfigError(f"n_gallery={n_gallery!r}; expected a positive integer")
    sid = Path(table_path).parent.name if slide_id is None else str(slide_id)
    model, config, pre = load_amil(model_dir, device=device)
    classes = config.get("classes")
    if not (isinstance(classes, list) and len(classes) == 2):
        raise StorageError(
            f"model {str(model_dir)!r} has classes {classes!r}; expected two class names "
            "(a model written by the mil stage)"
        )
    frame = _read_table(sid, table_path)
    if len(frame) == 0:
        return _no_tiles(
            sid, slide_path, heatmap_out=heatmap_out, gallery_out=gallery_out,
            table_out=table_out, model_dir=model_dir, classes=classes, backend=backend,
            slide_mpp=slide_mpp, slide_mpp_source=slide_mpp_source, thumbnail_mpp=thumbnail_mpp,
        )  # fmt: skip
    table, probability = attention_table(model, pre, frame, slide_id=sid)
    store = open_store(tiles_store, stage="tiling")
    tiles, l0_tile_size = _check_store_matches(
        table, store, store_path=str(tiles_store), table_path=str(table_path)
    )

    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        info = slide.info
        stored = store.attrs["pathpipe"].get("slide", {}).get("dimensions")
        if stored is not None and list(stored) != list(info.dimensions):
            raise StorageError(
                f"tiles store {str(tiles_store)!r} was made from a slide of {stored[0]} × "
                f"{stored[1]} px but {info.path!r} is {info.dimensions[0]} × "
                f"{info.dimensions[1]} px; expected the slide the store was tiled from"
            )
        thumb = slide.thumbnail_at_mpp(thumbnail_mpp)
        expected_wh = slide.size_at_mpp(thumbnail_mpp)
    if (thumb.shape[1], thumb.shape[0]) != expected_wh:
        raise SlideReadError(
            info.path,
            f"thumbnail at {thumbnail_mpp} µm/px is {thumb.shape[1]} × {thumb.shape[0]} px; "
            f"expected {expected_wh[0]} × {expected_wh[1]}",
        )
    # thumbnail_at_mpp samples thumbnail pixel j at level-0 j · thumbnail_mpp / l0_mpp.
    scale_xy = (info.mpp.x / thumbnail_mpp, info.mpp.y / thumbnail_mpp)

    k = len(table)
    positive = classes[1]
    label = positive if probability >= 0.5 else classes[0]
    heat = attention_heatmap_figure(
        thumb,
        scale_xy,
        table[["l0_x", "l0_y"]].to_numpy(),
        l0_tile_size,
        table["attention_norm"].to_numpy(),
        title=f"{sid}: p({positive}) = {probability:.3f}, {k} tile{'s' * (k != 1)}",
    )
    gallery = attention_gallery(
        _StoreTiles(tiles, table["tile"].to_numpy()),
        table["attention"].to_numpy(),
        n=n_gallery,
        tile_ids=table["tile"].to_numpy(),
        title=f"{sid}: tiles of highest and lowest attention (p({positive}) = {probability:.3f})",
    )
    _save_figure(heat, heatmap_out, dpi=110)
    _save_figure(gallery, gallery_out, dpi=100)
    record = provenance(
        stage="mil",
        params={"thumbnail_mpp": thumbnail_mpp, "n_gallery": n_gallery, "device": device},
        step="attention",
        slide_id=sid,
        model=str(Path(model_dir).resolve()),
        classes=classes,
        probability=probability,
        predicted_label=label,
        n_tiles=k,
        source=source_record(table_path),
        tiles_store=str(Path(tiles_store).resolve()),
        slide=info.as_dict(),
        thumbnail_scale_xy=list(scale_xy),
    )
    write_parquet(table, table_out, record)
    return {
        "slide": sid,
        "probability": probability,
        "positive_class": positive,
        "predicted_label": label,
        "n_tiles": k,
        "thumbnail_shape": [int(thumb.shape[0]), int(thumb.shape[1])],
    }


def _no_tiles(
    sid: str,
    slide_path: str | os.PathLike[str],
    *,
    heatmap_out: str | os.PathLike[str],
    gallery_out: str | os.PathLike[str],
    table_out: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    classes: list[Any],
    backend: str,
    slide_mpp: float | None,
    slide_mpp_source: str,
    thumbnail_mpp: float,
) -> dict[str, Any]:
    """Outputs of a slide without tiles: thumbnail, a note, an empty table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import provenance, write_parquet

    message = "no tiles (all filtered out by tiling QC): not classified"
    log.warning("slide %r: %s", sid, message)
    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        info = slide.info
        thumb = slide.thumbnail_at_mpp(thumbnail_mpp)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(thumb)
    ax.set_axis_off()
    ax.set_title(f"{sid}: {message}", fontsize=9)
    _save_figure(fig, heatmap_out, dpi=110)
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{sid}: {message}", ha="center", va="center")
    _save_figure(fig, gallery_out, dpi=100)
    empty = pd.DataFrame(
        {
            "tile": pd.Series([], dtype="int64"),
            "l0_x": pd.Series([], dtype="int64"),
            "l0_y": pd.Series([], dtype="int64"),
            "attention": pd.Series([], dtype="float64"),
            "attention_norm": pd.Series([], dtype="float64"),
            "rank": pd.Series([], dtype="int64"),
        }
    )
    record = provenance(
        stage="mil",
        params={"thumbnail_mpp": thumbnail_mpp},
        step="attention",
        slide_id=sid,
        model=str(Path(model_dir).resolve()),
        classes=classes,
        probability=None,
        predicted_label=None,
        n_tiles=0,
        note=message,
        slide=info.as_dict(),
    )
    write_parquet(empty, table_out, record)
    return {
        "slide": sid,
        "probability": None,
        "positive_class": classes[1],
        "predicted_label": None,
        "n_tiles": 0,
        "thumbnail_shape": [int(thumb.shape[0]), int(thumb.shape[1])],
    }
