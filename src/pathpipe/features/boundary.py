"""Boundary family: centroid-distance signature, curvature and Fourier shape descriptors.

Boundary signature and curvature (Wu et al. 2020), computed on the outer contour
of each nucleus, resampled and smoothed as :mod:`pathpipe.features.contours`
describes (crack contour of the largest 8-connected component; ``M`` points
equally spaced in arc length; Gaussian smoothing ``σ = max(0.03 P, 2 px)``).

The signature ``r(s) = |p(s) - c|`` is the distance of the resampled contour to
the centroid ``c`` of the nucleus' pixels; curvature is signed, positive where
the contour is convex.
"""

from __future__ import annotations

from collections.abc import Sequence

import numba
import numpy as np

from pathpipe.features.contours import SIGMA_FRACTION, smooth_curves
from pathpipe.features.pixels import Nuclei, centroids, prepare
from pathpipe.features.registry import (
    FeatureSpec,
    NucleusBatch,
    check_settings,
    evaluate,
    feature,
    specs_of,
)

__all__ = ["compute", "feature_specs"]

FAMILY = "boundary"

PEAK_PROMINENCE = 0.05
"""Default minimum prominence of a signature peak, as a fraction of the mean radius."""

N_FOURIER = 10
"""Fourier descriptors 1..N_FOURIER."""

# --------------------------------------------------------------------------- peaks


@numba.njit(cache=True, nogil=True)
def _count_peaks(sig: np.ndarray, min_prominence: np.ndarray) -> np.ndarray:
    """Peaks of each circular row of ``sig`` with prominence >= ``min_prominence``.

    Prominence as in ``scipy.signal.peak_prominences``: height above the higher
    of the two minima between the peak and the nearest higher sample on either
    side. The row is rotated to start at its global minimum and closed with it,
    which makes the linear computation circular.
    """
    k, m = sig.shape
    out = np.zeros(k)
    for i in range(k):
        start = np.argmin(sig[i])
        s = np.empty(m + 1)
        for j in range(m):
            s[j] = sig[i, (start + j) % m]
        s[m] = s[0]
        count = 0
        for j in range(1, m):
            if not (s[j] > s[j - 1] and s[j] >= s[j + 1]):
                continue
            left = s[j]
            q = j - 1
            while q >= 0 and s[q] <= s[j]:
                left = min(left, s[q])
                q -= 1
            right = s[j]
            q = j + 1
            while q <= m and s[q] <= s[j]:
                right = min(right, s[q])
                q += 1
            if s[j] - max(left, right) >= min_prominence[i]:
                count += 1
        out[i] = count
    return out


# --------------------------------------------------------------------------- features


