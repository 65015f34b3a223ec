"""pathpipe.mil: patient-grouped splits, gated attention MIL, training, RF baseline, I/O.

Bags are generated: 20 standard-normal tile features; in a slide of class 1 a
random 30–60 % of the tiles ("witnesses") are shifted by +1.5 in the first 3
features, class-0 slides have no witnesses. Models are tiny and train on one
CPU thread (set for this module only), so the file runs in well under a minute.
"""

from __future__ import annotations

import json
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.mil.baseline import RandomForestBaseline
from pathpipe.mil.preprocessing import FeaturePreprocessor
from pathpipe.mil.splits import make_splits

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from pathpipe.mil.io import load_amil, save_amil  # noqa: E402 - after the importorskip
from pathpipe.mil.model import GatedAttentionMIL  # noqa: E402
from pathpipe.mil.train import predict_amil, train_amil  # noqa: E402

N_FEATURES, N_INFORMATIVE, SHIFT = 20, 3, 1.5
CPU = "cpu"  # determinism and exact round trips are checked on the CPU


def _cohort(n: int, seed: int) -> tuple[list[np.ndarray], np.ndarray, list[np.ndarray]]:
    """``n`` balanced bags of 5–40 tiles: (bags, labels, witness masks)."""
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(n) % 2)
    bags, witnesses = [], []
    for y in labels:
        k = int(rng.integers(5, 41))
        x = rng.normal(size=(k, N_FEATURES)).astype(np.float32)
        w = np.zeros(k, bool)
        if y == 1:
            w[rng.choice(k, max(1, round(rng.uniform(0.3, 0.6) * k)), replace=False)] = True
            x[w, :N_INFORMATIVE] += SHIFT
        bags.append(x)
        witnesses.append(w)
    return bags, labels, witnesses


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p))


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


@pytest.fixture(scope="module")
def data() -> dict[str, tuple]:
    return {"train": _cohort(24, 0), "val": _cohort(12, 1), "test": _cohort(40, 2)}


@pytest.fixture(scope="module")
def trained(data):
    (tb, ty, _), (vb, vy, _) = data["train"], data["val"]
    return train_amil(tb, ty, val_bags=vb, val_labels=vy, seed=0, device=CPU)


