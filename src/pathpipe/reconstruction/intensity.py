"""Refinement of a pair's placement by the sections' stain density (not in the paper).

A section's outline is a weak cue on its own: sections of a near-elliptic object
look alike at several angles and mirrored, and an outline that changes from one
section to the next (lobes that twist with depth, a tear) pulls ICP off the
truth by degrees. What the sections share inside the outline (ducts and vessels
running through the block, a tumour's dense nuclei) does not.

The cue is the **optical density** ``OD = Σ_c -log(I_c / 255)`` (Beer–Lambert,
summed over R, G, B), averaged over each working pixel
(:attr:`~pathpipe.reconstruction.points.LayerPoints.density`), minus the
slide's background density and divided by the median over the section's mask:
a stain stronger or weaker by a factor scales OD by that factor, so the
normalised density does not change with it (the generated blocks vary the log
stain strength by 0.15 between sections). It is low in lumens and background,
high where nuclei are dense.

:func:`refine_by_density` maximises the normalised cross-correlation (NCC) of
the fixed density and the moving density pulled into the fixed frame (bilinear
interpolation), both Gaussian-smoothed by ``sigma_px`` working pixels, over a
rotation about the fixed layer's centroid and a translation, by Powell's
method from each start; the best start by NCC wins (the mirror of a start is
kept). Each evaluation samples the fixed layer's cropped density grid once.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.points import LayerPoints
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["DensityResult", "density_scores", "refine_by_density"]


@dataclass(frozen=True)
class DensityResult:
    """The outcome of :func:`refine_by_density`.

    Attributes
    ----------
    transform : RigidTransform2D
        Moving layer frame -> fixed layer frame.
    ncc : float
        Normalised cross-correlation of the two densities at ``transform``, in [-1, 1].
    start : int
        Index of the start it came from.
    """

    transform: RigidTransform2D
    ncc: float
    start: int


class _Pair:
    """The fixed density's pixel centres (fixed frame) and both smoothed densities."""

    def __init__(self, fixed: LayerPoints, moving: LayerPoints, sigma_px: float) -> None:
        from scipy.ndimage import gaussian_filter

        if fixed.density is None or moving.density is None:
            raise ConfigError(
                "density refinement of layers without a density image; expected layers "
                "made with rgb= (layer_points)"
            )
        self.fixed_img = gaussian_filter(fixed.density, sigma_px).ravel()
        self.moving_img = gaussian_filter(moving.density, sigma_px)
        h, w = fixed.density.shape
        r, c = np.mgrid[:h, :w]
        step = fixed.working_mpp
        local = np.column_stack([c.ravel() * step, r.ravel() * step])
        self.xy = fixed.density_frame.apply(local)  # fixed pixel centres, fixed layer frame
        self.centre = fixed.xy.mean(axis=0)
        self.to_moving_pixels = moving.density_frame.inverse()
        self.step = moving.working_mpp
        f = self.fixed_img - self.fixed_img.mean()
        self.f = f / max(float(np.sqrt((f**2).sum())), 1e-12)

    def ncc(self, transform: RigidTransform2D) -> float:
        from scipy.ndimage import map_coordinates

        q = self.to_moving_pixels.compose(transform.inverse()).apply(self.xy) / self.step
        m = map_coordinates(self.moving_img, [q[:, 1], q[:, 0]], order=1, cval=0.0)
        m = m - m.mean()
        norm = float(np.sqrt((m**2).sum()))
        return float(self.f @ m) / norm if norm > 0 else -1.0

    def around(self, start: RigidTransform2D, x: np.ndarray) -> RigidTransform2D:
        """``start`` followed by a turn of ``x[0]`` degrees about the fixed centroid
        and a shift of ``x[1:]`` working pixels."""
        turn = RigidTransform2D(float(x[0]))
        c = self.centre
        shift = c - turn.apply(c[None])[0] + np.asarray(x[1:]) * self.step
        return RigidTransform2D(float(x[0]), shift[0], shift[1]).compose(start)


class _Objective:
    """The mean NCC of the moving density against one or more fixed layers (one frame)."""

    def __init__(self, fixed: Sequence[LayerPoints], moving: LayerPoints, sigma_px: float) -> None:
        self.pairs = [_Pair(f, moving, sigma_px) for f in fixed]

    def ncc(self, transform: RigidTransform2D) -> float:
        return float(np.mean([pair.ncc(transform) for pair in self.pairs]))

    def around(self, start: RigidTransform2D, x: np.ndarray) -> RigidTransform2D:
        return self.pairs[0].around(start, x)


def _fixed_layers(fixed: LayerPoints, also: Sequence[LayerPoints]) -> list[LayerPoints]:
    return [fixed, *(layer for layer in also if layer.density is not None)]


def density_scores(
    fixed: LayerPoints,
    moving: LayerPoints,
    transforms: Sequence[RigidTransform2D],
    *,
    sigma_px: float = 1.0,
    also: Sequence[LayerPoints] = (),
) -> np.ndarray:
    """NCC of the fixed density and the moving density placed by each transform (moving -> fixed).

    With ``also`` (more layers in ``fixed``'s frame, e.g. the sections below the
    one below), the mean NCC over ``fixed`` and those.

    Returns
    -------
    (len(transforms),) float64 ndarray
    """
    objective = _Objective(_fixed_layers(fixed, also), moving, sigma_px)
    return np.array([objective.ncc(t) for t in transforms], dtype=float)


def refine_by_density(
    fixed: LayerPoints,
    moving: LayerPoints,
    starts: Sequence[RigidTransform2D],
    *,
    sigma_px: float = 1.0,
    xtol: float = 0.01,
    also: Sequence[LayerPoints] = (),
) -> DensityResult:
    """The placement maximising the density NCC, by Powell's method from each start.

    Parameters
    ----------
    fixed, moving : LayerPoints
        Layers with a density image (``layer_points(..., rgb=...)``).
    starts : sequence of RigidTransform2D
        Moving -> fixed placements to start from (their mirror is kept).
    sigma_px : float
        Gaussian smoothing of both densities, working pixels.
    xtol : float
        Powell's tolerance, in degrees and working pixels.
    also : sequence of LayerPoints
        More layers in ``fixed``'s frame (the registered sections below ``fixed``):
        the objective is the mean NCC over ``fixed`` and these, so one section that
        differs from its neighbours (torn, folded, where the object changes fast)
        does not decide the placement alone. ``ncc`` of the result is against
        ``fixed`` only.

    Returns
    -------
    DensityResult
        The best placement over all starts.

    Raises
    ------
    ConfigError
        When a layer has no density image or no start is given.
    """
    from scipy.optimize import minimize

    if not starts:
        raise ConfigError("density refinement with no start; expected at least one placement")
    objective = _Objective(_fixed_layers(fixed, also), moving, sigma_px)
    pair = objective.pairs[0]
    best: DensityResult | None = None
    best_score = -math.inf
    for i, start in enumerate(starts):
        fit = minimize(
            lambda x, s=start: -pair.ncc(pair.around(s, x)),
            np.zeros(3),
            method="Powell",
            options={"xtol": xtol, "ftol": 1e-6, "direc": np.diag([2.0, 1.0, 1.0])},
        )
        transform = pair.around(start, fit.x).normalised()
        score = objective.ncc(transform)
        if best is None or score > best_score:
            best, best_score = DensityResult(transform, pair.ncc(transform), i), score
    if best is None or not math.isfinite(best.ncc):
        raise ConfigError("density refinement found no finite NCC; expected overlapping layers")
    return best
