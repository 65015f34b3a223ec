"""AMIL validation AUC on shuffled labels: early stopping on the validation folds vs inner slides.

The cohort of ``tests/mil/test_mil_cohort.py`` (20 patients, 4 of them with 2
slides, plus a 1-tile slide and an empty one; 5–40 tiles of 20 standard-normal
features per slide; in class-1 slides 30–60 % of the tiles shifted by +1.5 in
the first 3 features), with its labels shuffled within class per patient
(half of each true class gets each label, so the labels carry no signal), is
cross-validated by :func:`pathpipe.mil.cohort.run_cross_validation` with the
parameters of that test (3 folds, 30 epochs, patience 8, learning rate 5e-3,
RF of 10 trees, CPU) for seeds ``0 .. n - 1`` (the seed draws the shuffle, the
splits and the models), once per ``early_stopping`` mode:

* ``validation`` — AMIL stops on the fold's validation slides (CellFiNet), so
  its validation AUC is that of the epoch chosen on those very slides;
* ``inner`` (default) — AMIL stops on held-out training patients.

With no signal, an unbiased validation AUC averages 0.5. The RF has no early
stopping and is the control. Prints per-seed Table 1 validation AUC means and
their mean / range, and writes ``benchmarks/out/mil_shuffled.json``.

    .venv/bin/python benchmarks/bench_mil_shuffled.py             # 10 seeds
    .venv/bin/python benchmarks/bench_mil_shuffled.py --seeds 4
"""

from __future__ import annotations

import argparse
import json
import logging
import platform
import time
from pathlib import Path

import numpy as np
import pandas as pd

OUT = Path(__file__).resolve().parent / "out"
N_FEATURES, N_INFORMATIVE, SHIFT = 20, 3, 1.5


def write_cohort(root: Path, seed: int = 0) -> tuple[dict[str, str], pd.DataFrame]:
    """The cohort of tests/mil/test_mil_cohort.py (same generator, same seed)."""
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
        x = rng.normal(size=(k, N_FEATURES))
        if positive and k:
            w = rng.choice(k, max(1, round(rng.uniform(0.3, 0.6) * k)), replace=False)
            x[w, :N_INFORMATIVE] += SHIFT
        frame = pd.DataFrame(x, columns=[f"f{j:02d}" for j in range(N_FEATURES)])
        frame.insert(0, "tile", np.arange(k))
        frame.insert(1, "l0_x", np.arange(k) * 256)
        frame.insert(2, "l0_y", np.zeros(k, np.int64))
        path = root / f"{sid}.parquet"
        frame.to_parquet(path)
        tables[sid] = str(path)
    sheet = pd.DataFrame([r[:3] for r in rows], columns=["slide_id", "label", "patient"])
    return tables, sheet.assign(split="")


def shuffle_within_class(sheet: pd.DataFrame, seed: int) -> pd.DataFrame:
    """Per patient, half of each true class gets each label (independent of the truth)."""
    rng = np.random.default_rng(seed)
    per_patient = sheet.groupby("patient")["label"].first()
    new = {}
    for lab in ("normal", "tumour"):
        patients = rng.permutation(per_patient.index[per_patient == lab].to_numpy())
        for i, p in enumerate(patients):
            new[p] = ("normal", "tumour")[i % 2]
    return sheet.assign(label=sheet["patient"].map(new))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seeds", type=int, default=10, help="seeds 0 .. n-1")
    ap.add_argument("--threads", type=int, default=1, help="torch threads")
    args = ap.parse_args()

    import torch

    from pathpipe.mil.crossval import AMIL_METHOD, RF_METHOD, run_cross_validation
    from pathpipe.mil.params import MILParams

    torch.set_num_threads(args.threads)
    logging.getLogger("pathpipe.mil.cohort").setLevel(logging.ERROR)  # the 0/1-tile slides
    root = OUT / "mil_shuffled"
    root.mkdir(parents=True, exist_ok=True)
    tables, sheet = write_cohort(root)
    base = MILParams(
        n_folds=3, epochs=30, patience=8, lr=5e-3, rf_n_estimators=10, seed=0, device="cpu"
    )
    modes = ("validation", "inner")
    runs = []
    t0 = time.perf_counter()
    for seed in range(args.seeds):
        shuffled = shuffle_within_class(sheet, seed)
        for mode in modes:
            params = MILParams(**{**base.to_dict(), "seed": seed, "early_stopping": mode})
            t1 = run_cross_validation(tables, shuffled, params=params).table1.set_index("method")
            runs.append(
                {
                    "seed": seed,
                    "early_stopping": mode,
                    "amil_val_auc": float(t1.loc[AMIL_METHOD, "val_auc_mean"]),
                    "rf_val_auc": float(t1.loc[RF_METHOD, "val_auc_mean"]),
                }
            )
            r = runs[-1]
            print(
                f"seed {seed} {mode:10s} AMIL {r['amil_val_auc']:.3f}  RF {r['rf_val_auc']:.3f}"
                f"  ({time.perf_counter() - t0:.0f} s)",
                flush=True,
            )
    summary = {}
    print(f"\nshuffled labels, {args.seeds} seeds: validation AUC mean over folds")
    for mode in modes:
        for key, name in (("amil_val_auc", "AMIL"), ("rf_val_auc", "RF")):
            v = np.array([r[key] for r in runs if r["early_stopping"] == mode])
            summary[f"{mode}/{name}"] = {
                "mean": float(v.mean()),
                "min": float(v.min()),
                "max": float(v.max()),
            }
            print(
                f"  early_stopping={mode:10s} {name:4s} mean {v.mean():.2f} "
                f"(range {v.min():.2f}-{v.max():.2f})"
            )
    OUT.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": f"{platform.processor() or platform.machine()}, "
        f"Python {platform.python_version()}, torch {torch.__version__}, "
        f"{args.threads} torch thread(s)",
        "seconds": round(time.perf_counter() - t0, 1),
        "runs": runs,
        "summary": summary,
    }
    (OUT / "mil_shuffled.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    main()
