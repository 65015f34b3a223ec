"""Geometry, morphology, chromatin and boundary nuclear feature families.

Geometry against ``skimage.measure.regionprops`` and PyRadiomics shape2D on real
NuCLS nuclei; the other families on shapes and intensities with known values;
resolution independence; degenerate nuclei; the feature specs.
"""

from __future__ import annotations

import logging
import math
import re

import numpy as np
import pytest

from conftest import DATA
from pathpipe.errors import ConfigError
from pathpipe.features import boundary as _features_boundary
from pathpipe.features import chromatin as _features_chromatin
from pathpipe.features import geometry as _features_geometry
from pathpipe.features import morphology as _features_morphology
from pathpipe.features.registry import FAMILIES, NucleusBatch

MODULES = (_features_geometry, _features_morphology, _features_chromatin, _features_boundary)
CHANNELS = ("h", "grey")
NUCLS = sorted((DATA / "nucls" / "labels").glob("*.npz"))


def compute_all(batch: NucleusBatch) -> dict[str, np.ndarray]:
    out: dict[str, np.ndarray] = {}
    for module in MODULES:
        out.update(module.compute(batch))
    return out


def disc(radius: float, *, pad: int = 4, offset: float = 0.0) -> np.ndarray:
    size = int(2 * radius + 2 * pad)
    centre = (size - 1) / 2 + offset
    rr, cc = np.indices((size, size))
    return ((rr - centre) ** 2 + (cc - centre) ** 2 <= radius**2).astype(np.int32)


def one(labels: np.ndarray, mpp: float = 0.5, **channels: np.ndarray) -> dict[str, float]:
    """Features of nucleus 1 of ``labels``."""
    batch = NucleusBatch(labels=labels, ids=np.array([1]), channels=channels, mpp=mpp)
    return {k: float(v[0]) for k, v in compute_all(batch).items()}


@pytest.fixture(scope="module")
def nucls() -> list[tuple[np.ndarray, np.ndarray]]:
    tiles = []
    for path in NUCLS:
        labels = np.load(path)["inst_map"].astype(np.int32)
        ids = np.unique(labels)
        tiles.append((labels, ids[ids > 0]))
    return tiles


# --------------------------------------------------------------------------- specs


def test_every_spec_is_documented_and_named_uniquely() -> None:
    names = []
    for module in MODULES:
        specs = module.feature_specs(CHANNELS)
        assert specs, module.__name__
        for spec in specs:
            assert re.fullmatch(r"[a-z0-9_]+", spec.name), spec.name
            assert spec.definition.strip(), spec.name
            assert spec.unit.strip() and "{" not in spec.unit, spec.name
            assert "{k}" not in spec.definition, spec.name
            assert spec.family == module.FAMILY and spec.family in FAMILIES
            names.append(spec.name)
    assert len(names) == len(set(names))
    shape2d = [s for s in _features_geometry.feature_specs(()) if s.name.startswith("shape2d_")]
    assert len(shape2d) == 10
    assert all(s.pyradiomics and s.pyradiomics.startswith("original_shape2D_") for s in shape2d)
    chromatin = _features_chromatin.feature_specs(CHANNELS)
    assert {s.unit for s in chromatin if s.name == "chromatin_iod_h"} == {"0.01 OD·µm²"}


def test_compute_returns_the_specs_in_order(nucls) -> None:
    labels, ids = nucls[0]
    rng = np.random.default_rng(0)
    channels = {c: rng.random(labels.shape) * 100 for c in CHANNELS}
    batch = NucleusBatch(labels=labels, ids=ids, channels=channels, mpp=0.25)
    for module in MODULES:
        out = module.compute(batch)
        assert list(out) == [s.name for s in module.feature_specs(CHANNELS)]
        for name, value in out.items():
            assert value.dtype == np.float64 and value.shape == (len(ids),), name
            assert not np.isinf(value).any(), name


# --------------------------------------------------------------------------- geometry

