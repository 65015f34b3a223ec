"""What the texture matrices share: pixel pairs along the angles, grey levels, size matrices.

* :class:`Neighbours` -- once per tile, each pixel's predecessor along every
  angle of :data:`ANGLES` within its nucleus (GLCM pairs, runs, zones and
  dependences all follow these links);
* :class:`Levels` -- the discretised grey levels of one channel
  (:mod:`pathpipe.features.binning`) with their ranks per nucleus;
* :func:`scan` -- per channel, one pass over the pixels that links each pixel to
  its same-level predecessors, giving the dependences (GLDM), the runs (GLRLM)
  and the zones (GLSZM, union-find over the links) of every nucleus;
* :func:`size_matrix_stats` and :class:`SizeMatrix` -- the statistics of a grey
  level size matrix, whose formulas GLRLM, GLSZM and GLDM share.

Source: the PyRadiomics 3.0.1 source (``cmatrices.c``: ``calculate_glcm``,
``calculate_glrlm``, ``calculate_glszm``, ``calculate_gldm``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numba
import numpy as np

from pathpipe.features.pixels import Nuclei

__all__ = [
    "ANGLES",
    "FAMILY",
    "N_ANGLES",
    "SIZE_COLUMNS",
    "Levels",
    "Neighbours",
    "Scan",
    "SizeMatrix",
    "nanmean",
    "neighbours",
    "scan",
    "size_matrix_stats",
]

FAMILY = "texture"

ANGLES: tuple[tuple[int, int], ...] = ((1, 1), (1, 0), (1, -1), (0, 1))
"""Neighbour offsets ``(d_row, d_col)`` at distance 1, in PyRadiomics' 2D order."""
N_ANGLES = len(ANGLES)


def nanmean(v: np.ndarray) -> np.ndarray:
    """Mean over axis 1 ignoring NaN (``numpy.nanmean``), NaN where all are NaN."""
    ok = ~np.isnan(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, v, 0).sum(axis=1) / ok.sum(axis=1)


@dataclass
class Neighbours:
    """The channel-independent neighbourhood structure of a tile's nuclei.

    Attributes
    ----------
    pred : (P, A) int64 ndarray
        For each pixel (in the order of :class:`Nuclei`) and angle of
        :data:`ANGLES`, the position of its predecessor, the pixel at offset
        ``-ANGLES[a]``, when that is in the same nucleus; else -1. The
        predecessor always comes earlier in the pixel order (raster order within
        a nucleus), and every pair of 8-neighbours of a nucleus is one
        (pixel, predecessor) pair.
    multi : (n, A) bool ndarray
        Whether some line along the angle holds >= 2 pixels of the nucleus;
        PyRadiomics drops the GLRLM of an angle without one (``calculate_glrlm``,
        ``multiElement``).
    """

    pred: np.ndarray
    multi: np.ndarray


def neighbours(px: Nuclei) -> Neighbours:
    h, w = px.shape
    pos = np.full(h * w, -1, np.int64)
    pos[px.flat] = np.arange(px.flat.size)
    angles = np.array(ANGLES, dtype=np.int64)
    pred, multi = _predecessors(px.rows, px.cols, px.index, pos, h, w, angles, px.n)
    return Neighbours(pred, multi)


@numba.njit(cache=True, nogil=True)
def _predecessors(rows, cols, index, pos, h, w, angles, n):
    """Predecessors and PyRadiomics' ``multiElement`` (see :class:`Neighbours`).

    ``pos`` maps a flat index of the (h, w) tile to the pixel position (-1
    outside the nuclei).
    """
    npix, na = rows.size, angles.shape[0]
    pred = np.full((npix, na), -1, np.int64)
    multi = np.zeros((n, na), np.bool_)
    span = 2 * h + w  # line ids below, offset by h, lie in [1, 2h + w - 2]
    seen = np.zeros(n * span, np.int64)  # angle + 1 of the last visit of (nucleus, line)
    for a in range(na):
        dr, dc = angles[a, 0], angles[a, 1]
        for i in range(npix):
            r, c, k = rows[i], cols[i], index[i]
            rr, cc = r - dr, c - dc
            if 0 <= rr < h and 0 <= cc < w:
                j = pos[rr * w + cc]
                if j >= 0 and index[j] == k:
                    pred[i, a] = j
            # lines along the angle: r = const (horizontal) or c - dc r = const
            line = (r if dr == 0 else c - dc * r) + h
            if seen[k * span + line] == a + 1:
                multi[k, a] = True
            seen[k * span + line] = a + 1
    return pred, multi


@numba.njit(cache=True, nogil=True)
def _find(parent, p):
    while parent[p] != p:
        parent[p] = parent[parent[p]]  # path halving
        p = parent[p]
    return p


