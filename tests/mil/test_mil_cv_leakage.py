"""pathpipe.mil.cohort: no validation or test slide leaks into a fold's preprocessing.

Each fold's feature preprocessing (and the standardisation of tile embeddings)
must be the one fitted on that fold's training slides alone, and the final
model's the one fitted on the development slides alone. The cohort is built so
that this is visible in every statistic: each slide has its own offset in
every feature (a slide-level batch effect), so any extra slide moves the
medians, means and standard deviations; one feature is mostly undefined on a
few slides (imputed with the training median).
Models are tiny and train for 2 epochs: only the preprocessing is checked.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from pathpipe.mil.crossval import run_cross_validation  # noqa: E402
from pathpipe.mil.params import MILParams  # noqa: E402
from pathpipe.mil.preprocessing import FeaturePreprocessor  # noqa: E402

N_FEATURES, N_EMB = 8, 5
PARAMS = MILParams(
    n_folds=3, epochs=2, patience=1, max_tiles=10, rf_n_estimators=5, seed=0, device="cpu"
)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """18 patients (3 with two slides), 6–20 tiles per slide, slide-level offsets."""
    root = tmp_path_factory.mktemp("leak")
    rng = np.random.default_rng(11)
    rows, tables, embeddings = [], {}, {}
    for p in range(18):
        label = ("normal", "tumour")[p % 2]
        for s in range(1 + (p % 6 == 0)):
            sid = f"P{p:02d}_{s}"
            k = int(rng.integers(6, 21))
            x = rng.normal(size=(k, N_FEATURES)) * rng.uniform(0.5, 2.0, N_FEATURES)
            x += rng.normal(0, 2, N_FEATURES) + 0.8 * (label == "tumour")
            if p % 5 == 1:  # feature f07 mostly undefined on these slides
                x[: max(1, round(0.9 * k)), 7] = np.nan
            frame = pd.DataFrame(x, columns=[f"f{j:02d}" for j in range(N_FEATURES)])
            frame.insert(0, "tile", np.arange(k))
            frame.insert(1, "l0_x", np.arange(k) * 256)
            frame.insert(2, "l0_y", np.zeros(k, np.int64))
            tables[sid] = root / f"{sid}.parquet"
            frame.to_parquet(tables[sid])
            emb = rng.normal(rng.normal(0, 3, N_EMB), rng.uniform(0.5, 3, N_EMB), (k, N_EMB))
            embeddings[sid] = root / f"{sid}.npy"
            np.save(embeddings[sid], emb.astype(np.float32))
            rows.append((sid, label, f"P{p:02d}"))
    sheet = pd.DataFrame(rows, columns=["slide_id", "label", "patient"])
    return tables, embeddings, sheet


@pytest.fixture(scope="module")
def result(cohort):
    tables, embeddings, sheet = cohort
    return run_cross_validation(tables, sheet, params=PARAMS, embeddings=embeddings)


def _refit(frames: dict[str, pd.DataFrame], slides: list[str], like: FeaturePreprocessor):
    """A preprocessor with ``like``'s thresholds fitted on ``slides`` alone."""
    columns = like.input_features
    fresh = FeaturePreprocessor(params=like.params)
    return fresh.fit(pd.concat([frames[s][columns] for s in slides], ignore_index=True), columns)


def _same(a: FeaturePreprocessor, b: FeaturePreprocessor) -> bool:
    return (
        a.input_features == b.input_features
        and a.features == b.features
        and a.dropped == b.dropped
        and all(
            getattr(a, k).shape == getattr(b, k).shape
            and np.allclose(getattr(a, k), getattr(b, k), rtol=1e-12, atol=0)
            for k in ("median", "mean", "std")
        )
    )


def _frames(cohort) -> dict[str, dict[str, pd.DataFrame]]:
    tables, embeddings, _ = cohort
    return {
        "features": {s: pd.read_parquet(p) for s, p in tables.items()},
        "embeddings": {
            s: pd.DataFrame(np.load(p), columns=[f"emb_{j}" for j in range(N_EMB)])
            for s, p in embeddings.items()
        },
    }


def test_each_fold_preprocessing_is_fitted_on_its_training_slides_only(result, cohort):
    frames = _frames(cohort)
    dev, test = result.slides["development"], result.slides["test"]
    assert test and len(result.fold_preprocessors) == len(result.folds) == PARAMS.n_folds
    roles = result.predictions.drop_duplicates("slide_id").set_index("slide_id")["role"]
    for fold, pres in zip(result.folds, result.fold_preprocessors, strict=True):
        val = set(roles.index[roles == f"fold {fold['fold']}"])
        train = [s for s in dev if s not in val]
        assert val and len(train) == fold["n_train"] and len(val) == fold["n_val"]
        assert set(pres) == {"features", "embeddings"}
        for source, pre in pres.items():
            own = _refit(frames[source], train, pre)
            assert _same(pre, own), (fold["fold"], source)
            # the check can tell: adding the fold's validation and the test slides changes it
            leaky = _refit(frames[source], [*train, *val, *test], pre)
            assert not _same(pre, leaky), (fold["fold"], source)
        assert pres["features"].summary() == fold["preprocessing"]


def test_final_preprocessing_is_fitted_on_the_development_slides_only(result, cohort):
    frames = _frames(cohort)
    dev, test = result.slides["development"], result.slides["test"]
    for source, pre in (
        ("features", result.preprocessor),
        ("embeddings", result.embedding_preprocessor),
    ):
        assert _same(pre, _refit(frames[source], dev, pre)), source
        assert not _same(pre, _refit(frames[source], [*dev, *test], pre)), source
