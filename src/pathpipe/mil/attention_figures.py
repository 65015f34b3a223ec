"""Figures of the attention of an AMIL model on one slide: heatmap and tile gallery.

* :func:`attention_heatmap_figure`: the slide thumbnail and its attention
  heatmap (:func:`~pathpipe.mil.attention_maps.attention_heatmap`) side by side,
  with a colour bar;
* :func:`attention_gallery`: the ``n`` tiles of highest and of lowest attention.

Figures are :class:`matplotlib.figure.Figure` objects not attached to pyplot;
matplotlib is imported inside the functions.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.attention_maps import attention_heatmap, colour_limits, gallery_indices

__all__ = ["attention_gallery", "attention_heatmap_figure"]


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
