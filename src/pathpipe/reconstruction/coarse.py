"""Coarse alignment of two layers that survives any rotation and a mirrored section.

The paper (Wu et al.) starts ICP from the identity, which fails when a section
lies at a large angle or was mounted upside down. Here, before ICP:

1. the centroids ``C_fix``, ``C_mov`` (the paper's Eqs. 2–3) are matched;
2. the rotations tried are every multiple of ``angle_step`` over 360° plus the
   two that align the principal axes (eigenvectors of the point covariance),
   for the section as is and, with ``mirror``, mirrored about its centroid
   (x negated);
3. each candidate ``p' = R M (p - C_mov) + C_fix`` is scored by its fitness
   (:mod:`~pathpipe.reconstruction.fitness`) on a seeded subsample, with a
   distance that a rotation error of half a step allows at the layer's radius.

The candidates come back best first; :func:`pathpipe.reconstruction.register.register_pair`
refines the best few with ICP and chooses by fitness again.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.fitness import fitness_and_rmse, fixed_tree
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["Candidate", "coarse_candidates", "principal_angle"]


@dataclass(frozen=True)
class Candidate:
    """One coarse placement of the moving layer and its fitness."""

    transform: RigidTransform2D
    fitness: float


def principal_angle(xy: np.ndarray) -> float:
    """Angle in degrees of the major principal axis of (N, 2) points (x towards y)."""
    centred = xy - xy.mean(axis=0)
    cov = centred.T @ centred / max(len(xy) - 1, 1)
    values, vectors = np.linalg.eigh(cov)
    major = vectors[:, int(np.argmax(values))]
    return math.degrees(math.atan2(major[1], major[0]))


def _subsample(xy: np.ndarray, n: int, rng: np.random.Generator) -> np.ndarray:
    if len(xy) <= n:
        return xy
    return xy[rng.choice(len(xy), size=n, replace=False)]


def coarse_candidates(
    fixed_xy: np.ndarray,
    moving_xy: np.ndarray,
    *,
    angle_step: float = 15.0,
    mirror: bool = True,
    max_points: int = 3000,
    seed: int = 0,
) -> list[Candidate]:
    """Rigid placements of the moving layer onto the fixed one, best fitness first.

    Parameters
    ----------
    fixed_xy, moving_xy : (N, 2) float ndarray
        The two layers in µm, each in its own frame.
    angle_step : float
        Degrees between the rotations tried (360° in all).
    mirror : bool
        Whether to try the mirrored moving layer too.
    max_points : int
        Points of each layer the fitness is computed on (seeded subsample).
    seed : int
        Seed of the subsample.

    Returns
    -------
    list of Candidate
        Every rotation tried (× mirror), best fitness first.

    Raises
    ------
    ConfigError
        When a layer has fewer than 3 points or ``angle_step`` is not in (0, 180].
    """
    if len(fixed_xy) < 3 or len(moving_xy) < 3:
        raise ConfigError(
            f"coarse alignment of layers with {len(fixed_xy)} and {len(moving_xy)} points; "
            "expected at least 3 each"
        )
    if not 0 < angle_step <= 180:
        raise ConfigError(f"angle_step={angle_step!r}; expected degrees in (0, 180]")
    rng = np.random.default_rng(seed)
    fixed = _subsample(np.asarray(fixed_xy, float), 8 * max_points, rng)
    moving = _subsample(np.asarray(moving_xy, float), max_points, rng)
    c_fix, c_mov = fixed.mean(axis=0), moving.mean(axis=0)
    radius = float(np.sqrt(np.mean(np.sum((fixed - c_fix) ** 2, axis=1))))
    # the spacing of the fixed subsample, and the miss a half-step rotation makes at the radius
    spacing = math.sqrt(_area(fixed) / len(fixed))
    distance = max(2.0 * spacing, radius * math.sin(math.radians(angle_step / 2)))
    tree = fixed_tree(fixed)
    theta_fix = principal_angle(fixed)

    candidates = []
    for mirrored in (False, True) if mirror else (False,):
        flip = np.array([-1.0, 1.0]) if mirrored else np.ones(2)
        centred = (moving - c_mov) * flip
        theta_mov = principal_angle(centred)
        angles = list(np.arange(0.0, 360.0, angle_step))
        angles += [theta_fix - theta_mov, theta_fix - theta_mov + 180.0]
        for angle in angles:
            rot = RigidTransform2D(float(angle))
            placed = rot.apply(centred) + c_fix
            fit, _ = fitness_and_rmse(tree, placed, distance)
            # the full transform of the moving frame: t = C_fix - R M C_mov
            linear = RigidTransform2D(float(angle), mirrored=mirrored).linear
            t = c_fix - linear @ c_mov
            candidates.append(
                Candidate(RigidTransform2D(float(angle), t[0], t[1], mirrored).normalised(), fit)
            )
    candidates.sort(key=lambda c: -c.fitness)
    return candidates


def _area(xy: np.ndarray) -> float:
    """Bounding-box area of points (µm²), at least 1."""
    span = xy.max(axis=0) - xy.min(axis=0)
    return max(float(span[0] * span[1]), 1.0)