def test_splits_and_baseline_do_not_import_torch():
    code = (
        "import sys; from pathpipe.mil.splits import make_splits; "
        "from pathpipe.mil.baseline import RandomForestBaseline; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"


# ------------------------------------------------------------------ splits
def _sheet(seed: int = 0) -> pd.DataFrame:
    """30 slides of 20 patients (some with 2–3 slides), 10 patients per class."""
    rng = np.random.default_rng(seed)
    rows = []
    for p in range(20):
        label = "high" if p % 2 else "low"
        for s in range(1 + (p % 5 == 0) + (p % 7 == 0) + (p % 3 == 0)):
            rows.append({"slide_id": f"P{p:02d}_{s}", "label": label, "patient": f"P{p:02d}"})
    sheet = pd.DataFrame(rows)
    sheet["split"] = ""
    return sheet.sample(frac=1.0, random_state=int(rng.integers(1000))).reset_index(drop=True)


def _patients(sheet: pd.DataFrame, ids: list[str]) -> set[str]:
    return set(sheet.set_index("slide_id").loc[ids, "patient"])


def test_splits_grouped_by_patient_and_stratified():
    sheet = _sheet()
    sp = make_splits(sheet, n_folds=3, test_fraction=0.2, seed=0)
    assert sp.test_source == "sampled" and sp.n_folds == 3 and sp.classes == ("high", "low")
    assert sp.table["slide_id"].tolist() == sheet["slide_id"].tolist()
    test_p = _patients(sheet, sp.test)
    assert len(test_p) == 4  # round(0.2 * 10) patients of each class
    assert set(sheet.loc[sheet["patient"].isin(test_p), "label"]) == {"high", "low"}
    assert not test_p & _patients(sheet, sp.development)
    validated = []
    for train, val in sp.folds:
        assert not _patients(sheet, train) & _patients(sheet, val)
        assert not test_p & (_patients(sheet, train) | _patients(sheet, val))
        assert set(sheet.set_index("slide_id").loc[val, "label"]) == {"high", "low"}
        validated += val
    assert sorted(validated) == sorted(sp.development)  # each slide validated exactly once
    assert (sp.table.loc[sp.table["test"], "fold"] == -1).all()


def test_splits_deterministic_and_seeded():
    a = make_splits(_sheet(), n_folds=3, seed=1)
    b = make_splits(_sheet(), n_folds=3, seed=1)
    c = make_splits(_sheet(), n_folds=3, seed=2)
    pd.testing.assert_frame_equal(a.table, b.table)
    assert not a.table[["test", "fold"]].equals(c.table[["test", "fold"]])


def test_splits_honour_sheet_split():
    sheet = _sheet()
    chosen = ["P00", "P01", "P02", "P03"]
    sheet.loc[sheet["patient"].isin(chosen), "split"] = "test"
    sp = make_splits(sheet, n_folds=3, seed=0)
    assert sp.test_source == "sheet"
    assert _patients(sheet, sp.test) == set(chosen)

    sheet = _sheet()
    sheet.loc[sheet["patient"].isin(["P04", "P05"]), "split"] = "val"
    sp = make_splits(sheet, n_folds=3, test_fraction=0.2, seed=0)
    assert sp.n_folds == 1
    train, val = sp.fold(0)
    assert _patients(sheet, val) == {"P04", "P05"}
    assert not _patients(sheet, sp.test) & {"P04", "P05"}  # sheet-assigned patients not drawn
    assert len(train) + len(val) + len(sp.test) == len(sheet)


def test_splits_patient_without_id_is_its_own_patient():
    sheet = _sheet().drop(columns=["patient", "split"])
    sp = make_splits(sheet, n_folds=3, seed=0)
    assert sp.table["patient"].tolist() == sheet["slide_id"].tolist()


def test_splits_errors():
    sheet = _sheet()
    p0 = sheet.index[sheet["patient"] == "P00"]
    sheet.loc[p0[0], "split"] = "train"
    sheet.loc[p0[1:], "split"] = "test"
    with pytest.raises(ConfigError, match=r"patient.*'P00'.*\['test', 'train'\]"):
        make_splits(sheet)
    few = _sheet()
    few = few[~few["patient"].isin([f"P{p:02d}" for p in range(1, 20, 2)][3:])]  # 3 'high'
    with pytest.raises(ConfigError, match=r"class 'high' has 3 patient\(s\).*n_folds=5"):
        make_splits(few, n_folds=5, test_fraction=0.0)
    with pytest.raises(ConfigError, match="expected at least two classes"):
        make_splits(_sheet().assign(label="low"))
    with pytest.raises(ConfigError, match="split column holds"):
        make_splits(_sheet().assign(split="holdout"))
    with pytest.raises(ConfigError, match="no label"):
        make_splits(_sheet().assign(label=None))
    with pytest.raises(ConfigError, match="n_folds=1"):
        make_splits(_sheet(), n_folds=1)
    with pytest.raises(ConfigError, match="test_fraction"):
        make_splits(_sheet(), test_fraction=1.0)


# ------------------------------------------------------------------- model
def test_model_shapes_attention_and_single_tile():
    torch.manual_seed(0)
    model = GatedAttentionMIL(N_FEATURES, n_classes=3)
    assert model.config == {"n_features": 20, "hidden": [10, 8], "dropout": 0.25, "n_classes": 3}
    bags = [torch.randn(k, N_FEATURES) for k in (7, 1, 12)]
    for mode in (model.train, model.eval):
        mode()
        for bag in bags:
            with torch.no_grad():
                logits, attention = model(bag)
            assert logits.shape == (3,) and attention.shape == (bag.shape[0],)
            assert float(attention.sum()) == pytest.approx(1.0, abs=1e-6)
            assert (attention >= 0).all()
    # A single-tile training pass uses the running statistics and leaves them alone.
    model.train()
    before = model.encoder[2].running_mean.clone()
    with torch.no_grad():
        model(bags[1])
    assert torch.equal(model.encoder[2].running_mean, before)
    # In eval mode, batching bags gives the same result as one bag at a time.
    model.eval()
    with torch.no_grad():
        logits, attention = model.forward_bags(torch.cat(bags), [7, 1, 12])
        for i, bag in enumerate(bags):
            torch.testing.assert_close(logits[i], model(bag)[0])
    assert attention.shape == (20,)


def test_model_rejects_bad_input():
    model = GatedAttentionMIL(N_FEATURES)
    with pytest.raises(ConfigError, match=r"expected \(tiles, 20\)"):
        model(torch.randn(4, 5))
    with pytest.raises(ConfigError, match="empty bag"):
        model(torch.zeros(0, N_FEATURES))
    with pytest.raises(ConfigError, match="n_classes"):
        GatedAttentionMIL(N_FEATURES, n_classes=1)
    with pytest.raises(ConfigError, match="hidden"):
        GatedAttentionMIL(N_FEATURES, hidden=[])


# ---------------------------------------------------------------- training
def test_training_classifies_held_out_bags(data, trained):
    model, history = trained
    bags, labels, _ = data["test"]
    proba, attention = predict_amil(model, bags)
    assert proba.shape == (40,) and len(attention) == 40
    auc = _auc(labels, proba)
    print(f"AMIL held-out AUC {auc:.3f} (best epoch {history.best_epoch})")
    assert auc >= 0.9
    assert history.best_val_auc is not None and history.best_val_auc >= 0.9
    assert history.class_weight == [1.0, 1.0]


def test_attention_prefers_informative_tiles(data, trained):
    model, _ = trained
    bags, labels, witnesses = data["test"]
    _, attention = predict_amil(model, bags)
    for a in attention:
        assert float(a.sum()) == pytest.approx(1.0, abs=1e-5)
    positive = [
        (a, w) for a, w, y in zip(attention, witnesses, labels, strict=True) if y and not w.all()
    ]
    ratio = np.mean([a[w].mean() / a[~w].mean() for a, w in positive])
    rank_auc = np.mean([_auc(w, a) for a, w in positive])
    print(f"attention on witness tiles: {ratio:.2f}x the others, rank AUC {rank_auc:.3f}")
    # Training seeds 0-4 give ratios 1.75-4.9 and rank AUCs 0.74-0.84 (chance: 1 and 0.5).
    assert ratio > 1.5
    assert rank_auc > 0.65


def test_shuffled_labels_are_near_chance(data):
    (tb, ty, _), (hb, hy, _) = data["train"], data["test"]
    aucs = []
    for seed in range(6):
        # Shuffled labels independent of the truth: half of each true class gets label 1.
        rng = np.random.default_rng(seed)
        shuffled = np.empty_like(ty)
        for c in (0, 1):
            idx = rng.permutation(np.flatnonzero(ty == c))
            shuffled[idx] = np.arange(len(idx)) % 2
        model, _ = train_amil(tb, shuffled, epochs=40, seed=seed, device=CPU)
        aucs.append(_auc(hy, predict_amil(model, hb)[0]))
    print(f"shuffled-label AUCs {np.round(aucs, 3).tolist()}")
    assert 0.25 < np.mean(aucs) < 0.75


def test_early_stopping_restores_best_epoch(data):
    (tb, ty, _), (vb, vy, _) = data["train"], data["val"]
    model, history = train_amil(
        tb, ty, val_bags=vb, val_labels=vy, epochs=60, patience=3, lr=1e-2, seed=0, device=CPU
    )
    assert history.stopped_early
    assert len(history.epochs) == history.best_epoch + 3 < 60
    best = history.epochs[history.best_epoch - 1]
    assert best["val_auc"] == history.best_val_auc
    assert all(
        e["val_auc"] < best["val_auc"]
        or (e["val_auc"] == best["val_auc"] and e["val_loss"] >= best["val_loss"])
        for e in history.epochs
    )
    proba, _ = predict_amil(model, vb)
    assert _auc(vy, proba) == best["val_auc"]
    loss = -np.mean(np.log(np.where(vy == 1, proba, 1 - proba)))
    assert loss == pytest.approx(best["val_loss"], rel=1e-4)
    assert history.epochs[-1]["val_loss"] != pytest.approx(best["val_loss"], rel=1e-4)


def test_training_is_deterministic(data):
    tb, ty, _ = data["train"]
    a, ha = train_amil(tb, ty, epochs=5, seed=3, device=CPU)
    b, hb = train_amil(tb, ty, epochs=5, seed=3, device=CPU)
    c, _ = train_amil(tb, ty, epochs=5, seed=4, device=CPU)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)
    assert [e["loss"] for e in ha.epochs] == [e["loss"] for e in hb.epochs]
    assert not all(torch.equal(sa[k], sc[k]) for k in sa)


