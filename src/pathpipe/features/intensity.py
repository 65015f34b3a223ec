"""Intensity family: the PyRadiomics first-order statistics of every nucleus.

All 18 first-order features PyRadiomics enables by default (``firstorder``
class; the deprecated ``StandardDeviation``, equal to the square root of
``Variance``, is left out), per intensity channel, named
``fo_<feature>_<channel>`` (``10Percentile`` and ``90Percentile`` become
``percentile10`` and ``percentile90``). They equal PyRadiomics 3.x
(``radiomics.firstorder.RadiomicsFirstOrder``) run on the nucleus as the mask
with ``voxelArrayShift = 0`` and the pixel spacing set to ``(mpp, mpp)`` µm, so
that ``TotalEnergy`` is ``Energy`` times the pixel area in µm²
(PyRadiomics multiplies by the product of the spacing, meant in mm).

Everything is computed for all nuclei of a tile at once: the pixels are grouped
by nucleus (:class:`pathpipe.features.pixels.Nuclei`, a compiled counting
sort), every per-nucleus sum is one ``np.add.reduceat`` over the grouped pixels, and the
order statistics come from one sort of the nuclei's values as rows of a padded
array; there is no per-nucleus Python loop.

The grey-level discretisation (entropy, uniformity) is
:mod:`pathpipe.features.binning`, shared with the texture family.

Source: J. J. M. van Griethuysen et al., "Computational radiomics system to
decode the radiographic phenotype", Cancer Research 77(21):e104-e107, 2017, and
the PyRadiomics 3.0.1 source, which is the reference definition (feature numbers
below are those of its documentation).
"""

from __future__ import annotations

import functools
from collections.abc import Mapping, Sequence

import numpy as np

from pathpipe.features.binning import EPS, discretise, level_ranks, resolve_binning
from pathpipe.features.pixels import Nuclei, channel_values, prepare
from pathpipe.features.registry import FeatureSpec, NucleusBatch, evaluate, feature, specs_of

__all__ = ["FEATURES", "FirstOrder", "compute", "feature_specs"]

FAMILY = "intensity"
DEFAULT_CHANNELS = ("h", "grey")

# --------------------------------------------------------------------------- features


def _sort_within(x: np.ndarray, px: Nuclei) -> np.ndarray:
    """``x`` (pixel order) sorted within each nucleus."""
    width = int(px.count.max(initial=0))
    if px.n * width <= 4 * x.size + 65536:  # rows of a padded array: numpy's SIMD sort
        pad = np.full((px.n, width), np.inf)
        col = np.arange(x.size) - px.starts[px.index]
        pad[px.index, col] = x
        pad.sort(axis=1)
        return pad[px.index, col]
    by_value = np.argsort(x)
    small = np.int16 if px.n < np.iinfo(np.int16).max else np.int64  # radix sort when small
    return x[by_value[np.argsort(px.index[by_value].astype(small), kind="stable")]]


def _lerp(a: np.ndarray, b: np.ndarray, t: np.ndarray) -> np.ndarray:
    """numpy's quantile interpolation (``numpy.lib._function_base_impl._lerp``)."""
    diff = b - a
    out = a + diff * t
    hi = t >= 0.5
    out[hi] = (b - diff * (1 - t))[hi]
    return out


