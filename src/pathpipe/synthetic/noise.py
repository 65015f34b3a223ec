"""Coordinate-hashed noise for :mod:`pathpipe.synthetic.generate` (private).

Every field is a pure function of absolute level-0 coordinates, so a pixel's
value never depends on how a region is cut into tiles. Per-pixel work uses only
IEEE basic arithmetic and table look-ups (correctly rounded, hence independent
of array shapes); there are no transcendental functions per pixel.
"""

from __future__ import annotations

import functools

import numpy as np

__all__: list[str] = []

F32 = np.float32

# --------------------------------------------------------------------------- hashing


_M1 = np.uint32(0x7FEB352D)
_M2 = np.uint32(0x846CA68B)
_GOLDEN = np.uint32(0x9E3779B9)


def _u32(a: np.ndarray | int) -> np.ndarray:
    return (np.asarray(a, dtype=np.int64) & 0xFFFFFFFF).astype(np.uint32)


def _mix32(x: np.ndarray) -> np.ndarray:
    """The "lowbias32" integer finaliser (C. Wellons, 2018), on uint32 arrays."""
    x = x ^ (x >> np.uint32(16))
    x = x * _M1
    x ^= x >> np.uint32(15)
    x *= _M2
    x ^= x >> np.uint32(16)
    return x


def hash_unit(key: np.ndarray | int, iy: np.ndarray, ix: np.ndarray) -> np.ndarray:
    """Hash integer coordinates to floats in ``[-1, 1)`` (broadcasting)."""
    h = _mix32(_u32(key) ^ _mix32(_u32(ix) + _GOLDEN))
    h = _mix32(h ^ (_u32(iy) * _GOLDEN))
    return ((h >> np.uint32(8)).astype(F32) * F32(2.0 / 16777216.0)) - F32(1.0)


@functools.lru_cache(maxsize=4096)
def key_of(*parts: int) -> tuple[int, int]:
    """Lattice-table offsets ``(ox, oy)`` for a stream named by small integers."""
    h = np.uint32(0x2545F491) + np.zeros(1, dtype=np.uint32)
    for p in parts:
        h = _mix32(h ^ _u32(p))
    v = int(h[0])
    return v & TABLE_MASK, (v >> TABLE_BITS) & TABLE_MASK


# --------------------------------------------------------------------------- noise

# All value noise reads one hashed random table: lattice node (ix, iy) of the
# stream with offsets (ox, oy) takes TABLE[(iy + oy) & MASK, (ix + ox) & MASK].
# Each field therefore repeats after 1024 lattice cells (>= 1 mm for the
# coarsest texture used here), and costs a gather instead of a hash.
TABLE_BITS = 10
TABLE_MASK = (1 << TABLE_BITS) - 1


@functools.cache
def _table() -> np.ndarray:
    n = np.arange(1 << TABLE_BITS)
    return hash_unit(0x7A11E, n[:, None], n[None, :])


def _smoothstep(f: np.ndarray) -> np.ndarray:
    return f * f * (3.0 - 2.0 * f)


def _cells(coords: np.ndarray, wavelength: float) -> tuple[np.ndarray, np.ndarray]:
    g = np.asarray(coords, dtype=np.float64) / wavelength
    i = np.floor(g)
    return i.astype(np.int64), _smoothstep(g - i).astype(F32)


def value_noise_batch(
    xs: np.ndarray, ys: np.ndarray, wavelength: np.ndarray, keys: np.ndarray
) -> np.ndarray:
    """Smooth value noise on ``n`` separable grids at once.

    Item ``k`` is evaluated on the grid ``ys[k][:, None] x xs[k][None, :]``
    with lattice spacing ``wavelength[k]`` and stream offsets ``keys[k]``.
    Lattice nodes are absolute, values are interpolated separably with
    smoothstep weights, so every pixel depends only on its own coordinate.

    Parameters
    ----------
    xs : (n, W) float64 ndarray
    ys : (n, H) float64 ndarray
    wavelength : (n,) float64 ndarray
    keys : (n, 2) int64 ndarray
        Table offsets ``(ox, oy)`` (see :func:`key_of`).

    Returns
    -------
    (n, H, W) float32 ndarray in ``[-1, 1)``.
    """
    gx = xs / wavelength[:, None]
    gy = ys / wavelength[:, None]
    ix = np.floor(gx)
    iy = np.floor(gy)
    wx = _smoothstep(gx - ix).astype(F32)
    wy = _smoothstep(gy - iy).astype(F32)
    ix = ix.astype(np.int64)
    iy = iy.astype(np.int64)
    x_lo = ix.min(axis=1)
    y_lo = iy.min(axis=1)
    jx = ix - x_lo[:, None]
    jy = iy - y_lo[:, None]
    cols = (x_lo[:, None] + np.arange(int(jx.max()) + 2) + keys[:, :1]) & TABLE_MASK
    rows = (y_lo[:, None] + np.arange(int(jy.max()) + 2) + keys[:, 1:]) & TABLE_MASK
    lat = _table()[rows[:, :, None], cols[:, None, :]]
    return _lattice_interp(lat, jx, wx, jy, wy)


