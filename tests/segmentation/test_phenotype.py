"""Nucleus descriptors, the built-in phenotype rule and the JSON phenotype classifier."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError
from pathpipe.segmentation.classifier import labelled_descriptors
from pathpipe.segmentation.params import DEFAULT_CLASSES
from pathpipe.segmentation.phenotype import (
    DESCRIPTOR_COLUMNS,
    heuristic_phenotypes,
    nucleus_descriptors,
)
from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rr, cc = np.indices(shape)
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


@pytest.fixture(scope="module")
def synthetic() -> dict[float, tuple[pd.DataFrame, np.ndarray]]:
    """Ground-truth descriptors and type names of 8 synthetic tiles per MPP."""
    out = {}
    for mpp in (0.5, 0.25):
        tiles = synthetic_annotated_tiles(n_tiles=8, mpp=mpp, seed=2)
        out[mpp] = labelled_descriptors(tiles, mpp=mpp, classes=SYNTHETIC_CLASSES)
    return out


# --------------------------------------------------------------------------- descriptors


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_disc_descriptors_are_physical(mpp: float) -> None:
    radius_um = 5.0
    r_px = radius_um / mpp
    labels = disc((96, 96), (40.0, 50.0), r_px).astype(np.int32) * 7
    h = np.where(labels > 0, 0.8, 0.1).astype(np.float32)
    d = nucleus_descriptors(labels, h, mpp=mpp)
    assert list(d.columns) == DESCRIPTOR_COLUMNS
    assert d.index.name == "label" and d.index.tolist() == [7]
    row = d.loc[7]
    assert row.area_um2 == pytest.approx(np.pi * radius_um**2, rel=0.03)
    assert row.perimeter_um == pytest.approx(2 * np.pi * radius_um, rel=0.05)
    assert row.circularity > 0.9
    assert row.eccentricity < 0.15
    assert row.solidity == pytest.approx(1.0)
    assert row.major_axis_um == pytest.approx(2 * radius_um, rel=0.05)
    assert row.minor_axis_um == pytest.approx(2 * radius_um, rel=0.05)
    assert (row.centroid_row, row.centroid_col) == (pytest.approx(40.0), pytest.approx(50.0))
    assert row.mean_h == pytest.approx(0.8) and row.std_h == pytest.approx(0.0, abs=1e-6)
    assert row.mean_h_rel == pytest.approx(1.0) and row.cv_h == pytest.approx(0.0, abs=1e-6)
    assert not row.touches_border
    assert np.isnan(row.mean_red)


def test_ellipse_square_border_and_rgb() -> None:
    rr, cc = np.indices((64, 64))
    labels = np.zeros((64, 64), np.int32)
    labels[((rr - 30) / 12.0) ** 2 + ((cc - 30) / 4.0) ** 2 <= 1] = 2  # semi-axes 12 x 4 px
    labels[:5, 55:] = 9  # a rectangle at the corner, cut by the tile edge
    h = np.where(labels == 2, 1.2, 0.6).astype(np.float32)
    rgb = np.zeros((64, 64, 3), np.uint8)
    rgb[..., 2] = 200
    d = nucleus_descriptors(labels, h, mpp=0.5, rgb=rgb)
    assert d.index.tolist() == [2, 9]
    e = d.loc[2]
    assert e.major_axis_um == pytest.approx(12.0, rel=0.05)  # 2 * 12 px * 0.5
    assert e.minor_axis_um == pytest.approx(4.0, rel=0.1)
    assert e.eccentricity == pytest.approx(np.sqrt(1 - (4 / 12) ** 2), abs=0.02)
    assert e.circularity < 0.8
    assert not e.touches_border and d.loc[9].touches_border
    assert d.loc[9].solidity == pytest.approx(1.0)
    # relative darkness: median of (1.2, 0.6) is 0.9
    assert e.mean_h_rel == pytest.approx(1.2 / 0.9)
    assert (d.mean_blue == 200).all() and (d.mean_red == 0).all()


def test_descriptors_match_skimage_regionprops() -> None:
    from skimage.measure import label, regionprops_table

    rng = np.random.default_rng(0)
    from scipy import ndimage as ndi

    blobs = ndi.gaussian_filter(rng.random((128, 128)), 3) > 0.52
    labels = label(blobs).astype(np.int32)
    labels[labels % 3 == 0] = 0  # gaps in the ids
    h = rng.random((128, 128)).astype(np.float32)
    d = nucleus_descriptors(labels, h, mpp=0.5)
    ref = regionprops_table(
        labels,
        intensity_image=h,
        properties=(
            "label",
            "centroid",
            "area",
            "perimeter_crofton",
            "eccentricity",
            "axis_major_length",
            "axis_minor_length",
            "intensity_mean",
            "intensity_std",
            "solidity",
        ),
    )
    np.testing.assert_array_equal(d.index, ref["label"])
    np.testing.assert_allclose(d.centroid_row, ref["centroid-0"], atol=1e-9)
    np.testing.assert_allclose(d.centroid_col, ref["centroid-1"], atol=1e-9)
    np.testing.assert_allclose(d.area_um2, ref["area"] * 0.25)
    np.testing.assert_allclose(d.perimeter_um, ref["perimeter_crofton"] * 0.5)
    np.testing.assert_allclose(d.eccentricity, ref["eccentricity"], atol=1e-6)
    np.testing.assert_allclose(d.major_axis_um, ref["axis_major_length"] * 0.5, atol=1e-6)
    np.testing.assert_allclose(d.minor_axis_um, ref["axis_minor_length"] * 0.5, atol=1e-6)
    np.testing.assert_allclose(d.mean_h, ref["intensity_mean"], rtol=1e-5)
    np.testing.assert_allclose(d.std_h, ref["intensity_std"], rtol=1e-4, atol=1e-6)
    # skimage rasterises a hull widened by half a pixel: its solidity is lower
    assert (d.solidity.to_numpy() >= ref["solidity"] - 1e-9).all()
    assert np.median(d.solidity - ref["solidity"]) < 0.15


def test_empty_labels_give_empty_frame() -> None:
    d = nucleus_descriptors(np.zeros((16, 16), np.int32), np.zeros((16, 16)), mpp=0.5)
    assert d.empty and list(d.columns) == DESCRIPTOR_COLUMNS and d.index.name == "label"
    codes, conf = heuristic_phenotypes(d)
    assert codes.shape == (0,) and conf.shape == (0,)


def test_descriptor_validation() -> None:
    labels = np.zeros((8, 8), np.int32)
    with pytest.raises(ConfigError, match="differs"):
        nucleus_descriptors(labels, np.zeros((4, 4)), mpp=0.5)
    with pytest.raises(ConfigError, match="integer"):
        nucleus_descriptors(labels.astype(float), np.zeros((8, 8)), mpp=0.5)
    with pytest.raises(ConfigError, match="mpp"):
        nucleus_descriptors(labels, np.zeros((8, 8)), mpp=-1)
    with pytest.raises(ConfigError, match="negative"):
        nucleus_descriptors(labels - 1, np.zeros((8, 8)), mpp=0.5)
    with pytest.raises(ConfigError, match="rgb"):
        nucleus_descriptors(labels, np.zeros((8, 8)), mpp=0.5, rgb=np.zeros((8, 8)))


# --------------------------------------------------------------------------- built-in rule


def per_class_accuracy(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {c: float((pred[truth == c] == c).mean()) for c in np.unique(truth)}


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_heuristic_on_synthetic_ground_truth(synthetic: dict, mpp: float) -> None:
    d, truth = synthetic[mpp]
    whole = ~d.touches_border.to_numpy()  # nuclei cut by the tile edge have no shape
    codes, conf = heuristic_phenotypes(d[whole])
    acc = per_class_accuracy(np.asarray(DEFAULT_CLASSES)[codes], truth[whole])
    # Measured (seed 2): tumour 0.98 / 0.99, lymphocyte 1.00 / 1.00 at 0.5 / 0.25 µm/px
    assert acc["tumour"] >= 0.9 and acc["lymphocyte"] >= 0.9
    assert ((conf >= 0.5) & (conf <= 1.0)).all()
    # two-class variant: every nucleus, cut ones included
    codes, _ = heuristic_phenotypes(d, classes=SYNTHETIC_CLASSES)
    acc = per_class_accuracy(np.asarray(SYNTHETIC_CLASSES)[codes], truth)
    assert acc["tumour"] >= 0.85 and acc["lymphocyte"] >= 0.85


def test_heuristic_on_hand_made_nuclei() -> None:
    d = pd.DataFrame(
        {
            "area_um2": [20.0, 80.0, 25.0, 12.0],
            "circularity": [0.95, 0.85, 0.5, 0.93],
            "eccentricity": [0.3, 0.6, 0.97, 0.4],
            "solidity": [0.97, 0.95, 0.95, 0.97],
            "minor_axis_um": [5.0, 9.0, 2.5, 5.0],
            "mean_h": [1.4, 0.9, 0.8, 0.7],
            "mean_h_rel": [1.4, 1.0, 0.9, 0.8],
        }
    )
    codes, conf = heuristic_phenotypes(d)
    names = np.asarray(DEFAULT_CLASSES)[codes].tolist()
    # small round dark; large; spindle; small round pale
    assert names == ["lymphocyte", "tumour", "other", "other"]
    assert (conf > 0.9).all()
    # classes in another order: codes follow them
    order = ("other", "lymphocyte", "tumour")
    codes2, conf2 = heuristic_phenotypes(d, classes=order)
    assert np.asarray(order)[codes2].tolist() == names
    np.testing.assert_allclose(conf2, conf)
    # without "other", non-lymphocytes are tumour
    codes3, _ = heuristic_phenotypes(d, classes=("tumour", "lymphocyte"))
    assert codes3.tolist() == [1, 0, 0, 0]


def test_heuristic_needs_tumour_and_lymphocyte() -> None:
    d = pd.DataFrame({c: [1.0] for c in DESCRIPTOR_COLUMNS})
    with pytest.raises(ConfigError, match="trained PhenotypeClassifier"):
        heuristic_phenotypes(d, classes=("tumour", "stroma"))
    with pytest.raises(ConfigError, match="lack columns"):
        heuristic_phenotypes(d.drop(columns=["solidity"]))
