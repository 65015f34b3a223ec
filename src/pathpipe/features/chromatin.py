"""Chromatin family: amount and spatial distribution of chromatin in each nucleus.

After Young, Verbeek & Mayall, "Characterization of chromatin distribution in
cell nuclei", Cytometry 7:467-474 (1986): integrated optical density, the
split into condensed (heterochromatin) and open (euchromatin) chromatin, clumping,
margination towards the nuclear envelope and displacement of the chromatin's
centre of mass.

Each feature is computed per intensity channel (suffix ``_<channel>``) on the
channel read as a stain *density* ``I``: ``h`` (hematoxylin optical density x
100) as is, ``grey`` (luma 0-255, dark where stained) as ``255 - grey``, any
other channel as is.

Heterochromatin pixels: ``I > Ī + α σ_I`` over the nucleus (``α = 1``), the rule
of ``hetero_euchro_measures`` in GVS-Lab's chrometrics (Venkatachalapathy et
al., npj Syst Biol Appl 6:18, 2020; older versions used α = 1.5). Relative to
each nucleus' own mean and spread, it is independent of the stain strength.

Radial position: ``d`` the Euclidean distance (px) from a pixel centre to the
nearest pixel centre outside the nucleus (the tile's outside counts as outside),
``ρ = (d_max - d) / (d_max - 1)``: 1 on the border pixels, 0 at the deepest point.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.features.pixels import Nuclei, centroids, prepare
from pathpipe.features.registry import FeatureSpec, NucleusBatch, evaluate, feature, specs_of

__all__ = ["compute", "feature_specs"]

FAMILY = "chromatin"

HETEROCHROMATIN_ALPHA = 1.0
"""Default α of the heterochromatin threshold ``Ī + α σ_I``."""


def density(channel: str, image: np.ndarray) -> np.ndarray:
    """The channel as a stain density: ``255 - grey`` for ``grey``, else as is."""
    image = np.asarray(image, dtype=np.float64)
    return 255.0 - image if channel == "grey" else image


@numba.njit(cache=True, nogil=True)
def _dt1d(f: np.ndarray, d: np.ndarray, v: np.ndarray, z: np.ndarray) -> None:
    """1-D squared distance transform of samples ``f`` into ``d`` (Felzenszwalb &
    Huttenlocher, "Distance transforms of sampled functions", Theory Comput.
    8:415-428, 2012: lower envelope of the parabolas ``(q - p)² + f[p]``)."""
    n = len(f)
    k = 0
    v[0] = 0
    z[0] = -np.inf
    z[1] = np.inf
    for q in range(1, n):
        s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        while s <= z[k]:
            k -= 1
            s = ((f[q] + q * q) - (f[v[k]] + v[k] * v[k])) / (2.0 * q - 2.0 * v[k])
        k += 1
        v[k] = q
        z[k] = s
        z[k + 1] = np.inf
    k = 0
    for q in range(n):
        while z[k + 1] < q:
            k += 1
        d[q] = (q - v[k]) ** 2 + f[v[k]]


@numba.njit(cache=True, nogil=True)
def _edt_kernel(
    compact: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    rmin: np.ndarray,
    cmin: np.ndarray,
    rmax: np.ndarray,
    cmax: np.ndarray,
) -> np.ndarray:
    """Euclidean distance of every nucleus pixel to the nearest pixel outside its nucleus.

    Exact squared distance transform of the nucleus' bounding box grown by one
    pixel (whose ring is outside by construction) by separable 1-D transforms,
    columns then rows (:func:`_dt1d`).
    """
    big = 1e18
    out = np.empty(len(rows))
    for i in range(len(starts) - 1):
        a, b = starts[i], starts[i + 1]
        if a == b:
            continue
        r0, c0 = rmin[i] - 1, cmin[i] - 1
        hh, ww = rmax[i] - r0 + 2, cmax[i] - c0 + 2
        g = np.zeros((hh, ww))
        for j in range(a, b):
            g[rows[j] - r0, cols[j] - c0] = big
        n = max(hh, ww)
        f = np.empty(n)
        d = np.empty(n)
        v = np.empty(n, np.int64)
        z = np.empty(n + 1)
        for c in range(ww):
            for r in range(hh):
                f[r] = g[r, c]
            _dt1d(f[:hh], d[:hh], v, z)
            for r in range(hh):
                g[r, c] = d[r]
        for r in range(hh):
            for c in range(ww):
                f[c] = g[r, c]
            _dt1d(f[:ww], d[:ww], v, z)
            for c in range(ww):
                g[r, c] = d[c]
        for j in range(a, b):
            out[j] = np.sqrt(g[rows[j] - r0, cols[j] - c0])
    return out


@numba.njit(cache=True, nogil=True)
def _channel_kernel(
    v: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    rho: np.ndarray,
    rim: np.ndarray,
    alpha: float,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-nucleus sums of one channel and the heterochromatin mask.

    Columns of the returned ``(n, 13)`` array: 0 Σ I, 1 Ī, 2 σ_I, 3 N_HC,
    4 Σ_HC I, 5 Σ (ρ - ρ̄)(y - ȳ), 6 Σ (ρ - ρ̄)², 7 Σ (y - ȳ)² with y = I / Ī,
    8 Σ_rim I, 9 N_rim, 10 Σ max(I, 0), 11 Σ max(I, 0) r, 12 Σ max(I, 0) c.
    ``rho`` is 0 where undefined; ``rim`` marks ρ >= ½.
    """
    n = len(starts) - 1
    out = np.zeros((n, 13))
    hc = np.zeros(len(v), np.bool_)
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        if a == b:
            continue
        cnt = b - a
        total = 0.0
        rsum = 0.0
        for j in range(a, b):
            total += v[j]
            rsum += rho[j]
        mean = total / cnt
        rbar = rsum / cnt
        ss = 0.0
        for j in range(a, b):
            ss += (v[j] - mean) ** 2
        std = np.sqrt(ss / cnt)
        thr = alpha * std + 1e-9 * (abs(mean) + std)
        ybar = 0.0
        if mean != 0:
            for j in range(a, b):
                ybar += v[j] / mean
            ybar /= cnt
        o = out[i]
        o[0], o[1], o[2] = total, mean, std
        for j in range(a, b):
            if v[j] - mean > thr:
                hc[j] = True
                o[3] += 1.0
                o[4] += v[j]
            y = v[j] / mean if mean != 0 else np.nan
            o[5] += (rho[j] - rbar) * (y - ybar)
            o[6] += (rho[j] - rbar) ** 2
            o[7] += (y - ybar) ** 2
            if rim[j]:
                o[8] += v[j]
                o[9] += 1.0
            wgt = max(v[j], 0.0)
            o[10] += wgt
            o[11] += wgt * rows[j]
            o[12] += wgt * cols[j]
    return out, hc


