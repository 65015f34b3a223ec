"""Texture family: PyRadiomics GLCM, GLRLM, GLSZM and GLDM features of every nucleus (private).

All features these four PyRadiomics 3.x classes enable by default, per
intensity channel, in 2D (the nucleus is one slice): 24 GLCM, 16 GLRLM,
16 GLSZM and 14 GLDM features, named ``glcm_<feature>_<channel>``,
``glrlm_...``, ``glszm_...``, ``gldm_...``. Left out are the features PyRadiomics
marks deprecated, which it does not compute (they raise ``DeprecationWarning``):
GLCM ``Homogeneity1`` (= ``Id``), ``Homogeneity2`` (= ``Idm``), ``SumVariance``
(= ``ClusterTendency``) and ``Dissimilarity`` (= ``DifferenceAverage``); GLDM
``GrayLevelNonUniformityNormalized`` (= first-order ``Uniformity``) and
``DependencePercentage`` (always 1). ``glcm_sum_average`` is included: it is not
deprecated and ``enableAllFeatures`` computes it, although PyRadiomics' example
parameter files switch it off (it is twice ``JointAverage`` for a symmetrical
GLCM).

Settings, those of PyRadiomics' defaults: grey levels from
:func:`pathpipe.features.intensity.discretise` (``binWidth`` 25 unless the
caller sets a bin width or bin count per channel); neighbours at distance 1 in
the 4 in-plane directions :data:`ANGLES`; symmetrical GLCM; no distance
weighting, so each feature is computed per direction and averaged over the
directions in which the nucleus has a matrix (empty directions are dropped,
as PyRadiomics deletes them); GLDM with :math:`\\alpha = 0`; GLSZM zones
8-connected. Matrices keep only the grey levels present in the nucleus, and
:math:`i, j` are grey levels (not ranks), as in PyRadiomics.

All nuclei of a tile are processed at once, with no per-nucleus Python loop:
compiled kernels (numba) find, once per tile, each pixel's predecessor along
every angle within its nucleus (:class:`_Neighbours`); per channel, one pass
over the pixels links each pixel to its same-level predecessors, which gives the
dependences, the runs (a linked pixel continues its predecessor's run) and the
zones (union-find over the links) of every nucleus (:func:`_scan`); the GLCMs of
all nuclei are one count over the (predecessor, pixel) pairs. The features are
then computed per matrix by :func:`_glcm_per_angle` and
:func:`_size_matrix_stats` (GLRLM, GLSZM and GLDM share their formulas) with
PyRadiomics' operations in PyRadiomics' order; MCC's eigenvalues come from
``numpy.linalg.eigvalsh`` on all matrices at once.

Expected channel scaling: the bin width is in the channel's unit, e.g. grey level
0-255 with ``binWidth`` 25 (PyRadiomics' default, ~10 levels), or hematoxylin
optical density × 100 (unit 0.01 OD, as :mod:`pathpipe.features.run` passes it) with a
bin width of a few units or a bin count (e.g. 16).

Source: van Griethuysen et al., Cancer Research 77(21):e104-e107, 2017, and the
PyRadiomics 3.0.1 source (``glcm.py``, ``glrlm.py``, ``glszm.py``, ``gldm.py``,
``cmatrices.c``), the reference definition; GLCM after Haralick et al., IEEE
Trans. SMC 3(6):610-621, 1973; GLRLM after Galloway, CGIP 4(2):172-179, 1975;
GLSZM after Thibault et al., Proc. PRIP 2009; GLDM after Sun & Wee, CVGIP
23:341-352, 1983.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from pathpipe.features.intensity import (
    EPS,
    NucleusPixels,
    channel_values,
    discretise,
    evaluate,
    feature,
    group_pixels,
    level_ranks,
    resolve_binning,
    specs_of,
)
from pathpipe.features.registry import FeatureSpec, NucleusBatch

__all__ = ["ANGLES", "FEATURES", "compute", "feature_specs"]

FAMILY = "texture"
DEFAULT_CHANNELS = ("h", "grey")

ANGLES: tuple[tuple[int, int], ...] = ((1, 1), (1, 0), (1, -1), (0, 1))
"""Neighbour offsets ``(d_row, d_col)`` at distance 1, in PyRadiomics' 2D order."""
_NA = len(ANGLES)

_GLCM_BUDGET = 1 << 21
"""Largest number of GLCM cells (nuclei × angles × K²) processed at once."""


# --------------------------------------------------------------------------- helpers


def _nanmean(v: np.ndarray) -> np.ndarray:
    """Mean over axis 1 ignoring NaN (``numpy.nanmean``), NaN where all are NaN."""
    ok = ~np.isnan(v)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(ok, v, 0).sum(axis=1) / ok.sum(axis=1)


