"""Closed-form values of the boundary and morphology features on shapes of known geometry.

Until now these features were checked only against themselves at two
resolutions (``test_features_shape.py``), which a feature computing the wrong
statistic consistently (a variance for a standard deviation, an unweighted mean
for an arc-length mean) passes. Here each is compared with a value derived by
hand from the geometry:

* the centroid-distance signature of an ellipse of semi-axes ``a, b``: the mean
  and standard deviation of ``r = |p|`` over the ideal ellipse, weighted by arc
  length (dense sampling of the parametrisation);
* the curvature of a rectangle's crack contour (the polygon through the
  midpoints of the pixel edges: the rectangle with its corners cut by legs of
  ½ px) after the Gaussian smoothing of :mod:`pathpipe.features.boundary`
  (``σ = max(0.03 P, 2 px)``, at most ``P / 4π``, along the arc length ``s``):
  the smoothed curve has tangent ``z' = T * g_σ`` and ``z'' = ΔT * g_σ``
  (``T`` the polygon's unit tangent, piecewise constant; ``ΔT`` its jumps), so
  ``κ = Im(conj(z') z'') / |z'|³`` follows from the normal CDF and density, with
  no sampling of the polygon; at a cut corner of a square
  ``κ_max = g_σ(c/2) / (√2 A²)``, ``c = √2/2`` the cut, ``A = q + (1 - 2q)/√2``,
  ``q = Φ(-c / 2σ)`` (``2√2 g_σ(0) = 2 / (σ√π)`` for a sharp corner);
* the ellipse-fit residual of a square, whose moment ellipse is the circle of
  radius ``L/√3`` (covariance of the union of the pixel squares ``L²/12``), so
  the distance of a contour point ``p`` to it is ``| |p| - L/√3 |``; and of an
  ellipse, which is its own moment ellipse up to digitisation (< ¼ px).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy.special import ndtr

from pathpipe.features import boundary as _features_boundary
from pathpipe.features import morphology as _features_morphology
from pathpipe.features.registry import NucleusBatch

MPP = 0.5  # µm per px: values in µm differ from values in px, and std**2 from std


def features(labels: np.ndarray, ids: np.ndarray) -> dict[str, np.ndarray]:
    batch = NucleusBatch(labels=labels, ids=ids, mpp=MPP)
    return {**_features_boundary.compute(batch), **_features_morphology.compute(batch)}


def crack_rectangle(height: int, width: int) -> np.ndarray:
    """Crack contour (x + iy, px, centred, counter-clockwise) of a height x width block
    of pixels: its sides, with every corner cut by a segment from ½ px before to ½ px
    after it."""
    h, w = height / 2.0, width / 2.0
    return np.array(
        [
            complex(w - 0.5, -h),
            complex(w, -h + 0.5),
            complex(w, h - 0.5),
            complex(w - 0.5, h),
            complex(-w + 0.5, h),
            complex(-w, h - 0.5),
            complex(-w, -h + 0.5),
            complex(-w + 0.5, -h),
        ]
    )


def perimeter(vertices: np.ndarray) -> float:
    return float(np.abs(np.roll(vertices, -1) - vertices).sum())


def smoothing_sigma(p: float) -> float:
    """The documented contour smoothing (px) of a contour of perimeter ``p`` px."""
    return min(max(0.03 * p, 2.0), p / (4.0 * math.pi))


def smoothed_curvature(vertices: np.ndarray, sigma: float, n: int = 20000):
    """Curvature ``κ`` (1/px) and speed ``|z'|`` at ``n`` equally spaced arc lengths of the
    closed polygon convolved with a Gaussian of std ``sigma`` along its arc length:
    ``z' = Σ_k T_k [Φ((s - a_k)/σ) - Φ((s - b_k)/σ)]`` and ``z'' = Σ_k T_k [g(s - a_k) -
    g(s - b_k)]`` over the segments ``[a_k, b_k]`` and their periodic images."""
    seg = np.roll(vertices, -1) - vertices
    length = np.abs(seg)
    tangent = seg / length
    start = np.concatenate([[0.0], np.cumsum(length)[:-1]])
    p = length.sum()
    s = (np.arange(n) + 0.5) * p / n
    d1 = np.zeros(n, complex)
    d2 = np.zeros(n, complex)
    gauss = 1.0 / (sigma * math.sqrt(2.0 * math.pi))
    for shift in (-p, 0.0, p):
        for t, a, ln in zip(tangent, start + shift, length, strict=True):
            lo, hi = (s - a) / sigma, (s - a - ln) / sigma
            d1 += t * (ndtr(lo) - ndtr(hi))
            d2 += t * gauss * (np.exp(-0.5 * lo * lo) - np.exp(-0.5 * hi * hi))
    speed = np.abs(d1)
    return np.imag(np.conj(d1) * d2) / speed**3, speed


def ellipse_signature(a: float, b: float, n: int = 100000) -> tuple[float, float]:
    """Arc-length mean and standard deviation of ``r = |p|`` over the ellipse (a cos t,
    b sin t) (dense sampling: ds = sqrt(a² sin² t + b² cos² t) dt)."""
    t = np.arange(n) * (2.0 * math.pi / n)
    r = np.hypot(a * np.cos(t), b * np.sin(t))
    w = np.hypot(a * np.sin(t), b * np.cos(t))
    w /= w.sum()
    mean = float((w * r).sum())
    return mean, math.sqrt(float((w * (r - mean) ** 2).sum()))


def ellipses(a: float, b: float, count: int, seed: int) -> np.ndarray:
    """``count`` digital ellipses (ids 1..count) at random angles and sub-pixel centres,
    side by side on one label map."""
    rng = np.random.default_rng(seed)
    cell = int(2 * a) + 10
    labels = np.zeros((cell, cell * count), np.int32)
    rr, cc = np.indices(labels.shape, dtype=np.float64)
    for k in range(count):
        theta = rng.uniform(0.0, math.pi)
        cy = cell / 2 + rng.uniform(-0.5, 0.5)
        cx = cell / 2 + k * cell + rng.uniform(-0.5, 0.5)
        u = (rr - cy) * math.cos(theta) + (cc - cx) * math.sin(theta)
        v = -(rr - cy) * math.sin(theta) + (cc - cx) * math.cos(theta)
        labels[(u / a) ** 2 + (v / b) ** 2 <= 1.0] = k + 1
    return labels


# --------------------------------------------------------------------------- signature


def test_ellipse_signature_mean_and_std_match_the_ideal_ellipse() -> None:
    a, b = 20.5, 10.5  # half-integer: the digital extent along the axes is a, b exactly
    mean, std = ellipse_signature(a, b)
    assert std == pytest.approx(3.44, abs=0.01)  # px: ~1.7 µm, far from std² and from 1
    labels = ellipses(a, b, 8, seed=3)
    f = features(labels, np.arange(1, 9))
    got_std = f["boundary_radius_std_um"] / MPP
    got_mean = f["boundary_radius_mean_um"] / MPP
    # digitisation: each placement within 3 % (std) and 1 % (mean); their average,
    # where the staircase errors cancel, within 1 % and 0.5 %
    np.testing.assert_allclose(got_std, std, rtol=0.03)
    np.testing.assert_allclose(got_mean, mean, rtol=0.01)
    assert got_std.mean() == pytest.approx(std, rel=0.01)
    assert got_mean.mean() == pytest.approx(mean, rel=0.005)


def test_disc_signature_std_is_digitisation_only() -> None:
    # an ideal circle has σ_r = 0; a digital disc of radius 15.5 px stays within ¼ px
    labels = np.zeros((44, 44), np.int32)
    rr, cc = np.indices(labels.shape)
    labels[(rr - 21.3) ** 2 + (cc - 21.8) ** 2 <= 15.5**2] = 1
    f = features(labels, np.array([1]))
    assert f["boundary_radius_std_um"][0] < 0.25 * MPP
    assert f["boundary_radius_mean_um"][0] == pytest.approx(15.5 * MPP, rel=0.01)


# --------------------------------------------------------------------------- curvature


@pytest.mark.parametrize("shape", [(24, 24), (16, 40)])
def test_curvature_of_a_rectangle_matches_the_smoothed_crack_polygon(shape) -> None:
    height, width = shape
    labels = np.zeros((height + 10, width + 10), np.int32)
    labels[5 : 5 + height, 5 : 5 + width] = 1
    f = features(labels, np.array([1]))
    poly = crack_rectangle(height, width)
    kappa, speed = smoothed_curvature(poly, smoothing_sigma(perimeter(poly)))
    w = speed / speed.sum()
    mean = (w * kappa).sum()
    std = math.sqrt((w * (kappa - mean) ** 2).sum())
    # the arc-length mean of κ is 2π / (smoothed perimeter): one full turn
    assert mean * speed.mean() * perimeter(poly) == pytest.approx(2.0 * math.pi, rel=1e-6)
    assert f["curvature_mean"][0] * MPP == pytest.approx(mean, rel=0.005)
    assert f["curvature_std"][0] * MPP == pytest.approx(std, rel=0.005)
    assert f["curvature_max_abs"][0] * MPP == pytest.approx(np.abs(kappa).max(), rel=0.005)
    assert f["bending_energy"][0] * MPP**2 == pytest.approx((w * kappa**2).sum(), rel=0.005)
    assert f["curvature_negative_fraction"][0] == 0.0
    # the curvature is concentrated at the 4 corners: the std exceeds the mean
    assert f["curvature_std"][0] > 1.3 * f["curvature_mean"][0]


def test_curvature_peak_of_a_square_in_closed_form() -> None:
    side = 24
    labels = np.zeros((side + 10, side + 10), np.int32)
    labels[5 : 5 + side, 5 : 5 + side] = 1
    f = features(labels, np.array([1]))
    p = 4 * side - 4 + 2 * math.sqrt(2)  # crack polygon: 4 sides of L - 1 and 4 cuts of √2/2
    sigma = smoothing_sigma(p)
    assert sigma == pytest.approx(0.03 * p)
    cut = math.sqrt(2) / 2
    q = ndtr(-cut / (2 * sigma))
    big_a = q + (1 - 2 * q) / math.sqrt(2)
    g = math.exp(-0.5 * (cut / (2 * sigma)) ** 2) / (sigma * math.sqrt(2 * math.pi))
    kappa_max = g / (math.sqrt(2) * big_a**2)  # 1/px
    assert kappa_max == pytest.approx(0.7271 * MPP, rel=1e-3)
    assert f["curvature_max_abs"][0] == pytest.approx(kappa_max / MPP, rel=0.005)
    # a sharp corner would give 2 / (σ √π), 9 % more: the ½-px cut matters at σ = 2.8 px
    assert f["curvature_max_abs"][0] < 0.93 * 2 / (sigma * math.sqrt(math.pi)) / MPP


# --------------------------------------------------------------------------- ellipse fit


def test_ellipse_fit_residual_of_a_square_in_closed_form() -> None:
    side = 24
    labels = np.zeros((side + 10, side + 10), np.int32)
    labels[5 : 5 + side, 5 : 5 + side] = 1
    f = features(labels, np.array([1]))
    radius = side / math.sqrt(3)  # moment ellipse: 2 sqrt(L²/12) on both axes
    # mean of | |p| - R | over the crack polygon (the feature takes 64 points of it)
    poly = crack_rectangle(side, side)
    seg = np.roll(poly, -1) - poly
    cum = np.concatenate([[0.0], np.cumsum(np.abs(seg))])
    s = (np.arange(100000) + 0.5) * cum[-1] / 100000
    k = np.searchsorted(cum, s, side="right") - 1
    z = poly[k] + seg[k] * (s - cum[k]) / np.abs(seg[k])
    expected = float(np.abs(np.abs(z) - radius).mean())
    assert expected == pytest.approx(1.300, abs=1e-3)  # px
    assert f["ellipse_fit_residual_um"][0] == pytest.approx(expected * MPP, rel=0.015)
    d_eq = 2 * side / math.sqrt(math.pi)
    assert f["ellipse_fit_residual_norm"][0] == pytest.approx(
        f["ellipse_fit_residual_um"][0] / (MPP * d_eq / 2), rel=1e-12
    )


def test_ellipse_fit_residual_of_an_ellipse_is_digitisation_only() -> None:
    labels = ellipses(20.5, 10.5, 8, seed=5)
    f = features(labels, np.arange(1, 9))
    res_px = f["ellipse_fit_residual_um"] / MPP
    assert (res_px > 0).all() and (res_px < 0.25).all()  # crack contour within ½ px
    assert (f["ellipse_fit_residual_norm"] < 0.02).all()  # a square's is 0.096