REGIONPROPS = {
    "area_um2": "area",
    "perimeter_um": "perimeter",
    "perimeter_crofton_um": "perimeter_crofton",
    "convex_area_um2": "area_convex",
    "bbox_area_um2": "area_bbox",
    "eccentricity": "eccentricity",
    "solidity": "solidity",
    "extent": "extent",
    "major_axis_length_um": "axis_major_length",
    "minor_axis_length_um": "axis_minor_length",
    "orientation": "orientation",
    "equivalent_diameter_um": "equivalent_diameter_area",
    "feret_diameter_max_um": "feret_diameter_max",
}


def test_geometry_matches_regionprops_on_nucls(nucls) -> None:
    from skimage.measure import regionprops

    mpp = 0.25
    checked = 0
    for labels, ids in nucls:
        out = _features_geometry.compute(NucleusBatch(labels=labels, ids=ids, mpp=mpp))
        props = {r.label: r for r in regionprops(labels, spacing=(mpp, mpp))}
        unit = {r.label: r for r in regionprops(labels)}  # moments_hu needs spacing 1
        for name, attr in REGIONPROPS.items():
            ref = np.array([getattr(props[i], attr) for i in ids], dtype=np.float64)
            np.testing.assert_allclose(out[name], ref, rtol=1e-6, atol=1e-9, err_msg=name)
        hu = np.array([unit[i].moments_hu for i in ids])
        for k in range(7):
            np.testing.assert_allclose(
                out[f"hu_moment_{k + 1}"], hu[:, k], rtol=1e-6, atol=1e-12, err_msg=f"hu {k + 1}"
            )
        checked += len(ids)
    assert checked == 640


def test_shape2d_matches_pyradiomics_on_nucls(nucls) -> None:
    pytest.importorskip("radiomics")
    import SimpleITK as sitk
    from radiomics import shape2D

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    mpp = 0.25
    names = {
        "MeshSurface": "mesh_surface",
        "PixelSurface": "pixel_surface",
        "Perimeter": "perimeter",
        "PerimeterSurfaceRatio": "perimeter_surface_ratio",
        "Sphericity": "sphericity",
        "SphericalDisproportion": "spherical_disproportion",
        "MaximumDiameter": "maximum_diameter",
        "MajorAxisLength": "major_axis_length",
        "MinorAxisLength": "minor_axis_length",
        "Elongation": "elongation",
    }
    checked = 0
    for labels, ids in nucls[::4]:  # 4 tiles, every 4th nucleus: ~40 nuclei
        out = _features_geometry.compute(NucleusBatch(labels=labels, ids=ids, mpp=mpp))
        for j in range(0, len(ids), 4):
            rr, cc = np.nonzero(labels == ids[j])
            r0, c0 = max(rr.min() - 1, 0), max(cc.min() - 1, 0)
            crop = (labels[r0 : rr.max() + 2, c0 : cc.max() + 2] == ids[j]).astype(np.uint8)
            image = sitk.GetImageFromArray(np.zeros(crop.shape, np.float32))
            mask = sitk.GetImageFromArray(crop)
            image.SetSpacing((mpp, mpp))
            mask.SetSpacing((mpp, mpp))
            radiomics = shape2D.RadiomicsShape2D(image, mask, label=1, force2D=True)
            for theirs, ours in names.items():
                ref = float(getattr(radiomics, f"get{theirs}FeatureValue")())
                got = out[f"shape2d_{ours}"][j]
                assert got == pytest.approx(ref, rel=1e-6, abs=1e-12), (ids[j], theirs)
            checked += 1
    assert checked >= 35


def test_geometry_of_a_disc_and_an_ellipse() -> None:
    f = one(disc(12), mpp=0.5)
    assert f["circularity"] == pytest.approx(1.0, abs=0.03)
    assert f["equivalent_diameter_um"] == pytest.approx(12.0, rel=0.02)
    assert f["elongation"] == pytest.approx(0.0, abs=0.01)
    rr, cc = np.indices((41, 61))
    ellipse = ((((rr - 20) / 8.0) ** 2 + ((cc - 30) / 20.0) ** 2) <= 1).astype(np.int32)
    f = one(ellipse, mpp=0.5)
    assert f["eccentricity"] == pytest.approx(math.sqrt(1 - (8 / 20) ** 2), abs=0.01)
    assert f["major_axis_length_um"] == pytest.approx(20.0, rel=0.02)  # 2 a mpp
    assert f["elongation"] == pytest.approx(1 - 8 / 20, abs=0.02)
    assert abs(f["orientation"]) == pytest.approx(math.pi / 2)  # major axis along columns
    assert f["boundary_radius_peaks"] == 2


