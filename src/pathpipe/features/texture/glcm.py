"""GLCM: the PyRadiomics grey level co-occurrence matrix features of every nucleus.

24 features per channel, ``glcm_<feature>_<channel>``, computed per angle of
:data:`~pathpipe.features.texture.matrices.ANGLES` on the symmetrical GLCM and
averaged over the angles in which the nucleus has a pair of pixels (PyRadiomics
deletes the empty ones). The GLCMs of all nuclei are one count over the
(predecessor, pixel) pairs (:func:`_glcm_counts`); the features are computed per
matrix by :func:`_glcm_per_angle` with PyRadiomics' operations in PyRadiomics'
order; MCC's eigenvalues come from ``numpy.linalg.eigvalsh`` on all matrices at
once.

Source: PyRadiomics 3.0.1 ``glcm.py`` and ``cmatrices.c`` (``calculate_glcm``);
Haralick et al., IEEE Trans. SMC 3(6):610-621, 1973.
"""

from __future__ import annotations

import itertools
import math

import numba
import numpy as np

from pathpipe.features.binning import EPS
from pathpipe.features.pixels import Nuclei
from pathpipe.features.registry import evaluate, feature, specs_of
from pathpipe.features.texture.matrices import (
    FAMILY,
    N_ANGLES,
    Levels,
    Neighbours,
    nanmean,
)

__all__ = ["GLCM", "GLCM_COLUMNS", "glcm_features"]

_GLCM_BUDGET = 1 << 21
"""Largest number of GLCM cells (nuclei × angles × K²) processed at once."""


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


GLCM_COLUMNS = (
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
_C = {name: c for c, name in enumerate(GLCM_COLUMNS)}


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
    table : (m, A, len(GLCM_COLUMNS)) float64 ndarray
        The values of :data:`GLCM_COLUMNS` (NaN for an empty angle).
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
        return nanmean(np.where(self.valid, v, np.nan))  # NaN angles are ignored

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
            out[sel] = nanmean(np.where(valid, np.sqrt(lam2), np.nan))
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
            out[part] = nanmean(np.where(valid, per_angle, np.nan))
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


def glcm_features(px: Nuclei, nb: Neighbours, lv: Levels, channel: str, invalid: np.ndarray):
    """GLCM features of all nuclei, in chunks of at most :data:`_GLCM_BUDGET` cells."""
    n = px.n
    # chunks of nuclei sorted by their number of levels: all at once when they fit
    order = np.argsort(lv.n_levels, kind="stable")
    cells = N_ANGLES * np.maximum(lv.n_levels[order], 1) ** 2
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
