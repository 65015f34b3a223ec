"""pathpipe.mil.cohort: cross-validation, Table 1, outputs and prediction on a generated cohort.

Cohort: 20 patients (4 of them with 2 slides) plus one patient with a 1-tile
slide and one slide with 0 tiles; per slide 5–40 tiles of 20 standard-normal
features; in class-1 slides 30–60 % of the tiles are shifted by +1.5 in the
first 3 features (as in tests/mil/test_mil.py). Models are tiny, train on one CPU
thread and few epochs.
"""

from __future__ import annotations

import dataclasses
import logging

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from pathpipe.mil.bags import load_bags  # noqa: E402 - after the importorskip
from pathpipe.mil.cohort import predict_slides  # noqa: E402
from pathpipe.mil.crossval import (  # noqa: E402
    AMIL_METHOD,
    EMBEDDING_METHOD,
    RF_METHOD,
    run_cross_validation,
)
from pathpipe.mil.outputs import write_mil_outputs  # noqa: E402
from pathpipe.mil.params import MILParams  # noqa: E402

N_FEATURES, N_INFORMATIVE, SHIFT = 20, 3, 1.5
PARAMS = MILParams(
    n_folds=3, epochs=30, patience=8, lr=5e-3, rf_n_estimators=50, seed=0, device="cpu"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


def _tiles(rng: np.random.Generator, k: int, positive: bool) -> pd.DataFrame:
    x = rng.normal(size=(k, N_FEATURES))
    if positive and k:
        w = rng.choice(k, max(1, round(rng.uniform(0.3, 0.6) * k)), replace=False)
        x[w, :N_INFORMATIVE] += SHIFT
    frame = pd.DataFrame(x, columns=[f"f{j:02d}" for j in range(N_FEATURES)])
    frame.insert(0, "tile", np.arange(k))
    frame.insert(1, "l0_x", np.arange(k) * 256)
    frame.insert(2, "l0_y", np.zeros(k, np.int64))
    return frame


def _write_cohort(root, seed: int = 0) -> tuple[dict[str, str], pd.DataFrame]:
    rng = np.random.default_rng(seed)
    rows, tables = [], {}
    for p in range(20):
        positive = p % 2 == 1
        for s in range(1 + (p % 5 == 0)):
            rows.append(
                (f"P{p:02d}_{s}", "tumour" if positive else "normal", f"P{p:02d}", positive)
            )
    rows.append(("ONE_TILE", "tumour", "P90", True))
    rows.append(("NO_TILES", "normal", "P91", False))
    for sid, _, _, positive in rows:
        k = {"ONE_TILE": 1, "NO_TILES": 0}.get(sid, int(rng.integers(5, 41)))
        path = root / f"{sid}.parquet"
        _tiles(rng, k, positive).to_parquet(path)
        tables[sid] = str(path)
    sheet = pd.DataFrame([r[:3] for r in rows], columns=["slide_id", "label", "patient"]).assign(
        split=""
    )
    return tables, sheet


def _shuffle_within_class(sheet: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per patient, half of each true class gets each label (independent of the truth)."""
    rng = np.random.default_rng(seed)
    per_patient = sheet.groupby("patient")["label"].first()
    new = {}
    for lab in ("normal", "tumour"):
        patients = rng.permutation(per_patient.index[per_patient == lab].to_numpy())
        for i, p in enumerate(patients):
            new[p] = ("normal", "tumour")[i % 2]
    return sheet.assign(label=sheet["patient"].map(new))


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    return _write_cohort(tmp_path_factory.mktemp("cohort"))


@pytest.fixture(scope="module")
def result(cohort):
    tables, sheet = cohort
    return run_cross_validation(tables, sheet, params=PARAMS)


def test_table1_both_methods_separate_classes(result):
    t1 = result.table1.set_index("method")
    print(t1.to_string())
    assert list(t1.index) == [AMIL_METHOD, RF_METHOD]
    assert list(result.table1.columns) == [
        "method",
        "train_auc_mean",
        "train_auc_std",
        "val_auc_mean",
        "val_auc_std",
        "test_auc",
    ]
    assert (t1["val_auc_mean"] >= 0.85).all()
    assert t1["test_auc"].notna().all()
    assert len(result.folds) == 3 and len(result.best_epochs) == 3
    assert result.final_epochs == max(1, round(float(np.median(result.best_epochs))))
    assert result.classes == ["normal", "tumour"]


def test_no_patient_in_two_roles_and_slides_handled(result):
    pred = result.predictions
    assert set(pred["method"]) == {AMIL_METHOD, RF_METHOD}
    roles = pred.groupby("patient")["role"].nunique()
    assert (roles == 1).all(), roles[roles > 1]
    # every kept slide once per method; the 0-tile slide excluded, the 1-tile slide kept
    per_method = pred.groupby("method")["slide_id"].agg(list)
    for ids in per_method:
        assert len(ids) == len(set(ids)) == 25  # 20 patients, 4 with 2 slides, ONE_TILE
    assert "NO_TILES" not in set(pred["slide_id"]) and "ONE_TILE" in set(pred["slide_id"])
    assert result.excluded == ["NO_TILES"]
    assert pred["probability"].between(0, 1).all()
    assert (pred["role"] == "test").any()


def test_outputs_and_predict_slides_round_trip(result, cohort, tmp_path):
    import json

    tables, _ = cohort
    write_mil_outputs(result, tmp_path)
    for name in ("table1.tsv", "predictions.tsv", "roc.png", "metrics.json"):
        assert (tmp_path / name).is_file(), name
    assert (tmp_path / "model" / "model.safetensors").is_file()
    assert (tmp_path / "model" / "preprocessing.json").is_file()
    metrics = json.loads((tmp_path / "metrics.json").read_text())
    assert metrics["stage"] == "mil" and metrics["params"]["n_folds"] == 3
    assert metrics["preprocessing"]["input"] == N_FEATURES
    assert [r["method"] for r in metrics["table1"]] == [AMIL_METHOD, RF_METHOD]
    assert pd.read_csv(tmp_path / "table1.tsv", sep="\t").shape == (2, 6)

    saved = pd.read_csv(tmp_path / "predictions.tsv", sep="\t")
    test = saved[(saved["role"] == "test") & (saved["method"] == AMIL_METHOD)]
    got = predict_slides(tmp_path / "model", {s: tables[s] for s in test["slide_id"]})
    merged = test.merge(got, on="slide_id", suffixes=("_saved", ""))
    assert len(merged) == len(test) > 0
    np.testing.assert_allclose(merged["probability"], merged["probability_saved"], atol=1e-6)
    expected = np.where(merged["probability"] >= 0.5, "tumour", "normal")
    assert merged["predicted_label"].tolist() == expected.tolist()


def test_shuffled_labels_are_near_chance(cohort):
    tables, sheet = cohort
    amil, rf = [], []
    for seed in range(4):
        shuffled = _shuffle_within_class(sheet, seed)
        params = dataclasses.replace(PARAMS, rf_n_estimators=10, seed=seed)
        t1 = run_cross_validation(tables, shuffled, params=params).table1.set_index("method")
        amil.append(float(t1.loc[AMIL_METHOD, "val_auc_mean"]))
        rf.append(float(t1.loc[RF_METHOD, "val_auc_mean"]))
    print(f"shuffled-label val AUC means: AMIL {np.round(amil, 3).tolist()}, RF {np.round(rf, 3)}")
    # Early stopping on inner slides (the default) leaves the validation slides unused
    # by model selection, so both methods sit at chance.
    assert 0.25 < np.mean(amil) < 0.65
    assert 0.25 < np.mean(rf) < 0.65


def test_early_stopping_slides_are_held_out_of_the_training_fold(result):
    t = result.predictions.drop_duplicates("slide_id").set_index("slide_id")
    for fold in result.folds:
        stop = fold["early_stopping_slides"]
        val = set(t.index[t["role"] == f"fold {fold['fold']}"])
        assert stop and not set(stop) & val and not set(stop) & set(result.slides["test"])
        assert set(t.loc[stop, "label"]) == {"normal", "tumour"}
        patients = set(t.loc[stop, "patient"])
        train = set(t.index) - val - set(stop) - set(result.slides["test"])
        assert not patients & set(t.loc[list(train), "patient"])
        assert fold[AMIL_METHOD]["best_epoch"] >= 1


def test_validation_early_stopping_uses_the_fold(cohort):
    tables, sheet = cohort
    params = dataclasses.replace(PARAMS, early_stopping="validation", epochs=5)
    res = run_cross_validation(tables, sheet, params=params)
    roles = res.predictions.drop_duplicates("slide_id").set_index("slide_id")["role"]
    for fold in res.folds:
        assert set(fold["early_stopping_slides"]) == set(
            roles.index[roles == f"fold {fold['fold']}"]
        )
    with pytest.raises(ConfigError, match=r"mil\.early_stopping='best'"):
        dataclasses.replace(params, early_stopping="best")


def test_load_bags_excludes_empty_slides_with_warning(cohort, caplog):
    tables, sheet = cohort
    with caplog.at_level(logging.WARNING, logger="pathpipe.mil.bags"):
        ids, frames, labels = load_bags(tables, sheet)
    assert "NO_TILES" not in ids and "ONE_TILE" in ids
    assert len(frames[ids.index("ONE_TILE")]) == 1
    assert len(ids) == len(frames) == len(labels) == len(sheet) - 1
    assert "all tiles filtered out" in caplog.text and "NO_TILES" in caplog.text
    assert "single tile" in caplog.text and "ONE_TILE" in caplog.text


def test_missing_label_names_the_slide(cohort):
    tables, sheet = cohort
    bad = sheet.copy()
    bad.loc[bad["slide_id"] == "P03_0", "label"] = None
    with pytest.raises(ConfigError, match="P03_0"):
        load_bags(tables, bad)
    with pytest.raises(ConfigError, match="P03_0"):
        run_cross_validation(tables, bad, params=PARAMS)


def test_class_lost_to_empty_slides_raises(cohort):
    tables, sheet = cohort
    small = sheet[sheet["slide_id"].isin(["P00_0", "P01_0", "NO_TILES"])].copy()
    small.loc[small["slide_id"] == "P00_0", "label"] = "other"
    with pytest.raises(ConfigError, match="all tiles filtered out"):
        load_bags(tables, small)


def test_missing_table_raises(cohort):
    tables, sheet = cohort
    with pytest.raises(ConfigError, match="P02_0"):
        load_bags({k: v for k, v in tables.items() if k != "P02_0"}, sheet)


def test_cli_train_and_predict(cohort, tmp_path):
    """`pathpipe mil train|predict` on slide folders, as the workflow lays them out."""
    import shutil

    from pathpipe.cli import main

    tables, sheet = cohort
    paths = []
    for sid, path in tables.items():
        dest = tmp_path / "results" / sid / "tile_features.parquet"
        dest.parent.mkdir(parents=True)
        shutil.copy(path, dest)
        paths.append(str(dest))
    sheet_path = tmp_path / "slides.tsv"
    # an unlabelled slide without a table in the sheet is ignored
    pd.concat([sheet, pd.DataFrame([{"slide_id": "EXTRA", "patient": "PX"}])]).to_csv(
        sheet_path, sep="\t", index=False
    )
    out = tmp_path / "mil"
    common = ["--device", "cpu", "--seed", "0"]
    rc = main(
        ["mil", "train", "--tables", *paths, "--sheet", str(sheet_path), "--out-dir", str(out),
         "--n-folds", "3", "--epochs", "30", "--lr", "5e-3", "--patience", "8",
         "--rf-n-estimators", "50", *common]
    )  # fmt: skip
    assert rc == 0
    table1 = pd.read_csv(out / "table1.tsv", sep="\t")
    assert len(table1) == 2 and (table1["val_auc_mean"] > 0.8).all()
    rc = main(
        ["mil", "predict", "--model", str(out / "model"), "--tables", *paths[:3],
         "--out", str(tmp_path / "pred.tsv"), "--device", "cpu"]
    )  # fmt: skip
    assert rc == 0
    pred = pd.read_csv(tmp_path / "pred.tsv", sep="\t")
    assert len(pred) == 3 and pred["probability"].between(0, 1).all()
    # a table whose slide is not in the sheet is an error, not silently dropped
    extra = tmp_path / "results" / "GHOST" / "tile_features.parquet"
    extra.parent.mkdir()
    shutil.copy(paths[0], extra)
    rc = main(
        ["mil", "train", "--tables", *paths, str(extra), "--sheet", str(sheet_path),
         "--out-dir", str(tmp_path / "x"), *common]
    )  # fmt: skip
    assert rc == 1


def _write_embeddings(root, tables: dict[str, str], dim: int = 12) -> dict[str, object]:
    """Per slide: a fixed random projection of its tile features plus noise, in every format."""
    import h5py

    rng = np.random.default_rng(7)
    proj = rng.normal(size=(N_FEATURES, dim))
    paths = {}
    for i, (sid, table) in enumerate(sorted(tables.items())):
        x = pd.read_parquet(table).drop(columns=["tile", "l0_x", "l0_y"]).to_numpy()
        emb = (x @ proj + rng.normal(scale=0.5, size=(len(x), dim))).astype(np.float32)
        kind = ("npy", "pt", "parquet", "h5")[i % 4]
        path = root / f"{sid}.{kind}"
        if kind == "npy":
            np.save(path, emb)
        elif kind == "pt":
            torch.save(torch.from_numpy(emb), path)
        elif kind == "parquet":
            pd.DataFrame(emb, columns=[f"d{j}" for j in range(dim)]).assign(tile=0).to_parquet(path)
        else:
            with h5py.File(path, "w") as f:
                f["features"] = emb
                f["coords"] = np.zeros((len(emb), 2), np.int64)
        paths[sid] = path
    return paths


def test_embeddings_add_the_conventional_amil_row(cohort, tmp_path):
    tables, sheet = cohort
    emb = _write_embeddings(tmp_path, tables)
    res = run_cross_validation(tables, sheet, params=PARAMS, embeddings=emb)
    t1 = res.table1.set_index("method")
    print(t1.to_string())
    assert list(t1.index) == [AMIL_METHOD, RF_METHOD, EMBEDDING_METHOD]
    assert t1.loc[EMBEDDING_METHOD, "val_auc_mean"] >= 0.8
    assert set(res.roc[EMBEDDING_METHOD]) == {"out_of_fold", "test"}
    pred = res.predictions[res.predictions["method"] == EMBEDDING_METHOD]
    assert len(pred) == 25 and "NO_TILES" not in set(pred["slide_id"])
    assert res.embedding_preprocessor.features == [f"emb_{j}" for j in range(12)]
    write_mil_outputs(res, tmp_path / "out")
    assert (tmp_path / "out" / "model_embeddings" / "model.safetensors").is_file()
    assert pd.read_csv(tmp_path / "out" / "table1.tsv", sep="\t").shape == (3, 6)


def test_embedding_errors_name_the_slide(cohort, tmp_path):
    from pathpipe.errors import StorageError
    from pathpipe.mil.embeddings import embedding_paths, read_embeddings

    tables, sheet = cohort
    emb = _write_embeddings(tmp_path, tables)
    with pytest.raises(ConfigError, match=r"no embeddings.*P02_0"):
        run_cross_validation(
            tables, sheet, params=PARAMS, embeddings={k: v for k, v in emb.items() if k != "P02_0"}
        )
    odd = dict(emb)
    np.save(tmp_path / "wide.npy", np.zeros((5, 13), np.float32))
    odd["P03_0"] = tmp_path / "wide.npy"
    with pytest.raises(ConfigError, match=r"P03_0.*13 dimensions"):
        run_cross_validation(tables, sheet, params=PARAMS, embeddings=odd)
    with pytest.raises(ConfigError, match=r"no \{slide\} placeholder"):
        embedding_paths("embeddings/x.h5", ["A"])
    with pytest.raises(ConfigError, match=r"2 embedding file.*A: .*missing/A.npy"):
        embedding_paths(str(tmp_path / "missing/{slide}.npy"), ["A", "B"])
    with pytest.raises(ConfigError, match=r"suffix '\.csv'"):
        read_embeddings("A", tmp_path / "a.csv")
    np.save(tmp_path / "bad.npy", np.full((3, 4), np.nan, np.float32))
    with pytest.raises(StorageError, match=r"slide 'A'.*12 non-finite"):
        read_embeddings("A", tmp_path / "bad.npy")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(StorageError, match="slide 'A': cannot read embeddings"):
        read_embeddings("A", tmp_path / "broken.h5")
