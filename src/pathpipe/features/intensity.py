"""Intensity family: the PyRadiomics first-order statistics of every nucleus (private).

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
by nucleus (:class:`NucleusPixels`, a compiled counting sort), every
per-nucleus sum is one ``np.add.reduceat`` over the grouped pixels, and the
order statistics come from one sort of the nuclei's values as rows of a padded
array; there is no per-nucleus Python loop.

The module also holds what the intensity and texture families share: the pixel
grouping, the grey-level discretisation (:func:`discretise`, PyRadiomics
``imageoperations.binImage``), the binning settings (:func:`resolve_binning`) and
the feature registry (:func:`feature`, :func:`specs_of`, :func:`evaluate`).

Source: J. J. M. van Griethuysen et al., "Computational radiomics system to
decode the radiographic phenotype", Cancer Research 77(21):e104-e107, 2017, and
the PyRadiomics 3.0.1 source, which is the reference definition (feature numbers
below are those of its documentation).
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

import numba
import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.features.registry import FeatureSpec, NucleusBatch, validate_batch

__all__ = [
    "CHANNEL_UNITS",
    "DEFAULT_BIN_WIDTH",
    "EPS",
    "FEATURES",
    "FirstOrder",
    "NucleusPixels",
    "channel_values",
    "compute",
    "discretise",
    "evaluate",
    "feature",
    "feature_specs",
    "group_pixels",
    "level_ranks",
    "resolve_binning",
    "specs_of",
]

FAMILY = "intensity"
DEFAULT_CHANNELS = ("h", "grey")
DEFAULT_BIN_WIDTH = 25.0
"""PyRadiomics' default ``binWidth``."""

CHANNEL_UNITS = {"h": "0.01 OD", "grey": "grey level"}
"""Units of the intensity channels of :mod:`pathpipe.features.run`; others are "a.u."."""

EPS = float(np.spacing(1))
"""PyRadiomics' ε in the entropies, ``numpy.spacing(1)`` ≈ 2.2e-16."""

# --------------------------------------------------------------------------- registry


def feature(unit: str, *, pyradiomics: str) -> Callable[[Callable], Callable]:
    """Mark a method of a feature class as one feature.

    The feature is named ``<prefix>_<method>_<channel>``; its definition is the
    method's docstring. ``unit`` may contain ``{unit}``, replaced by the channel's
    unit; ``pyradiomics`` is the PyRadiomics feature name within its class.
    """

    def mark(fn: Callable) -> Callable:
        fn._feature = (unit, pyradiomics)  # type: ignore[attr-defined]
        return fn

    return mark


@functools.cache
def _registered(cls: type) -> tuple[tuple[str, str, str, str], ...]:
    """``(method, unit, pyradiomics, definition)`` of every feature of ``cls``, in order."""
    return tuple(_walk(cls))


def _walk(cls: type) -> Iterator[tuple[str, str, str, str]]:
    for name, fn in vars(cls).items():
        meta = getattr(fn, "_feature", None)
        if meta is not None:
            doc = " ".join(inspect.cleandoc(fn.__doc__ or "").split())
            yield name, meta[0], meta[1], doc


def specs_of(cls: type, channels: Sequence[str]) -> list[FeatureSpec]:
    """One :class:`FeatureSpec` per feature of ``cls`` and channel, channel-major.

    ``cls`` declares ``prefix`` (name prefix), ``family`` and ``pyradiomics_class``.
    """
    out = []
    for ch in channels:
        unit = CHANNEL_UNITS.get(ch, "a.u.")
        for method, u, py, doc in _registered(cls):
            out.append(
                FeatureSpec(
                    name=f"{cls.prefix}_{method}_{ch}",
                    family=cls.family,
                    unit=u.replace("{unit}", unit),
                    definition=doc,
                    pyradiomics=f"original_{cls.pyradiomics_class}_{py}",
                )
            )
    return out


def evaluate(obj: object, channel: str, invalid: np.ndarray) -> dict[str, np.ndarray]:
    """Call every feature method of ``obj``: ``<prefix>_<method>_<channel>`` -> (n,) float64.

    Nuclei where ``invalid`` is True are NaN in every feature.
    """
    out: dict[str, np.ndarray] = {}
    cls = type(obj)
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for method, _, _, _ in _registered(cls):
            value = np.array(getattr(obj, method)(), dtype=np.float64).reshape(invalid.shape)
            value[invalid] = np.nan
            out[f"{cls.prefix}_{method}_{channel}"] = value
    return out


# --------------------------------------------------------------------------- pixels


