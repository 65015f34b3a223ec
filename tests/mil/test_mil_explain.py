"""pathpipe.mil.explain: SHAP of the AMIL log-odds at slide and tile level, importance, outputs.

Bags are generated with ``N_FEATURES`` standard-normal tile features; in a slide of
class 1 a random 30–60 % of the tiles are shifted by ``SHIFT`` in feature 0 only,
so feature 0 carries the class difference and the others are noise. Models are
tiny and run on one CPU thread (set for this module only).
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError

torch = pytest.importorskip("torch")
pytest.importorskip("shap")

from pathpipe.mil.explain import explain_cohort  # noqa: E402 - after the importorskip
from pathpipe.mil.explain_importance import shap_importance  # noqa: E402
from pathpipe.mil.explain_shap import (  # noqa: E402
    _coalition_game,
    slide_representation,
    slide_shap,
    tile_shap,
)
from pathpipe.mil.io import save_amil  # noqa: E402
from pathpipe.mil.model import GatedAttentionMIL  # noqa: E402
from pathpipe.mil.params import ExplainParams  # noqa: E402
from pathpipe.mil.train import predict_amil, train_amil  # noqa: E402

N_FEATURES, SHIFT = 6, 2.0
NAMES = [f"f{j:02d}" for j in range(N_FEATURES)]


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


def _bag(rng: np.random.Generator, k: int, positive: bool) -> np.ndarray:
    x = rng.normal(size=(k, N_FEATURES)).astype(np.float32)
    if positive:
        x[rng.choice(k, max(1, round(rng.uniform(0.3, 0.6) * k)), replace=False), 0] += SHIFT
    return x


def _cohort(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    return [_bag(rng, int(rng.integers(5, 31)), bool(y)) for y in labels], labels


def _log_odds(model, bags) -> np.ndarray:
    with torch.no_grad():
        logits, _ = model.forward_bags(
            torch.from_numpy(np.concatenate(bags)), [len(b) for b in bags]
        )
    return (logits[:, 1] - logits[:, 0]).double().numpy()


@pytest.fixture(scope="module")
def data():
    return {"train": _cohort(20, 0), "test": _cohort(8, 1)}


@pytest.fixture(scope="module")
def model(data):
    bags, labels = data["train"]
    m, _ = train_amil(bags, labels, epochs=40, lr=5e-3, seed=0, device="cpu")
    return m


@pytest.fixture(scope="module")
def explained(model, data):
    bags, _ = data["train"]
    background = np.concatenate(bags)
    values, base = slide_shap(model, bags, background=background, n_permutations=4, seed=0)
    return background, values, base


def test_module_import_is_light():
    code = (
        "import sys; import pathpipe.mil.explain; "
        "print(sorted(m for m in ('torch', 'shap', 'matplotlib') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"


# ------------------------------------------------------------------ slide level
def test_slide_shap_efficiency(model, data, explained):
    bags, _ = data["train"]
    background, values, base = explained
    assert values.shape == (len(bags), N_FEATURES) and base.shape == (len(bags),)
    b = background.mean(axis=0, dtype=np.float64).astype(np.float32)
    f_background = _log_odds(model, [np.tile(b, (len(bag), 1)) for bag in bags])
    np.testing.assert_allclose(base, f_background, atol=1e-5)
    np.testing.assert_allclose(base, base[0], atol=1e-5)  # a bag of copies pools to one tile
    np.testing.assert_allclose(values.sum(axis=1), _log_odds(model, bags) - base, atol=1e-4)


def test_informative_feature_ranks_first_with_its_direction(model, data, explained):
    bags, labels = data["train"]
    p, _ = predict_amil(model, bags)
    assert p[labels == 1].min() > p[labels == 0].max()  # the model separates the classes
    _, values, _ = explained
    table = shap_importance(values, slide_representation(model, bags), NAMES)
    print(table.to_string())
    top = table.iloc[0]
    assert top["feature"] == "f00" and top["direction"] == "+" and top["correlation"] > 0.5
    assert table["mean_abs_shap_train"].iloc[1] < 0.5 * top["mean_abs_shap_train"]


def test_slide_shap_is_exact_shapley_for_two_features():
    """With F = 2 one forward-backward pass visits both orders: the exact Shapley values."""
    with torch.random.fork_rng():
        torch.manual_seed(3)
        m = GatedAttentionMIL(2, dropout=0.0).eval()
    rng = np.random.default_rng(0)
    bag, b = rng.normal(size=(7, 2)).astype(np.float32), np.array([0.3, -0.2], np.float32)

    def v(z0: bool, z1: bool) -> float:
        return float(_log_odds(m, [np.where([z0, z1], bag, b).astype(np.float32)])[0])

    phi0 = 0.5 * ((v(1, 0) - v(0, 0)) + (v(1, 1) - v(0, 1)))
    phi1 = 0.5 * ((v(0, 1) - v(0, 0)) + (v(1, 1) - v(1, 0)))
    values, base = slide_shap(m, [bag], background=b, n_permutations=1)
    np.testing.assert_allclose(values[0], [phi0, phi1], atol=1e-5)
    assert base[0] == pytest.approx(v(0, 0), abs=1e-5)


def test_slide_representation_is_attention_weighted_mean(model, data):
    bags, _ = data["test"]
    _, attention = predict_amil(model, bags)
    rep = slide_representation(model, bags)
    np.testing.assert_allclose(rep[0], attention[0] @ bags[0], rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(slide_representation(model, [bags[1][:1]])[0], bags[1][0])


def test_deterministic_and_global_rng_untouched(model, data, explained):
    bags, _ = data["train"]
    background, values, _ = explained
    np.random.seed(123)  # noqa: NPY002 - shap uses the legacy global generator
    before = np.random.get_state()[1].copy()  # noqa: NPY002
    again, _ = slide_shap(model, bags[:3], background=background, n_permutations=4, seed=0)
    np.testing.assert_array_equal(again, values[:3])  # same seed, alone or with other slides
    assert np.array_equal(np.random.get_state()[1], before)  # noqa: NPY002
    other, _ = slide_shap(model, bags[:3], background=background, n_permutations=4, seed=1)
    np.testing.assert_allclose(other.sum(axis=1), values[:3].sum(axis=1), atol=1e-4)


# ------------------------------------------------------------------- tile level
def _single_tiles(model, tiles: np.ndarray) -> np.ndarray:
    """``f`` of each tile as a bag of one tile."""
    return _log_odds(model, list(np.asarray(tiles, np.float32)[:, None, :]))


def test_coalition_game_matches_forward_bags(model, data):
    """The incremental first layer gives what forward_bags gives, for any masks."""
    rng = np.random.default_rng(5)
    bag, b = data["test"][0][0], rng.normal(size=N_FEATURES).astype(np.float32)
    background = rng.normal(size=(9, N_FEATURES)).astype(np.float32)
    one_pass = np.zeros((2 * N_FEATURES + 1, N_FEATURES), bool)  # features on, then off
    for i, j in enumerate(rng.permutation(N_FEATURES)):
        one_pass[i + 1 : N_FEATURES + 1 + i, j] = True
    masks = np.concatenate([one_pass, rng.random((20, N_FEATURES)) < 0.5])
    slide = _coalition_game(model, torch.from_numpy(bag), torch.from_numpy(b), one_bag=True)
    expected = _log_odds(model, [np.where(z, bag, b).astype(np.float32) for z in masks])
    np.testing.assert_allclose(slide(masks.astype(float)), expected, atol=1e-5)
    tile = _coalition_game(
        model, torch.from_numpy(bag[0]), torch.from_numpy(background), one_bag=False
    )
    expected = [_single_tiles(model, np.where(z, bag[0], background)).mean() for z in masks]
    np.testing.assert_allclose(tile(masks.astype(float)), expected, atol=1e-5)


def test_tile_shap_is_shap_with_an_independent_masker(model, data):
    import shap

    tiles = data["test"][0][1][:3]
    background = np.concatenate(data["train"][0])[::7][:40]
    values, base = tile_shap(model, tiles, background=background, n_permutations=3, seed=0)
    np.testing.assert_allclose(base, _single_tiles(model, background).mean(), atol=1e-5)
    np.testing.assert_allclose(values.sum(axis=1), _single_tiles(model, tiles) - base, atol=1e-4)
    masker = shap.maskers.Independent(background, max_samples=len(background))
    for tile, v in zip(tiles, values, strict=True):
        explainer = shap.PermutationExplainer(lambda x: _single_tiles(model, x), masker, seed=0)
        reference = explainer(tile[None], max_evals=3 * (2 * N_FEATURES + 1), silent=True)
        np.testing.assert_allclose(v, reference.values[0], atol=1e-4)
    again, _ = tile_shap(model, tiles, background=background, n_permutations=3, seed=0)
    np.testing.assert_array_equal(again, values)


def test_invalid_inputs_raise(model, data):
    bags, _ = data["train"]
    with pytest.raises(ConfigError, match=r"background has shape \(3,\)"):
        slide_shap(model, bags, background=np.zeros(3))
    with pytest.raises(ConfigError, match="n_permutations=0"):
        slide_shap(model, bags, background=np.zeros(N_FEATURES), n_permutations=0)
    with pytest.raises(ConfigError, match="expected 2"):
        slide_shap(GatedAttentionMIL(N_FEATURES, n_classes=3), bags, background=np.zeros(6))
    with pytest.raises(ConfigError, match="features; expected 6"):
        tile_shap(model, np.zeros((2, 4)), background=np.zeros((5, 6)))


# ------------------------------------------------------------------ importance
def test_importance_table():
    rep = np.array([[0.0, 3.0, 1.0], [1.0, 2.0, 1.0], [2.0, 1.0, 1.0], [3.0, 0.0, 1.0]])
    values = np.array([[-2.0, -0.2, 0.0], [-1.0, -0.1, 0.0], [1.0, 0.0, 0.0], [2.0, 0.1, 0.0]])
    table = shap_importance(values, rep, ["a", "b", "c"])
    assert list(table.columns) == [
        "feature",
        "mean_abs_shap_train",
        "mean_abs_shap_test",
        "direction",
        "correlation",
        "rank",
    ]
    assert table["feature"].tolist() == ["a", "b", "c"] and table["rank"].tolist() == [1, 2, 3]
    assert table["mean_abs_shap_train"].tolist() == pytest.approx([1.5, 0.1, 0.0])
    assert table["direction"].tolist() == ["+", "-", "0"]
    assert table["correlation"].iloc[:2].tolist() == pytest.approx([1.0, -1.0])
    assert table["mean_abs_shap_test"].isna().all() and np.isnan(table["correlation"].iloc[2])
    test = shap_importance(values, rep, ["a", "b", "c"], values_test=values[:1] * 2)
    assert test.set_index("feature")["mean_abs_shap_test"].tolist() == pytest.approx([4, 0.4, 0])
    with pytest.raises(ConfigError, match="2 feature names"):
        shap_importance(values, rep, ["a", "b"])


# ------------------------------------------------------------------- path level
def _tiles(rng: np.random.Generator, k: int, positive: bool) -> pd.DataFrame:
    frame = pd.DataFrame(
        _bag(rng, k, positive).astype(np.float64) if k else np.zeros((0, 6)), columns=NAMES
    )
    frame.insert(0, "tile", np.arange(k) + 100)
    frame.insert(1, "l0_x", np.arange(k) * 256)
    frame.insert(2, "l0_y", np.zeros(k, np.int64))
    return frame


@pytest.fixture(scope="module")
def trained_dir(tmp_path_factory):
    from pathpipe.mil.crossval import run_cross_validation
    from pathpipe.mil.outputs import write_mil_outputs
    from pathpipe.mil.params import MILParams

    root = tmp_path_factory.mktemp("explain")
    rng = np.random.default_rng(0)
    rows, tables = [], {}
    for p in range(16):
        sid, positive = f"P{p:02d}", p % 2 == 1
        rows.append((sid, "tumour" if positive else "normal", sid))
        tables[sid] = root / f"{sid}.parquet"
        _tiles(rng, int(rng.integers(5, 31)), positive).to_parquet(tables[sid])
    for sid, k in (("UNLABELLED", 12), ("EMPTY", 0)):
        tables[sid] = root / f"{sid}.parquet"
        _tiles(rng, k, True).to_parquet(tables[sid])
    sheet = pd.DataFrame(rows, columns=["slide_id", "label", "patient"]).assign(split="")
    params = MILParams(
        n_folds=2, test_fraction=0.25, epochs=40, lr=5e-3, rf_n_estimators=10, seed=0, device="cpu"
    )
    labelled = {k: v for k, v in tables.items() if k in set(sheet["slide_id"])}
    write_mil_outputs(run_cross_validation(labelled, sheet, params=params), root / "mil")
    return root / "mil" / "model", tables


def test_explain_cohort_end_to_end(trained_dir, tmp_path, caplog):
    model_dir, tables = trained_dir
    config = json.loads((model_dir / "model.json").read_text())["config"]
    out = tmp_path / "shap"
    with caplog.at_level("WARNING", logger="pathpipe.mil.explain"):
        summary = explain_cohort(
            model_dir, tables, out, params=ExplainParams(n_permutations=4, n_background=50)
        )
    assert "EMPTY" in caplog.text and summary["skipped_empty"] == ["EMPTY"]
    names = (
        "shap_values.parquet",
        "shap_importance.tsv",
        "shap_families.tsv",
        "shap_tiles.tsv",
        "shap_beeswarm_train.png",
        "shap_beeswarm_test.png",
        "shap_waterfall.png",
    )
    for name in names:
        assert (out / name).stat().st_size > 0, name
    n_dev, n_test = len(config["slides"]["development"]), len(config["slides"]["test"])
    assert summary["n_slides"] == {"development": n_dev, "test": n_test, "unlabelled": 1}

    values = pd.read_parquet(out / "shap_values.parquet")
    assert values.columns[:6].tolist() == [
        "slide_id",
        "role",
        "n_tiles",
        "probability",
        "log_odds",
        "base_value",
    ]
    assert values.columns[6:].tolist() == config["features"]
    assert values.set_index("slide_id").loc["UNLABELLED", "role"] == "unlabelled"
    sums = values[config["features"]].sum(axis=1) + values["base_value"]
    np.testing.assert_allclose(sums, values["log_odds"], atol=1e-6)
    p = 1 / (1 + np.exp(-values["log_odds"]))
    np.testing.assert_allclose(p, values["probability"], atol=1e-5)
    import pyarrow.parquet as pq

    record = json.loads(pq.read_schema(out / "shap_values.parquet").metadata[b"pathpipe"])
    assert record["stage"] == "mil" and record["params"]["n_permutations"] == 4

    importance = pd.read_csv(out / "shap_importance.tsv", sep="\t")
    print(importance.to_string())
    assert importance["feature"].iloc[0] == "f00" and importance["direction"].iloc[0] == "+"
    assert importance["mean_abs_shap_test"].notna().all()

    tiles = pd.read_csv(out / "shap_tiles.tsv", sep="\t")
    assert len(tiles) == 4 and (tiles["probability"].iloc[:2] >= 0.5).all()
    assert "UNLABELLED" not in set(tiles["slide_id"])  # chosen only explicitly
    assert (tiles["probability"].iloc[2:] < 0.5).all()
    assert tiles["tile"].min() >= 100 and tiles["top_features"].str.contains("f0").all()
    assert summary["top_features"][0]["feature"] == "f00"

    explicit = explain_cohort(
        model_dir,
        tables,
        tmp_path / "explicit",
        params=ExplainParams(n_permutations=2),
        waterfall_tiles=[("UNLABELLED", 103)],
    )
    assert [(t["slide_id"], t["tile"]) for t in explicit["tiles"]] == [("UNLABELLED", 103)]
    with pytest.raises(ConfigError, match="has no tile 5"):
        explain_cohort(model_dir, tables, tmp_path / "x", waterfall_tiles=[("P01", 5)])


def test_explain_cohort_without_test_slides_notes_it(trained_dir, tmp_path):
    model_dir, tables = trained_dir
    config = json.loads((model_dir / "model.json").read_text())["config"]
    dev = {s: tables[s] for s in config["slides"]["development"]}
    summary = explain_cohort(
        model_dir, dev, tmp_path, params=ExplainParams(n_permutations=1, n_waterfall=0)
    )
    assert summary["n_slides"]["test"] == 0 and summary["tiles"] == []
    assert (tmp_path / "shap_beeswarm_test.png").is_file()
    assert (
        pd.read_csv(tmp_path / "shap_importance.tsv", sep="\t")["mean_abs_shap_test"].isna().all()
    )


def test_explain_cohort_errors(trained_dir, tmp_path):
    model_dir, tables = trained_dir
    from pathpipe.mil.io import load_amil

    _, config, pre = load_amil(model_dir)
    bare = tmp_path / "bare"
    save_amil(
        bare, load_amil(model_dir)[0], config={"classes": config["classes"]}, preprocessor=pre
    )
    with pytest.raises(ConfigError, match=r"slides=None; expected .*pathpipe mil train"):
        explain_cohort(bare, tables, tmp_path / "out")
    test_only = {s: tables[s] for s in config["slides"]["test"]}
    with pytest.raises(ConfigError, match=r"none of the \d+ development slides"):
        explain_cohort(model_dir, test_only, tmp_path / "out")
    with pytest.raises(ConfigError, match="n_waterfall=-1"):
        ExplainParams(n_waterfall=-1)


def test_feature_families_and_family_importance():
    from pathpipe.mil.explain_importance import feature_families, shap_family_importance

    names = ["area_um2_med", "area_um2_tumour_std", "glcm_contrast_h_med", "fo_mean_grey_std",
             "graph_degree_mean", "nn_dist_um_mean", "density_per_mm2", "fraction_tumour",
             "emb_3"]  # fmt: skip
    assert feature_families(names) == ["geometry", "geometry", "texture", "intensity", "graph",
                                       "neighbours", "composition", "composition", "other"]  # fmt: skip
    values = np.array([[1.0, -3.0, 0.5, 0.0], [-2.0, 1.0, 0.0, 0.5]])
    table = shap_family_importance(values, ["a", "a", "b", "b"], values_test=values[:1])
    # a: per-slide sums -2 and -1 -> mean |.| 1.5; b: 0.5 and 0.5 -> 0.5
    assert table["family"].tolist() == ["a", "b"]
    np.testing.assert_allclose(table["mean_abs_shap_train"], [1.5, 0.5])
    np.testing.assert_allclose(table["mean_abs_shap_test"], [2.0, 0.5])
    np.testing.assert_allclose(table["share_train"], [0.75, 0.25])
    assert table["n_features"].tolist() == [2, 2]
    assert shap_family_importance(values, list("aabb"))["mean_abs_shap_test"].isna().all()
    with pytest.raises(ConfigError, match="3 families"):
        shap_family_importance(values, list("abc"))
