"""Grey-level discretisation of the intensity channels (PyRadiomics ``binImage``).

Shared by the intensity family (entropy and uniformity of the first-order
histogram) and the texture family (the grey levels of its matrices): the
binning settings of a channel (:func:`resolve_binning`), the grey level of
every pixel, per nucleus (:func:`discretise`), and the levels present in each
nucleus (:func:`level_ranks`).

Source: van Griethuysen et al., Cancer Research 77(21):e104-e107, 2017, and the
PyRadiomics 3.0.1 source (``imageoperations.binImage``), the reference
definition.
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable, Mapping, Sequence

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.features.pixels import Nuclei

__all__ = ["DEFAULT_BIN_WIDTH", "EPS", "discretise", "level_ranks", "resolve_binning"]

DEFAULT_BIN_WIDTH = 25.0
"""PyRadiomics' default ``binWidth``."""

EPS = float(np.spacing(1))
"""PyRadiomics' ε in the entropies, ``numpy.spacing(1)`` ≈ 2.2e-16."""


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


def _segment_min_max(x: np.ndarray, px: Nuclei) -> tuple[np.ndarray, np.ndarray]:
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


def discretise(x: np.ndarray, px: Nuclei, mode: str, value: float) -> tuple[np.ndarray, np.ndarray]:
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
    px : Nuclei
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


def level_ranks(levels: np.ndarray, px: Nuclei) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
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