class FirstOrder:
    """PyRadiomics first-order features of all nuclei of a batch, one channel.

    Let :math:`X` be the :math:`N_p` values of the nucleus, :math:`\\bar X` their
    mean, :math:`\\mu_k = \\frac{1}{N_p}\\sum (X(i)-\\bar X)^k`, and :math:`p(i)` the
    fraction of pixels in grey level :math:`i` after discretisation.
    """

    prefix = "fo"
    family = FAMILY
    pyradiomics_class = "firstorder"

    def __init__(self, x: np.ndarray, levels: np.ndarray, px: Nuclei, mpp: float):
        n = px.n
        idx = px.index
        cnt = px.count.astype(np.float64)
        cnt[cnt == 0] = np.nan
        self.n_p = cnt
        self.pixel_area = mpp * mpp  # numpy.multiply.reduce(spacing), spacing = (mpp, mpp)
        total = functools.partial(px.reduce, np.add)  # pairwise sums per nucleus
        self.sum_sq = total(x * x)
        self.mean_ = total(x) / cnt
        d = x - self.mean_[idx]
        self.abs_dev = total(np.abs(d)) / cnt
        d2 = d * d
        self.m2 = total(d2) / cnt
        self.m3 = total(d2 * d) / cnt
        self.m4 = total(d2 * d2) / cnt
        # order statistics: values sorted within each nucleus
        xs = _sort_within(x, px)
        full = px.count > 0
        start, m = px.starts[:-1][full], np.diff(px.starts)[full]
        self.min_ = np.full(n, np.nan)
        self.max_ = np.full(n, np.nan)
        self.min_[full] = xs[start]
        self.max_[full] = xs[start + m - 1]

        def percentile(q: float) -> np.ndarray:
            # numpy.nanpercentile(method="linear"): virtual index (n - 1) q, lerp
            vi = (m - 1) * (q / 100)
            below = np.floor(vi)
            lo = np.minimum(below.astype(np.int64), m - 1)
            hi = np.minimum(lo + 1, m - 1)
            out = np.full(n, np.nan)
            out[full] = _lerp(xs[start + lo], xs[start + hi], vi - below)
            return out

        self.p10, self.p25, self.p75, self.p90 = (percentile(q) for q in (10, 25, 75, 90))
        med = np.full(n, np.nan)
        mid = start + (m - 1) // 2
        odd = m % 2 == 1
        med[full] = np.where(odd, xs[mid], (xs[mid] + xs[np.minimum(mid + 1, start + m - 1)]) / 2)
        self.median_ = med
        # robust subset: X_{10-90}, the values in the closed 10th-90th percentile range
        keep = ~(((x - self.p10[idx]) < 0) | ((x - self.p90[idx]) > 0))
        kc = total(keep.astype(np.float64))
        kmean = total(np.where(keep, x, 0.0)) / kc
        self.robust_dev = total(np.where(keep, np.abs(x - kmean[idx]), 0.0)) / kc
        # histogram of the discretised levels
        rank, n_levels, _ = level_ranks(levels, px)
        big = max(int(n_levels.max(initial=0)), 1)
        hist = np.bincount(idx * big + rank, minlength=n * big).reshape(n, big)
        self.p_i = hist / cnt[:, None]

    @feature("{unit}²", pyradiomics="Energy")
    def energy(self) -> np.ndarray:
        r"""Energy :math:`\sum_{i=1}^{N_p} X(i)^2` (PyRadiomics first order 1, ``voxelArrayShift`` 0)."""
        return self.sum_sq

    @feature("{unit}²·µm²", pyradiomics="TotalEnergy")
    def total_energy(self) -> np.ndarray:
        r"""Total energy :math:`V_{px}\sum_{i=1}^{N_p} X(i)^2`, :math:`V_{px}` the pixel area in µm² (PyRadiomics first order 2 with spacing (mpp, mpp))."""
        return self.sum_sq * self.pixel_area

    @feature("bit", pyradiomics="Entropy")
    def entropy(self) -> np.ndarray:
        r"""Entropy of the discretised levels :math:`-\sum_{i=1}^{N_g} p(i)\log_2(p(i)+\epsilon)`, :math:`\epsilon` = 2.2e-16 (PyRadiomics first order 3)."""
        p = self.p_i
        return -np.sum(p * np.log2(p + EPS), axis=1)

    @feature("{unit}", pyradiomics="Minimum")
    def minimum(self) -> np.ndarray:
        r"""Minimum :math:`\min(X)` (PyRadiomics first order 4)."""
        return self.min_

    @feature("{unit}", pyradiomics="10Percentile")
    def percentile10(self) -> np.ndarray:
        r"""10th percentile of :math:`X`, linear interpolation between order statistics (``numpy.percentile``; PyRadiomics first order 5)."""
        return self.p10

    @feature("{unit}", pyradiomics="90Percentile")
    def percentile90(self) -> np.ndarray:
        r"""90th percentile of :math:`X`, linear interpolation between order statistics (``numpy.percentile``; PyRadiomics first order 6)."""
        return self.p90

    @feature("{unit}", pyradiomics="Maximum")
    def maximum(self) -> np.ndarray:
        r"""Maximum :math:`\max(X)` (PyRadiomics first order 7)."""
        return self.max_

    @feature("{unit}", pyradiomics="Mean")
    def mean(self) -> np.ndarray:
        r"""Mean :math:`\bar X = \frac{1}{N_p}\sum_{i=1}^{N_p} X(i)` (PyRadiomics first order 8)."""
        return self.mean_

    @feature("{unit}", pyradiomics="Median")
    def median(self) -> np.ndarray:
        r"""Median of :math:`X` (PyRadiomics first order 9)."""
        return self.median_

    @feature("{unit}", pyradiomics="InterquartileRange")
    def interquartile_range(self) -> np.ndarray:
        r"""Interquartile range :math:`P_{75} - P_{25}` (PyRadiomics first order 10)."""
        return self.p75 - self.p25

    @feature("{unit}", pyradiomics="Range")
    def range(self) -> np.ndarray:
        r"""Range :math:`\max(X) - \min(X)` (PyRadiomics first order 11)."""
        return self.max_ - self.min_

    @feature("{unit}", pyradiomics="MeanAbsoluteDeviation")
    def mean_absolute_deviation(self) -> np.ndarray:
        r"""Mean absolute deviation :math:`\frac{1}{N_p}\sum_{i=1}^{N_p}|X(i)-\bar X|` (PyRadiomics first order 12)."""
        return self.abs_dev

    @feature("{unit}", pyradiomics="RobustMeanAbsoluteDeviation")
    def robust_mean_absolute_deviation(self) -> np.ndarray:
        r"""Robust mean absolute deviation :math:`\frac{1}{N_{10-90}}\sum |X_{10-90}(i)-\bar X_{10-90}|` over the values between the 10th and 90th percentile inclusive (PyRadiomics first order 13)."""
        return self.robust_dev

    @feature("{unit}", pyradiomics="RootMeanSquared")
    def root_mean_squared(self) -> np.ndarray:
        r"""Root mean square :math:`\sqrt{\frac{1}{N_p}\sum_{i=1}^{N_p} X(i)^2}` (PyRadiomics first order 14)."""
        return np.sqrt(self.sum_sq / self.n_p)

    @feature("1", pyradiomics="Skewness")
    def skewness(self) -> np.ndarray:
        r"""Skewness :math:`\mu_3/\mu_2^{3/2}`, 0 for a flat nucleus (PyRadiomics first order 16)."""
        m2 = np.where(self.m2 == 0, 1.0, self.m2)
        return np.where(self.max_ == self.min_, 0.0, self.m3 / m2**1.5)

    @feature("1", pyradiomics="Kurtosis")
    def kurtosis(self) -> np.ndarray:
        r"""Kurtosis :math:`\mu_4/\mu_2^2` (not excess kurtosis), 0 for a flat nucleus (PyRadiomics first order 17)."""
        m2 = np.where(self.m2 == 0, 1.0, self.m2)
        return np.where(self.max_ == self.min_, 0.0, self.m4 / m2**2.0)

    @feature("{unit}²", pyradiomics="Variance")
    def variance(self) -> np.ndarray:
        r"""Variance :math:`\mu_2 = \frac{1}{N_p}\sum_{i=1}^{N_p}(X(i)-\bar X)^2` (PyRadiomics first order 18)."""
        return self.m2

    @feature("1", pyradiomics="Uniformity")
    def uniformity(self) -> np.ndarray:
        r"""Uniformity of the discretised levels :math:`\sum_{i=1}^{N_g} p(i)^2` (PyRadiomics first order 19)."""
        return np.sum(self.p_i**2, axis=1)