@dataclass
class _Neighbours:
    """The channel-independent neighbourhood structure of a tile's nuclei.

    Attributes
    ----------
    pred : (P, A) int64 ndarray
        For each pixel (in the order of :class:`NucleusPixels`) and angle of
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


def _neighbours(px: NucleusPixels) -> _Neighbours:
    h, w = px.shape
    pos = np.full(h * w, -1, np.int64)
    pos[px.flat] = np.arange(px.flat.size)
    angles = np.array(ANGLES, dtype=np.int64)
    pred, multi = _predecessors(px.rows, px.cols, px.index, pos, h, w, angles, px.n)
    return _Neighbours(pred, multi)


@numba.njit(cache=True, nogil=True)
def _predecessors(rows, cols, index, pos, h, w, angles, n):
    """Predecessors and PyRadiomics' ``multiElement`` (see :class:`_Neighbours`).

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
def _scan(pred, level):
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
        See :class:`_Neighbours`.
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


@numba.njit(cache=True, nogil=True)
def _glcm_counts(pred, rank, index, local, m, k):
    """Co-occurrence counts ``(m, A, k, k)``: ``[local nucleus, angle, rank(pred), rank(pixel)]``.

    Pixels whose nucleus has ``local`` -1 are skipped (PyRadiomics
    ``calculate_glcm``: each pixel with its neighbour at the angle's offset).
    """
    npix, na = pred.shape
    out = np.zeros((m, na, k, k))
    for i in range(npix):
        u = local[index[i]]
        if u < 0:
            continue
        for a in range(na):
            j = pred[i, a]
            if j >= 0:
                out[u, a, rank[j], rank[i]] += 1.0
    return out


@dataclass
class _Levels:
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


# --------------------------------------------------------------------------- GLCM


_GLCM_COLUMNS = (
    "autocorrelation",
    "joint_average",
    "cluster_prominence",
    "cluster_shade",
    "cluster_tendency",
    "contrast",
    "correlation",
    "difference_average",
    "difference_entropy",
    "difference_variance",
    "joint_energy",
    "joint_entropy",
    "imc1",
    "imc2",
    "idm",
    "idmn",
    "id",
    "idn",
    "inverse_variance",
    "maximum_probability",
    "sum_average",
    "sum_entropy",
    "sum_squares",
)
"""The per-angle values :func:`_glcm_per_angle` returns, in column order."""
_C = {name: c for c, name in enumerate(_GLCM_COLUMNS)}


@numba.njit(cache=True, nogil=True)
def _glcm_per_angle(counts, values, ng):
    """Every GLCM feature but MCC, per nucleus and angle, as ``radiomics.glcm`` computes them.

    Parameters
    ----------
    counts : (m, A, K, K) float64 ndarray
        Asymmetrical co-occurrence counts by level rank.
    values : (m, K) float64 ndarray
        Grey level of each rank.
    ng : (m,) int64 ndarray
        Largest grey level of each nucleus.

    Returns
    -------
    table : (m, A, len(_GLCM_COLUMNS)) float64 ndarray
        The values of :data:`_GLCM_COLUMNS` (NaN for an empty angle).
    s : (m, A, K, K) float64 ndarray
        :math:`D^{-1/2} M D^{-1/2}`, :math:`M(i,j)=\\sum_k p(i,k)p(j,k)/p_y(k)`,
        :math:`D = \\mathrm{diag}(p_x)` (0 rows where :math:`p_x = 0`): symmetric,
        with the eigenvalues of MCC's :math:`Q = D^{-1}M`.
    """
    m, na, k, _ = counts.shape
    eps = 2.220446049250313e-16  # numpy.spacing(1)
    table = np.full((m, na, 23), np.nan)
    s = np.zeros((m, na, k, k))
    top = 1
    for u in range(m):
        top = max(top, ng[u])
    p = np.empty((k, k))
    px = np.empty(k)
    py = np.empty(k)
    p_add = np.zeros(2 * top + 1)
    p_sub = np.zeros(top + 1)
    for u in range(m):
        v = values[u]
        g = float(ng[u])
        for a in range(na):
            total = 0.0
            for i in range(k):
                for j in range(k):
                    p[i, j] = counts[u, a, i, j] + counts[u, a, j, i]  # symmetricalGLCM
                    total += p[i, j]
            if total == 0:
                continue  # empty angle: PyRadiomics deletes it
            ux = uy = 0.0
            for i in range(k):
                px[i] = py[i] = 0.0
            for i in range(k):
                for j in range(k):
                    p[i, j] /= total
                    px[i] += p[i, j]
                    py[j] += p[i, j]
                    ux += v[i] * p[i, j]
                    uy += v[j] * p[i, j]
            auto = ct = cs = cp = con = sx = sy = corm = ene = hxy = hxy1 = hxy2 = 0.0
            pmax = 0.0
            for i in range(k):
                for j in range(k):
                    q = p[i, j]
                    d = v[i] + v[j] - ux - uy
                    auto += q * v[i] * v[j]
                    ct += q * d * d
                    cs += q * d * d * d
                    cp += q * d * d * d * d
                    con += q * (v[i] - v[j]) ** 2
                    sx += q * (v[i] - ux) ** 2
                    sy += q * (v[j] - uy) ** 2
                    corm += q * (v[i] - ux) * (v[j] - uy)
                    ene += q * q
                    hxy -= q * math.log2(q + eps)
                    pmax = max(pmax, q)
                    pp = px[i] * py[j]
                    hxy1 -= q * math.log2(pp + eps)
                    hxy2 -= pp * math.log2(pp + eps)
                    p_add[int(v[i] + v[j])] += q
                    p_sub[int(abs(v[i] - v[j]))] += q
            hx = hy = 0.0
            for i in range(k):
                hx -= px[i] * math.log2(px[i] + eps)
                hy -= py[i] * math.log2(py[i] + eps)
            # p_{x-y}(k), k = 0 .. Ng - 1 and p_{x+y}(k), k = 2 .. 2 Ng
            da = de = idm = idmn = idd = idn = inv = 0.0
            for kk in range(top + 1):
                q = p_sub[kk]
                da += kk * q
                de -= q * math.log2(q + eps)
                idm += q / (1 + kk * kk)
                idmn += q / (1 + (kk * kk) / (g * g))
                idd += q / (1 + kk)
                idn += q / (1 + kk / g)
                if kk >= 1:
                    inv += q / (kk * kk)
            dv = 0.0
            for kk in range(top + 1):
                dv += (kk - da) ** 2 * p_sub[kk]
                p_sub[kk] = 0.0
            sa = se = 0.0
            for kk in range(2 * top + 1):
                q = p_add[kk]
                sa += kk * q
                se -= q * math.log2(q + eps)
                p_add[kk] = 0.0
            sig = math.sqrt(sx) * math.sqrt(sy)
            div = max(hx, hy)
            if hxy2 == hxy:
                imc2 = 0.0
            else:
                x = 1 - math.e ** (-2 * (hxy2 - hxy))
                imc2 = math.sqrt(x) if x >= 0 else np.nan  # PyRadiomics: NaN, then ignored
            row = table[u, a]
            row[0] = auto
            row[1] = ux
            row[2] = cp
            row[3] = cs
            row[4] = ct
            row[5] = con
            row[6] = 1.0 if sig == 0 else corm / (sig + eps)
            row[7] = da
            row[8] = de
            row[9] = dv
            row[10] = ene
            row[11] = hxy
            row[12] = (hxy - hxy1) / div if div != 0 else 0.0
            row[13] = imc2
            row[14] = idm
            row[15] = idmn
            row[16] = idd
            row[17] = idn
            row[18] = inv
            row[19] = pmax
            row[20] = sa
            row[21] = se
            row[22] = sx
            # MCC: symmetric form of Q (eps in PyRadiomics' denominator changes < 1e-8)
            for i in range(k):
                if px[i] == 0:
                    continue
                for j in range(i, k):
                    if px[j] == 0:
                        continue
                    acc = 0.0
                    for kk in range(k):
                        if py[kk] > 0:
                            acc += p[i, kk] * p[j, kk] / py[kk]
                    acc /= math.sqrt(px[i]) * math.sqrt(px[j])
                    s[u, a, i, j] = acc
                    s[u, a, j, i] = acc
    return table, s