class Chromatin:
    """Chromatin features of the nuclei of one batch (one method per feature, per channel).

    Notation: over the ``N`` pixels of a nucleus, ``I`` the density, ``Ī`` and
    ``σ_I`` its mean and (population) standard deviation, HC the heterochromatin
    pixels ``I > Ī + α σ_I`` (α = 1) and EC the others, ``ρ`` the radial position
    (module docstring), ``s`` = mpp.
    """

    family = FAMILY
    channel_argument = True  # one instance for all channels: methods take the channel

    def __init__(
        self,
        nuc: Nuclei,
        channels: dict[str, np.ndarray],
        *,
        heterochromatin_alpha: float = HETEROCHROMATIN_ALPHA,
    ) -> None:
        self.nuc = nuc
        self.alpha = heterochromatin_alpha
        self.images = channels
        self.cache: dict[str, dict[str, np.ndarray]] = {}
        k = nuc.count
        d = _edt_kernel(
            nuc.compact, nuc.rows, nuc.cols, nuc.starts, nuc.rmin, nuc.cmin, nuc.rmax, nuc.cmax
        )
        dmax = nuc.reduce(np.maximum, d, fill=np.nan)
        self.radial_ok = dmax > 1.0  # some pixel off the border
        ok = self.radial_ok[nuc.index]
        with np.errstate(divide="ignore", invalid="ignore"):
            self.rho = np.where(ok, (dmax[nuc.index] - d) / (dmax[nuc.index] - 1.0), 0.0)
        self.rim = self.rho >= 0.5
        self.centroid = centroids(nuc)
        self.r_eq = np.sqrt(k / np.pi)

    def stats(self, channel: str) -> dict[str, np.ndarray]:
        """Per-nucleus statistics of ``channel``, computed once."""
        if channel in self.cache:
            return self.cache[channel]
        nuc = self.nuc
        k = nuc.count
        v = density(channel, self.images[channel])[nuc.rows, nuc.cols]
        sums, hc = _channel_kernel(
            v, nuc.rows, nuc.cols, nuc.starts, self.rho, self.rim, float(self.alpha)
        )
        st: dict[str, np.ndarray] = {
            "sum": sums[:, 0],
            "mean": sums[:, 1],
            "n_hc": sums[:, 3],
            "sum_hc": sums[:, 4],
        }
        with np.errstate(divide="ignore", invalid="ignore"):
            # clumps: 8-connected components of the heterochromatin of each nucleus
            from skimage.measure import label

            hr, hcol = nuc.rows[hc], nuc.cols[hc]
            hc_map = np.zeros_like(nuc.compact)
            hc_map[hr, hcol] = nuc.compact[hr, hcol]
            comp = label(hc_map, connectivity=2, background=0)[hr, hcol]
            _, first = np.unique(comp, return_index=True)
            st["clumps"] = np.bincount(nuc.index[hc][first], minlength=nuc.n).astype(np.float64)
            ok = self.radial_ok
            varying = sums[:, 2] > 1e-9 * np.abs(sums[:, 1])  # σ_I > 0 beyond rounding
            st["slope"] = np.where(ok, np.where(varying, sums[:, 5] / sums[:, 6], 0.0), np.nan)
            corr = sums[:, 5] / np.sqrt(sums[:, 6] * sums[:, 7])
            st["corr"] = np.where(ok & varying, corr, np.nan)
            mean_rim = sums[:, 8] / sums[:, 9]
            mean_inner = (sums[:, 0] - sums[:, 8]) / (k - sums[:, 9])
            rim_ratio = mean_rim / mean_inner  # inf where the inner density is 0
            st["rim_ratio"] = np.where(ok & np.isfinite(rim_ratio), rim_ratio, np.nan)
            cr = sums[:, 11] / sums[:, 10]
            cc = sums[:, 12] / sums[:, 10]
            r0, c0 = self.centroid
            st["com"] = np.hypot(cr - r0, cc - c0) / self.r_eq
        self.cache[channel] = st
        return st

    @feature("{unit}·µm²")
    def chromatin_iod(self, channel: str) -> np.ndarray:
        """IOD = s² Σ I, integrated density (integrated optical density for ``h``)."""
        return self.stats(channel)["sum"] * self.nuc.mpp**2

    @feature("1")
    def chromatin_hc_area_ratio(self, channel: str) -> np.ndarray:
        """N_HC / N_EC, heterochromatin to euchromatin area."""
        st = self.stats(channel)
        return st["n_hc"] / (self.nuc.count - st["n_hc"])

    @feature("1")
    def chromatin_hc_area_fraction(self, channel: str) -> np.ndarray:
        """N_HC / N, fraction of the nucleus that is heterochromatin."""
        return self.stats(channel)["n_hc"] / self.nuc.count

    @feature("1")
    def chromatin_hc_intensity_ratio(self, channel: str) -> np.ndarray:
        """mean(I over HC) / mean(I over EC); NaN without heterochromatin."""
        st = self.stats(channel)
        n_ec = self.nuc.count - st["n_hc"]
        ratio = (st["sum_hc"] / st["n_hc"]) / ((st["sum"] - st["sum_hc"]) / n_ec)
        return np.where(np.isfinite(ratio), ratio, np.nan)

    @feature("1")
    def chromatin_hc_content_fraction(self, channel: str) -> np.ndarray:
        """Σ_HC I / Σ I, share of the integrated density in heterochromatin."""
        st = self.stats(channel)
        frac = st["sum_hc"] / st["sum"]
        return np.where(np.isfinite(frac), frac, np.nan)

    @feature("count")
    def chromatin_clump_count(self, channel: str) -> np.ndarray:
        """Number of 8-connected components of the heterochromatin (bright blobs)."""
        return self.stats(channel)["clumps"]

    @feature("1")
    def chromatin_margination_slope(self, channel: str) -> np.ndarray:
        """Least-squares slope of I / Ī against ρ: Σ (ρ - ρ̄)(y - ȳ) / Σ (ρ - ρ̄)², y = I / Ī;
        > 0 when chromatin gathers at the envelope, 0 for a uniform nucleus; NaN when
        every pixel is on the border."""
        return self.stats(channel)["slope"]

    @feature("1")
    def chromatin_margination_corr(self, channel: str) -> np.ndarray:
        """Pearson correlation of I and ρ; NaN for a uniform nucleus or when every pixel
        is on the border."""
        return self.stats(channel)["corr"]

    @feature("1")
    def chromatin_rim_ratio(self, channel: str) -> np.ndarray:
        """mean(I over ρ >= ½) / mean(I over ρ < ½), outer rim to inner density; NaN when
        every pixel is on the border or the inner mean is 0."""
        return self.stats(channel)["rim_ratio"]

    @feature("1")
    def chromatin_com_displacement(self, channel: str) -> np.ndarray:
        """|c_I - c| / r_eq: distance between the density-weighted centroid c_I (weights
        max(I, 0)) and the pixel centroid c, over the equivalent radius sqrt(N / π)."""
        return self.stats(channel)["com"]