@dataclass
class NucleusPixels:
    """The pixels of a :class:`NucleusBatch`, grouped by nucleus.

    Attributes
    ----------
    n : int
        Number of nuclei (``len(batch.ids)``).
    shape : tuple of int
        ``(H, W)`` of the tile.
    compact : (H, W) int64 ndarray
        ``i + 1`` on the pixels of the ``i``-th id of the batch, 0 elsewhere.
    flat : (P,) int64 ndarray
        Flat tile index of the pixels of all nuclei, nucleus by nucleus, raster
        order within a nucleus.
    rows, cols : (P,) int64 ndarray
    index : (P,) int64 ndarray
        Nucleus index of each pixel (non-decreasing).
    starts : (n + 1,) int64 ndarray
        Nucleus ``i`` owns pixels ``starts[i]:starts[i + 1]``.
    count : (n,) int64 ndarray
        Pixels per nucleus (0 for an id absent from the label map).
    """

    n: int
    shape: tuple[int, int]
    compact: np.ndarray
    flat: np.ndarray
    rows: np.ndarray
    cols: np.ndarray
    index: np.ndarray
    starts: np.ndarray
    count: np.ndarray

    def total(self, values: np.ndarray) -> np.ndarray:
        """Per-nucleus sum of per-pixel ``values`` (0 for an empty nucleus)."""
        out = np.zeros(self.n)
        full = self.count > 0
        if full.any():
            out[full] = np.add.reduceat(values, self.starts[:-1][full])
        return out


@numba.njit(cache=True, nogil=True)
def _bucket(compact: np.ndarray, n: int):
    """Pixels of ``compact`` (nucleus index + 1, 0 outside) by nucleus, raster order within.

    A counting sort. Returns ``flat, rows, cols, index`` (one per pixel) and
    ``starts`` (``n + 1``), as in :class:`NucleusPixels`.
    """
    h, w = compact.shape
    starts = np.zeros(n + 1, np.int64)
    for r in range(h):
        for c in range(w):
            starts[compact[r, c]] += 1  # bucket 0 collects the background
    total = h * w - starts[0]
    starts[0] = 0
    for k in range(n):
        starts[k + 1] += starts[k]
    fill = starts[:-1].copy()
    flat = np.empty(total, np.int64)
    rows = np.empty(total, np.int64)
    cols = np.empty(total, np.int64)
    index = np.empty(total, np.int64)
    for r in range(h):
        for c in range(w):
            k = compact[r, c] - 1
            if k >= 0:
                t = fill[k]
                flat[t], rows[t], cols[t], index[t] = r * w + c, r, c, k
                fill[k] += 1
    return flat, rows, cols, index, starts


def group_pixels(batch: NucleusBatch) -> NucleusPixels:
    """Validate ``batch`` and group its pixels by nucleus (see :class:`NucleusPixels`)."""
    validate_batch(batch)
    labels = np.asarray(batch.labels)
    ids = np.asarray(batch.ids).astype(np.int64)
    n = ids.size
    top = max(int(labels.max(initial=0)), int(ids.max(initial=0)))
    if top < 4 * labels.size + 1024:  # lookup table
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(1, n + 1)
        compact = lut[labels]
    else:  # sparse huge ids
        order = np.argsort(ids)
        flat = labels.ravel().astype(np.int64)
        pos = np.minimum(np.searchsorted(ids[order], flat), max(n - 1, 0))
        hit = (ids[order][pos] == flat) if n else np.zeros(flat.shape, bool)
        compact = np.where(hit, order[pos] + 1, 0).reshape(labels.shape)
    flat, rows, cols, index, starts = _bucket(compact, n)
    count = np.diff(starts)
    return NucleusPixels(
        n=n,
        shape=(int(labels.shape[0]), int(labels.shape[1])),
        compact=compact,
        flat=flat,
        rows=rows,
        cols=cols,
        index=index,
        starts=starts,
        count=count,
    )