@numba.njit(cache=True, nogil=True)
def _scan_kernel(pred, level):
    r"""Dependences, runs and zones of one channel's grey levels, in one pass.

    A pixel and its predecessor along an angle are *linked* when they have the
    same grey level. Visiting the pixels in order (predecessors first):

    * dependence (PyRadiomics ``calculate_gldm``, distance 1, :math:`\alpha = 0`):
      1 + the number of linked 8-neighbours, counted on both pixels of a link;
    * runs (``calculate_glrlm``): a pixel continues its predecessor's run along
      the angle when linked, else starts a new run;
    * zones (``calculate_glszm``, 8-connected): union-find over the links.

    Parameters
    ----------
    pred : (P, A) int64 ndarray
        See :class:`Neighbours`.
    level : (P,) int64 ndarray
        Grey level of each pixel.

    Returns
    -------
    dep : (P,) int64 ndarray
    run_first, run_length, run_angle : (R,) int64 ndarray
        First pixel, length and angle of each run.
    zone_root, zone_size : (Z,) int64 ndarray
        One pixel and the size of each zone.
    """
    npix, na = pred.shape
    dep = np.ones(npix, np.int64)
    run_of = np.empty((npix, na), np.int64)
    run_first = np.empty(npix * na, np.int64)
    run_length = np.zeros(npix * na, np.int64)
    run_angle = np.empty(npix * na, np.int64)
    parent = np.arange(npix)
    m = 0
    for i in range(npix):
        g = level[i]
        for a in range(na):
            j = pred[i, a]
            if j >= 0 and level[j] == g:
                dep[i] += 1
                dep[j] += 1
                run = run_of[j, a]
                run_of[i, a] = run
                run_length[run] += 1
                x, y = _find(parent, i), _find(parent, j)
                if x != y:
                    parent[max(x, y)] = min(x, y)
            else:
                run_of[i, a] = m
                run_first[m], run_length[m], run_angle[m] = i, 1, a
                m += 1
    size = np.zeros(npix, np.int64)
    for i in range(npix):
        size[_find(parent, i)] += 1
    root = np.flatnonzero(size)
    return dep, run_first[:m], run_length[:m], run_angle[:m], root, size[root]


@dataclass
class Scan:
    """The dependences, runs and zones of one channel's grey levels (:func:`scan`)."""

    dep: np.ndarray  # (P,) dependence of each pixel
    run_first: np.ndarray  # (R,) first pixel of each run
    run_length: np.ndarray  # (R,) length of each run
    run_angle: np.ndarray  # (R,) angle of each run
    zone_root: np.ndarray  # (Z,) one pixel of each zone
    zone_size: np.ndarray  # (Z,) size of each zone


def scan(nb: Neighbours, levels: np.ndarray) -> Scan:
    """Dependences, runs and zones of the grey ``levels`` of every pixel (:func:`_scan_kernel`)."""
    return Scan(*_scan_kernel(nb.pred, levels))


@dataclass
class Levels:
    """The discretised image of one channel, as the texture classes use it."""

    levels: np.ndarray  # (P,) int64 grey level of each pixel
    rank: np.ndarray  # (P,) rank of the level among the nucleus' levels
    n_levels: np.ndarray  # (n,) number of distinct levels
    values: np.ndarray  # (n, K) the levels by rank, padded with 1
    ng: np.ndarray  # (n,) largest level (PyRadiomics Ng)

    @property
    def k(self) -> int:
        """Bound on the level ranks (at least 1)."""
        return self.values.shape[1]


# --------------------------------------------------------------------------- size matrices

SIZE_COLUMNS = (
    "small",  # sum P / j^2 / N
    "large",  # sum P j^2 / N
    "gln",  # sum_i (sum_j P)^2 / N
    "glnn",  # ... / N^2
    "sn",  # sum_j (sum_i P)^2 / N
    "snn",  # ... / N^2
    "percentage",  # N / N_p
    "glv",  # sum p (i - mu_i)^2
    "sv",  # sum p (j - mu_j)^2
    "entropy",  # -sum p log2(p + eps)
    "low",  # sum P / i^2 / N
    "high",  # sum P i^2 / N
    "small_low",  # sum P / (i^2 j^2) / N
    "small_high",  # sum P i^2 / j^2 / N
    "large_low",  # sum P j^2 / i^2 / N
    "large_high",  # sum P i^2 j^2 / N
)
"""The statistics :func:`size_matrix_stats` returns, in column order."""
_S = {name: c for c, name in enumerate(SIZE_COLUMNS)}