def feature_specs(channels: Sequence[str]) -> list[FeatureSpec]:
    """The chromatin features of each channel, channel by channel.

    Parameters
    ----------
    channels : sequence of str
        Channel suffixes, e.g. ``("h", "grey")``.

    Returns
    -------
    list of FeatureSpec
        Named ``<feature>_<channel>``.
    """
    return specs_of(Chromatin, tuple(channels))


def compute(
    batch: NucleusBatch, *, heterochromatin_alpha: float = HETEROCHROMATIN_ALPHA
) -> dict[str, np.ndarray]:
    """Chromatin features of the nuclei ``batch.ids``, for every channel of the batch.

    Parameters
    ----------
    batch : NucleusBatch
        ``batch.channels`` gives the channels, in order.
    heterochromatin_alpha : float
        α of the heterochromatin threshold ``Ī + α σ_I``.

    Returns
    -------
    dict of str to (n,) float64 ndarray
        One entry per ``feature_specs(list(batch.channels))`` name, in that order.
    """
    a = heterochromatin_alpha
    if isinstance(a, bool) or not (isinstance(a, int | float) and 0 <= a < math.inf):
        raise ConfigError(f"heterochromatin_alpha must be a number >= 0, received {a!r}")
    nuc = prepare(batch)
    obj = Chromatin(nuc, batch.channels, heterochromatin_alpha=heterochromatin_alpha)
    out: dict[str, np.ndarray] = {}
    for channel in batch.channels:
        out.update(evaluate(obj, channel))
    return out
