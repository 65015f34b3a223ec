"""Properties of every nuclear feature kernel on many small, seeded, awkward masks.

A seeded generator draws small tiles holding a few nuclei each: discs and
ellipses at sub-pixel offsets and angles, one-pixel-wide lines (horizontal,
vertical, diagonal, any angle), rings, single pixels, two-pixel blobs,
rectangles, checkerboards (8- but not 4-connected), nuclei in two parts, random
speckles, a nucleus filling the whole tile; nuclei overlap, touch each other
and are cut by the tile edge. Intensity images are random: uniform, constant,
zero, a few levels, a single spike, ramps, a range of 1e-9, negative values.
Every family (:data:`pathpipe._features_base.FAMILIES`) must return, for each
of its features, one float64 value per requested id that is finite or NaN
(never inf, never an exception), NaN for ids absent from the tile, and values
within the documented range of the bounded features.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pytest

from pathpipe.features.registry import FAMILIES, NucleusBatch
from pathpipe.features.run import family_modules

MODULES = family_modules()
BINNED = ("intensity", "texture")

SHAPES = (
    "disc",
    "ellipse",
    "hline",
    "vline",
    "diagonal",
    "antidiagonal",
    "line",
    "ring",
    "square_ring",
    "pixel",
    "pair",
    "rectangle",
    "checker",
    "two_parts",
    "speckle",
    "full",
)
INTENSITIES = (
    "uniform",
    "constant",
    "zero",
    "levels",
    "spike",
    "ramp",
    "tiny_range",
    "negative",
    "large",
)

# Closed ranges the feature definitions promise (NaN allowed everywhere).
BOUNDS = {
    "eccentricity": (0.0, 1.0),
    "solidity": (0.0, 1.0),
    "extent": (0.0, 1.0),
    "elongation": (0.0, 1.0),
    "orientation": (-math.pi / 2, math.pi / 2),
    "convexity_deficiency": (0.0, 1.0),
    "boundary_radius_min_max_ratio": (0.0, 1.0),
    "boundary_radius_gini": (0.0, 1.0),
    "curvature_negative_fraction": (0.0, 1.0),
}
NON_NEGATIVE_PREFIXES = (
    "area_um2",
    "perimeter",
    "convex_area",
    "bbox_area",
    "major_axis",
    "minor_axis",
    "equivalent_diameter",
    "feret",
    "shape2d_",
    "concavity_",
    "bending_energy",
    "ellipse_fit_residual",
    "boundary_radius_mean",
    "boundary_radius_std",
    "boundary_radius_peaks",
    "curvature_std",
    "curvature_max_abs",
    "fourier_descriptor",
    "fo_energy",
    "fo_total_energy",
    "fo_entropy",
    "fo_variance",
    "fo_range",
    "fo_mean_absolute",
    "fo_robust_mean_absolute",
    "fo_interquartile",
    "fo_uniformity",
    "chromatin_hc_area_",  # the intensity ratios take the sign of the intensities
    "chromatin_clump_count",
    "chromatin_com_displacement",
)
COUNTS = ("concavity_count", "boundary_radius_peaks", "chromatin_clump_count")


@dataclass
class Scene:
    """One generated tile: labels, ids to ask for, channels, mpp and binning."""

    labels: np.ndarray
    ids: np.ndarray
    channels: dict[str, np.ndarray]
    mpp: float
    binning: dict
    kinds: list[str]
    intensities: list[str]
    what: str


def draw_shape(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    """Boolean mask of one shape of ``kind`` somewhere on a canvas of ``shape``,
    possibly cut by the canvas edge."""
    h, w = shape
    rr, cc = np.indices(shape, dtype=np.float64)
    # centre anywhere from 2 px outside to 2 px inside the far edge, sub-pixel
    cy, cx = rng.uniform(-2.0, h + 1.0), rng.uniform(-2.0, w + 1.0)
    mask = np.zeros(shape, bool)
    if kind == "disc":
        r = rng.uniform(0.3, 9.0)
        mask = (rr - cy) ** 2 + (cc - cx) ** 2 <= r * r
    elif kind == "ellipse":
        a = rng.uniform(0.5, 12.0)
        b = rng.uniform(0.3, a)
        t = rng.uniform(0.0, math.pi)
        u = (rr - cy) * math.cos(t) + (cc - cx) * math.sin(t)
        v = -(rr - cy) * math.sin(t) + (cc - cx) * math.cos(t)
        mask = (u / a) ** 2 + (v / b) ** 2 <= 1.0
    elif kind in ("hline", "vline", "diagonal", "antidiagonal", "line"):
        n = int(rng.integers(1, 21))
        if kind == "line":
            t = rng.uniform(0.0, math.pi)
            dy, dx = math.sin(t), math.cos(t)
            steps = np.arange(n * 4) / 4.0  # dense enough to be 8-connected
            ys, xs = np.rint(cy + dy * steps), np.rint(cx + dx * steps)
        else:
            dy, dx = {"hline": (0, 1), "vline": (1, 0), "diagonal": (1, 1)}.get(kind, (1, -1))
            ys, xs = int(cy) + dy * np.arange(n), int(cx) + dx * np.arange(n)
        keep = (ys >= 0) & (ys < h) & (xs >= 0) & (xs < w)
        mask[ys[keep].astype(int), xs[keep].astype(int)] = True
    elif kind == "ring":
        inner = rng.uniform(0.5, 5.0)
        outer = inner + rng.uniform(0.7, 3.0)
        d2 = (rr - cy) ** 2 + (cc - cx) ** 2
        mask = (d2 <= outer**2) & (d2 > inner**2)
    elif kind == "square_ring":
        side = int(rng.integers(3, 12))
        y0, x0 = int(cy), int(cx)
        mask[max(y0, 0) : max(y0 + side, 0), max(x0, 0) : max(x0 + side, 0)] = True
        mask[max(y0 + 1, 0) : max(y0 + side - 1, 0), max(x0 + 1, 0) : max(x0 + side - 1, 0)] = False
    elif kind == "pixel":
        mask[int(np.clip(cy, 0, h - 1)), int(np.clip(cx, 0, w - 1))] = True
    elif kind == "pair":
        y0, x0 = int(np.clip(cy, 0, h - 2)), int(np.clip(cx, 0, w - 2))
        dy, dx = [(0, 1), (1, 0), (1, 1)][int(rng.integers(3))]
        if rng.random() < 0.5 and dy and dx:  # anti-diagonal pair
            mask[y0, x0 + 1] = mask[y0 + 1, x0] = True
        else:
            mask[y0, x0] = mask[y0 + dy, x0 + dx] = True
    elif kind == "rectangle":
        y0, x0 = int(cy), int(cx)
        y1, x1 = y0 + int(rng.integers(1, 16)), x0 + int(rng.integers(1, 16))
        mask[max(y0, 0) : max(y1, 0), max(x0, 0) : max(x1, 0)] = True
    elif kind == "checker":
        box = (np.abs(rr - cy) <= rng.integers(1, 6)) & (np.abs(cc - cx) <= rng.integers(1, 6))
        mask = box & ((rr + cc) % 2 == 0)
    elif kind == "two_parts":
        mask = draw_shape("disc", shape, rng) | draw_shape("pixel", shape, rng)
    elif kind == "speckle":
        box = (np.abs(rr - cy) <= rng.integers(1, 8)) & (np.abs(cc - cx) <= rng.integers(1, 8))
        mask = box & (rng.random(shape) < rng.uniform(0.2, 0.9))
    elif kind == "full":
        mask[:] = True
    else:
        raise ValueError(kind)
    return mask


def draw_intensity(kind: str, shape: tuple[int, int], rng: np.random.Generator) -> np.ndarray:
    rr, cc = np.indices(shape, dtype=np.float64)
    if kind == "uniform":
        return rng.uniform(0.0, 255.0, shape)
    if kind == "constant":
        return np.full(shape, rng.uniform(0.0, 255.0))
    if kind == "zero":
        return np.zeros(shape)
    if kind == "levels":
        return rng.integers(0, 4, shape) * 10.0
    if kind == "spike":
        img = np.full(shape, 50.0)
        img[rng.integers(shape[0]), rng.integers(shape[1])] = 250.0
        return img
    if kind == "ramp":
        return 3.0 * rr + 0.5 * cc
    if kind == "tiny_range":
        return 100.0 + 1e-9 * rng.random(shape)
    if kind == "negative":
        return rng.normal(0.0, 50.0, shape)
    if kind == "large":
        return rng.uniform(0.0, 1000.0, shape)
    raise ValueError(kind)


def scenes(seed: int, count: int, *, max_side: int = 40) -> Iterator[Scene]:
    """``count`` seeded tiles of a few nuclei each (see the module docstring)."""
    rng = np.random.default_rng(seed)
    for k in range(count):
        shape = (int(rng.integers(1, max_side + 1)), int(rng.integers(1, max_side + 1)))
        labels = np.zeros(shape, np.int32)
        kinds = [str(s) for s in rng.choice(SHAPES, size=int(rng.integers(1, 7)))]
        if "full" in kinds[1:]:  # a full tile hides the nuclei drawn before it
            kinds.remove("full")
            kinds.insert(0, "full")
        ids = rng.choice(np.arange(1, 1000), size=len(kinds) + 1, replace=False)
        for label, kind in zip(ids, kinds, strict=False):
            labels[draw_shape(kind, shape, rng)] = label  # later nuclei overlap earlier ones
        # the last id is never drawn; overlapped nuclei may be absent too
        ask = rng.permutation(ids)
        ich = [str(s) for s in rng.choice(INTENSITIES, size=2)]
        channels = {
            "h": draw_intensity(ich[0], shape, rng),
            "grey": draw_intensity(ich[1], shape, rng),
        }
        binning = [
            {"bin_width": {"h": 10.0, "grey": 8.0}},  # the stage's default
            {"bin_count": {"h": 16, "grey": 1}},
            {"bin_width": {"h": 5.0}, "bin_count": {"grey": 3}},  # up to 200 levels
            {},  # PyRadiomics' binWidth 25
        ][int(rng.integers(4))]
        mpp = float(rng.choice([0.1, 0.25, 0.5, 1.0, 2.0]))
        what = f"scene {seed}/{k}: {shape} {kinds} ids {ids.tolist()} {ich} {binning} mpp {mpp}"
        yield Scene(labels, ask, channels, mpp, binning, kinds, ich, what)


def check_family(family: str, scene: Scene) -> dict[str, np.ndarray]:
    module = MODULES[family]
    batch = NucleusBatch(labels=scene.labels, ids=scene.ids, channels=scene.channels, mpp=scene.mpp)
    kwargs = scene.binning if family in BINNED else {}
    try:
        out = module.compute(batch, **kwargs)
    except Exception as exc:  # report the scene that raised
        raise AssertionError(f"{family} raised {exc!r} on {scene.what}") from exc
    names = [s.name for s in module.feature_specs(list(scene.channels))]
    assert list(out) == names, scene.what
    present = np.isin(scene.ids, scene.labels)
    for name, v in out.items():
        where = f"{family}.{name} on {scene.what}"
        assert isinstance(v, np.ndarray) and v.dtype == np.float64, where
        assert v.shape == (len(scene.ids),), where
        assert not np.isinf(v).any(), f"inf: {where}: {v}"
        assert np.isnan(v[~present]).all(), f"absent id not NaN: {where}"
        x = v[np.isfinite(v)]
        bounds = BOUNDS.get(name)
        if bounds is not None:
            lo, hi = bounds
            assert (x >= lo - 1e-9).all() and (x <= hi + 1e-9).all(), f"out of {bounds}: {where}"
        if name.startswith(NON_NEGATIVE_PREFIXES):
            assert (x >= -1e-9).all(), f"negative: {where}: {v}"
        if name.startswith(COUNTS):
            assert (x == np.round(x)).all(), f"not a count: {where}: {v}"
    return out


def check_geometry_sanity(out: dict[str, np.ndarray], scene: Scene) -> None:
    """Present nuclei have their pixel count as area (the generator's own check)."""
    counts = np.array([(scene.labels == i).sum() for i in scene.ids])
    expected = np.where(counts > 0, counts * scene.mpp**2, np.nan)
    np.testing.assert_allclose(out["area_um2"], expected, rtol=1e-12, err_msg=scene.what)


def test_generator_draws_every_shape_and_intensity() -> None:
    seen_shapes: set[str] = set()
    seen_intensities: set[str] = set()
    edge = several = 0
    for s in scenes(0, 120):
        seen_shapes.update(s.kinds)
        seen_intensities.update(s.intensities)
        border = np.concatenate([s.labels[0], s.labels[-1], s.labels[:, 0], s.labels[:, -1]])
        edge += bool(border.any())
        several += len(np.unique(s.labels)) > 2
    assert seen_shapes == set(SHAPES)
    assert seen_intensities == set(INTENSITIES)
    assert edge > 60 and several > 40  # nuclei cut by the edge; tiles of several nuclei


@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_finite_or_nan_values(family: str) -> None:
    for scene in scenes(0, 120):
        out = check_family(family, scene)
        if family == "geometry":
            check_geometry_sanity(out, scene)


@pytest.mark.slow
@pytest.mark.parametrize("family", FAMILIES)
def test_every_family_gives_finite_or_nan_values_many_tiles(family: str) -> None:
    for seed in (1, 2, 3):
        for scene in scenes(seed, 400, max_side=64):
            check_family(family, scene)