def feature_specs(channels: Sequence[str]) -> list[FeatureSpec]:
    """The first-order features of ``channels``, channel-major (``fo_<feature>_<channel>``)."""
    return specs_of(FirstOrder, channels)


FEATURES: list[FeatureSpec] = feature_specs(DEFAULT_CHANNELS)
"""The features for the default channels ``h`` and ``grey``."""


def compute(
    batch: NucleusBatch,
    *,
    bin_width: Mapping[str, float] | None = None,
    bin_count: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """First-order features of the nuclei ``batch.ids`` for every channel of the batch.

    Parameters
    ----------
    batch : NucleusBatch
    bin_width, bin_count : dict of str, optional
        Discretisation per channel for ``Entropy`` and ``Uniformity`` (see
        :func:`pathpipe.features.binning.resolve_binning`; default
        ``binWidth`` 25).

    Returns
    -------
    dict
        ``fo_<feature>_<channel>`` -> (n,) float64 array, in :func:`feature_specs`
        order. Nuclei absent from the label map or with a non-finite value are NaN.
    """
    px = prepare(batch)
    channels = list(batch.channels)
    binning = resolve_binning(channels, bin_width, bin_count)
    if px.flat.size == 0:  # no nucleus has a pixel
        return {s.name: np.full(px.n, np.nan) for s in feature_specs(channels)}
    out: dict[str, np.ndarray] = {}
    for ch in channels:
        x, bad = channel_values(px, batch.channels[ch])
        levels, _ = discretise(x, px, *binning[ch])
        with np.errstate(invalid="ignore", divide="ignore"):
            fo = FirstOrder(x, levels, px, float(batch.mpp))
        out.update(evaluate(fo, ch, bad | (px.count == 0)))
    return out