class GLCM:
    r"""PyRadiomics GLCM features of a group of nuclei, one channel.

    Let :math:`P(i,j)` be the symmetrical co-occurrence matrix of one angle
    (pairs of pixels of the nucleus at that offset, counted both ways),
    :math:`p = P/\sum P`, :math:`p_x(i)=\sum_j p(i,j)`, :math:`p_y(j)=\sum_i p(i,j)`,
    :math:`\mu_x=\sum ip(i,j)`, :math:`\mu_y=\sum jp(i,j)`,
    :math:`p_{x+y}(k)=\sum_{i+j=k}p(i,j)`, :math:`p_{x-y}(k)=\sum_{|i-j|=k}p(i,j)`,
    :math:`N_g` the largest grey level and :math:`\epsilon` = 2.2e-16. Every
    feature is computed per angle (:func:`_glcm_per_angle`) and averaged over
    the non-empty angles.

    Parameters
    ----------
    counts : (m, A, K, K) float64 ndarray
        Asymmetrical co-occurrence counts by level rank.
    values : (m, K) float64 ndarray
        Grey level of each rank (padding 1).
    ng : (m,) int64 ndarray
    n_levels : (m,) int64 ndarray
    """

    prefix = "glcm"
    family = FAMILY
    pyradiomics_class = "glcm"

    def __init__(self, counts, values, ng, n_levels):
        self.counts = counts
        self.n_levels = n_levels
        self.table, self.s = _glcm_per_angle(counts, values, ng)
        self.valid = counts.sum(axis=(2, 3)) > 0
        n_valid = np.where(self.valid.any(axis=1), self.valid.sum(axis=1), np.nan)
        self.means = np.where(self.valid[..., None], self.table, 0.0).sum(axis=1) / n_valid[:, None]

    def _mean(self, column: str) -> np.ndarray:
        """Mean of a column of the table over the non-empty angles."""
        return self.means[:, _C[column]]

    @feature("1", pyradiomics="Autocorrelation")
    def autocorrelation(self) -> np.ndarray:
        r"""Autocorrelation :math:`\sum_{i,j} p(i,j)\,ij` (PyRadiomics GLCM 1)."""
        return self._mean("autocorrelation")

    @feature("1", pyradiomics="JointAverage")
    def joint_average(self) -> np.ndarray:
        r"""Joint average :math:`\mu_x = \sum_{i,j} p(i,j)\,i` (PyRadiomics GLCM 2)."""
        return self._mean("joint_average")

    @feature("1", pyradiomics="ClusterProminence")
    def cluster_prominence(self) -> np.ndarray:
        r"""Cluster prominence :math:`\sum_{i,j}(i+j-\mu_x-\mu_y)^4 p(i,j)` (PyRadiomics GLCM 3)."""
        return self._mean("cluster_prominence")

    @feature("1", pyradiomics="ClusterShade")
    def cluster_shade(self) -> np.ndarray:
        r"""Cluster shade :math:`\sum_{i,j}(i+j-\mu_x-\mu_y)^3 p(i,j)` (PyRadiomics GLCM 4)."""
        return self._mean("cluster_shade")

    @feature("1", pyradiomics="ClusterTendency")
    def cluster_tendency(self) -> np.ndarray:
        r"""Cluster tendency :math:`\sum_{i,j}(i+j-\mu_x-\mu_y)^2 p(i,j)` (PyRadiomics GLCM 5)."""
        return self._mean("cluster_tendency")

    @feature("1", pyradiomics="Contrast")
    def contrast(self) -> np.ndarray:
        r"""Contrast :math:`\sum_{i,j}(i-j)^2 p(i,j)` (PyRadiomics GLCM 6)."""
        return self._mean("contrast")

    @feature("1", pyradiomics="Correlation")
    def correlation(self) -> np.ndarray:
        r"""Correlation :math:`\frac{\sum_{i,j} p(i,j)(i-\mu_x)(j-\mu_y)}{\sigma_x\sigma_y+\epsilon}`, 1 for an angle with :math:`\sigma_x\sigma_y = 0` (PyRadiomics GLCM 7)."""
        return self._mean("correlation")

    @feature("1", pyradiomics="DifferenceAverage")
    def difference_average(self) -> np.ndarray:
        r"""Difference average :math:`DA = \sum_{k=0}^{N_g-1} k\,p_{x-y}(k)` (PyRadiomics GLCM 8)."""
        return self._mean("difference_average")

    @feature("bit", pyradiomics="DifferenceEntropy")
    def difference_entropy(self) -> np.ndarray:
        r"""Difference entropy :math:`-\sum_{k=0}^{N_g-1} p_{x-y}(k)\log_2(p_{x-y}(k)+\epsilon)` (PyRadiomics GLCM 9)."""
        return self._mean("difference_entropy")

    @feature("1", pyradiomics="DifferenceVariance")
    def difference_variance(self) -> np.ndarray:
        r"""Difference variance :math:`\sum_{k=0}^{N_g-1}(k-DA)^2 p_{x-y}(k)` (PyRadiomics GLCM 10)."""
        return self._mean("difference_variance")

    @feature("1", pyradiomics="JointEnergy")
    def joint_energy(self) -> np.ndarray:
        r"""Joint energy (angular second moment) :math:`\sum_{i,j} p(i,j)^2` (PyRadiomics GLCM 11)."""
        return self._mean("joint_energy")

    @feature("bit", pyradiomics="JointEntropy")
    def joint_entropy(self) -> np.ndarray:
        r"""Joint entropy :math:`HXY = -\sum_{i,j} p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLCM 12)."""
        return self._mean("joint_entropy")

    @feature("1", pyradiomics="Imc1")
    def imc1(self) -> np.ndarray:
        r"""Informational measure of correlation 1 :math:`\frac{HXY-HXY1}{\max(HX,HY)}`, :math:`HXY1=-\sum p(i,j)\log_2(p_x(i)p_y(j)+\epsilon)`, :math:`HX, HY` the entropies of :math:`p_x, p_y`; 0 for an angle with :math:`\max(HX,HY)=0` (PyRadiomics GLCM 13)."""
        return self._mean("imc1")

    @feature("1", pyradiomics="Imc2")
    def imc2(self) -> np.ndarray:
        r"""Informational measure of correlation 2 :math:`\sqrt{1-e^{-2(HXY2-HXY)}}`, :math:`HXY2=-\sum p_x(i)p_y(j)\log_2(p_x(i)p_y(j)+\epsilon)`; 0 where :math:`HXY2 = HXY`, angles with :math:`HXY > HXY2` (rounding) ignored (PyRadiomics GLCM 14)."""
        v = self.table[:, :, _C["imc2"]]
        return _nanmean(np.where(self.valid, v, np.nan))  # NaN angles are ignored

    @feature("1", pyradiomics="Idm")
    def idm(self) -> np.ndarray:
        r"""Inverse difference moment :math:`\sum_{k=0}^{N_g-1}\frac{p_{x-y}(k)}{1+k^2}` (PyRadiomics GLCM 15)."""
        return self._mean("idm")

    @feature("1", pyradiomics="MCC")
    def mcc(self) -> np.ndarray:
        r"""Maximal correlation coefficient :math:`\sqrt{\lambda_2(Q)}`, :math:`\lambda_2` the second largest eigenvalue of :math:`Q(i,j)=\sum_k\frac{p(i,k)p(j,k)}{p_x(i)p_y(k)+\epsilon}`; 1 for a nucleus of one grey level (PyRadiomics GLCM 16)."""
        out = np.full(self.n_levels.shape, np.nan)
        out[self.n_levels == 1] = 1.0  # flat region: one eigenvalue
        sel = np.flatnonzero(self.n_levels >= 2)
        if sel.size == 0:
            return out
        lam2 = np.linalg.eigvalsh(self.s[sel])[..., -2]
        valid = self.valid[sel]
        # Where lambda_2 is ~0 PyRadiomics' result hangs on the rounding of its
        # general eigensolver (real NaN or complex 0): redo those nuclei its way.
        exact = np.any(valid & (lam2 <= 1e-8), axis=1)
        with np.errstate(invalid="ignore"):
            out[sel] = _nanmean(np.where(valid, np.sqrt(lam2), np.nan))
        if exact.any():
            out[sel[exact]] = self._mcc_pyradiomics(sel[exact])
        return out

    def _mcc_pyradiomics(self, sel: np.ndarray) -> np.ndarray:
        """MCC of the nuclei ``sel`` as ``radiomics.glcm.getMCCFeatureValue`` computes it."""
        out = np.full(sel.size, np.nan)
        n_levels = self.n_levels[sel]
        for k in np.unique(n_levels):
            part = np.flatnonzero(n_levels == k)
            rows = sel[part]
            c = self.counts[rows][:, :, :k, :k]
            c = c + c.transpose(0, 1, 3, 2)
            total = c.sum(axis=(2, 3))
            valid = total > 0
            p = c / np.where(valid, total, 1.0)[..., None, None]
            px, py = p.sum(axis=3), p.sum(axis=2)
            a = p / (px[..., :, None] * py[..., None, :] + EPS)  # (s, A, i, k)
            q = a @ p.transpose(0, 1, 3, 2)  # Q(i, j) = sum_k a(i, k) p(j, k)
            eig = np.linalg.eigvals(q)  # (s, A, K)
            # numpy returns real eigenvalues when all of a nucleus' angles have
            # real ones; PyRadiomics then takes a real square root (NaN if < 0)
            real = ~np.any((eig.imag != 0) & valid[..., None], axis=(1, 2))
            with np.errstate(invalid="ignore"):
                second_real = np.sqrt(np.sort(eig.real, axis=2)[..., -2])
            second_cplx = np.sqrt(np.sort(eig, axis=2)[..., -2]).real
            per_angle = np.where(real[:, None], second_real, second_cplx)
            out[part] = _nanmean(np.where(valid, per_angle, np.nan))
        return out

    @feature("1", pyradiomics="Idmn")
    def idmn(self) -> np.ndarray:
        r"""Inverse difference moment normalised :math:`\sum_{k=0}^{N_g-1}\frac{p_{x-y}(k)}{1+k^2/N_g^2}` (PyRadiomics GLCM 17)."""
        return self._mean("idmn")

    @feature("1", pyradiomics="Id")
    def id(self) -> np.ndarray:
        r"""Inverse difference :math:`\sum_{k=0}^{N_g-1}\frac{p_{x-y}(k)}{1+k}` (PyRadiomics GLCM 18)."""
        return self._mean("id")

    @feature("1", pyradiomics="Idn")
    def idn(self) -> np.ndarray:
        r"""Inverse difference normalised :math:`\sum_{k=0}^{N_g-1}\frac{p_{x-y}(k)}{1+k/N_g}` (PyRadiomics GLCM 19)."""
        return self._mean("idn")

    @feature("1", pyradiomics="InverseVariance")
    def inverse_variance(self) -> np.ndarray:
        r"""Inverse variance :math:`\sum_{k=1}^{N_g-1}\frac{p_{x-y}(k)}{k^2}` (PyRadiomics GLCM 20)."""
        return self._mean("inverse_variance")

    @feature("1", pyradiomics="MaximumProbability")
    def maximum_probability(self) -> np.ndarray:
        r"""Maximum probability :math:`\max_{i,j} p(i,j)` (PyRadiomics GLCM 21)."""
        return self._mean("maximum_probability")

    @feature("1", pyradiomics="SumAverage")
    def sum_average(self) -> np.ndarray:
        r"""Sum average :math:`\sum_{k=2}^{2N_g} k\,p_{x+y}(k)` (PyRadiomics GLCM 22; off in PyRadiomics' example settings, = 2 joint average)."""
        return self._mean("sum_average")

    @feature("bit", pyradiomics="SumEntropy")
    def sum_entropy(self) -> np.ndarray:
        r"""Sum entropy :math:`-\sum_{k=2}^{2N_g} p_{x+y}(k)\log_2(p_{x+y}(k)+\epsilon)` (PyRadiomics GLCM 23)."""
        return self._mean("sum_entropy")

    @feature("1", pyradiomics="SumSquares")
    def sum_squares(self) -> np.ndarray:
        r"""Sum of squares (joint variance) :math:`\sum_{i,j}(i-\mu_x)^2 p(i,j)` (PyRadiomics GLCM 24)."""
        return self._mean("sum_squares")


