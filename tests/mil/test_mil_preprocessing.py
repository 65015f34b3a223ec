"""pathpipe.mil.preprocessing: the cohort feature filter and standardiser, and `pathpipe mil preprocess`."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.mil.preprocessing import FeaturePreprocessor, PreprocessingParams, preprocess_cohort


def _table(seed: int = 0, n: int = 200) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    a = rng.normal(size=n)
    return pd.DataFrame(
        {
            "a": a,
            "a_copy": 2 * a + 1e-6 * rng.normal(size=n),  # |r| ~ 1 with a
            "b": rng.normal(size=n),
            "const": np.ones(n),
            "mostly_zero": np.where(np.arange(n) < 198, 0.0, 1.0),
            "mostly_nan": np.where(np.arange(n) < 150, np.nan, 1.0) * rng.normal(size=n),
            "c": rng.normal(5, 3, size=n),
        }
    )


def test_preprocessing_drops_and_standardises_as_documented(tmp_path) -> None:
    train = _table()
    pre = FeaturePreprocessor(PreprocessingParams(max_correlation=0.9)).fit(train)
    assert pre.features == ["a", "b", "c"]
    assert pre.dropped == {
        "a_copy": "correlated with a",
        "const": "constant",
        "mostly_zero": "constant",
        "mostly_nan": "nan",
    }
    assert pre.summary() == {
        "input": 7,
        "dropped_nan": 1,
        "dropped_constant": 2,
        "dropped_correlated": 1,
        "kept": 3,
    }
    z = pre.transform(train)
    np.testing.assert_allclose(z.mean(axis=0), 0, atol=1e-6)
    np.testing.assert_allclose(z.std(axis=0), 1, atol=1e-5)
    # statistics come from the training split only
    test = _table(seed=1)
    test["c"] += 100
    assert pre.transform(test)[:, 2].mean() > 30
    # NaN in new data -> the training median -> standardised value of the median
    test.loc[0, "b"] = np.nan
    assert pre.transform(test)[0, 1] == pytest.approx((pre.median[1] - pre.mean[1]) / pre.std[1])
    pre.save(tmp_path / "pre.json")
    back = FeaturePreprocessor.load(tmp_path / "pre.json")
    np.testing.assert_array_equal(back.transform(test), pre.transform(test))
    with pytest.raises(ConfigError, match="lacks 1 column"):
        pre.transform(test.drop(columns=["b"]))
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(StorageError, match="not a pathpipe feature preprocessing"):
        FeaturePreprocessor.load(tmp_path / "bad.json")
    with pytest.raises(ConfigError, match=r"mil\.preprocessing\.max_correlation=1\.5"):
        PreprocessingParams(max_correlation=1.5)
    with pytest.raises(ConfigError, match="expected PreprocessingParams"):
        FeaturePreprocessor({"max_correlation": 0.9})
    with pytest.raises(ConfigError, match="at least 2"):
        FeaturePreprocessor().fit(train.iloc[:1])


def _cohort_tables(root, n_slides: int = 3) -> list:
    """results/<slide>/tile_features.parquet of ``n_slides`` slides, as the workflow lays them out."""
    paths = []
    for i in range(n_slides):
        frame = _table(seed=i, n=60)
        frame.insert(0, "tile", np.arange(len(frame)))
        frame.insert(1, "l0_x", np.arange(len(frame)) * 256)
        frame.insert(2, "l0_y", np.zeros(len(frame), np.int64))
        path = root / "results" / f"S{i}" / "tile_features.parquet"
        path.parent.mkdir(parents=True)
        frame.to_parquet(path)
        paths.append(path)
    return paths


def test_preprocess_cohort_fits_on_the_training_slides_only(tmp_path) -> None:
    paths = _cohort_tables(tmp_path)
    params = PreprocessingParams(max_correlation=0.9)
    pre = preprocess_cohort(paths, ["S0", "S1"], tmp_path / "pre.json", params=params)
    train = pd.concat([pd.read_parquet(p) for p in paths[:2]], ignore_index=True)
    expected = FeaturePreprocessor(params).fit(train.drop(columns=["tile", "l0_x", "l0_y"]))
    assert pre.input_features == expected.input_features  # coordinates are not features
    assert pre.features == expected.features and pre.dropped == expected.dropped
    np.testing.assert_array_equal(pre.mean, expected.mean)
    back = FeaturePreprocessor.load(tmp_path / "pre.json")
    assert back.params == params and back.features == pre.features
    with pytest.raises(ConfigError, match=r"training slides \['S9'\]"):
        preprocess_cohort(paths, ["S0", "S9"], tmp_path / "x.json")


def test_cli_mil_preprocess(tmp_path) -> None:
    from pathpipe.cli import main

    paths = _cohort_tables(tmp_path)
    out = tmp_path / "pre.json"
    rc = main(
        ["mil", "preprocess", "--tables", *map(str, paths), "--train", "S0,S2",
         "--out", str(out), "--max-correlation", "0.9"]
    )  # fmt: skip
    assert rc == 0
    saved = json.loads(out.read_text())
    assert saved["format"] == "pathpipe.FeaturePreprocessor/1"
    assert saved["max_correlation"] == 0.9 and saved["max_nan_fraction"] == 0.5
    assert "tile" not in saved["input_features"]
    assert main(["mil", "preprocess", "--tables", str(paths[0]), "--train", "S1",
                 "--out", str(out)]) == 1  # fmt: skip


def test_features_group_has_no_preprocess_verb() -> None:
    from pathpipe.cli import build_parser

    with pytest.raises(SystemExit) as exc:
        build_parser().parse_args(["features", "preprocess"])
    assert exc.value.code == 2  # invalid choice: the verb moved to `pathpipe mil preprocess`