def channel_values(px: NucleusPixels, image: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The channel values of the pixels of ``px`` and which nuclei hold a non-finite one.

    Returns
    -------
    x : (P,) float64 ndarray
        Values in pixel order; non-finite values are replaced by 0.
    bad : (n,) bool ndarray
        Nuclei with at least one non-finite value (their features are NaN).
    """
    x = np.asarray(image, dtype=np.float64).ravel()[px.flat]
    finite = np.isfinite(x)
    bad = np.zeros(px.n, bool)
    if not finite.all():
        bad[px.index[~finite]] = True
        x = np.where(finite, x, 0.0)
    return x, bad


# --------------------------------------------------------------------------- binning


def resolve_binning(
    channels: Sequence[str],
    bin_width: Mapping[str, float] | None = None,
    bin_count: Mapping[str, int] | None = None,
) -> dict[str, tuple[str, float]]:
    """The discretisation of every channel: ``("width", w)`` or ``("count", k)``.

    A channel listed in ``bin_count`` uses a fixed bin count, one in ``bin_width``
    a fixed bin width; a channel in neither gets ``binWidth`` 25 (PyRadiomics'
    default).
    """
    bin_width = dict(bin_width or {})
    bin_count = dict(bin_count or {})
    for what, given in (("bin_width", bin_width), ("bin_count", bin_count)):
        extra = sorted(set(given) - set(channels))
        if extra:
            raise ConfigError(f"{what} names channels {extra}; expected some of {list(channels)}")
    both = sorted(set(bin_width) & set(bin_count))
    if both:
        raise ConfigError(f"channels {both} have both a bin_width and a bin_count; expected one")
    out: dict[str, tuple[str, float]] = {}
    for ch in channels:
        if ch in bin_count:
            k = bin_count[ch]
            if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1:
                raise ConfigError(f"bin_count[{ch!r}]={k!r}; expected an integer >= 1")
            out[ch] = ("count", int(k))
        else:
            w = bin_width.get(ch, DEFAULT_BIN_WIDTH)
            if isinstance(w, bool) or not isinstance(w, numbers.Real) or not 0 < w < math.inf:
                raise ConfigError(f"bin_width[{ch!r}]={w!r}; expected a finite number > 0")
            out[ch] = ("width", float(w))
    return out


def _segment_min_max(x: np.ndarray, px: NucleusPixels) -> tuple[np.ndarray, np.ndarray]:
    lo = np.zeros(px.n)
    hi = np.zeros(px.n)
    full = px.count > 0
    if full.any():
        first = px.starts[:-1][full]
        lo[full] = np.minimum.reduceat(x, first)
        hi[full] = np.maximum.reduceat(x, first)
    return lo, hi


def _count_edges_le(x: np.ndarray, edge: Callable[[np.ndarray], np.ndarray], k0: np.ndarray):
    """``1 + max{k : edge(k) <= x}`` from a guess ``k0`` (``np.digitize`` semantics)."""
    k = np.maximum(k0, 0)
    for _ in range(64):  # the guess is off by at most one or two; loop until stable
        up = edge(k + 1) <= x
        down = (edge(k) > x) & (k > 0)
        if not (up.any() or down.any()):
            break
        k = k + up - down
    return k + 1


def discretise(
    x: np.ndarray, px: NucleusPixels, mode: str, value: float
) -> tuple[np.ndarray, np.ndarray]:
    """Grey levels of every pixel, PyRadiomics ``imageoperations.binImage`` per nucleus.

    Fixed bin width :math:`w` (``mode="width"``): edges
    :math:`e_k = \\lfloor\\min X/w\\rfloor w + k w` (``numpy.arange(min - min % w,
    max + 2w, w)``) and level :math:`\\#\\{k : e_k \\le x\\}`, so
    :math:`X_b = \\lfloor X/w\\rfloor - \\lfloor \\min X/w\\rfloor + 1`.
    Fixed bin count :math:`N_b` (``mode="count"``): the edges of
    ``numpy.histogram(X, N_b)`` with the last edge raised by 1, i.e.
    :math:`X_b = \\lfloor N_b (X - \\min X)/(\\max X - \\min X)\\rfloor + 1`, and
    :math:`N_b` for the maximum. Only the nucleus' own pixels define its edges.

    The edges are evaluated with the same floating-point operations as
    ``numpy.arange`` (``start + k (e_1 - e_0)``) and ``numpy.linspace``
    (``k step + start``), so pixels on an edge fall in the same bin as in
    PyRadiomics.

    Parameters
    ----------
    x : (P,) float64 ndarray
        Pixel values in the order of ``px``.
    px : NucleusPixels
    mode : {"width", "count"}
    value : float
        The bin width or the bin count.

    Returns
    -------
    levels : (P,) int64 ndarray
        Grey level of each pixel, >= 1.
    ng : (n,) int64 ndarray
        Largest level of each nucleus (PyRadiomics ``Ng``; 0 for empty nuclei).
    """
    lo, hi = _segment_min_max(x, px)
    idx = px.index
    if mode == "width":
        w = float(value)
        low = lo - np.remainder(lo, w)  # minimum - (minimum % binWidth)
        delta = (low + w) - low  # numpy.arange fills start + k * (x[1] - x[0])
        lo_p, d_p = low[idx], delta[idx]

        def edge(k: np.ndarray) -> np.ndarray:
            return lo_p + k.astype(np.float64) * d_p

        with np.errstate(invalid="ignore", divide="ignore"):
            guess = np.floor((x - lo_p) / d_p)
        levels = _count_edges_le(x, edge, np.nan_to_num(guess).astype(np.int64))
    elif mode == "count":
        nb = int(value)
        flat = hi == lo
        first = np.where(flat, lo - 0.5, lo)
        last = np.where(flat, hi + 0.5, hi)
        step = (last - first) / nb  # numpy.linspace: k * step + start, last = stop
        f_p, s_p, l_p = first[idx], step[idx], last[idx]

        def edge(k: np.ndarray) -> np.ndarray:
            e = k.astype(np.float64) * s_p + f_p
            return np.where(k >= nb, l_p + 1.0, e)  # binEdges[-1] += 1

        guess = np.floor((x - f_p) / s_p)
        levels = _count_edges_le(x, edge, np.clip(guess, 0, nb - 1).astype(np.int64))
    else:
        raise ConfigError(f"discretisation mode {mode!r}; expected 'width' or 'count'")
    levels = levels.astype(np.int64)
    ng = np.zeros(px.n, np.int64)
    full = px.count > 0
    if full.any():
        ng[full] = np.maximum.reduceat(levels, px.starts[:-1][full])
    return levels, ng


def level_ranks(levels: np.ndarray, px: NucleusPixels) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The grey levels present in each nucleus and each pixel's rank among them.

    PyRadiomics keeps only the levels present in the mask (``grayLevels``) in
    its matrices; the rank is the row of a pixel's level there.

    Returns
    -------
    rank : (P,) int64 ndarray
        Rank of each pixel's level among its nucleus' levels (0-based, increasing).
    n_levels : (n,) int64 ndarray
        Number of distinct levels per nucleus.
    values : (n, K) float64 ndarray
        The levels of each nucleus by rank, padded with 1.0 (``K`` = max
        ``n_levels``, at least 1).
    """
    top = int(levels.max(initial=0)) + 1
    key = px.index * top + levels
    if px.n * top <= 1 << 22:
        present = np.bincount(key, minlength=px.n * top) > 0
        keys = np.flatnonzero(present)
        pos = np.cumsum(present) - 1
        kpos = pos[key]
    else:
        keys, kpos = np.unique(key, return_inverse=True)
    knuc = keys // top
    n_levels = np.bincount(knuc, minlength=px.n).astype(np.int64)
    first = np.zeros(px.n + 1, np.int64)
    np.cumsum(n_levels, out=first[1:])
    krank = np.arange(keys.size) - first[knuc]
    big = max(int(n_levels.max(initial=0)), 1)
    values = np.ones((px.n, big))
    values[knuc, krank] = keys % top
    return krank[kpos], n_levels, values


# --------------------------------------------------------------------------- features


def _sort_within(x: np.ndarray, px: NucleusPixels) -> np.ndarray:
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

    def __init__(self, x: np.ndarray, levels: np.ndarray, px: NucleusPixels, mpp: float):
        n = px.n
        idx = px.index
        cnt = px.count.astype(np.float64)
        cnt[cnt == 0] = np.nan
        self.n_p = cnt
        self.pixel_area = mpp * mpp  # numpy.multiply.reduce(spacing), spacing = (mpp, mpp)
        self.sum_sq = px.total(x * x)
        self.mean_ = px.total(x) / cnt
        d = x - self.mean_[idx]
        self.abs_dev = px.total(np.abs(d)) / cnt
        d2 = d * d
        self.m2 = px.total(d2) / cnt
        self.m3 = px.total(d2 * d) / cnt
        self.m4 = px.total(d2 * d2) / cnt
        # order statistics: values sorted within each nucleus
        xs = _sort_within(x, px)
        full = px.count > 0
        start, m = px.starts[:-1][full], px.count[full]
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
        kc = px.total(keep.astype(np.float64))
        kmean = px.total(np.where(keep, x, 0.0)) / kc
        self.robust_dev = px.total(np.where(keep, np.abs(x - kmean[idx]), 0.0)) / kc
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
        :func:`resolve_binning`; default ``binWidth`` 25).

    Returns
    -------
    dict
        ``fo_<feature>_<channel>`` -> (n,) float64 array, in :func:`feature_specs`
        order. Nuclei absent from the label map or with a non-finite value are NaN.
    """
    px = group_pixels(batch)
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
