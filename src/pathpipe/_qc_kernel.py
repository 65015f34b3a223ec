"""Fused per-tile QC kernel (private), compiled with numba.

One pass over the tile computes the white and grey pixel counts and the sums of
the Laplacian of 8-bit luma and of its square, as exact integers. It releases
the GIL (``nogil=True``), so reader threads run it in parallel; the equivalent
NumPy code is many small array operations that hold the GIL between them and
gets *slower* with two threads. ``pathpipe.tiling._pixel_qc_numpy`` is the
reference it is tested against.
"""

from __future__ import annotations

import numpy as np

__all__ = ["qc_sums"]

try:
    import numba
except ImportError:  # pragma: no cover - numba is a dependency; keep a working fallback
    numba = None


def _qc_sums(
    tile: np.ndarray, white_level: int, grey_chroma: int
) -> tuple[int, int, int, int, int]:
    h, w = tile.shape[0], tile.shape[1]
    luma = np.empty((h, w), dtype=np.int32)
    n_white = 0
    n_grey = 0
    for i in range(h):
        for j in range(w):
            r = np.int32(tile[i, j, 0])
            g = np.int32(tile[i, j, 1])
            b = np.int32(tile[i, j, 2])
            mn = min(r, g, b)
            mx = max(r, g, b)
            if mn >= white_level:
                n_white += 1
            elif mx - mn < grey_chroma:
                n_grey += 1
            luma[i, j] = (77 * r + 150 * g + 29 * b) >> 8
    s1 = np.int64(0)
    s2 = np.int64(0)
    for i in range(1, h - 1):
        for j in range(1, w - 1):
            v = np.int64(
                luma[i - 1, j] + luma[i + 1, j] + luma[i, j - 1] + luma[i, j + 1] - 4 * luma[i, j]
            )
            s1 += v
            s2 += v * v
    m = max(h - 2, 0) * max(w - 2, 0)
    return n_white, n_grey, s1, s2, m


qc_sums = numba.njit(nogil=True, cache=True)(_qc_sums) if numba is not None else None
