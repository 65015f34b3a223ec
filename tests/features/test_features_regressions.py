"""Reproducers of defects of the features stage, kept as regression tests.

``data/bugs/features-zero-division.npz``: one 256-px tile (0.5 µm/px) of a
generated slide on which the morphology family's ellipse-fit residual raised
``ZeroDivisionError``: nucleus 34 is nearly circular, so a contour point lies
on the fitted major axis up to rounding (``y1`` ~ 4e-16).

``chromatin_rim_ratio`` was inf for a nucleus whose inner pixels (ρ < ½) all have
density 0 (found by ``test_features_properties.py``); it is NaN there now, as
the other ratios of the family are where their denominator vanishes.
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from conftest import DATA
from pathpipe.features.chromatin import compute as chromatin
from pathpipe.features.morphology import _ellipse_distance
from pathpipe.features.morphology import compute as morphology
from pathpipe.features.registry import NucleusBatch
from pathpipe.features.run import feature_specs, nuclear_features

ZERO_DIVISION = DATA / "bugs" / "features-zero-division.npz"


def test_zero_division_tile_gives_finite_or_nan_features() -> None:
    d = np.load(ZERO_DIVISION)
    labels = d["labels"]
    ids = np.unique(labels)[1:]
    assert int(d["nucleus_label"]) in ids
    out = nuclear_features(
        d["rgb"], labels, ids, mpp=float(d["mpp"]), stain_matrix=d["stain_matrix"]
    )
    assert list(out) == [s.name for s in feature_specs()]
    for name, v in out.items():
        assert v.shape == (len(ids),), name
        assert not np.isinf(v).any(), name
    j = int(np.flatnonzero(ids == d["nucleus_label"])[0])
    # nearly circular: the contour is close to its moment ellipse
    assert 0.0 < out["ellipse_fit_residual_norm"][j] < 0.05
    assert np.isfinite(out["ellipse_fit_residual_um"]).all()


def test_zero_division_nucleus_alone() -> None:
    d = np.load(ZERO_DIVISION)
    batch = NucleusBatch(labels=d["labels"], ids=np.array([d["nucleus_label"]]), mpp=0.5)
    res = morphology(batch)["ellipse_fit_residual_um"][0]
    assert 0.0 < res < 0.2


# The point and ellipse (px) of the crash: the ellipse frame coordinates of two
# contour points of nucleus 34 and its moment semi-axes.
E0, E1 = 6.644997945311561, 6.564909688311507


@pytest.mark.parametrize("y1", [0.0, 3.971097341352823e-16, 1e-300, 5e-324, 1e-13, 1e-9])
def test_point_on_the_major_axis_up_to_rounding(y1: float) -> None:
    # outside the evolute (y0 > (E0² - E1²) / E0 = 0.16): the vertex is closest
    y0 = 6.485294117647072
    got = _ellipse_distance(E0, E1, y0, y1)
    assert got == pytest.approx(math.hypot(E0 - y0, y1), abs=1e-12)
    # inside the evolute: the closest point is off the axis, at x0 = E0² y0 / (E0² - E1²)
    y0 = 0.1
    x0 = E0**2 * y0 / (E0**2 - E1**2)
    x1 = E1 * math.sqrt(1 - (x0 / E0) ** 2)
    assert _ellipse_distance(E0, E1, y0, y1) == pytest.approx(math.hypot(x0 - y0, x1), abs=2e-9)


def reference_distance(e0: float, e1: float, y0: float, y1: float) -> float:
    """Distance to the ellipse by dense sampling of its first quadrant, refined by
    golden-section search around the best sample."""
    theta = np.linspace(0.0, math.pi / 2, 4001)
    dist = np.hypot(e0 * np.cos(theta) - y0, e1 * np.sin(theta) - y1)
    j = int(np.argmin(dist))
    lo, hi = theta[max(j - 1, 0)], theta[min(j + 1, len(theta) - 1)]
    g = (math.sqrt(5) - 1) / 2
    for _ in range(80):
        a, b = hi - g * (hi - lo), lo + g * (hi - lo)
        fa = math.hypot(e0 * math.cos(a) - y0, e1 * math.sin(a) - y1)
        fb = math.hypot(e0 * math.cos(b) - y0, e1 * math.sin(b) - y1)
        if fa < fb:
            hi = b
        else:
            lo = a
    t = (lo + hi) / 2
    return min(float(dist[j]), math.hypot(e0 * math.cos(t) - y0, e1 * math.sin(t) - y1))


def test_ellipse_distance_matches_a_dense_reference() -> None:
    rng = np.random.default_rng(11)
    for _ in range(300):
        e0 = rng.uniform(0.5, 30.0)
        e1 = e0 * rng.uniform(0.05, 1.0)
        y0 = abs(rng.normal()) * e0 * rng.uniform(0.0, 2.0)
        y1 = abs(rng.normal()) * e1 * rng.uniform(0.0, 2.0) * 10.0 ** -rng.integers(0, 17)
        got = _ellipse_distance(e0, e1, y0, y1)
        assert got == pytest.approx(reference_distance(e0, e1, y0, y1), abs=1e-9 * e0)
    # a circle: |r - R|, centre included
    assert _ellipse_distance(3.0, 3.0, 0.0, 0.0) == 3.0
    assert _ellipse_distance(3.0, 3.0, 3.0, 4.0) == pytest.approx(2.0, abs=1e-12)


def test_rim_ratio_without_inner_density_is_nan() -> None:
    from scipy.ndimage import distance_transform_edt

    rr, cc = np.indices((21, 21))
    labels = ((rr - 10) ** 2 + (cc - 10) ** 2 <= 8**2).astype(np.int32)
    depth = distance_transform_edt(np.pad(labels, 1))[1:-1, 1:-1]
    # ρ = (d_max - d) / (d_max - 1) < ½ needs d > (d_max + 1) / 2 ≈ 4.5: all 0 there
    h = np.where(depth <= 3, 40.0, 0.0)
    f = chromatin(NucleusBatch(labels=labels, ids=np.array([1]), channels={"h": h}, mpp=0.5))
    assert depth.max() == pytest.approx(math.sqrt(65))  # nearest outside: (8, 1) px away
    assert math.isnan(f["chromatin_rim_ratio_h"][0])
    # a little inner density gives a large, finite ratio again
    f = chromatin(NucleusBatch(labels=labels, ids=np.array([1]), channels={"h": h + 1e-3}, mpp=0.5))
    assert f["chromatin_rim_ratio_h"][0] > 1e3