# --------------------------------------------------------------------------- morphology, boundary


def test_disc_is_round_smooth_and_convex() -> None:
    mpp = 0.5
    labels = disc(12, offset=0.3)
    f = one(labels, mpp=mpp)
    radius = math.sqrt(labels.sum() / math.pi) * mpp  # µm
    assert f["convexity_deficiency"] == 0.0
    assert f["concavity_count"] == 0 and f["concavity_max_depth_um"] == 0.0
    assert f["bending_energy"] == pytest.approx(1 / radius**2, rel=0.15)
    assert f["curvature_mean"] == pytest.approx(1 / radius, rel=0.05)
    assert f["curvature_negative_fraction"] == 0.0
    assert f["curvature_std"] < 0.3 * f["curvature_mean"]  # digitisation
    assert f["roughness"] == pytest.approx(1.0, abs=1e-9)
    assert 0.95 < f["fractal_dimension"] < 1.07
    assert f["ellipse_fit_residual_norm"] < 0.03
    assert f["boundary_radius_mean_um"] == pytest.approx(radius, rel=0.02)
    assert f["boundary_radius_min_max_ratio"] > 0.9
    assert f["boundary_radius_peaks"] == 0
    assert f["boundary_radius_gini"] < 0.02
    for k in range(1, 11):
        assert f[f"fourier_descriptor_{k}"] < 0.02, k


def test_square_has_four_boundary_peaks() -> None:
    labels = np.zeros((40, 40), np.int32)
    labels[8:32, 8:32] = 1
    f = one(labels)
    assert f["boundary_radius_peaks"] == 4
    assert f["boundary_radius_min_max_ratio"] == pytest.approx(1 / math.sqrt(2), abs=0.03)
    assert f["fourier_descriptor_4"] > 0.05
    for k in (1, 2, 3, 5):  # a centred square has 4-fold symmetry only
        assert f[f"fourier_descriptor_{k}"] < 1e-3, k
    assert f["convexity_deficiency"] == 0.0 and f["concavity_count"] == 0
    assert f["curvature_negative_fraction"] == 0.0


def test_notch_is_one_concavity_of_known_depth() -> None:
    labels = disc(20, pad=4)  # centre column 23.5, rightmost pixel column 43
    labels[20:27, 24:] = 0  # a slot from the right edge to column 24
    f = one(labels, mpp=0.5)
    assert f["concavity_count"] == 1
    # slot bottom: crack midpoints at column 23.5; hull chord at column ~43
    assert f["concavity_max_depth_um"] == pytest.approx((43.5 - 23.5) * 0.5, rel=0.05)
    assert f["convexity_deficiency"] > 0.05
    assert f["roughness"] > 1.05
    assert f["curvature_negative_fraction"] > 0.05


def test_lobed_nucleus_has_three_concavities_and_peaks() -> None:
    rr, cc = np.indices((60, 60)) - 29.5
    theta = np.arctan2(rr, cc)
    labels = (np.hypot(rr, cc) <= 18 * (1 + 0.3 * np.cos(3 * theta))).astype(np.int32)
    f = one(labels)
    assert f["concavity_count"] == 3
    assert f["boundary_radius_peaks"] == 3
    assert f["fourier_descriptor_3"] > 0.1
    assert f["fractal_dimension"] > 1.0


# --------------------------------------------------------------------------- chromatin


