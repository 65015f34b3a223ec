"""The JSON phenotype classifier, its training data and ``pathpipe segmentation train-phenotypes``."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.annotations import AnnotatedTile, write_annotated_dir
from pathpipe.segmentation.classifier import (
    CLASSIFIER_FEATURES,
    PhenotypeClassifier,
    labelled_descriptors,
    train_phenotypes,
)
from pathpipe.segmentation.phenotype import DESCRIPTOR_COLUMNS
from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles


def disc(shape: tuple[int, int], centre: tuple[float, float], radius: float) -> np.ndarray:
    rr, cc = np.indices(shape)
    return (rr - centre[0]) ** 2 + (cc - centre[1]) ** 2 <= radius**2


def per_class_accuracy(pred: np.ndarray, truth: np.ndarray) -> dict[str, float]:
    return {c: float((pred[truth == c] == c).mean()) for c in np.unique(truth)}


@pytest.fixture(scope="module")
def synthetic() -> tuple[pd.DataFrame, np.ndarray]:
    """Ground-truth descriptors and type names of 8 synthetic tiles at 0.5 µm/px."""
    tiles = synthetic_annotated_tiles(n_tiles=8, mpp=0.5, seed=2)
    return labelled_descriptors(tiles, mpp=0.5, classes=SYNTHETIC_CLASSES)


# --------------------------------------------------------------------------- classifier


def test_classifier_learns_synthetic_types_and_round_trips(synthetic, tmp_path) -> None:
    d, truth = synthetic
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


# --------------------------------------------------------------------------- path level


def test_train_phenotypes_writes_the_classifier(tmp_path) -> None:
    from pathpipe.cli import main

    tiles = list(synthetic_annotated_tiles(n_tiles=4, mpp=0.5, seed=3, slide_size=4096))
    write_annotated_dir(tmp_path / "ann", tiles, classes=SYNTHETIC_CLASSES, mpp=0.5)
    rec = train_phenotypes(tmp_path / "ann", tmp_path / "a.json", stain="fixed", seed=1)
    assert rec["classes"] == list(SYNTHETIC_CLASSES) and rec["n_nuclei"] > 50
    assert rec["training_accuracy"] > 0.85
    clf = PhenotypeClassifier.load(tmp_path / "a.json")
    assert clf.classes == SYNTHETIC_CLASSES and clf.mpp is None
    # the command writes the same file
    argv = ["segmentation", "train-phenotypes", "--data", str(tmp_path / "ann")]
    assert main([*argv, "--out", str(tmp_path / "b.json"), "--stain", "fixed", "--seed", "1"]) == 0
    assert (tmp_path / "b.json").read_text() == (tmp_path / "a.json").read_text()


def test_train_phenotypes_needs_mpp_and_classes(tmp_path) -> None:
    tiles = list(synthetic_annotated_tiles(n_tiles=1, mpp=0.5, seed=3, slide_size=2048))
    write_annotated_dir(tmp_path / "ann", tiles, classes=SYNTHETIC_CLASSES, mpp=None)
    with pytest.raises(ConfigError, match="gives no 'mpp'"):
        train_phenotypes(tmp_path / "ann", tmp_path / "a.json")
    assert not (tmp_path / "a.json").exists()
