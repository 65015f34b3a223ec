"""Nucleus descriptors, the built-in phenotype rule and the JSON phenotype classifier."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.annotations import AnnotatedTile
from pathpipe.segmentation.phenotype import (
    CLASSIFIER_FEATURES,
    DEFAULT_CLASSES,
    DESCRIPTOR_COLUMNS,
    PhenotypeClassifier,
    heuristic_phenotypes,
    labelled_descriptors,
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


# --------------------------------------------------------------------------- classifier


def test_classifier_learns_synthetic_types_and_round_trips(synthetic: dict, tmp_path) -> None:
    d, truth = synthetic[0.5]
    # tiles alternate between the "low" and "high" slide: train on the first
    # four of them, test on the last four
    train = d["tile"].str[-4:].astype(int).to_numpy() < 4
    clf = PhenotypeClassifier.fit(d[train], truth[train], classes=SYNTHETIC_CLASSES, mpp=0.5)
    assert clf.classes == SYNTHETIC_CLASSES and clf.feature_names == CLASSIFIER_FEATURES
    codes, conf = clf.predict(d[~train])
    acc = per_class_accuracy(np.asarray(clf.classes)[codes], truth[~train])
    # chance is 0.5 per class with balanced weights; measured ~0.99 and ~0.98
    assert min(acc.values()) >= 0.85
    assert ((conf >= 0.5) & (conf <= 1.0)).all()

    path = clf.save(tmp_path / "model.json")
    data = json.loads(path.read_text())  # plain JSON
    assert data["classes"] == list(SYNTHETIC_CLASSES) and data["mpp"] == 0.5
    loaded = PhenotypeClassifier.load(path)
    codes2, conf2 = loaded.predict(d[~train])
    np.testing.assert_array_equal(codes2, codes)
    np.testing.assert_array_equal(conf2, conf)
    assert loaded.classes == clf.classes and loaded.feature_names == clf.feature_names


def test_classifier_three_classes_nan_and_empty() -> None:
    rng = np.random.default_rng(0)
    n = 90
    names = np.repeat(["a", "b", "c"], n // 3)
    d = pd.DataFrame({c: rng.normal(size=n) for c in CLASSIFIER_FEATURES})
    d["area_um2"] += np.repeat([0.0, 4.0, 8.0], n // 3)
    clf = PhenotypeClassifier.fit(d, names, classes=("a", "b", "c"))
    assert clf.coef.shape == (3, len(CLASSIFIER_FEATURES))
    codes, _ = clf.predict(d)
    assert (np.asarray(clf.classes)[codes] == names).mean() > 0.9
    p = clf.predict_proba(d)
    np.testing.assert_allclose(p.sum(axis=1), 1.0)
    d.loc[0, "solidity"] = np.nan  # missing values take the training mean
    assert np.isfinite(clf.predict_proba(d)).all()
    codes, conf = clf.predict(d.iloc[:0])
    assert codes.shape == (0,) and conf.shape == (0,)


def test_classifier_fit_validation() -> None:
    d = pd.DataFrame({c: [1.0, 2.0, 3.0] for c in CLASSIFIER_FEATURES})
    with pytest.raises(ConfigError, match="not in classes"):
        PhenotypeClassifier.fit(d, ["a", "b", "x"], classes=("a", "b"))
    with pytest.raises(ConfigError, match="no training nuclei of classes"):
        PhenotypeClassifier.fit(d, ["a", "a", "a"], classes=("a", "b"))
    with pytest.raises(ConfigError, match="one name per descriptor row"):
        PhenotypeClassifier.fit(d, ["a", "b"], classes=("a", "b"))
    with pytest.raises(ConfigError, match="lack feature columns"):
        PhenotypeClassifier.fit(d.drop(columns=["cv_h"]), ["a", "b", "a"], classes=("a", "b"))


def test_classifier_load_errors(tmp_path) -> None:
    with pytest.raises(StorageError, match="does not exist"):
        PhenotypeClassifier.load(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    with pytest.raises(StorageError, match="cannot read"):
        PhenotypeClassifier.load(bad)
    bad.write_text(json.dumps({"hello": 1}))
    with pytest.raises(StorageError, match="not a phenotype classifier"):
        PhenotypeClassifier.load(bad)
    d = pd.DataFrame({c: [0.0, 1.0, 2.0, 3.0] for c in CLASSIFIER_FEATURES})
    good = PhenotypeClassifier.fit(d, ["a", "b", "a", "b"], classes=("a", "b")).to_dict()
    good["coef"] = good["coef"][:1]
    bad.write_text(json.dumps(good))
    with pytest.raises(StorageError, match="inconsistent shapes"):
        PhenotypeClassifier.load(bad)


# --------------------------------------------------------------------------- training data


def test_labelled_descriptors_majority_type_and_skips() -> None:
    inst = np.zeros((40, 40), np.int32)
    types = np.zeros((40, 40), np.uint8)
    inst[disc((40, 40), (10, 10), 5)] = 1
    types[inst == 1] = 2
    types[10, 10] = 1  # minority pixel
    inst[disc((40, 40), (28, 28), 5)] = 4
    types[inst == 4] = 1
    inst[disc((40, 40), (10, 30), 4)] = 5  # untyped: skipped
    rgb = np.full((40, 40, 3), 230, np.uint8)
    rgb[inst > 0] = (80, 60, 150)
    tile = AnnotatedTile("t0", rgb, inst, types)
    d, names = labelled_descriptors([tile], mpp=0.5, classes=("tumour", "lymphocyte"))
    assert d["label"].tolist() == [1, 4] and d["tile"].tolist() == ["t0", "t0"]
    assert names.tolist() == ["lymphocyte", "tumour"]
    assert set(DESCRIPTOR_COLUMNS) <= set(d.columns)
    assert (d["mean_h"] > 0.3).all()

    with pytest.raises(ConfigError, match="no type_map"):
        labelled_descriptors([AnnotatedTile("t1", rgb, inst)], mpp=0.5, classes=("a", "b"))
    with pytest.raises(ConfigError, match="only 1 classes"):
        labelled_descriptors([tile], mpp=0.5, classes=("tumour",))
    empty = AnnotatedTile("t2", rgb, np.zeros_like(inst), np.zeros_like(types))
    d, names = labelled_descriptors([empty], mpp=0.5, classes=("a", "b"))
    assert d.empty and names.shape == (0,) and "tile" in d.columns