@numba.njit(cache=True, nogil=True)
def size_matrix_stats(group, rank, size, values, per, n_groups):
    """The statistics of :data:`SIZE_COLUMNS` of a grey level size matrix per group.

    GLRLM (runs), GLSZM (zones) and GLDM (pixels with their dependence) features
    share their formulas: for a matrix :math:`P(i,j)`, :math:`i` a grey level and
    :math:`j` a size (run length, zone size, dependence), :math:`N=\\sum P`,
    :math:`p=P/N`, :math:`N_p=\\sum_{i,j} jP(i,j)`. Here :math:`P` is given by its
    items: :math:`P(i,j)` is the number of items of a group with level :math:`i`
    and size :math:`j`.

    Parameters
    ----------
    group, rank, size : (R,) int64 ndarray
        Group (matrix), level rank and size of every item.
    values : (n, K) float64 ndarray
        Grey level of each rank of each nucleus; group ``g`` belongs to nucleus
        ``g // per``.
    per : int
    n_groups : int

    Returns
    -------
    (n_groups, len(SIZE_COLUMNS)) float64 ndarray
        NaN for a group without items.
    """
    eps = 2.220446049250313e-16  # numpy.spacing(1)
    out = np.full((n_groups, 16), np.nan)
    k = values.shape[1]
    top = 1
    for t in range(size.size):
        top = max(top, size[t])
    # items by group (counting sort)
    start = np.zeros(n_groups + 1, np.int64)
    for t in range(group.size):
        start[group[t] + 1] += 1
    for g in range(n_groups):
        start[g + 1] += start[g]
    fill = start[:-1].copy()
    order = np.empty(group.size, np.int64)
    for t in range(group.size):
        order[fill[group[t]]] = t
        fill[group[t]] += 1
    width = top + 1
    dense = k * width <= 1 << 20
    cell = np.zeros(k * width if dense else 1, np.int64)  # scratch P(i, j) by (rank, size)
    keys = np.empty(group.size, np.int64)  # the group's distinct cells ...
    counts = np.empty(group.size, np.int64)  # ... and their P(i, j)
    pg = np.zeros(k)  # P summed over j, by rank
    ps = np.zeros(width)  # P summed over i, by size
    for g in range(n_groups):
        items = order[start[g] : start[g + 1]]
        n = items.size
        if n == 0:
            continue
        # the nonzero cells of P
        m = 0
        if dense:
            for t in items:
                key = rank[t] * width + size[t]
                if cell[key] == 0:
                    keys[m] = key
                    m += 1
                cell[key] += 1
            for c in range(m):
                counts[c] = cell[keys[c]]
                cell[keys[c]] = 0
        else:
            sorted_keys = np.sort(rank[items] * width + size[items])
            for t in range(n):
                if t > 0 and sorted_keys[t] == sorted_keys[t - 1]:
                    counts[m - 1] += 1
                else:
                    keys[m] = sorted_keys[t]
                    counts[m] = 1
                    m += 1
        v = values[g // per]
        n_p = sm = lg = lo = hi = slo = shi = llo = lhi = mu_i = mu_j = ent = 0.0
        for c in range(m):
            r, s = keys[c] // width, keys[c] % width
            x = float(counts[c])
            i, j = v[r], float(s)
            i2, j2 = i * i, j * j
            n_p += x * j
            sm += x / j2
            lg += x * j2
            lo += x / i2
            hi += x * i2
            slo += x / (i2 * j2)
            shi += x * i2 / j2
            llo += x * j2 / i2
            lhi += x * i2 * j2
            mu_i += x * i
            mu_j += x * j
            pg[r] += x
            ps[s] += x
            q = x / n
            ent -= q * math.log2(q + eps)
        mu_i /= n
        mu_j /= n
        gln = sn = glv = sv = 0.0
        for c in range(m):
            r, s = keys[c] // width, keys[c] % width
            if pg[r] > 0:
                gln += pg[r] * pg[r]
                glv += pg[r] / n * (v[r] - mu_i) ** 2
                pg[r] = 0
            if ps[s] > 0:
                sn += ps[s] * ps[s]
                sv += ps[s] / n * (s - mu_j) ** 2
                ps[s] = 0
        row = out[g]
        row[0] = sm / n
        row[1] = lg / n
        row[2] = gln / n
        row[3] = gln / (n * n)
        row[4] = sn / n
        row[5] = sn / (n * n)
        row[6] = n / n_p
        row[7] = glv
        row[8] = sv
        row[9] = ent
        row[10] = lo / n
        row[11] = hi / n
        row[12] = slo / n
        row[13] = shi / n
        row[14] = llo / n
        row[15] = lhi / n
    return out


class SizeMatrix:
    """Features that are statistics of a grey level size matrix (:func:`size_matrix_stats`).

    ``table`` is ``(n, len(SIZE_COLUMNS))``, one row per nucleus.
    """

    def __init__(self, table: np.ndarray):
        self.table = table

    def _col(self, name: str) -> np.ndarray:
        return self.table[:, _S[name]]