def test_uniform_nucleus_has_no_margination_nor_displacement() -> None:
    labels = disc(10)
    f = one(labels, h=np.full(labels.shape, 37.0), grey=np.full(labels.shape, 90.0))
    for c in CHANNELS:
        assert f[f"chromatin_margination_slope_{c}"] == pytest.approx(0.0, abs=1e-12)
        assert f[f"chromatin_com_displacement_{c}"] == pytest.approx(0.0, abs=1e-12)
        assert f[f"chromatin_rim_ratio_{c}"] == pytest.approx(1.0, abs=1e-12)
        assert f[f"chromatin_hc_area_fraction_{c}"] == 0.0
        assert f[f"chromatin_clump_count_{c}"] == 0.0
        assert math.isnan(f[f"chromatin_hc_intensity_ratio_{c}"])
        assert math.isnan(f[f"chromatin_margination_corr_{c}"])
    assert f["chromatin_iod_h"] == pytest.approx(37.0 * labels.sum() * 0.25)
    assert f["chromatin_iod_grey"] == pytest.approx((255 - 90.0) * labels.sum() * 0.25)


def test_ramp_displaces_the_centre_of_mass_by_the_known_amount() -> None:
    side = 21
    labels = np.zeros((31, 31), np.int32)
    labels[5:26, 5:26] = 1
    cc = np.indices(labels.shape)[1].astype(np.float64)
    h = 10.0 + (cc - 15.0)  # mean 10 over the square
    f = one(labels, mpp=0.5, h=h, grey=255.0 - h)
    # Σ I (c - c0) / Σ I = var_c / Ī = ((side² - 1) / 12) / 10; over r_eq = sqrt(N / π)
    expected = (side**2 - 1) / 12 / 10 / math.sqrt(side**2 / math.pi)
    assert f["chromatin_com_displacement_h"] == pytest.approx(expected, rel=1e-9)
    assert f["chromatin_com_displacement_grey"] == pytest.approx(expected, rel=1e-9)
    assert f["chromatin_margination_slope_h"] == pytest.approx(0.0, abs=1e-9)  # symmetric


def test_heterochromatin_split_by_hand() -> None:
    labels = np.zeros((5, 7), np.int32)
    labels[1:3, 1:6] = 1  # 10 pixels
    h = np.ones(labels.shape)
    h[1, 1] = h[2, 5] = 10.0  # two bright, separate pixels
    f = one(labels, mpp=1.0, h=h)
    # mean 2.8, std 3.6: threshold 6.4, two heterochromatin pixels
    assert f["chromatin_hc_area_ratio_h"] == pytest.approx(2 / 8)
    assert f["chromatin_hc_area_fraction_h"] == pytest.approx(0.2)
    assert f["chromatin_hc_intensity_ratio_h"] == pytest.approx(10.0)
    assert f["chromatin_hc_content_fraction_h"] == pytest.approx(20 / 28)
    assert f["chromatin_clump_count_h"] == 2
    assert f["chromatin_iod_h"] == pytest.approx(28.0)


def test_margination_sign_follows_the_rim() -> None:
    from scipy.ndimage import distance_transform_edt

    labels = disc(12)
    depth = distance_transform_edt(np.pad(labels, 1))[1:-1, 1:-1]
    rim_bright = 50.0 + 100.0 * (depth <= 3)
    centre_bright = 50.0 + 100.0 * (depth > 6)
    f = one(labels, h=rim_bright, grey=255.0 - centre_bright)
    assert f["chromatin_margination_slope_h"] > 0.5
    assert f["chromatin_margination_corr_h"] > 0.5
    assert f["chromatin_rim_ratio_h"] > 1.5
    assert f["chromatin_margination_slope_grey"] < -0.5
    assert f["chromatin_rim_ratio_grey"] < 0.7


# --------------------------------------------------------------------------- resolution


def lobed_scene(mpp: float) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """A lobed, elongated nucleus and a stain pattern defined in µm, sampled at ``mpp``."""
    n = round(22.0 / mpp)
    rr, cc = (np.indices((n, n)) + 0.5) * mpp
    y, x = rr - 11.13, cc - 10.91
    e, theta = np.hypot(y / 1.3, x / 0.8), np.arctan2(y / 1.3, x / 0.8)
    labels = (e <= 5.0 * (1 + 0.25 * np.cos(3 * theta + 0.3))).astype(np.int32)
    h = 40 + 30 * np.exp(-((y - 1.5) ** 2 + (x + 1.0) ** 2) / 2.0) + 2 * np.hypot(y, x)
    return labels, {"h": h}


