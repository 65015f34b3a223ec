"""Report figure of the features stage: distributions of key nuclear features."""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = ["features_figure"]

# One or two features per family, shown when present (first match of each entry).
_PREFERRED = (
    ("area_um2",),
    ("circularity",),
    ("fo_mean_h", "fo_mean_grey"),
    ("glcm_contrast_h", "glcm_contrast_grey"),
    ("convexity_deficiency",),
    ("chromatin_hc_area_ratio_h", "chromatin_hc_area_ratio_grey"),
    ("curvature_std",),
    ("boundary_radius_gini",),
)


def pick_features(columns: Sequence[str], n: int = 8) -> list[str]:
    """The (up to ``n``) features the figure shows: preferred ones first."""
    chosen = []
    for options in _PREFERRED:
        for name in options:
            if name in columns and name not in chosen:
                chosen.append(name)
                break
    numeric = [c for c in columns if c not in chosen]
    while len(chosen) < min(n, len(columns)) and numeric:
        chosen.append(numeric.pop(0))
    return chosen[:n]


def features_figure(
    path: str | os.PathLike[str],
    nuclear: Any,
    *,
    classes: Sequence[str],
    title: str,
    n_features: int | None = None,
) -> None:
    """Histogram per phenotype of up to eight key nuclear features.

    ``nuclear`` needs ``phenotype`` and the feature columns to show (others are
    ignored); ``n_features`` is the total number of nuclear features, for the title.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from pathpipe.io.storage import atomic_file
    from pathpipe.segmentation.export import class_colours

    skip = {"nucleus_id", "tile", "label", "phenotype", "touches_border"}
    columns = [c for c in nuclear.columns if c not in skip]
    names = pick_features(columns)
    colours = class_colours(classes)
    n_cols = 4
    n_rows = max(1, math.ceil(len(names) / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(3.2 * n_cols, 2.6 * n_rows + 0.6), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    ph = nuclear["phenotype"].astype(str).to_numpy() if len(nuclear) else np.array([])
    for ax, name in zip(axes.ravel(), names, strict=False):
        ax.axis("on")
        values = nuclear[name].to_numpy(np.float64)
        finite = values[np.isfinite(values)]
        if finite.size == 0:
            ax.set_title(f"{name}\n(no values)", fontsize=8)
            continue
        lo, hi = np.percentile(finite, [1, 99])
        bins = np.linspace(lo, hi if hi > lo else lo + 1, 30)
        for c in classes:
            v = values[(ph == c) & np.isfinite(values)]
            if v.size:
                ax.hist(
                    np.clip(v, lo, hi), bins=bins, histtype="step", density=True,
                    color=np.array(colours[c]) / 255, label=f"{c} ({v.size})",
                )  # fmt: skip
        ax.set_title(name, fontsize=8)
        ax.tick_params(labelsize=7)
    handles, labels = axes.ravel()[0].get_legend_handles_labels()
    if handles:
        fig.legend(
            handles, labels, loc="lower center", ncol=len(handles), fontsize=8, frameon=False
        )
    total = len(columns) if n_features is None else n_features
    fig.suptitle(f"{title}: {len(nuclear)} nuclei, {total} nuclear features")
    fig.tight_layout(rect=(0, 0.06, 1, 0.95))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
