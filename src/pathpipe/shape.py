"""Shape kernels shared by segmentation and features: perimeters and convex hulls.

Low-level and stage-free: :mod:`pathpipe.segmentation.phenotype` and the
feature families (:mod:`pathpipe.features.geometry`,
:mod:`pathpipe.features.morphology`) import these, so both stages measure a
nucleus the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["CROFTON_4", "convex_pixel_counts", "crofton_perimeters"]


# Crofton perimeter weights of the 16 2x2 configurations, 4 directions
# (skimage.measure.perimeter_crofton; Rivollier 2010, after Crofton's formula).
# Configuration bits: bottom-right 1, top-right 2, bottom-left 4, top-left 8.
CROFTON_4 = np.array(
    [
        0.0,
        np.pi / 4 * (1 + 1 / np.sqrt(2)),
        np.pi / (4 * np.sqrt(2)),
        np.pi / (2 * np.sqrt(2)),
        0.0,
        np.pi / 4 * (1 + 1 / np.sqrt(2)),
        0.0,
        np.pi / (4 * np.sqrt(2)),
        np.pi / 4,
        np.pi / 2,
        np.pi / (4 * np.sqrt(2)),
        np.pi / (4 * np.sqrt(2)),
        np.pi / 4,
        np.pi / 2,
        0.0,
        0.0,
    ]
)


def crofton_perimeters(labels: np.ndarray, n: int) -> np.ndarray:
    """Crofton perimeter (px) of every label ``0..n-1`` at once, ``(n,)`` float64.

    Each 2x2 window of the zero-padded label map contributes, for every
    distinct non-zero label in it, the weight of the label's own 2x2 binary
    configuration -- the same sum ``skimage.measure.perimeter_crofton`` forms on
    each region's binary image.
    """
    p = np.pad(labels, 1)
    tl, tr, bl, br = p[:-1, :-1], p[:-1, 1:], p[1:, :-1], p[1:, 1:]
    touched = (tl != 0) | (tr != 0) | (bl != 0) | (br != 0)  # windows meeting a nucleus
    out = np.zeros(n, np.float64)
    corners = (br[touched], tr[touched], bl[touched], tl[touched])
    for k, lab in enumerate(corners):
        emit = lab != 0
        for prev in corners[:k]:
            emit &= lab != prev  # count each label once per window
        ids = lab[emit]
        config = np.zeros(ids.shape, np.intp)
        for bit, other in zip((1, 2, 4, 8), corners, strict=True):
            config += bit * (other[emit] == ids)
        out += np.bincount(ids, weights=CROFTON_4[config], minlength=n)[:n]
    return out


def _hull_counts_kernel(
    row: np.ndarray, left: np.ndarray, right: np.ndarray, starts: np.ndarray
) -> np.ndarray:
    """Lattice points in the convex hull of each region's row extremes.

    Region ``i`` owns rows ``starts[i]:starts[i + 1]`` of ``row`` (increasing),
    each with its leftmost and rightmost pixel column. Andrew's monotone chain
    (A. M. Andrew, Inf. Process. Lett. 9(5):216-219, 1979) builds the hull of
    the points sorted by (row, col); Pick's theorem counts the lattice points:
    ``A + B / 2 + 1``. Plain Python, compiled with numba when available.
    """
    n = len(starts) - 1
    out = np.empty(n, np.float64)
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        m = 0
        px = np.empty(2 * (b - a), np.int64)
        py = np.empty(2 * (b - a), np.int64)
        for j in range(a, b):  # sorted by (row, col); a one-pixel row counts once
            px[m] = row[j]
            py[m] = left[j]
            m += 1
            if right[j] != left[j]:
                px[m] = row[j]
                py[m] = right[j]
                m += 1
        hx = np.empty(2 * m + 1, np.int64)
        hy = np.empty(2 * m + 1, np.int64)
        k = 0
        for j in range(m):  # lower hull
            while (
                k >= 2
                and (hx[k - 1] - hx[k - 2]) * (py[j] - hy[k - 2])
                - (hy[k - 1] - hy[k - 2]) * (px[j] - hx[k - 2])
                <= 0
            ):
                k -= 1
            hx[k] = px[j]
            hy[k] = py[j]
            k += 1
        lower = k + 1
        for j in range(m - 2, -1, -1):  # upper hull
            while (
                k >= lower
                and (hx[k - 1] - hx[k - 2]) * (py[j] - hy[k - 2])
                - (hy[k - 1] - hy[k - 2]) * (px[j] - hx[k - 2])
                <= 0
            ):
                k -= 1
            hx[k] = px[j]
            hy[k] = py[j]
            k += 1
        # hx[:k] is closed (last == first) when m > 1
        twice_area = 0
        boundary = 0
        for j in range(k - 1):
            twice_area += hx[j] * hy[j + 1] - hx[j + 1] * hy[j]
            dx, dy = abs(hx[j + 1] - hx[j]), abs(hy[j + 1] - hy[j])
            while dy:  # gcd
                dx, dy = dy, dx % dy
            boundary += dx
        out[i] = abs(twice_area) / 2.0 + boundary / 2.0 + 1.0
    return out


_HULL_KERNEL: Any = None


def convex_pixel_counts(
    labels: np.ndarray, ids: np.ndarray, rows: np.ndarray, cols: np.ndarray
) -> np.ndarray:
    """Pixels inside the convex hull of each label's pixel centres, ``(len(ids),)`` float64.

    The hull of pixel centres is a lattice polygon, so by Pick's theorem it
    holds ``A + B / 2 + 1`` lattice points (``A`` its area, ``B`` the lattice
    points on its boundary): exactly the pixel count of a digitally convex
    region, whatever the resolution. Only the leftmost and rightmost pixel of
    each row can be hull vertices. ``rows, cols``: ``np.nonzero(labels)``.
    """
    global _HULL_KERNEL
    if _HULL_KERNEL is None:
        try:
            import numba

            _HULL_KERNEL = numba.njit(nogil=True, cache=True)(_hull_counts_kernel)
        except ImportError:  # pragma: no cover - numba is a dependency
            _HULL_KERNEL = _hull_counts_kernel
    n_rows = labels.shape[0]
    key = labels[rows, cols].astype(np.int64) * n_rows + rows  # one key per (label, row)
    order = np.argsort(key, kind="stable")
    key, cols = key[order], cols[order].astype(np.int64)
    starts = np.flatnonzero(np.r_[True, key[1:] != key[:-1]])
    left = np.minimum.reduceat(cols, starts)
    right = np.maximum.reduceat(cols, starts)
    owner = key[starts] // n_rows
    row = key[starts] % n_rows
    region_starts = np.searchsorted(owner, np.r_[ids, ids[-1] + 1]).astype(np.int64)
    return _HULL_KERNEL(row, left, right, region_starts)
