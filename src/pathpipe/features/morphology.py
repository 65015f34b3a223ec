"""Morphology family: irregularity of the nuclear outline.

"Advanced morphology": how far a nucleus departs from a convex, smooth,
elliptical outline -- convexity deficiency, concavities (pockets between the
contour and its convex hull), box-counting fractal dimension, bending energy,
distance to the moment ellipse and roughness. All computed on the crack contour
of :mod:`pathpipe.features.contours` (the outer boundary of the largest
8-connected component, through the midpoints of the pixel edges), raw or
resampled and Gaussian-smoothed as described there.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from pathpipe.features.contours import SIGMA_FRACTION, smooth_curves, trace_contours
from pathpipe.features.hull import convex_hull, lex_argsort
from pathpipe.features.pixels import Nuclei, centroids, prepare
from pathpipe.features.registry import (
    FeatureSpec,
    NucleusBatch,
    check_settings,
    evaluate,
    feature,
    specs_of,
)
from pathpipe.shape import convex_pixel_counts

__all__ = ["compute", "feature_specs"]

FAMILY = "morphology"

CONCAVITY_MIN_DEPTH_UM = 0.5
"""Default depth (µm) from which a pocket of the contour counts as a concavity;
never less than 1 px (digitisation pockets of a crack contour are < 0.7 px deep)."""

FRACTAL_LEVELS = (1, 2, 3, 4)
"""Box sizes of the fractal dimension: ``d_eq / 2**j`` for these ``j``."""

ELLIPSE_POINTS = 64
"""Contour points (equally spaced in arc length) of the ellipse-fit residual."""

ROUGHNESS_POINTS = 64
"""Points of the smoothed contour (equally spaced) whose polygon gives the roughness;
the smoothing (σ >= 0.03 P, two spacings) leaves nothing finer."""

_GRID_SHIFTS = np.array([(s, t) for s in (0.0, 0.25, 0.5, 0.75) for t in (s, (s + 0.5) % 1.0)])
"""Grid origins of the box counting, (row, column) shifts in box sizes: as steady on
digital discs as all 16 combinations of 0, ¼, ½, ¾ (1.00-1.05), at half the cost."""


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True)
def _hull_indices(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Indices of the convex-hull vertices of the points, ascending."""
    out = convex_hull(y, x, lex_argsort(y, x))
    for t in range(1, len(out)):  # insertion sort: few vertices
        v = out[t]
        q = t - 1
        while q >= 0 and out[q] > v:
            out[q + 1] = out[q]
            q -= 1
        out[q + 1] = v
    return out