# relative tolerances beyond the default 5 %; None: not compared (values near 0)
SCALE_TOLERANCE = {
    "perimeter_um": 0.1,
    "bbox_area_um2": 0.1,
    "extent": 0.1,
    "solidity": 0.1,
    "hu_moment_4": None,
    "hu_moment_5": None,
    "hu_moment_6": 0.1,
    "hu_moment_7": 0.1,
    "orientation": None,
    "concavity_max_depth_um": None,
    "concavity_mean_depth_um": None,
    "chromatin_hc_area_ratio_h": 0.15,
    "chromatin_hc_area_fraction_h": 0.15,
    "chromatin_hc_content_fraction_h": 0.15,
    "chromatin_margination_slope_h": 0.1,
    "boundary_radius_std_by_mode": 0.15,
    "curvature_negative_fraction": 0.1,
    **{f"fourier_descriptor_{k}": None for k in (1, 4, 5, 6, 7, 8, 9, 10)},
}


def test_same_shape_at_twice_the_resolution_gives_the_same_um_values() -> None:
    labels, channels = lobed_scene(0.5)
    coarse = one(labels, mpp=0.5, **channels)
    labels, channels = lobed_scene(0.25)
    fine = one(labels, mpp=0.25, **channels)
    assert coarse.keys() == fine.keys()
    assert coarse["concavity_count"] == fine["concavity_count"] == 3
    for name in coarse:
        tol = SCALE_TOLERANCE.get(name, 0.05)
        if tol is None:
            continue
        assert coarse[name] == pytest.approx(fine[name], rel=tol), name
    assert coarse["area_um2"] == pytest.approx(84.0, rel=0.02)  # µm², not px
    assert abs(coarse["orientation"] - fine["orientation"]) < 0.05
    # pocket depths: digitisation moves the crack contour by up to half a coarse pixel
    assert coarse["concavity_max_depth_um"] == pytest.approx(
        fine["concavity_max_depth_um"], abs=0.25
    )


# --------------------------------------------------------------------------- degenerate


@pytest.mark.parametrize(
    "shape",
    ["pixel", "pair", "row", "column", "diagonal", "ring", "two_parts", "edge"],
)
def test_degenerate_nuclei_give_values_or_nan(shape: str) -> None:
    labels = np.zeros((12, 12), np.int32)
    if shape == "pixel":
        labels[5, 5] = 1
    elif shape == "pair":
        labels[5, 5:7] = 1
    elif shape == "row":
        labels[5, 2:9] = 1
    elif shape == "column":
        labels[2:9, 5] = 1
    elif shape == "diagonal":
        labels[np.arange(2, 9), np.arange(2, 9)] = 1
    elif shape == "ring":
        labels[3:9, 3:9] = 1
        labels[5:7, 5:7] = 0
    elif shape == "two_parts":
        labels[2:5, 2:5] = 1
        labels[8, 8] = 1
    elif shape == "edge":
        labels[0:4, 0:12] = 1
    flat = np.full(labels.shape, 3.0)
    f = one(labels, mpp=0.5, h=flat, grey=flat)
    assert not any(math.isinf(v) for v in f.values())
    n = int(labels.sum())
    assert f["area_um2"] == pytest.approx(n * 0.25)
    assert f["shape2d_pixel_surface"] == pytest.approx(n * 0.25)
    assert f["chromatin_iod_h"] == pytest.approx(3.0 * n * 0.25)
    assert f["chromatin_com_displacement_h"] == pytest.approx(0.0, abs=1e-12)
    assert f["boundary_radius_mean_um"] > 0 and f["bending_energy"] > 0
    if shape == "pixel":
        assert f["eccentricity"] == 0.0 and f["solidity"] == 1.0
        assert math.isnan(f["elongation"]) and math.isnan(f["shape2d_elongation"])
        assert math.isnan(f["chromatin_margination_slope_h"])  # every pixel on the border
        assert f["shape2d_maximum_diameter"] == pytest.approx(0.5)  # edge midpoints 1 px apart
    if shape in ("row", "column"):
        assert f["minor_axis_length_um"] == 0.0 and f["elongation"] == 1.0
        assert f["boundary_radius_peaks"] == 2


