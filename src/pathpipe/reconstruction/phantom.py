"""Generated sections with a known transform, for tests and benchmarks.

An irregular 2D object (no symmetry: lobes of different sizes and a few holes)
is the level set ``f(p) > 0.5`` of a seeded sum of Gaussian bumps minus a few
narrower ones, in µm. A section seen through a rigid transform ``T`` (its frame
-> the object's frame) is rasterised as ``mask[r, c] = f(T(x_c, y_r)) > 0.5``, so
registering it onto the untransformed section must recover ``T``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["Phantom", "canvas_transform"]


@dataclass(frozen=True)
class Phantom:
    """A seeded irregular object on a square canvas.

    Attributes
    ----------
    size_um : float
        Canvas edge in µm; the object lies within ``0.27 * size_um`` of its centre.
    seed : int
        Seed of the bumps.
    """

    size_um: float = 2000.0
    seed: int = 0

    def _bumps(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        rng = np.random.default_rng(self.seed)
        r = self.size_um
        # lobes: a central body and smaller bumps around it, at random angles
        n_lobes = 7
        angles = np.sort(rng.uniform(0, 2 * math.pi, n_lobes))
        dist = rng.uniform(0.08, 0.17, n_lobes) * r
        centres = np.column_stack([np.cos(angles), np.sin(angles)]) * dist[:, None]
        centres = np.vstack([[0.0, 0.0], centres])
        sigmas = np.concatenate([[0.11 * r], rng.uniform(0.035, 0.06, n_lobes) * r])
        weights = np.concatenate([[1.0], rng.uniform(0.8, 1.2, n_lobes)])
        # holes: narrow negative bumps inside the body
        n_holes = 3
        h_angles = rng.uniform(0, 2 * math.pi, n_holes)
        h_dist = rng.uniform(0.02, 0.09, n_holes) * r
        h_centres = np.column_stack([np.cos(h_angles), np.sin(h_angles)]) * h_dist[:, None]
        centres = np.vstack([centres, h_centres]) + r / 2
        sigmas = np.concatenate([sigmas, rng.uniform(0.012, 0.02, n_holes) * r])
        weights = np.concatenate([weights, -rng.uniform(1.5, 2.0, n_holes)])
        return centres, sigmas, weights

    def value(self, xy: np.ndarray) -> np.ndarray:
        """The object's field ``f`` at (N, 2) points in µm (object frame); inside is > 0.5."""
        centres, sigmas, weights = self._bumps()
        out = np.zeros(len(xy))
        for c, s, w in zip(centres, sigmas, weights, strict=True):
            out += w * np.exp(-np.sum((xy - c) ** 2, axis=1) / (2 * s * s))
        return out

    def mask(self, mpp: float, transform: RigidTransform2D | None = None) -> np.ndarray:
        """The section as a (H, W) bool mask at ``mpp`` µm/px.

        Parameters
        ----------
        mpp : float
            µm per pixel of the mask (H = W = ``size_um / mpp``).
        transform : RigidTransform2D, optional
            The section's frame -> the object's frame (the truth registration must
            recover); identity when omitted.
        """
        n = round(self.size_um / mpp)
        centres = (np.arange(n) + 0.5) * mpp
        xx, yy = np.meshgrid(centres, centres)
        xy = np.column_stack([xx.ravel(), yy.ravel()])
        if transform is not None:
            xy = transform.apply(xy)
        return (self.value(xy) > 0.5).reshape(n, n)


def canvas_transform(
    size_um: float,
    rotation_deg: float,
    shift_um: tuple[float, float] = (0.0, 0.0),
    *,
    mirrored: bool = False,
) -> RigidTransform2D:
    """A transform turning (and mirroring) a section about the canvas centre, then shifting it.

    ``T(p) = R M (p - c) + c + shift`` with ``c`` the canvas centre; returned as the
    equivalent :class:`RigidTransform2D` (section frame -> object frame).
    """
    c = np.array([size_um / 2, size_um / 2])
    linear = RigidTransform2D(rotation_deg, mirrored=mirrored).linear
    t = c + np.asarray(shift_um, float) - linear @ c
    return RigidTransform2D(rotation_deg, float(t[0]), float(t[1]), mirrored)