class Boundary:
    """Boundary features of the nuclei of one batch (one method per feature).

    Notation: ``p_j`` the ``M`` resampled contour points, ``r_j = |p_j - c| s``
    the centroid-distance signature (µm; ``s`` = mpp, ``c`` the pixel centroid),
    ``r̃_j`` the signature of the smoothed contour, ``κ_j`` the signed curvature of
    the smoothed contour (1/µm) and ``w_j`` its arc-length weight. Source:
    boundary signature and curvature (Wu et al. 2020).
    """

    family = FAMILY

    def __init__(
        self,
        nuc: Nuclei,
        *,
        sigma_fraction: float = SIGMA_FRACTION,
        peak_prominence: float = PEAK_PROMINENCE,
    ) -> None:
        self.nuc = nuc
        n, s = nuc.n, nuc.mpp
        cr, cc = centroids(nuc)
        self.curves = smooth_curves(nuc, sigma_fraction=sigma_fraction)
        nan = np.full(n, np.nan)
        self.stats: dict[str, np.ndarray] = {
            key: nan.copy()
            for key in (
                "mean",
                "std",
                "minmax",
                "gini",
                "std_mode",
                "peaks",
                "k_mean",
                "k_std",
                "k_max",
                "k_neg",
            )
        }
        self.fourier = np.full((n, N_FOURIER), np.nan)
        for g in self.curves:
            i = g.index
            centre = (cc[i] + 1j * cr[i])[:, None]
            r = np.abs(g.z - centre) * s
            st = self.stats
            st["mean"][i] = r.mean(axis=1)
            st["std"][i] = r.std(axis=1)
            st["minmax"][i] = r.min(axis=1) / r.max(axis=1)
            rs = np.sort(r, axis=1)
            m = r.shape[1]
            rank = np.arange(1, m + 1)
            st["gini"][i] = (2.0 * (rs * rank).sum(axis=1)) / (m * rs.sum(axis=1)) - (m + 1.0) / m
            st["std_mode"][i] = st["std"][i] / _histogram_mode(r)
            smooth_r = np.abs(g.zs - centre) * s
            st["peaks"][i] = _count_peaks(smooth_r, peak_prominence * smooth_r.mean(axis=1))
            k = g.kappa / s
            wt = g.speed / g.speed.sum(axis=1, keepdims=True)
            mean_k = (wt * k).sum(axis=1)
            st["k_mean"][i] = mean_k
            st["k_std"][i] = np.sqrt(np.maximum((wt * (k - mean_k[:, None]) ** 2).sum(axis=1), 0))
            st["k_max"][i] = np.abs(k).max(axis=1)
            st["k_neg"][i] = (wt * (k < 0)).sum(axis=1)
            spec = np.abs(np.fft.rfft(r, axis=1))
            self.fourier[i] = spec[:, 1 : N_FOURIER + 1] / spec[:, :1]

    @feature("µm")
    def boundary_radius_mean_um(self) -> np.ndarray:
        """r̄ = (1/M) Σ r_j, mean centroid distance of the contour."""
        return self.stats["mean"]

    @feature("µm")
    def boundary_radius_std_um(self) -> np.ndarray:
        """σ_r = sqrt((1/M) Σ (r_j - r̄)²)."""
        return self.stats["std"]

    @feature("1")
    def boundary_radius_min_max_ratio(self) -> np.ndarray:
        """min_j r_j / max_j r_j (1 for a disc)."""
        return self.stats["minmax"]

    @feature("count")
    def boundary_radius_peaks(self) -> np.ndarray:
        """Number of local maxima of the circular smoothed signature r̃ whose prominence
        (scipy.signal.peak_prominences) is at least 0.05 r̃̄: 4 for a square, 2 for an
        ellipse, 0 for a disc."""
        return self.stats["peaks"]

    @feature("1")
    def boundary_radius_gini(self) -> np.ndarray:
        """G = Σ_i Σ_j |r_i - r_j| / (2 M² r̄) = 2 Σ_j j r_(j) / (M Σ r_j) - (M + 1)/M with
        r_(j) sorted ascending: 0 when every point is equally far from the centroid."""
        return self.stats["gini"]

    @feature("1")
    def boundary_radius_std_by_mode(self) -> np.ndarray:
        """σ_r / mode(r), the mode being the centre of the fullest of 10 equal bins
        between min r and max r (the lowest on ties; min r when all r are equal)."""
        return self.stats["std_mode"]

    @feature("1/µm")
    def curvature_mean(self) -> np.ndarray:
        """κ̄ = Σ w_j κ_j / Σ w_j (= 2π / P for a simple contour of length P)."""
        return self.stats["k_mean"]

    @feature("1/µm")
    def curvature_std(self) -> np.ndarray:
        """sqrt(Σ w_j (κ_j - κ̄)² / Σ w_j)."""
        return self.stats["k_std"]

    @feature("1/µm")
    def curvature_max_abs(self) -> np.ndarray:
        """max_j |κ_j|."""
        return self.stats["k_max"]

    @feature("1")
    def curvature_negative_fraction(self) -> np.ndarray:
        """Σ w_j [κ_j < 0] / Σ w_j, the fraction of the contour that is concave."""
        return self.stats["k_neg"]

    @feature("1", index=range(1, N_FOURIER + 1))
    def fourier_descriptor(self, k: int) -> np.ndarray:
        """FD_{k} = |R_{k}| / |R_0|, R = DFT of the centroid distances (r_j), j = 0..M-1:
        invariant to scale, rotation and starting point; ≈ 0 for a disc."""
        return self.fourier[:, k - 1]


def _histogram_mode(r: np.ndarray) -> np.ndarray:
    """Centre of the fullest of 10 equal bins between each row's min and max."""
    lo, hi = r.min(axis=1), r.max(axis=1)
    width = (hi - lo) / 10.0
    with np.errstate(divide="ignore", invalid="ignore"):
        b = np.where(width[:, None] > 0, (r - lo[:, None]) / width[:, None], 0.0)
    b = np.clip(b.astype(np.int64), 0, 9)
    counts = np.zeros((r.shape[0], 10), np.int64)
    np.add.at(counts, (np.repeat(np.arange(r.shape[0]), r.shape[1]), b.ravel()), 1)
    return lo + (np.argmax(counts, axis=1) + 0.5) * width


def feature_specs(channels: Sequence[str] = ()) -> list[FeatureSpec]:
    """The boundary features, in column order (independent of ``channels``).

    Parameters
    ----------
    channels : sequence of str
        Unused: boundary features take no intensity channel.

    Returns
    -------
    list of FeatureSpec
    """
    return specs_of(Boundary)


def compute(
    batch: NucleusBatch,
    *,
    sigma_fraction: float = SIGMA_FRACTION,
    peak_prominence: float = PEAK_PROMINENCE,
) -> dict[str, np.ndarray]:
    """Boundary features of the nuclei ``batch.ids``.

    Parameters
    ----------
    batch : NucleusBatch
    sigma_fraction : float
        Contour smoothing σ as a fraction of the perimeter, floored at 2 px (module
        docstring).
    peak_prominence : float
        Minimum peak prominence of ``boundary_radius_peaks``, fraction of the mean
        radius.

    Returns
    -------
    dict of str to (n,) float64 ndarray
        One entry per :func:`feature_specs` name, in that order.
    """
    check_settings(sigma_fraction=sigma_fraction, peak_prominence=peak_prominence)
    nuc = prepare(batch)
    return evaluate(Boundary(nuc, sigma_fraction=sigma_fraction, peak_prominence=peak_prominence))
