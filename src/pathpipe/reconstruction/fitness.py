"""How well a moving layer lies on a fixed one: fitness and inlier RMSE.

Open3D's definitions (``registration.evaluate_registration``), on the plane and in
µm: the **fitness** is the fraction of moving points with a fixed point within
``distance``; the **inlier RMSE** is the root mean square distance of those
points to their nearest fixed point. Nearest neighbours come from a SciPy KD-tree
of the fixed points (built once per fixed layer and reused).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["fitness_and_rmse", "fixed_tree"]


def fixed_tree(xy: np.ndarray) -> Any:
    """A KD-tree (``scipy.spatial.cKDTree``) of (N, 2) fixed points in µm."""
    from scipy.spatial import cKDTree

    return cKDTree(np.asarray(xy, dtype=float))


def fitness_and_rmse(tree: Any, moving_xy: np.ndarray, distance: float) -> tuple[float, float]:
    """Fitness and inlier RMSE (µm) of moving points already in the fixed frame.

    Parameters
    ----------
    tree : scipy.spatial.cKDTree
        KD-tree of the fixed points (:func:`fixed_tree`).
    moving_xy : (N, 2) float ndarray
        Moving points, transformed into the fixed frame, in µm.
    distance : float
        Largest distance of an inlier pair, in µm.

    Returns
    -------
    fitness : float
        Fraction of moving points with a fixed point within ``distance``; 0 for
        no moving points.
    inlier_rmse : float
        RMS distance of those points, in µm; NaN when there are none.
    """
    if len(moving_xy) == 0 or tree.n == 0:
        return 0.0, float("nan")
    d, _ = tree.query(moving_xy, k=1, distance_upper_bound=distance, workers=-1)
    inlier = np.isfinite(d)
    if not inlier.any():
        return 0.0, float("nan")
    return float(inlier.mean()), float(np.sqrt(np.mean(d[inlier] ** 2)))