def _lattice_interp(
    lat: np.ndarray,
    jx: np.ndarray,
    wx: np.ndarray,
    jy: np.ndarray,
    wy: np.ndarray,
) -> np.ndarray:
    """Separable lattice interpolation on per-item grids by row gathers.

    ``lat`` is ``(n, Ly, Lx)``; ``jx, wx`` ``(n, W)`` and ``jy, wy`` ``(n, H)``
    are lattice cells and weights. Returns ``(n, H, W)`` float32.
    """
    n, ly, lx = lat.shape
    w, h = jx.shape[1], jy.shape[1]
    lat_t = np.ascontiguousarray(lat.transpose(0, 2, 1)).reshape(n * lx, ly)
    base = ((np.arange(n) * lx)[:, None] + jx).ravel()
    left = np.take(lat_t, base, axis=0)
    right = np.take(lat_t, base + 1, axis=0)
    right -= left
    right *= wx.reshape(-1, 1)
    left += right  # (n*W, Ly): lattice rows interpolated at each column
    cols = np.ascontiguousarray(left.reshape(n, w, ly).transpose(0, 2, 1)).reshape(n * ly, w)
    base = ((np.arange(n) * ly)[:, None] + jy).ravel()
    top = np.take(cols, base, axis=0)
    bottom = np.take(cols, base + 1, axis=0)
    bottom -= top
    bottom *= wy.reshape(-1, 1)
    top += bottom
    return top.reshape(n, h, w)


def value_noise_points(
    x: np.ndarray, y: np.ndarray, wavelength: float, key: tuple[int, int]
) -> np.ndarray:
    """The field of :func:`value_noise_grid` at scattered points, ``(n,)`` float32."""
    ix, wx = _cells(x, wavelength)
    iy, wy = _cells(y, wavelength)
    t = _table()
    c0, c1 = (ix + key[0]) & TABLE_MASK, (ix + 1 + key[0]) & TABLE_MASK
    r0, r1 = (iy + key[1]) & TABLE_MASK, (iy + 1 + key[1]) & TABLE_MASK
    top = t[r0, c0] + (t[r0, c1] - t[r0, c0]) * wx
    bottom = t[r1, c0] + (t[r1, c1] - t[r1, c0]) * wx
    return top + (bottom - top) * wy


def octave_weight(wavelength: float, downsample: float) -> float:
    """Amplitude kept by an octave after box-averaging over ``downsample`` px.

    1 while the wavelength spans at least 3 output pixels, fading linearly to 0
    at 1.5 output pixels (band-limiting instead of aliasing).
    """
    return min(1.0, max(0.0, (wavelength / downsample - 1.5) / 1.5))


def white_noise_grid(l0_x: np.ndarray, l0_y: np.ndarray) -> np.ndarray:
    """Per-pixel white noise in ``[-1, 1)``, ``(H, W)`` float32, 1024-periodic."""
    cols = (np.floor(l0_x).astype(np.int64) + 291) & TABLE_MASK
    rows = (np.floor(l0_y).astype(np.int64) + 517) & TABLE_MASK
    return np.take(_table()[rows], cols, axis=1)


def coarse_grid(coords: np.ndarray, spacing: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Global coarse nodes (multiples of ``spacing``) bracketing ``coords``.

    Returns ``(nodes (K,) float64, cell (n,) int64, t (n,) float32)``: each
    coordinate lies between ``nodes[cell]`` and ``nodes[cell + 1]`` at fraction ``t``.
    """
    g = np.asarray(coords, dtype=np.float64) / spacing
    k = np.floor(g)
    t = (g - k).astype(F32)
    k = k.astype(np.int64)
    k_lo = int(k.min())
    return np.arange(k_lo, int(k.max()) + 2) * spacing, k - k_lo, t


def upsample(
    field: np.ndarray, cx: np.ndarray, tx: np.ndarray, cy: np.ndarray, ty: np.ndarray
) -> np.ndarray:
    """Bilinear interpolation of a coarse ``(Ky, Kx)`` field to ``(H, W)`` float32."""
    a = field[:, cx]
    interp = (a + (field[:, cx + 1] - a) * tx).astype(F32)
    top = np.take(interp, cy, axis=0)
    bottom = np.take(interp, cy + 1, axis=0)
    bottom -= top
    bottom *= ty[:, None]
    top += bottom
    return top