def _glcm(px: NucleusPixels, nb: _Neighbours, lv: _Levels, channel: str, invalid: np.ndarray):
    """GLCM features of all nuclei, in chunks of at most :data:`_GLCM_BUDGET` cells."""
    n = px.n
    # chunks of nuclei sorted by their number of levels: all at once when they fit
    order = np.argsort(lv.n_levels, kind="stable")
    cells = _NA * np.maximum(lv.n_levels[order], 1) ** 2
    if n * int(cells.max(initial=0)) <= _GLCM_BUDGET:
        bounds = [0, n]
    else:
        bounds = [0]
        for t in range(n):  # the largest nuclei of the chunk come last
            if (t + 1 - bounds[-1]) * cells[t] > _GLCM_BUDGET and t > bounds[-1]:
                bounds.append(t)
        bounds.append(n)
    out: dict[str, np.ndarray] = {}
    for start, stop in itertools.pairwise(bounds):
        chunk = order[start:stop]
        kc = max(int(lv.n_levels[chunk].max(initial=1)), 1)
        local = np.full(n, -1, np.int64)
        local[chunk] = np.arange(chunk.size)
        counts = _glcm_counts(nb.pred, lv.rank, px.index, local, chunk.size, kc)
        obj = GLCM(counts, lv.values[chunk, :kc], lv.ng[chunk], lv.n_levels[chunk])
        part = evaluate(obj, channel, invalid[chunk])
        for name, v in part.items():
            out.setdefault(name, np.full(n, np.nan))[chunk] = v
    if n == 0:
        out = {name: np.zeros(0) for name in (s.name for s in specs_of(GLCM, [channel]))}
    return out