def test_absent_and_empty_ids() -> None:
    labels = disc(5)
    out = compute_all(
        NucleusBatch(
            labels=labels, ids=np.array([7, 1]), channels={"h": np.ones(labels.shape)}, mpp=0.5
        )
    )
    for name, value in out.items():
        assert np.isnan(value[0]), name  # id 7 is not in the label map
    assert out["area_um2"][1] == pytest.approx(labels.sum() * 0.25)
    empty = compute_all(NucleusBatch(labels=labels, ids=np.zeros(0, np.int64), mpp=0.5))
    assert empty and all(v.shape == (0,) for v in empty.values())
    blank = compute_all(NucleusBatch(labels=np.zeros((8, 8), np.int32), ids=np.array([1])))
    assert all(np.isnan(v[0]) for v in blank.values())


def test_a_nucleus_does_not_depend_on_the_others(nucls) -> None:
    labels, ids = nucls[1]
    rng = np.random.default_rng(1)
    channels = {"h": rng.random(labels.shape) * 100}
    every = compute_all(NucleusBatch(labels=labels, ids=ids, channels=channels, mpp=0.25))
    some = ids[::5][::-1]  # a subset, in another order, with huge ids relabelled
    alone = compute_all(NucleusBatch(labels=labels, ids=some, channels=channels, mpp=0.25))
    where = np.searchsorted(ids, some)
    for name in every:
        np.testing.assert_array_equal(alone[name], every[name][where], err_msg=name)
    big = np.where(labels > 0, labels.astype(np.int64) * 10**9, 0)
    huge_ids = some.astype(np.int64) * 10**9
    huge = compute_all(NucleusBatch(labels=big, ids=huge_ids, channels=channels, mpp=0.25))
    for name in every:
        np.testing.assert_array_equal(huge[name], alone[name], err_msg=name)


def test_in_place_edit_of_the_labels_is_seen() -> None:
    labels = disc(6)
    batch = NucleusBatch(labels=labels, ids=np.array([1]), mpp=0.5)
    before = _features_boundary.compute(batch)["boundary_radius_mean_um"][0]
    assert _features_geometry.compute(batch)["area_um2"][0] == labels.sum() * 0.25
    labels[: labels.shape[0] // 2] = 0  # keep the lower half
    assert _features_geometry.compute(batch)["area_um2"][0] == labels.sum() * 0.25
    assert _features_boundary.compute(batch)["boundary_radius_mean_um"][0] != before


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    "change",
    [
        {"labels": np.zeros((4, 4), np.float32)},
        {"labels": np.zeros(16, np.int32)},
        {"ids": np.array([1, 1])},
        {"ids": np.array([0])},
        {"ids": np.array([[1]])},
        {"mpp": 0.0},
        {"mpp": float("nan")},
        {"channels": {"h": np.zeros((3, 3))}},
    ],
)
def test_malformed_batches_are_refused(change: dict) -> None:
    fields = {"labels": np.ones((4, 4), np.int32), "ids": np.array([1]), "mpp": 0.5}
    fields.update(change)
    for module in MODULES:
        with pytest.raises(ConfigError):
            module.compute(NucleusBatch(**fields))


def test_bad_settings_are_refused() -> None:
    batch = NucleusBatch(labels=np.ones((4, 4), np.int32), ids=np.array([1]), mpp=0.5)
    with pytest.raises(ConfigError):
        _features_boundary.compute(batch, sigma_fraction=-1.0)
    with pytest.raises(ConfigError):
        _features_morphology.compute(batch, concavity_min_depth_um=float("inf"))
    with pytest.raises(ConfigError):
        _features_chromatin.compute(batch, heterochromatin_alpha=-0.5)