def test_empty_bag_is_a_clear_error(data):
    tb, ty, _ = data["train"]
    bags = [*tb[:2], np.zeros((0, N_FEATURES), np.float32), *tb[3:]]
    with pytest.raises(ConfigError, match=r"bags\[2\] \(slide index 2\).*all tiles filtered out"):
        train_amil(bags, ty, epochs=1)
    model = GatedAttentionMIL(N_FEATURES)
    with pytest.raises(ConfigError, match=r"slide index 2.*all tiles filtered out"):
        predict_amil(model, bags)
    with pytest.raises(ConfigError, match=r"slide index 2.*all tiles filtered out"):
        RandomForestBaseline(n_estimators=5).fit(bags, ty)
    with pytest.raises(ConfigError, match=r"expected \(24,\)"):
        train_amil(tb, ty[:-1], epochs=1)
    with pytest.raises(ConfigError, match="only class 0"):
        train_amil(tb, ty, val_bags=tb[:2], val_labels=[0, 0], epochs=1)


# ---------------------------------------------------------------- baseline
def test_random_forest_baseline(data):
    (tb, ty, _), (hb, hy, _) = data["train"], data["test"]
    rf = RandomForestBaseline(n_estimators=100).fit(tb, ty, seed=0)
    proba = rf.predict(hb)
    assert proba.shape == (40,) and ((proba >= 0) & (proba <= 1)).all()
    auc = _auc(hy, proba)
    print(f"RF baseline held-out AUC {auc:.3f}")
    assert auc >= 0.9
    again = RandomForestBaseline(n_estimators=100).fit(tb, ty, seed=0).predict(hb)
    np.testing.assert_array_equal(proba, again)


