"""Nucleus shapes and their rasterisation for :mod:`pathpipe.synthetic.generate` (private).

Frames
------
``l0_`` level-0 slide pixels ``(x, y)``. Level-0 pixel ``(col x, row y)`` is
sampled at the continuous point ``(x, y)``: pixel centres sit on integers, so a
nucleus centre ``(l0_x, l0_y)`` lies in pixel ``(round(l0_x), round(l0_y))``.
An output pixel ``(i, j)`` of a region with top-left ``(x0, y0)`` at downsample
``d`` covers level-0 pixels ``x0 + j*d ... x0 + (j+1)*d - 1``; its centre is at
``x0 + j*d + (d - 1)/2``.

Bit-exactness
-------------
The inside test uses only IEEE basic arithmetic (``+ - * / sqrt``) on values
that depend on the pixel's own coordinate, so the level-0 label raster is the
same however a region is cut, in :func:`rasterise_l0` (render and labels) and
in :func:`pixel_areas` (``area_px``). Float sums over several nuclei run in one
pass in nucleus-id order.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pathpipe.synthetic.noise import (
    F32,
    TABLE_BITS,
    TABLE_MASK,
    _mix32,
    _smoothstep,
    _table,
    _u32,
    value_noise_batch,
)

__all__: list[str] = []

HARMONICS = (2, 3, 4, 5)  # radial harmonics of the boundary
RIM_WIDTH = 0.18  # fraction of the radius over which the rim darkens
RIM_GAIN = 0.35  # relative extra hematoxylin at the boundary


@dataclass(frozen=True)
class NucleusArrays:
    """Per-nucleus geometry and stain parameters as flat arrays (length N).

    Derived once from the nuclei table; all rendering reads only these.
    """

    nucleus_id: np.ndarray  # int32
    class_code: np.ndarray  # uint8
    cx: np.ndarray  # float64, level-0 px
    cy: np.ndarray
    bound: np.ndarray  # float64, 1 + sum |a_k|: the shape lies within rho <= bound
    ext_x: np.ndarray  # float64 half-width of the bounding box, level-0 px
    ext_y: np.ndarray
    ux_k: np.ndarray  # float64 coefficients of the rotation + axis scaling
    uy_k: np.ndarray
    vx_k: np.ndarray
    vy_k: np.ndarray
    alpha: np.ndarray  # (N, 4) float32, a_k cos(phi_k)
    beta: np.ndarray  # (N, 4) float32, -a_k sin(phi_k)
    area: np.ndarray  # float64 analytic area, level-0 px**2
    hema: np.ndarray  # float32 hematoxylin concentration
    contrast: np.ndarray  # float32 chromatin contrast
    grain: np.ndarray  # float64 chromatin grain, level-0 px
    texture_seed: np.ndarray  # int64

    def take(self, idx: np.ndarray) -> NucleusArrays:
        return NucleusArrays(**{k: v[idx] for k, v in self.__dict__.items()})

    def __len__(self) -> int:
        return len(self.nucleus_id)


def nucleus_arrays(
    *,
    nucleus_id: np.ndarray,
    class_code: np.ndarray,
    l0_x: np.ndarray,
    l0_y: np.ndarray,
    radius_px: np.ndarray,
    axis_ratio: np.ndarray,
    angle: np.ndarray,
    amps: np.ndarray,
    phases: np.ndarray,
    hematoxylin: np.ndarray,
    chromatin_contrast: np.ndarray,
    chromatin_grain_px: np.ndarray,
    texture_seed: np.ndarray,
) -> NucleusArrays:
    """Build :class:`NucleusArrays` from table columns.

    Shape model: in the frame rotated by ``angle``, with semi-axes
    ``A = R / sqrt(q)`` and ``B = R sqrt(q)`` (``q`` = axis ratio, so the ellipse
    area is ``pi R**2``), normalised coordinates ``u = x'/A, v = y'/B``,
    ``rho = |(u, v)|``, ``theta = atan2(v, u)``; a point is inside when
    ``rho <= 1 + sum_k a_k cos(k theta + phi_k)``, k = 2..5.
    """
    r = np.asarray(radius_px, dtype=np.float64)
    q = np.asarray(axis_ratio, dtype=np.float64)
    ang = np.asarray(angle, dtype=np.float64)
    amps = np.asarray(amps, dtype=np.float64)
    phases = np.asarray(phases, dtype=np.float64)
    semi_a = r / np.sqrt(q)
    semi_b = r * np.sqrt(q)
    c, s = np.cos(ang), np.sin(ang)
    bound = 1.0 + np.abs(amps).sum(axis=1)
    ext_x = bound * np.sqrt((semi_a * c) ** 2 + (semi_b * s) ** 2) + 1.0
    ext_y = bound * np.sqrt((semi_a * s) ** 2 + (semi_b * c) ** 2) + 1.0
    return NucleusArrays(
        nucleus_id=np.asarray(nucleus_id, dtype=np.int32),
        class_code=np.asarray(class_code, dtype=np.uint8),
        cx=np.asarray(l0_x, dtype=np.float64),
        cy=np.asarray(l0_y, dtype=np.float64),
        bound=bound,
        area=np.pi * r**2 * (1.0 + 0.5 * (amps**2).sum(axis=1)),
        ext_x=ext_x,
        ext_y=ext_y,
        ux_k=c / semi_a,
        uy_k=s / semi_a,
        vx_k=-s / semi_b,
        vy_k=c / semi_b,
        alpha=(amps * np.cos(phases)).astype(F32),
        beta=(-amps * np.sin(phases)).astype(F32),
        hema=np.asarray(hematoxylin, dtype=F32),
        contrast=np.asarray(chromatin_contrast, dtype=F32),
        grain=np.asarray(chromatin_grain_px, dtype=np.float64),
        texture_seed=np.asarray(texture_seed, dtype=np.int64),
    )


_SHAPE_EPS = 1e-3  # margin that keeps the core/outside shortcuts exact


def shape_field(
    nuc: NucleusArrays, xs: np.ndarray, ys: np.ndarray, *, rim: bool = False
) -> np.ndarray:
    """Normalised radial coordinate on per-nucleus grids.

    ``s = rho / r(theta)`` with ``r(theta) = 1 + sum_k a_k cos(k theta + phi_k)``
    (see :func:`nucleus_arrays`). The harmonics are evaluated only on the
    annulus where they can matter: with ``m = 1 + sum_k |a_k|``, every point
    with ``rho < 2 - m`` is inside and every point with ``rho > m`` outside, and
    there ``s`` is returned as ``rho`` (same side of 1). A margin of
    :data:`_SHAPE_EPS` keeps those shortcuts exact under float32 rounding, so
    ``s <= 1`` is identical with and without ``rim``. With ``rim`` the annulus
    extends inwards so that ``s`` is exact wherever ``s > 1 - RIM_WIDTH``.

    Parameters
    ----------
    nuc : NucleusArrays, length n
    xs : (n, W) float64 ndarray
        Level-0 x of the sample columns of each nucleus' patch.
    ys : (n, H) float64 ndarray
        Level-0 y of the sample rows.
    rim : bool
        Also make ``s`` exact in the rim band.

    Returns
    -------
    s : (n, H, W) float32 ndarray
        ``s <= 1`` inside the nucleus.
    """
    h, w = ys.shape[1], xs.shape[1]
    dx = xs - nuc.cx[:, None]
    dy = ys - nuc.cy[:, None]
    u = (dy * nuc.uy_k[:, None]).astype(F32)[:, :, None] + (dx * nuc.ux_k[:, None]).astype(F32)[
        :, None, :
    ]
    v = (dy * nuc.vy_k[:, None]).astype(F32)[:, :, None] + (dx * nuc.vx_k[:, None]).astype(F32)[
        :, None, :
    ]
    r2 = u * u
    r2 += v * v
    inner = (2.0 - nuc.bound) * ((1.0 - RIM_WIDTH) if rim else 1.0) - _SHAPE_EPS
    inner = (np.maximum(inner, 0.0) ** 2).astype(F32)[:, None, None]
    outer = ((nuc.bound + _SHAPE_EPS) ** 2).astype(F32)[:, None, None]
    ring = (r2 > inner) & (r2 < outer)
    np.sqrt(r2, out=r2)
    s = r2.reshape(-1)
    idx = np.flatnonzero(ring)
    if len(idx) == 0:
        return r2
    which = idx // (h * w)
    rho = s[idx]
    inv = F32(1.0) / rho  # rho > 0 on the ring
    c1 = u.reshape(-1)[idx]
    c1 *= inv
    s1 = v.reshape(-1)[idx]
    s1 *= inv
    al = np.take(nuc.alpha.T, which, axis=1)  # (K, p)
    be = np.take(nuc.beta.T, which, axis=1)
    ck = c1 * c1 - s1 * s1
    sk = F32(2.0) * c1 * s1
    radius = F32(1.0) + al[0] * ck + be[0] * sk
    for k in range(1, len(HARMONICS)):
        ck, sk = ck * c1 - sk * s1, sk * c1 + ck * s1
        radius += al[k] * ck
        radius += be[k] * sk
    s[idx] = rho / radius
    return r2


def chromatin_field(nuc: NucleusArrays, xs: np.ndarray, ys: np.ndarray) -> np.ndarray:
    """Granular chromatin texture on per-nucleus grids, ``(n, H, W)`` float32.

    Value noise of wavelength ``grain`` (table offsets from each nucleus'
    ``texture_seed``) plus half-amplitude per-pixel white noise (the table at
    the pixel's level-0 coordinate); zero mean, values in ``[-1.5, 1.5)``.
    """
    k = _mix32(_u32(nuc.texture_seed)).astype(np.int64)
    keys = np.stack([k & TABLE_MASK, (k >> TABLE_BITS) & TABLE_MASK], axis=1)
    out = value_noise_batch(xs, ys, nuc.grain, keys)
    cols = (np.floor(xs).astype(np.int64) + 291) & TABLE_MASK
    rows = (np.floor(ys).astype(np.int64) + 517) & TABLE_MASK
    flat = (rows << TABLE_BITS)[:, :, None] + cols[:, None, :]
    white = np.take(_table().reshape(-1), flat)
    white *= F32(0.5)
    out += white
    return out


def nuclear_hematoxylin(nuc: NucleusArrays, s: np.ndarray, tex: np.ndarray) -> np.ndarray:
    """Hematoxylin concentration inside each nucleus, ``(n, H, W)`` float32.

    ``c_H = H_n (1 + contrast_n * chromatin) (1 + RIM_GAIN * rim(s))`` with
    ``rim`` a smoothstep from ``s = 1 - RIM_WIDTH`` to ``s = 1``.
    """
    rim = np.clip((s - F32(1.0 - RIM_WIDTH)) * F32(1.0 / RIM_WIDTH), F32(0.0), F32(1.0))
    rim = _smoothstep(rim)
    val = tex * nuc.contrast[:, None, None]
    val += F32(1.0)
    val *= nuc.hema[:, None, None]
    val *= F32(1.0) + F32(RIM_GAIN) * rim
    return val


# --------------------------------------------------------------------------- patch layout


def patch_layout(
    nuc: NucleusArrays, x0: int, y0: int, w: int, h: int, d: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Output-pixel bounding boxes of nuclei, clipped to the region.

    Returns ``(c_lo, c_n, r_lo, r_n)`` int64 arrays: first column and number of
    columns, first row and number of rows (``c_n <= 0`` or ``r_n <= 0`` when
    the nucleus misses the region).
    """
    c_lo = np.floor((nuc.cx - nuc.ext_x - x0) / d).astype(np.int64)
    c_hi = np.floor((nuc.cx + nuc.ext_x - x0) / d).astype(np.int64)
    r_lo = np.floor((nuc.cy - nuc.ext_y - y0) / d).astype(np.int64)
    r_hi = np.floor((nuc.cy + nuc.ext_y - y0) / d).astype(np.int64)
    c_lo = np.maximum(c_lo, 0)
    r_lo = np.maximum(r_lo, 0)
    c_hi = np.minimum(c_hi, w - 1)
    r_hi = np.minimum(r_hi, h - 1)
    return c_lo, c_hi - c_lo + 1, r_lo, r_hi - r_lo + 1


def _chunks(n_px: np.ndarray, budget: int = 1 << 20) -> list[slice]:
    """Consecutive slices whose padded patch volume stays near ``budget``."""
    out, start, acc, big = [], 0, 0, 0
    for i, p in enumerate(n_px):
        big = max(big, int(p))
        acc = big * (i - start + 1)
        if acc > budget and i > start:
            out.append(slice(start, i))
            start, big = i, int(p)
    out.append(slice(start, len(n_px)))
    return out


def rasterise_l0(
    nuc: NucleusArrays, x0: int, y0: int, w: int, h: int, *, values: bool
) -> tuple[np.ndarray, np.ndarray | None]:
    """Exact level-0 instance raster of the nuclei in a region.

    A pixel belongs to the nucleus with the highest id among those whose shape
    contains it. ``nuc`` must be sorted by id and hold every nucleus whose box
    meets the region (extra ones are harmless).

    Returns
    -------
    labels : (h, w) int32 ndarray
        Nucleus id, 0 outside nuclei.
    hema : (h, w) float32 ndarray or None
        Nuclear hematoxylin concentration where ``labels > 0`` (when ``values``).
    """
    labels = np.zeros(h * w, dtype=np.int32)
    hema = np.zeros(h * w, dtype=F32) if values else None
    c_lo, c_n, r_lo, r_n = patch_layout(nuc, x0, y0, w, h, 1.0)
    keep = (c_n > 0) & (r_n > 0)
    if not keep.any():
        return labels.reshape(h, w), None if hema is None else hema.reshape(h, w)
    sel = np.flatnonzero(keep)
    nuc = nuc.take(sel)
    c_lo, c_n, r_lo, r_n = c_lo[sel], c_n[sel], r_lo[sel], r_n[sel]
    parts = []
    for sl in _chunks(c_n * r_n, 1 << 18):
        sub = nuc.take(np.arange(len(nuc))[sl])
        wm, hm = int(c_n[sl].max()), int(r_n[sl].max())
        cols = c_lo[sl, None] + np.arange(wm)
        rows = r_lo[sl, None] + np.arange(hm)
        s = shape_field(
            sub, (x0 + cols).astype(np.float64), (y0 + rows).astype(np.float64), rim=values
        )
        inside = s <= F32(1.0)
        inside &= (np.arange(wm) < c_n[sl, None])[:, None, :]
        inside &= (np.arange(hm) < r_n[sl, None])[:, :, None]
        flat = rows[:, :, None] * w + cols[:, None, :]
        k, ii, jj = np.nonzero(inside)
        idx = flat[k, ii, jj]
        val = None
        if values:
            tex = chromatin_field(
                sub, (x0 + cols).astype(np.float64), (y0 + rows).astype(np.float64)
            )
            val = nuclear_hematoxylin(sub, s, tex)[k, ii, jj]
        parts.append((idx, sub.nucleus_id[k], val))
    idx = np.concatenate([p[0] for p in parts])
    ids = np.concatenate([p[1] for p in parts])
    np.maximum.at(labels, idx, ids)
    if values:
        val = np.concatenate([p[2] for p in parts])
        win = labels[idx] == ids
        hema[idx[win]] = val[win]
    return labels.reshape(h, w), None if hema is None else hema.reshape(h, w)


def supersampling(d: float) -> int:
    """Sub-samples per axis used to box-filter nuclei at downsample ``d``."""
    return 1 if d <= 1 else int(min(4, max(2, round(d / 2))))


def nuclear_coverage(
    nuc: NucleusArrays, x0: int, y0: int, w: int, h: int, d: float, e_nuc: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Box-filtered nuclei at downsample ``d > 1``.

    Each output pixel averages ``ss x ss`` sub-samples of every nucleus'
    indicator and stain; contributions are summed in nucleus-id order and their
    coverage is capped at 1 where nuclei overlap.

    Returns
    -------
    cov, hema, eosin : (h, w) float32 ndarrays
        Nuclear area fraction and the nuclear hematoxylin and eosin
        concentrations already weighted by coverage.
    """
    if d >= SPLAT_DOWNSAMPLE:
        idx, cov_w, h_w = _splat(nuc, x0, y0, w, h, d)
    else:
        idx, cov_w, h_w = _supersample(nuc, x0, y0, w, h, d)
    cov = np.bincount(idx, weights=cov_w, minlength=h * w)
    hema = np.bincount(idx, weights=h_w, minlength=h * w)
    over = np.maximum(cov, 1.0)
    cov = (cov / over).astype(F32).reshape(h, w)
    hema = (hema / over).astype(F32).reshape(h, w)
    return cov, hema, cov * F32(e_nuc)


SPLAT_DOWNSAMPLE = 32.0  # from here on nuclei are splatted, not rasterised
_MEAN_RIM = 0.165  # area mean of the rim profile, for splatted nuclei


def _splat(
    nuc: NucleusArrays, x0: int, y0: int, w: int, h: int, d: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Nuclei much smaller than a pixel: area and stain split bilinearly."""
    u = (nuc.cx - (x0 + (d - 1) / 2)) / d
    v = (nuc.cy - (y0 + (d - 1) / 2)) / d
    j0, i0 = np.floor(u), np.floor(v)
    fu, fv = u - j0, v - i0
    j0, i0 = j0.astype(np.int64), i0.astype(np.int64)
    cov = nuc.area / (d * d)
    hema = cov * nuc.hema * (1.0 + RIM_GAIN * _MEAN_RIM)
    parts = []
    for di, dj, wgt in (
        (0, 0, (1 - fv) * (1 - fu)),
        (0, 1, (1 - fv) * fu),
        (1, 0, fv * (1 - fu)),
        (1, 1, fv * fu),
    ):
        parts.append((i0 + di, j0 + dj, wgt))
    ii = np.stack([p[0] for p in parts], axis=1).ravel()  # nucleus-major order
    jj = np.stack([p[1] for p in parts], axis=1).ravel()
    wgt = np.stack([p[2] for p in parts], axis=1)
    ok = (ii >= 0) & (ii < h) & (jj >= 0) & (jj < w)
    return (
        (ii * w + jj)[ok],
        (wgt * cov[:, None]).ravel()[ok],
        (wgt * hema[:, None]).ravel()[ok],
    )


def _supersample(
    nuc: NucleusArrays, x0: int, y0: int, w: int, h: int, d: float
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Per-pixel nuclear coverage and stain from ``ss x ss`` sub-samples."""
    ss = supersampling(d)
    off = (np.arange(ss) + 0.5) * (d / ss) - 0.5
    c_lo, c_n, r_lo, r_n = patch_layout(nuc, x0, y0, w, h, d)
    sel = np.flatnonzero((c_n > 0) & (r_n > 0))
    empty = np.zeros(0, dtype=np.int64), np.zeros(0), np.zeros(0)
    if len(sel) == 0:
        return empty
    nuc = nuc.take(sel)
    c_lo, c_n, r_lo, r_n = c_lo[sel], c_n[sel], r_lo[sel], r_n[sel]
    # chromatin grain below ~1.5 sub-sample spacings averages out: use its mean (0)
    textured = d / ss <= nuc.grain / 1.5
    idx_parts, cov_parts, h_parts = [], [], []
    for sl in _chunks(c_n * r_n * ss * ss, 1 << 19):
        sub = nuc.take(np.arange(len(nuc))[sl])
        wm, hm = int(c_n[sl].max()), int(r_n[sl].max())
        cols = c_lo[sl, None] + np.arange(wm)
        rows = r_lo[sl, None] + np.arange(hm)
        xs = (x0 + cols * d)[:, :, None] + off
        ys = (y0 + rows * d)[:, :, None] + off
        xs = xs.reshape(len(sub), wm * ss)
        ys = ys.reshape(len(sub), hm * ss)
        s = shape_field(sub, xs, ys, rim=True)
        inside = (s <= F32(1.0)).astype(F32)
        keep = textured[sl]
        if keep.any():
            tex = chromatin_field(sub, xs, ys)
            tex *= keep.astype(F32)[:, None, None]
        else:
            tex = np.zeros_like(s)
        hv = nuclear_hematoxylin(sub, s, tex)
        hv *= inside
        inside = inside.reshape(len(sub), hm, ss, wm, ss)
        hv = hv.reshape(len(sub), hm, ss, wm, ss)
        cov = np.zeros((len(sub), hm, wm), dtype=F32)
        hsum = np.zeros((len(sub), hm, wm), dtype=F32)
        for a in range(ss):  # fixed summation order
            for b in range(ss):
                cov += inside[:, :, a, :, b]
                hsum += hv[:, :, a, :, b]
        scale = F32(1.0 / (ss * ss))
        cov *= scale
        hsum *= scale
        valid = (cov > 0) & (np.arange(wm) < c_n[sl, None])[:, None, :]
        valid &= (np.arange(hm) < r_n[sl, None])[:, :, None]
        k, ii, jj = np.nonzero(valid)
        idx_parts.append(rows[k, ii] * w + cols[k, jj])
        cov_parts.append(cov[k, ii, jj])
        h_parts.append(hsum[k, ii, jj])
    return np.concatenate(idx_parts), np.concatenate(cov_parts), np.concatenate(h_parts)


def nucleus_arrays_empty() -> NucleusArrays:
    """A :class:`NucleusArrays` of length 0."""
    z = np.zeros(0)
    z4 = np.zeros((0, len(HARMONICS)))
    return nucleus_arrays(
        nucleus_id=z,
        class_code=z,
        l0_x=z,
        l0_y=z,
        radius_px=z,
        axis_ratio=z + 1,
        angle=z,
        amps=z4,
        phases=z4,
        hematoxylin=z,
        chromatin_contrast=z,
        chromatin_grain_px=z,
        texture_seed=z,
    )


def pixel_areas(arr: NucleusArrays) -> np.ndarray:
    """Exact pixel count of each nucleus in the level-0 label raster.

    Counts the pixels of a nucleus' own box inside its shape and not inside
    any higher-id nucleus (the raster rule of :func:`rasterise_l0`); higher-id
    neighbours are evaluated only where their boxes overlap. ``arr`` must be
    in id order. Returns ``(N,)`` int64.
    """
    from scipy.spatial import cKDTree

    n = len(arr)
    area = np.zeros(n, dtype=np.int64)
    if n == 0:
        return area
    c_lo = np.floor(arr.cx - arr.ext_x).astype(np.int64)
    c_hi = np.floor(arr.cx + arr.ext_x).astype(np.int64)
    r_lo = np.floor(arr.cy - arr.ext_y).astype(np.int64)
    r_hi = np.floor(arr.cy + arr.ext_y).astype(np.int64)
    ext = np.maximum(arr.ext_x, arr.ext_y)
    pairs = cKDTree(np.column_stack([arr.cx, arr.cy])).query_pairs(
        2 * float(ext.max()), output_type="ndarray"
    )
    pi, pj = pairs.min(axis=1), pairs.max(axis=1)  # a pixel goes to the higher id
    pc0, pc1 = np.maximum(c_lo[pi], c_lo[pj]), np.minimum(c_hi[pi], c_hi[pj])
    pr0, pr1 = np.maximum(r_lo[pi], r_lo[pj]), np.minimum(r_hi[pi], r_hi[pj])
    meet = (pc1 >= pc0) & (pr1 >= pr0)
    pi, pj, pc0, pc1, pr0, pr1 = (v[meet] for v in (pi, pj, pc0, pc1, pr0, pr1))

    c_n, r_n = c_hi - c_lo + 1, r_hi - r_lo + 1
    order = np.argsort(c_n * r_n, kind="stable")  # similar sizes share a chunk
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n)
    by_pos = np.argsort(pos[pi], kind="stable")
    pi, pj, pc0, pc1, pr0, pr1 = (v[by_pos] for v in (pi, pj, pc0, pc1, pr0, pr1))
    pair_pos = pos[pi]
    for sl in _chunks((c_n * r_n)[order], 1 << 19):
        ids = order[sl]
        wm, hm = int(c_n[ids].max()), int(r_n[ids].max())
        xs = (c_lo[ids, None] + np.arange(wm)).astype(np.float64)
        ys = (r_lo[ids, None] + np.arange(hm)).astype(np.float64)
        inside = shape_field(arr.take(ids), xs, ys) <= F32(1.0)
        inside &= (np.arange(wm) < c_n[ids, None])[:, None, :]
        inside &= (np.arange(hm) < r_n[ids, None])[:, :, None]
        lo, hi = np.searchsorted(pair_pos, [sl.start, sl.stop])
        if hi > lo:
            i, j = pi[lo:hi], pj[lo:hi]
            c0, r0 = pc0[lo:hi], pr0[lo:hi]
            pw, ph = pc1[lo:hi] - c0 + 1, pr1[lo:hi] - r0 + 1
            pwm, phm = int(pw.max()), int(ph.max())
            other = shape_field(
                arr.take(j),
                (c0[:, None] + np.arange(pwm)).astype(np.float64),
                (r0[:, None] + np.arange(phm)).astype(np.float64),
            )
            other = other <= F32(1.0)
            other &= (np.arange(pwm) < pw[:, None])[:, None, :]
            other &= (np.arange(phm) < ph[:, None])[:, :, None]
            k, a, b = np.nonzero(other)
            local = pair_pos[lo:hi][k] - sl.start
            flat = (local * hm + (r0[k] + a - r_lo[i[k]])) * wm + (c0[k] + b - c_lo[i[k]])
            inside.reshape(-1)[flat] = False  # drawn over by a higher id
        area[ids] = inside.sum(axis=(1, 2))
    return area
