"""Convex hulls of pixel sets, in exact integer arithmetic (compiled kernels).

Shared by the geometry family (scikit-image's convex image and Feret diameter,
PyRadiomics' mesh diameter) and the morphology family (concavities). Coordinate
frame: ``Y = 2 r, X = 2 c``, *doubled* integer pixel coordinates, so that
pixel-edge midpoints and the half-pixel diamond of scikit-image's convex hull
stay exact integers.
"""

from __future__ import annotations

import numba
import numpy as np

__all__ = ["convex_hull", "convex_image", "hull_max_dist2", "lex_argsort"]


@numba.njit(cache=True, nogil=True)
def _before(y: np.ndarray, x: np.ndarray, i: int, j: int) -> bool:
    return y[i] < y[j] or (y[i] == y[j] and x[i] < x[j])


@numba.njit(cache=True, nogil=True)
def _sift_down(y: np.ndarray, x: np.ndarray, idx: np.ndarray, root: int, end: int) -> None:
    while True:
        child = 2 * root + 1
        if child >= end:
            return
        if child + 1 < end and _before(y, x, idx[child], idx[child + 1]):
            child += 1
        if not _before(y, x, idx[root], idx[child]):
            return
        idx[root], idx[child] = idx[child], idx[root]
        root = child


@numba.njit(cache=True, nogil=True)
def lex_argsort(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Indices that sort the points ``(y, x)`` lexicographically (heapsort).

    Hand-written because numba's ``np.argsort`` takes seconds to compile for
    every dtype and kind.
    """
    n = len(y)
    idx = np.arange(n)
    for start in range(n // 2 - 1, -1, -1):
        _sift_down(y, x, idx, start, n)
    for end in range(n - 1, 0, -1):
        idx[0], idx[end] = idx[end], idx[0]
        _sift_down(y, x, idx, 0, end)
    return idx


@numba.njit(cache=True, nogil=True)
def convex_hull(y: np.ndarray, x: np.ndarray, order: np.ndarray) -> np.ndarray:
    """Indices of the convex-hull vertices of the points ``(y[j], x[j])``, j in ``order``.

    Andrew's monotone chain (A. M. Andrew, Inf. Process. Lett. 9(5):216-219,
    1979): ``order`` must visit the points sorted by ``(y, x)``. The vertices
    come in hull order, the first not repeated; collinear points are not
    vertices.
    """
    m = len(order)
    if m < 2:
        return order.copy()
    h = np.empty(2 * m + 1, np.int64)
    k = 0
    for t in range(m):
        j = order[t]
        while (
            k >= 2
            and (y[h[k - 1]] - y[h[k - 2]]) * (x[j] - x[h[k - 2]])
            - (x[h[k - 1]] - x[h[k - 2]]) * (y[j] - y[h[k - 2]])
            <= 0
        ):
            k -= 1
        h[k] = j
        k += 1
    lower = k + 1
    for t in range(m - 2, -1, -1):
        j = order[t]
        while (
            k >= lower
            and (y[h[k - 1]] - y[h[k - 2]]) * (x[j] - x[h[k - 2]])
            - (x[h[k - 1]] - x[h[k - 2]]) * (y[j] - y[h[k - 2]])
            <= 0
        ):
            k -= 1
        h[k] = j
        k += 1
    return h[: k - 1].copy()


@numba.njit(cache=True, nogil=True)
def hull_max_dist2(y: np.ndarray, x: np.ndarray, m: int) -> float:
    """Largest squared distance between points ``(y[j], x[j])``, ``j < m``.

    The points must be sorted by ``(y, x)``; only hull vertices can be farthest
    apart, so all pairs of those are compared.
    """
    hull = convex_hull(y, x, np.arange(m))
    best = 0.0
    for a in range(len(hull)):
        for b in range(a + 1, len(hull)):
            dy = float(y[hull[a]] - y[hull[b]])
            dx = float(x[hull[a]] - x[hull[b]])
            best = max(best, dy * dy + dx * dx)
    return best


@numba.njit(cache=True, nogil=True)
def _ceil_div(p: int, q: int) -> int:
    return -((-p) // q)


@numba.njit(cache=True, nogil=True)
def convex_image(
    row: np.ndarray, left: np.ndarray, right: np.ndarray, starts: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Pixel count and maximum Feret diameter of scikit-image's convex image.

    ``skimage.morphology.convex_hull_image`` takes the hull of the four
    half-pixel diamond points of every pixel (only the row extremes matter) and
    keeps the pixels whose centre lies inside or on it (O'Rourke's test of
    ``grid_points_in_poly``, exact here). Each row of the hull is an interval
    found with exact rational arithmetic. ``regionprops.feret_diameter_max`` is
    the largest distance between the marching-squares vertices of that image,
    i.e. the midpoints of its edges to the outside; per row and per half-row
    only the two extreme midpoints can be farthest apart.

    Returns the counts and the squared diameters in doubled units (``/ 4`` for px²).
    """
    n = len(starts) - 1
    count = np.full(n, np.nan)
    feret2 = np.full(n, np.nan)
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        if a == b:
            continue
        m = 0
        py = np.empty(8 * (b - a), np.int64)
        px = np.empty(8 * (b - a), np.int64)
        for j in range(a, b):
            for side in range(2):
                c = left[j] if side == 0 else right[j]
                if side == 1 and right[j] == left[j]:
                    break
                y0, x0 = 2 * row[j], 2 * c
                py[m], px[m] = y0 - 1, x0
                py[m + 1], px[m + 1] = y0, x0 - 1
                py[m + 2], px[m + 2] = y0, x0 + 1
                py[m + 3], px[m + 3] = y0 + 1, x0
                m += 4
        hull = convex_hull(py, px, lex_argsort(py[:m], px[:m]))
        nh = len(hull)
        # rows of the convex image
        r0, r1 = row[a], row[b - 1]
        nr = r1 - r0 + 1
        lo = np.empty(nr, np.int64)
        hi = np.empty(nr, np.int64)
        total = 0
        for t in range(nr):
            yy = 2 * (r0 + t)
            lo_t = 1 << 40
            hi_t = -(1 << 40)
            for e in range(nh):
                p, q = hull[e], hull[(e + 1) % nh]
                y1, x1, y2, x2 = py[p], px[p], py[q], px[q]
                if y1 == y2:
                    if y1 == yy:
                        for xe in (x1, x2):
                            lo_t = min(lo_t, _ceil_div(xe, 2))
                            hi_t = max(hi_t, xe // 2)
                elif min(y1, y2) <= yy <= max(y1, y2):
                    num = x1 * (y2 - y1) + (yy - y1) * (x2 - x1)
                    den = 2 * (y2 - y1)
                    if den < 0:
                        num, den = -num, -den
                    lo_t = min(lo_t, _ceil_div(num, den))
                    hi_t = max(hi_t, num // den)
            lo[t], hi[t] = lo_t, hi_t
            total += hi_t - lo_t + 1
        count[i] = total
        # candidate edge midpoints, sorted by (Y, X)
        cy = np.empty(4 * nr + 4, np.int64)
        cx = np.empty(4 * nr + 4, np.int64)
        q = 0
        cy[q], cx[q] = 2 * r0 - 1, 2 * lo[0]
        q += 1
        if hi[0] != lo[0]:
            cy[q], cx[q] = 2 * r0 - 1, 2 * hi[0]
            q += 1
        for t in range(nr):
            cy[q], cx[q] = 2 * (r0 + t), 2 * lo[t] - 1
            cy[q + 1], cx[q + 1] = 2 * (r0 + t), 2 * hi[t] + 1
            q += 2
            if t + 1 < nr:  # extremes of the symmetric difference of two intervals
                a1, a2, b1, b2 = lo[t], hi[t], lo[t + 1], hi[t + 1]
                if a1 != b1:
                    smin = min(a1, b1)
                elif a2 != b2:
                    smin = min(a2, b2) + 1
                else:
                    continue
                if a2 != b2:
                    smax = max(a2, b2)
                else:
                    smax = max(a1, b1) - 1
                cy[q], cx[q] = 2 * (r0 + t) + 1, 2 * smin
                q += 1
                if smax != smin:
                    cy[q], cx[q] = 2 * (r0 + t) + 1, 2 * smax
                    q += 1
        cy[q], cx[q] = 2 * r1 + 1, 2 * lo[nr - 1]
        q += 1
        if hi[nr - 1] != lo[nr - 1]:
            cy[q], cx[q] = 2 * r1 + 1, 2 * hi[nr - 1]
            q += 1
        feret2[i] = hull_max_dist2(cy, cx, q)
    return count, feret2