# --------------------------------------------------------------------- I/O
def test_save_load_round_trip(tmp_path, data, trained):
    model, history = trained
    bags, _, _ = data["test"]
    columns = [f"f{j}" for j in range(N_FEATURES)]
    tiles = pd.DataFrame(np.concatenate(data["train"][0]), columns=columns)
    pre = FeaturePreprocessor().fit(tiles)
    config = {"classes": ["low", "high"], "seed": 0, "history": history.to_dict()}
    save_amil(tmp_path / "amil", model, config=config, preprocessor=pre)
    assert sorted(p.name for p in (tmp_path / "amil").iterdir()) == [
        "model.json",
        "model.safetensors",
        "preprocessing.json",
    ]
    loaded, cfg, pre2 = load_amil(tmp_path / "amil")
    assert cfg == json.loads(json.dumps(config))
    assert pre2 is not None and pre2.features == pre.features
    np.testing.assert_array_equal(pre2.transform(tiles), pre.transform(tiles))
    p1, a1 = predict_amil(model, bags)
    p2, a2 = predict_amil(loaded, bags)
    np.testing.assert_array_equal(p1, p2)
    for x, y in zip(a1, a2, strict=True):
        np.testing.assert_array_equal(x, y)

    save_amil(tmp_path / "bare", model, config={})
    assert load_amil(tmp_path / "bare")[2] is None


def test_load_errors(tmp_path, trained):
    model, _ = trained
    with pytest.raises(StorageError, match=r"lacks model\.safetensors, model\.json"):
        load_amil(tmp_path / "nothing")
    root = save_amil(tmp_path / "m", model, config={})
    meta = json.loads((root / "model.json").read_text())
    meta["architecture"]["hidden"] = [12, 8]
    (root / "model.json").write_text(json.dumps(meta))
    with pytest.raises(StorageError, match="do not fit the architecture"):
        load_amil(root)
    (root / "model.json").write_text(json.dumps({"format": "pathpipe-segmentation"}))
    with pytest.raises(StorageError, match="expected 'pathpipe-amil'"):
        load_amil(root)
    (root / "model.json").write_text(json.dumps({**meta, "format_version": 2}))
    with pytest.raises(StorageError, match="format_version 2; expected 1"):
        load_amil(root)


def test_interrupted_save_leaves_a_folder_that_is_refused(tmp_path, trained, data):
    """The model folder's JSON is removed first and written last (pathpipe.io.model_folder)."""
    model, _ = trained
    tiles = pd.DataFrame(np.concatenate(data["train"][0]))
    tiles.columns = [f"f{j}" for j in range(N_FEATURES)]

    class FullDisk(FeaturePreprocessor):
        def save(self, path):
            raise OSError("no space left on device")

    root = save_amil(tmp_path / "m", model, config={"run": 1})
    (root / "notes.txt").write_text("mine")
    broken = FullDisk().fit(tiles)
    with pytest.raises(OSError, match="no space"):
        save_amil(root, model, config={"run": 2}, preprocessor=broken)
    with pytest.raises(StorageError, match=r"lacks model\.json"):
        load_amil(root)
    assert (root / "notes.txt").read_text() == "mine"  # other files are left alone
    save_amil(root, model, config={"run": 3})
    assert load_amil(root)[1] == {"run": 3}


@pytest.mark.gpu
def test_cuda_training_prediction_and_explanation(data, tmp_path):
    """AMIL on the GPU: trains, classifies as well as on the CPU, saves, loads, explains."""
    from pathpipe.mil.explain_shap import slide_shap

    (tb, ty, _), (vb, vy, _) = data["train"], data["val"]
    model, history = train_amil(tb, ty, val_bags=vb, val_labels=vy, seed=0, device="cuda")
    assert history.device.startswith("cuda")
    assert next(model.parameters()).is_cuda
    bags, labels, _ = data["test"]
    proba, _ = predict_amil(model, bags)
    assert _auc(labels, proba) >= 0.9
    save_amil(tmp_path / "m", model, config={"classes": [0, 1]})
    loaded, _, _ = load_amil(tmp_path / "m", device="cuda")
    np.testing.assert_allclose(predict_amil(loaded, bags)[0], proba, atol=1e-5)
    values, base = slide_shap(loaded, bags[:3], background=np.concatenate(tb), n_permutations=2)
    assert values.shape == (3, N_FEATURES) and np.isfinite(values).all() and np.isfinite(base).all()