@numba.njit(cache=True, nogil=True)
def _concavity_kernel(
    y2: np.ndarray, x2: np.ndarray, offsets: np.ndarray, min_depth2: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Count, max and summed depth of the pockets of each contour, doubled px.

    Contour vertices between two consecutive hull vertices (in contour order)
    form a pocket; its depth is their largest distance to the line through the
    two hull vertices. Pockets at least ``min_depth2`` deep count.
    """
    n = len(offsets) - 1
    count = np.zeros(n)
    deepest = np.zeros(n)
    total = np.zeros(n)
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        m = b - a
        if m < 3:
            continue
        y = y2[a:b]
        x = x2[a:b]
        hull = _hull_indices(y, x)
        nh = len(hull)
        for t in range(nh):
            ia = hull[t]
            ib = hull[t + 1] if t + 1 < nh else hull[0] + m
            ey = float(y[ib % m] - y[ia])
            ex = float(x[ib % m] - x[ia])
            norm = math.hypot(ey, ex)
            if norm == 0:
                continue
            depth = 0.0
            for j in range(ia + 1, ib):
                q = j % m
                d = abs(ey * (x[q] - x[ia]) - ex * (y[q] - y[ia])) / norm
                depth = max(depth, d)
            if depth >= min_depth2[i]:
                count[i] += 1
                total[i] += depth
                deepest[i] = max(deepest[i], depth)
    return count, deepest, total


@numba.njit(cache=True, nogil=True)
def _box_counts(
    y: np.ndarray, x: np.ndarray, offsets: np.ndarray, sizes: np.ndarray, shifts: np.ndarray
) -> np.ndarray:
    """Mean number of boxes of side ``sizes[i, j]`` (px) met by closed polygon ``i``.

    For each size the polygon is sampled every ``size / 4`` along each edge (and
    at every vertex); the count is averaged over the grids whose origin is the
    polygon's bounding-box corner shifted by ``-shifts[g] * size`` (``(G, 2)``),
    which removes the dependence on where the grid happens to fall.
    """
    n, nj = sizes.shape
    ns = len(shifts)
    out = np.zeros((n, nj))
    for i in range(n):
        a, b = offsets[i], offsets[i + 1]
        if b == a:
            continue
        y0, x0 = y[a:b].min(), x[a:b].min()
        for s in range(nj):
            eps = sizes[i, s]
            step = eps / 4.0
            total = 0
            for j in range(a, b):
                k = j + 1 if j + 1 < b else a
                total += max(1, math.ceil(math.hypot(y[k] - y[j], x[k] - x[j]) / step))
            py = np.empty(total)
            px = np.empty(total)
            q = 0
            for j in range(a, b):
                k = j + 1 if j + 1 < b else a
                steps = max(1, math.ceil(math.hypot(y[k] - y[j], x[k] - x[j]) / step))
                for t in range(steps):
                    f = t / steps
                    py[q] = y[j] + f * (y[k] - y[j])
                    px[q] = x[j] + f * (x[k] - x[j])
                    q += 1
            gy = int((py.max() - y0) / eps) + 3
            gx = int((px.max() - x0) / eps) + 3
            seen = np.zeros((gy, gx), np.bool_)
            acc = 0
            for g in range(ns):
                seen[:, :] = False
                oy = y0 - shifts[g, 0] * eps
                ox = x0 - shifts[g, 1] * eps
                for t in range(total):
                    by = int((py[t] - oy) / eps)
                    bx = int((px[t] - ox) / eps)
                    if not seen[by, bx]:
                        seen[by, bx] = True
                        acc += 1
            out[i, s] = acc / ns
    return out


@numba.njit(cache=True, nogil=True)
def _ellipse_distance(e0: float, e1: float, y0: float, y1: float) -> float:
    """Distance of point ``(y0, y1) >= 0`` to the ellipse of semi-axes ``e0 >= e1 > 0``.

    D. Eberly, "Distance from a point to an ellipse, an ellipsoid, or a
    hyperellipsoid", Geometric Tools (2013): the closest point is
    ``(e0² y0 / (t + e0²), e1² y1 / (t + e1²))`` with ``t`` the root of
    ``F(t) = (e0 y0 / (t + e0²))² + (e1 y1 / (t + e1²))² - 1`` in ``t > -e1²``.
    The root is sought for ``u = t + e1² > 0``, not ``t``: near the major axis
    ``t + e1²`` is far smaller than ``e1²`` and, formed as a sum, cancelled to 0
    (division by zero on a nearly circular nucleus). ``F`` is convex and
    decreasing in ``u``, so Newton's method started where ``F >= 0``, at
    ``u = max(e1 y1, e0 y0 - (e0² - e1²))`` (first or second term of ``F`` equal
    to 1), climbs monotonically to the root and ``u`` stays positive. Points
    within ``1e-12 e1`` of the major axis take the closed form of the paper for
    the axis (``y1 = 0``): the distance is 1-Lipschitz in the point, so this moves
    it by at most ``y1``, where Newton from so small a ``u`` would crawl.
    """
    c = e1 * y1
    a2, b2 = e0 * e0, e1 * e1
    if c > 1e-12 * b2:
        d = a2 - b2
        u = max(c, e0 * y0 - d)
        for _ in range(60):
            p = e0 * y0 / (u + d)
            q = c / u
            f = p * p + q * q - 1.0
            if f <= 0.0:
                break
            df = -2.0 * (p * p / (u + d) + q * q / u)
            step = -f / df
            u += step
            if step <= 1e-14 * u:
                break
        x0 = a2 * y0 / (u + d)
        x1 = b2 * y1 / u
        return math.hypot(x0 - y0, x1 - y1)
    numer0 = e0 * y0
    denom0 = a2 - b2
    if numer0 < denom0:
        xde0 = numer0 / denom0
        x0 = e0 * xde0
        x1 = e1 * math.sqrt(max(1.0 - xde0 * xde0, 0.0))
        return math.hypot(x0 - y0, x1 - y1)
    return math.hypot(y0 - e0, y1)


@numba.njit(cache=True, nogil=True)
def _ellipse_residuals(u: np.ndarray, v: np.ndarray, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Mean distance of the points ``(u[i], v[i])`` (ellipse frame) to ellipse ``i``."""
    k, m = u.shape
    out = np.zeros(k)
    for i in range(k):
        total = 0.0
        for j in range(m):
            total += _ellipse_distance(a[i], b[i], abs(u[i, j]), abs(v[i, j]))
        out[i] = total / m
    return out


@numba.njit(cache=True, nogil=True)
def _hull_perimeters(zr: np.ndarray, zi: np.ndarray) -> np.ndarray:
    """Perimeter of the convex hull of each row's points ``(zr, zi)``."""
    out = np.zeros(zr.shape[0])
    for i in range(zr.shape[0]):
        hull = _hull_indices(zi[i], zr[i])
        total = 0.0
        for t in range(len(hull)):
            p = hull[t]
            q = hull[(t + 1) % len(hull)]
            total += math.hypot(zr[i, q] - zr[i, p], zi[i, q] - zi[i, p])
        out[i] = total
    return out


# --------------------------------------------------------------------------- features


class Morphology:
    """Morphology features of the nuclei of one batch (one method per feature).

    Notation: ``A`` area, ``s`` = mpp, ``d_eq = sqrt(4A/π)``, ``C`` the raw crack
    contour, ``C̃`` the smoothed contour with curvature ``κ_j`` (1/µm) and arc-length
    weight ``w_j`` (:mod:`pathpipe.features.contours`).
    """

    family = FAMILY

    def __init__(
        self,
        nuc: Nuclei,
        *,
        sigma_fraction: float = SIGMA_FRACTION,
        concavity_min_depth_um: float = CONCAVITY_MIN_DEPTH_UM,
    ) -> None:
        self.nuc = nuc
        n, s = nuc.n, nuc.mpp
        k = nuc.count
        full = k > 0
        # convex hull of the pixel centres, lattice points by Pick's theorem
        self.hull_count = np.full(n, np.nan)
        if full.any():
            ids = np.flatnonzero(full) + 1
            self.hull_count[full] = convex_pixel_counts(nuc.compact, ids, nuc.rows, nuc.cols)
        contours = trace_contours(nuc)
        # concavities on the raw contour (doubled integer coordinates)
        y2 = np.rint(contours.y * 2).astype(np.int64)
        x2 = np.rint(contours.x * 2).astype(np.int64)
        min_depth_px = max(concavity_min_depth_um / s, 1.0)
        cnt, deepest, total = _concavity_kernel(
            y2, x2, contours.offsets, np.full(n, 2.0 * min_depth_px)
        )
        self.concavity = (cnt, deepest / 2.0 * s, total / 2.0 * s)
        # box counting
        d_eq = np.sqrt(4.0 * k / np.pi)
        levels = np.array(FRACTAL_LEVELS, np.float64)
        sizes = np.where(full, d_eq, 1.0)[:, None] / 2.0 ** levels[None, :]
        boxes = _box_counts(contours.y, contours.x, contours.offsets, sizes, _GRID_SHIFTS)
        lx = levels * math.log(2.0)  # log(1 / eps) up to a constant
        ly = np.log(np.maximum(boxes, 1.0))
        lxc = lx - lx.mean()
        self.fractal = (ly - ly.mean(axis=1, keepdims=True)) @ lxc / (lxc @ lxc)
        # moment ellipse of the union of the pixel squares (pixel variance + 1/12)
        cr, cc = centroids(nuc)
        dr = nuc.rows - cr[nuc.index]
        dc = nuc.cols - cc[nuc.index]
        with np.errstate(divide="ignore", invalid="ignore"):
            vr = nuc.total(dr * dr) / k + 1.0 / 12.0
            vc = nuc.total(dc * dc) / k + 1.0 / 12.0
            cv = nuc.total(dr * dc) / k
        half, root = (vr + vc) / 2.0, np.hypot((vr - vc) / 2.0, cv)
        semi_a = 2.0 * np.sqrt(half + root)
        semi_b = 2.0 * np.sqrt(np.maximum(half - root, 0.0))
        phi = 0.5 * np.arctan2(2.0 * cv, vr - vc)  # major axis, from the row axis
        self.bending = np.full(n, np.nan)
        self.residual = np.full(n, np.nan)
        self.roughness = np.full(n, np.nan)
        for g in smooth_curves(nuc, sigma_fraction=sigma_fraction):
            i = g.index
            wt = g.speed / g.speed.sum(axis=1, keepdims=True)
            self.bending[i] = (wt * (g.kappa / s) ** 2).sum(axis=1)
            pr, pc = g.z.imag - cr[i][:, None], g.z.real - cc[i][:, None]
            cos, sin = np.cos(phi[i])[:, None], np.sin(phi[i])[:, None]
            u = pr * cos + pc * sin
            v = -pr * sin + pc * cos
            every = u.shape[1] // ELLIPSE_POINTS  # M is a power of two >= 64
            res = _ellipse_residuals(
                np.ascontiguousarray(u[:, ::every]),
                np.ascontiguousarray(v[:, ::every]),
                semi_a[i],
                semi_b[i],
            )
            self.residual[i] = res * s
            zs = g.zs[:, :: g.zs.shape[1] // ROUGHNESS_POINTS]
            smooth_len = (np.abs(np.roll(zs, -1, axis=1) - zs)).sum(axis=1)
            self.roughness[i] = smooth_len / _hull_perimeters(
                np.ascontiguousarray(zs.real), np.ascontiguousarray(zs.imag)
            )
        self.d_eq = d_eq

    @feature("1")
    def convexity_deficiency(self) -> np.ndarray:
        """1 - A / A_hull, A_hull the pixels inside or on the convex hull of the pixel
        centres (Pick's theorem, exact): 0 for a digitally convex nucleus at any
        resolution, unlike 1 - ``solidity``."""
        return 1.0 - self.nuc.count / self.hull_count

    @feature("count")
    def concavity_count(self) -> np.ndarray:
        """Number of concavities: runs of vertices of C between two consecutive vertices
        of its convex hull whose largest distance to the hull edge (depth) is at least
        max(``concavity_min_depth_um``, 1 px), 0.5 µm by default."""
        return self.concavity[0]

    @feature("µm")
    def concavity_max_depth_um(self) -> np.ndarray:
        """Largest depth of a concavity (0 without concavity)."""
        return self.concavity[1]

    @feature("µm")
    def concavity_mean_depth_um(self) -> np.ndarray:
        """Mean depth of the concavities (0 without concavity)."""
        cnt, _, total = self.concavity
        return np.where(cnt > 0, total / np.maximum(cnt, 1), 0.0)

    @feature("1")
    def fractal_dimension(self) -> np.ndarray:
        """Box-counting dimension of C: -slope of the least-squares line of log N(ε) on
        log ε, N(ε) the number of boxes of side ε = d_eq / 2^j, j = 1..4, met by C,
        averaged over 8 grid origins (shifts (s, s) and (s, s + ½) ε, s = 0, ¼, ½, ¾);
        0.98-1.05 for digital discs."""
        return self.fractal

    @feature("1/µm²")
    def bending_energy(self) -> np.ndarray:
        """E = (1/P) ∮ κ² ds = Σ w_j κ_j² / Σ w_j on C̃ (Young, Walker & Bowie, "An
        analysis technique for biological shape. I", Inf. Control 25:357-370, 1974):
        1/R² for a disc of radius R."""
        return self.bending

    @feature("µm")
    def ellipse_fit_residual_um(self) -> np.ndarray:
        """Mean distance (Eberly 2013) of 64 points of C equally spaced in arc length to the
        moment ellipse: centre the pixel centroid, semi-axes 2 sqrt(λ1), 2 sqrt(λ2) of the
        covariance of the union of the pixel squares (pixel-centre covariance + 1/12)."""
        return self.residual

    @feature("1")
    def ellipse_fit_residual_norm(self) -> np.ndarray:
        """ellipse_fit_residual_um / (s d_eq / 2), scale-free."""
        return self.residual / (self.d_eq * self.nuc.mpp / 2.0)

    @feature("1")
    def roughness(self) -> np.ndarray:
        """P(C̃) / P(hull(C̃)): perimeter of the smoothed contour (polygon of 64 points equally
        spaced in arc length) over that of its convex hull, the inverse of the convexity of Zunic & Rosin (IEEE TPAMI 26(7):923-934,
        2004); 1 for convex outlines."""
        return self.roughness


def feature_specs(channels: Sequence[str] = ()) -> list[FeatureSpec]:
    """The morphology features, in column order (independent of ``channels``).

    Parameters
    ----------
    channels : sequence of str
        Unused: morphology features take no intensity channel.

    Returns
    -------
    list of FeatureSpec
    """
    return specs_of(Morphology)


def compute(
    batch: NucleusBatch,
    *,
    sigma_fraction: float = SIGMA_FRACTION,
    concavity_min_depth_um: float = CONCAVITY_MIN_DEPTH_UM,
) -> dict[str, np.ndarray]:
    """Morphology features of the nuclei ``batch.ids``.

    Parameters
    ----------
    batch : NucleusBatch
    sigma_fraction : float
        Contour smoothing σ as a fraction of the perimeter (floor 2 px), as in
        :mod:`pathpipe.features.contours`.
    concavity_min_depth_um : float
        Depth from which a pocket counts as a concavity (never below 1 px).

    Returns
    -------
    dict of str to (n,) float64 ndarray
        One entry per :func:`feature_specs` name, in that order.
    """
    check_settings(sigma_fraction=sigma_fraction, concavity_min_depth_um=concavity_min_depth_um)
    nuc = prepare(batch)
    return evaluate(
        Morphology(
            nuc, sigma_fraction=sigma_fraction, concavity_min_depth_um=concavity_min_depth_um
        )
    )
