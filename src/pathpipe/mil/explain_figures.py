"""Figures of the SHAP explanations: slide-level beeswarms, tile-level waterfalls.

Drawn with shap's own plots (:func:`shap.plots.beeswarm`,
:func:`shap.plots.waterfall`) from :class:`shap.Explanation` objects
(:func:`explanation`); each PNG is written atomically. shap and matplotlib are
imported inside the functions.
"""

from __future__ import annotations

import io
import math
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["explanation", "plot_beeswarm", "plot_waterfalls"]

_MAX_DISPLAY = 12  # features shown per beeswarm / waterfall


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    from pathpipe.io.storage import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=110, format="png")


def plot_beeswarm(path: Path, expl: Any, title: str) -> None:
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


def plot_waterfalls(path: Path, panels: list[tuple[Any, str]]) -> None:
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


def explanation(values: np.ndarray, base: Any, data: np.ndarray, names: list[str]) -> Any:
    """The :class:`shap.Explanation` of ``values`` (with base values, feature values and names)."""
    import shap

    return shap.Explanation(values=values, base_values=base, data=data, feature_names=names)