# --------------------------------------------------------------------------- GLRLM / GLSZM / GLDM

_SIZE_COLUMNS = (
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
"""The statistics :func:`_size_matrix_stats` returns, in column order."""
_S = {name: c for c, name in enumerate(_SIZE_COLUMNS)}


@numba.njit(cache=True, nogil=True)
def _size_matrix_stats(group, rank, size, values, per, n_groups):
    """The statistics of :data:`_SIZE_COLUMNS` of a grey level size matrix per group.

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
    (n_groups, len(_SIZE_COLUMNS)) float64 ndarray
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


class _SizeMatrix:
    """Features that are statistics of a grey level size matrix (:func:`_size_matrix_stats`).

    ``table`` is ``(n, len(_SIZE_COLUMNS))``, one row per nucleus.
    """

    def __init__(self, table: np.ndarray):
        self.table = table

    def _col(self, name: str) -> np.ndarray:
        return self.table[:, _S[name]]


class GLRLM(_SizeMatrix):
    r"""PyRadiomics GLRLM features of all nuclei of a batch, one channel.

    A run is a maximal line of consecutive pixels of the nucleus along an angle
    with the same grey level. Let :math:`P(i,j)` be the number of runs of level
    :math:`i` and length :math:`j` along one angle, :math:`N_r` the number of runs,
    :math:`N_p` the number of pixels, :math:`p(i,j) = P(i,j)/N_r`. Every feature is
    computed per angle and averaged over the angles in which some line holds two
    or more pixels of the nucleus (PyRadiomics drops the others).

    Parameters
    ----------
    per_angle : (n, A, len(_SIZE_COLUMNS)) float64 ndarray
    valid : (n, A) bool ndarray
    """

    prefix = "glrlm"
    family = FAMILY
    pyradiomics_class = "glrlm"

    def __init__(self, per_angle: np.ndarray, valid: np.ndarray):
        n_valid = np.where(valid.any(axis=1), valid.sum(axis=1), np.nan)
        super().__init__(np.where(valid[..., None], per_angle, 0.0).sum(axis=1) / n_valid[:, None])

    @feature("1", pyradiomics="ShortRunEmphasis")
    def short_run_emphasis(self) -> np.ndarray:
        r"""Short run emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLRLM 1)."""
        return self._col("small")

    @feature("px²", pyradiomics="LongRunEmphasis")
    def long_run_emphasis(self) -> np.ndarray:
        r"""Long run emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLRLM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_r}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLRLM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="GrayLevelNonUniformityNormalized")
    def gray_level_non_uniformity_normalized(self) -> np.ndarray:
        r"""Grey level non-uniformity normalised :math:`\frac{1}{N_r^2}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLRLM 4)."""
        return self._col("glnn")

    @feature("1", pyradiomics="RunLengthNonUniformity")
    def run_length_non_uniformity(self) -> np.ndarray:
        r"""Run length non-uniformity :math:`\frac{1}{N_r}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLRLM 5)."""
        return self._col("sn")

    @feature("1", pyradiomics="RunLengthNonUniformityNormalized")
    def run_length_non_uniformity_normalized(self) -> np.ndarray:
        r"""Run length non-uniformity normalised :math:`\frac{1}{N_r^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLRLM 6)."""
        return self._col("snn")

    @feature("1", pyradiomics="RunPercentage")
    def run_percentage(self) -> np.ndarray:
        r"""Run percentage :math:`N_r/N_p` (PyRadiomics GLRLM 7)."""
        return self._col("percentage")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLRLM 8)."""
        return self._col("glv")

    @feature("px²", pyradiomics="RunVariance")
    def run_variance(self) -> np.ndarray:
        r"""Run variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLRLM 9)."""
        return self._col("sv")

    @feature("bit", pyradiomics="RunEntropy")
    def run_entropy(self) -> np.ndarray:
        r"""Run entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLRLM 10)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelRunEmphasis")
    def low_gray_level_run_emphasis(self) -> np.ndarray:
        r"""Low grey level run emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLRLM 11)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelRunEmphasis")
    def high_gray_level_run_emphasis(self) -> np.ndarray:
        r"""High grey level run emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLRLM 12)."""
        return self._col("high")

    @feature("1", pyradiomics="ShortRunLowGrayLevelEmphasis")
    def short_run_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Short run low grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLRLM 13)."""
        return self._col("small_low")

    @feature("1", pyradiomics="ShortRunHighGrayLevelEmphasis")
    def short_run_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Short run high grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLRLM 14)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LongRunLowGrayLevelEmphasis")
    def long_run_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Long run low grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLRLM 15)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LongRunHighGrayLevelEmphasis")
    def long_run_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Long run high grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLRLM 16)."""
        return self._col("large_high")


class GLSZM(_SizeMatrix):
    r"""PyRadiomics GLSZM features of all nuclei of a batch, one channel.

    A zone is a set of 8-connected pixels of the nucleus with the same grey
    level. Let :math:`P(i,j)` be the number of zones of level :math:`i` and size
    :math:`j` pixels, :math:`N_z` the number of zones, :math:`N_p` the number of
    pixels and :math:`p(i,j)=P(i,j)/N_z`.
    """

    prefix = "glszm"
    family = FAMILY
    pyradiomics_class = "glszm"

    @feature("1", pyradiomics="SmallAreaEmphasis")
    def small_area_emphasis(self) -> np.ndarray:
        r"""Small area emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLSZM 1)."""
        return self._col("small")

    @feature("px²", pyradiomics="LargeAreaEmphasis")
    def large_area_emphasis(self) -> np.ndarray:
        r"""Large area emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLSZM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_z}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLSZM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="GrayLevelNonUniformityNormalized")
    def gray_level_non_uniformity_normalized(self) -> np.ndarray:
        r"""Grey level non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLSZM 4)."""
        return self._col("glnn")

    @feature("1", pyradiomics="SizeZoneNonUniformity")
    def size_zone_non_uniformity(self) -> np.ndarray:
        r"""Size zone non-uniformity :math:`\frac{1}{N_z}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLSZM 5)."""
        return self._col("sn")

    @feature("1", pyradiomics="SizeZoneNonUniformityNormalized")
    def size_zone_non_uniformity_normalized(self) -> np.ndarray:
        r"""Size zone non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLSZM 6)."""
        return self._col("snn")

    @feature("1", pyradiomics="ZonePercentage")
    def zone_percentage(self) -> np.ndarray:
        r"""Zone percentage :math:`N_z/N_p` (PyRadiomics GLSZM 7)."""
        return self._col("percentage")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLSZM 8)."""
        return self._col("glv")

    @feature("px²", pyradiomics="ZoneVariance")
    def zone_variance(self) -> np.ndarray:
        r"""Zone variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLSZM 9)."""
        return self._col("sv")

    @feature("bit", pyradiomics="ZoneEntropy")
    def zone_entropy(self) -> np.ndarray:
        r"""Zone entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLSZM 10)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelZoneEmphasis")
    def low_gray_level_zone_emphasis(self) -> np.ndarray:
        r"""Low grey level zone emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLSZM 11)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelZoneEmphasis")
    def high_gray_level_zone_emphasis(self) -> np.ndarray:
        r"""High grey level zone emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLSZM 12)."""
        return self._col("high")

    @feature("1", pyradiomics="SmallAreaLowGrayLevelEmphasis")
    def small_area_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Small area low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLSZM 13)."""
        return self._col("small_low")

    @feature("1", pyradiomics="SmallAreaHighGrayLevelEmphasis")
    def small_area_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Small area high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLSZM 14)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LargeAreaLowGrayLevelEmphasis")
    def large_area_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Large area low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLSZM 15)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LargeAreaHighGrayLevelEmphasis")
    def large_area_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Large area high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLSZM 16)."""
        return self._col("large_high")


class GLDM(_SizeMatrix):
    r"""PyRadiomics GLDM features (:math:`\alpha = 0`) of all nuclei of a batch, one channel.

    The dependence of a pixel is 1 plus the number of its 8 neighbours in the
    nucleus with the same grey level. Let :math:`P(i,j)` be the number of pixels
    of level :math:`i` with dependence :math:`j`, :math:`N_z = N_p` the number of
    pixels and :math:`p(i,j)=P(i,j)/N_z`.
    """

    prefix = "gldm"
    family = FAMILY
    pyradiomics_class = "gldm"

    @feature("1", pyradiomics="SmallDependenceEmphasis")
    def small_dependence_emphasis(self) -> np.ndarray:
        r"""Small dependence emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLDM 1 as its code computes it; its documentation divides by :math:`i^2`)."""
        return self._col("small")

    @feature("1", pyradiomics="LargeDependenceEmphasis")
    def large_dependence_emphasis(self) -> np.ndarray:
        r"""Large dependence emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLDM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_z}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLDM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="DependenceNonUniformity")
    def dependence_non_uniformity(self) -> np.ndarray:
        r"""Dependence non-uniformity :math:`\frac{1}{N_z}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLDM 4)."""
        return self._col("sn")

    @feature("1", pyradiomics="DependenceNonUniformityNormalized")
    def dependence_non_uniformity_normalized(self) -> np.ndarray:
        r"""Dependence non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLDM 5)."""
        return self._col("snn")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLDM 6)."""
        return self._col("glv")

    @feature("1", pyradiomics="DependenceVariance")
    def dependence_variance(self) -> np.ndarray:
        r"""Dependence variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLDM 7)."""
        return self._col("sv")

    @feature("bit", pyradiomics="DependenceEntropy")
    def dependence_entropy(self) -> np.ndarray:
        r"""Dependence entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLDM 8)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelEmphasis")
    def low_gray_level_emphasis(self) -> np.ndarray:
        r"""Low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLDM 9)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelEmphasis")
    def high_gray_level_emphasis(self) -> np.ndarray:
        r"""High grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLDM 10)."""
        return self._col("high")

    @feature("1", pyradiomics="SmallDependenceLowGrayLevelEmphasis")
    def small_dependence_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Small dependence low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLDM 11)."""
        return self._col("small_low")

    @feature("1", pyradiomics="SmallDependenceHighGrayLevelEmphasis")
    def small_dependence_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Small dependence high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLDM 12)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LargeDependenceLowGrayLevelEmphasis")
    def large_dependence_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Large dependence low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLDM 13)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LargeDependenceHighGrayLevelEmphasis")
    def large_dependence_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Large dependence high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLDM 14)."""
        return self._col("large_high")


def _size_matrices(px: NucleusPixels, nb: _Neighbours, lv: _Levels) -> tuple[GLRLM, GLSZM, GLDM]:
    """The GLRLM, GLSZM and GLDM of every nucleus, from one :func:`_scan`."""
    dep, run_first, run_length, run_angle, zone_root, zone_size = _scan(nb.pred, lv.levels)
    runs = _size_matrix_stats(
        px.index[run_first] * _NA + run_angle,
        lv.rank[run_first],
        run_length,
        lv.values,
        _NA,
        px.n * _NA,
    )
    valid = nb.multi & (px.count > 0)[:, None]
    glrlm = GLRLM(runs.reshape(px.n, _NA, -1), valid)
    zones = _size_matrix_stats(
        px.index[zone_root], lv.rank[zone_root], zone_size, lv.values, 1, px.n
    )
    deps = _size_matrix_stats(px.index, lv.rank, dep, lv.values, 1, px.n)
    return glrlm, GLSZM(zones), GLDM(deps)


# --------------------------------------------------------------------------- API

_CLASSES = (GLCM, GLRLM, GLSZM, GLDM)


def feature_specs(channels: Sequence[str]) -> list[FeatureSpec]:
    """The texture features of ``channels``: per channel GLCM, GLRLM, GLSZM, GLDM."""
    return [s for ch in channels for cls in _CLASSES for s in specs_of(cls, [ch])]


FEATURES: list[FeatureSpec] = feature_specs(DEFAULT_CHANNELS)
"""The features for the default channels ``h`` and ``grey``."""


def compute(
    batch: NucleusBatch,
    *,
    bin_width: Mapping[str, float] | None = None,
    bin_count: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Texture features of the nuclei ``batch.ids`` for every channel of the batch.

    Parameters
    ----------
    batch : NucleusBatch
    bin_width, bin_count : dict of str, optional
        Discretisation per channel, PyRadiomics ``binWidth`` / ``binCount`` (see
        :func:`pathpipe.features.intensity.resolve_binning`; default
        ``binWidth`` 25).

    Returns
    -------
    dict
        Feature name -> (n,) float64 array, in :func:`feature_specs` order. A
        feature PyRadiomics leaves undefined (e.g. the GLCM of a one-pixel
        nucleus, which has no pair of pixels) is NaN; so are nuclei absent from
        the label map or with a non-finite value.
    """
    px = group_pixels(batch)
    channels = list(batch.channels)
    binning = resolve_binning(channels, bin_width, bin_count)
    if px.flat.size == 0:  # no nucleus has a pixel
        return {s.name: np.full(px.n, np.nan) for s in feature_specs(channels)}
    nb = _neighbours(px)
    out: dict[str, np.ndarray] = {}
    for ch in channels:
        x, bad = channel_values(px, batch.channels[ch])
        invalid = bad | (px.count == 0)
        levels, ng = discretise(x, px, *binning[ch])
        rank, n_levels, values = level_ranks(levels, px)
        lv = _Levels(levels, rank, n_levels, values, ng)
        out.update(_glcm(px, nb, lv, ch, invalid))
        for obj in _size_matrices(px, nb, lv):
            out.update(evaluate(obj, ch, invalid))
    return out
