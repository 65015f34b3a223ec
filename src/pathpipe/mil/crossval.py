"""Cross-validation of the cohort MIL experiment: folds, final models, Table 1.

After CellFiNet (MICCAI 2023
workshops, Table 1): gated attention MIL (AMIL) on preprocessed tile features
against a tile-level random forest (RF), both scored by slide-level ROC AUC.

Protocol of :func:`run_cross_validation`:

1. :func:`~pathpipe.mil.bags.load_bags` reads one ``tile_features.parquet`` per slide (one row per
   tile: ``tile``, ``l0_x``, ``l0_y`` and numeric feature columns); slides
   whose table has no tiles are excluded with a warning.
2. :func:`~pathpipe.mil.splits.make_splits` draws the patient-grouped test set
   and validation folds.
3. For each fold ``k``: a :class:`~pathpipe.mil.preprocessing.FeaturePreprocessor`
   is fitted on the tiles of the fold's *training* slides only and applied to
   every slide; AMIL is trained on the training slides minus a held-out,
   patient-grouped ``inner_fraction`` of them, on which it stops early
   (:func:`~pathpipe.mil.splits.inner_split`, :func:`~pathpipe.mil.train.train_amil`;
   ``early_stopping="validation"`` stops on the fold's validation slides
   instead, as CellFiNet did); the RF
   (:class:`~pathpipe.mil.baseline.RandomForestBaseline`, all tiles of each
   training slide) is fitted on the same preprocessed features. With
   user-provided tile embeddings, a second AMIL ("conventional AMIL",
   :data:`EMBEDDING_METHOD`) is trained the same way on them, standardised
   per fold. Training and validation ROC AUC are recorded per method.
4. Final models: preprocessing fitted on all development (non-test) slides;
   each AMIL trained on them for ``E = round(median_k best_epoch_k)`` epochs
   without early stopping; RF likewise; ROC AUC on the test slides (NaN with a
   note when there is no test split or it holds one class).

Table 1 reports, per method, the mean and sample standard deviation
(``ddof=1``; NaN with a single fold) of the fold AUCs, and the test AUC.
With ``early_stopping="validation"`` the AMIL validation AUC is that of the
epoch chosen *on* the validation slides, so it is optimistic on small cohorts
(with labels shuffled within class, 10 seeds of the generated test cohort give
0.44-0.91, mean 0.69, where the RF gives mean 0.47); the default ``"inner"``
has no such bias, nor has the test AUC.
Predictions are out-of-fold for development slides (the fold model that
validated the slide) and from the final model for test slides.

Only binary labels are supported: probabilities are those of the second class
in sorted order (``classes[1]``).
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.bags import feature_columns, load_bags
from pathpipe.mil.params import MILParams

__all__ = [
    "AMIL_METHOD",
    "EMBEDDING_METHOD",
    "RF_METHOD",
    "MILResult",
    "run_cross_validation",
]

log = logging.getLogger(__name__)

#: Method names of Table 1 (as in CellFiNet's Table 1).
AMIL_METHOD = "AMIL (CellFiNet features)"
RF_METHOD = "Random forest (tile features)"
EMBEDDING_METHOD = "AMIL (tile embeddings)"


@dataclass(eq=False)
class MILResult:
    """Everything :func:`run_cross_validation` measured and trained.

    Attributes
    ----------
    table1 : pandas.DataFrame
        One row per method: ``method``, ``train_auc_mean``, ``train_auc_std``,
        ``val_auc_mean``, ``val_auc_std``, ``test_auc``.
    predictions : pandas.DataFrame
        One row per slide and method: ``slide_id``, ``patient``, ``label``,
        ``role`` (``"test"`` or ``"fold k"``), ``method``, ``probability``
        (of ``classes[1]``).
    model : GatedAttentionMIL
        Final AMIL model (trained on all development slides).
    preprocessor : FeaturePreprocessor
        Preprocessing of the final model.
    rf : RandomForestBaseline
        Final random forest (kept in memory only; not saved).
    classes : list
        Sorted labels; ``classes[1]`` is the positive class.
    feature_columns : list of str
        Feature columns of the tile tables (before preprocessing).
    params : MILParams
    folds : list of dict
        Per fold: ``fold``, ``n_train``, ``n_val``, AUCs per method,
        ``preprocessing`` summary and the AMIL ``history``.
    best_epochs : list of int
        Best AMIL epoch of each fold.
    final_epochs : int
        Epochs of the final AMIL model.
    roc : dict
        ``roc[method][part]`` with part ``"out_of_fold"`` or ``"test"``:
        ``{"fpr": [...], "tpr": [...], "auc": float}`` (absent when undefined).
    excluded : list of str
        Slides excluded because they have no tiles.
    notes : list of str
    slides : dict
        ``{"development": [...], "test": [...]}``: slide ids the final model was
        trained on and those it was tested on.
    embedding_model, embedding_preprocessor : optional
        Final AMIL on tile embeddings and its preprocessing, when embeddings
        were given.
    fold_preprocessors : list of dict
        Per fold, the preprocessing fitted on its training slides, by source
        (``"features"``, and ``"embeddings"`` when given); kept in memory only.
    """

    table1: Any
    predictions: Any
    model: Any
    preprocessor: Any
    rf: Any
    classes: list[Any]
    feature_columns: list[str]
    params: MILParams
    folds: list[dict[str, Any]] = field(default_factory=list)
    best_epochs: list[int] = field(default_factory=list)
    final_epochs: int = 0
    roc: dict[str, dict[str, dict[str, Any]]] = field(default_factory=dict)
    excluded: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    slides: dict[str, list[str]] = field(default_factory=dict)
    embedding_model: Any = None
    embedding_preprocessor: Any = None
    fold_preprocessors: list[dict[str, Any]] = field(default_factory=list)


# ------------------------------------------------------------------ experiment
def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if len(np.unique(y)) < 2:
        return math.nan
    return float(roc_auc_score(y, p))


@dataclass(frozen=True)
class _Source:
    """One tile representation: the tables of its slides and how to preprocess them.

    ``features`` is CellFiNet's tile features (filtered and standardised with the
    thresholds ``MILParams.preprocessing``); ``embeddings`` is the
    user's tile embeddings (standardised only: no filter drops a dimension of a
    learned embedding, except a constant one).
    """

    name: str
    frames: dict[str, Any]
    columns: list[str]
    methods: tuple[str, ...]

    def fit_preprocessor(self, params: MILParams, slide_ids: list[str]) -> Any:
        import pandas as pd

        from pathpipe.mil.preprocessing import FeaturePreprocessor, PreprocessingParams

        if self.name == "features":
            pre = FeaturePreprocessor(params.preprocessing)
        else:
            pre = FeaturePreprocessor(
                PreprocessingParams(
                    max_nan_fraction=0.0, min_std=params.preprocessing.min_std,
                    max_mode_fraction=1.0, max_correlation=1.0,
                )
            )  # fmt: skip
        table = pd.concat([self.frames[s][self.columns] for s in slide_ids], ignore_index=True)
        return pre.fit(table, self.columns)

    def bags(self, pre: Any, slide_ids: list[str]) -> list[np.ndarray]:
        return [pre.transform(self.frames[s]) for s in slide_ids]


@dataclass
class _Fitted:
    """The models of one source trained on one set of slides."""

    source: _Source
    preprocessor: Any
    amil: Any
    history: Any
    rf: Any = None

    def predict(self, slide_ids: list[str]) -> dict[str, np.ndarray]:
        from pathpipe.mil.train import predict_amil

        bags = self.source.bags(self.preprocessor, slide_ids)
        out = {self.source.methods[0]: predict_amil(self.amil, bags)[0]}
        if self.rf is not None:
            out[self.source.methods[1]] = self.rf.predict(bags)
        return out


def _fit(
    params: MILParams,
    source: _Source,
    y_of: Mapping[str, int],
    train_ids: list[str],
    *,
    stop_ids: list[str] | None,
    epochs: int,
) -> _Fitted:
    """Preprocessing and models fitted on ``train_ids``.

    AMIL is trained on the training slides not in ``stop_ids`` and stops early
    on ``stop_ids`` (all ``epochs`` run when None); the RF (features only) uses
    every training slide.
    """
    from pathpipe.mil.baseline import RandomForestBaseline
    from pathpipe.mil.train import train_amil

    pre = source.fit_preprocessor(params, train_ids)
    stop = set(stop_ids or ())
    fit_ids = [s for s in train_ids if s not in stop]

    def ys(ids: list[str]) -> np.ndarray:
        return np.array([y_of[s] for s in ids], np.int64)

    model, history = train_amil(
        source.bags(pre, fit_ids),
        ys(fit_ids),
        val_bags=source.bags(pre, stop_ids) if stop_ids else None,
        val_labels=ys(stop_ids) if stop_ids else None,
        max_tiles=params.max_tiles,
        epochs=epochs,
        lr=params.lr,
        weight_decay=params.weight_decay,
        patience=params.patience,
        seed=params.seed,
        device=params.device,
        batch_size=params.batch_size,
        dropout=params.dropout,
        n_classes=2,
    )
    rf = None
    if len(source.methods) > 1:
        rf = RandomForestBaseline(n_estimators=params.rf_n_estimators).fit(
            source.bags(pre, train_ids), ys(train_ids), seed=params.seed
        )
    return _Fitted(source, pre, model, history, rf)


def _roc(y: np.ndarray, p: np.ndarray) -> dict[str, Any] | None:
    from sklearn.metrics import roc_curve

    if len(y) == 0 or len(np.unique(y)) < 2:
        return None
    fpr, tpr, _ = roc_curve(y, p)
    return {"fpr": fpr.tolist(), "tpr": tpr.tolist(), "auc": _auc(y, p)}


def _load_embeddings(
    embeddings: Mapping[str, str | os.PathLike[str]], ids: list[str]
) -> tuple[dict[str, Any], list[str], list[str]]:
    """(frames of the slides with embeddings, their columns, slides with an empty file)."""
    import pandas as pd

    from pathpipe.mil.embeddings import read_embeddings

    keys = {str(k): v for k, v in embeddings.items()}
    missing = [s for s in ids if s not in keys]
    if missing:
        raise ConfigError(
            f"{len(missing)} slide(s) have tile features but no embeddings: {missing[:10]}; "
            "expected an embedding file for every slide of the MIL cohort"
        )
    frames, empty, width = {}, [], None
    for sid in ids:
        x = read_embeddings(sid, keys[sid])
        if x.shape[0] == 0:
            empty.append(sid)
            continue
        if width is not None and x.shape[1] != width[1]:
            raise ConfigError(
                f"slide {sid!r}: embeddings have {x.shape[1]} dimensions, slide {width[0]!r} "
                f"{width[1]}; expected the same embedding model for every slide"
            )
        width = width or (sid, x.shape[1])
        frames[sid] = pd.DataFrame(x, columns=[f"emb_{j}" for j in range(x.shape[1])])
    columns = [f"emb_{j}" for j in range(width[1])] if width else []
    return frames, columns, empty


def run_cross_validation(
    tables: Mapping[str, str | os.PathLike[str]],
    sheet: Any,
    *,
    params: MILParams,
    embeddings: Mapping[str, str | os.PathLike[str]] | None = None,
) -> MILResult:
    """Cross-validate AMIL and the RF baseline, then train and test the final models.

    Parameters
    ----------
    tables : mapping of str to path-like
        ``slide_id`` → ``tile_features.parquet``.
    sheet : pandas.DataFrame
        Slide sheet: ``slide_id``, ``label`` and optionally ``patient``, ``split``.
    params : MILParams
    embeddings : mapping of str to path-like, optional
        ``slide_id`` → the slide's tile embeddings (see
        :mod:`pathpipe.mil.embeddings`); adds the "conventional AMIL" method
        :data:`EMBEDDING_METHOD`, trained on the same splits.

    Returns
    -------
    MILResult

    Raises
    ------
    ConfigError
        See :func:`~pathpipe.mil.bags.load_bags` and :func:`~pathpipe.mil.splits.make_splits`;
        also labels with more than two classes.
    """
    import pandas as pd

    from pathpipe.mil.splits import inner_split, make_splits

    if not isinstance(params, MILParams):
        raise ConfigError(f"params is a {type(params).__name__}; expected MILParams")
    ids, frames, _ = load_bags(tables, sheet)
    sources = [_Source("features", dict(zip(ids, frames, strict=True)),
                       feature_columns(ids, frames), (AMIL_METHOD, RF_METHOD))]  # fmt: skip
    if embeddings is not None:
        emb_frames, emb_columns, empty = _load_embeddings(embeddings, ids)
        if empty:
            log.warning(
                "excluding %d slide(s) whose embedding file has no tiles: %s",
                len(empty), ", ".join(empty),
            )  # fmt: skip
            ids = [s for s in ids if s not in set(empty)]
        sources.append(_Source("embeddings", emb_frames, emb_columns, (EMBEDDING_METHOD,)))
    methods = [m for src in sources for m in src.methods]
    excluded = [s for s in sheet["slide_id"].astype(str) if s not in set(ids)]
    kept_sheet = sheet[sheet["slide_id"].astype(str).isin(ids)]
    try:
        splits = make_splits(
            kept_sheet, n_folds=params.n_folds, test_fraction=params.test_fraction, seed=params.seed
        )
    except ConfigError as exc:
        if not excluded:
            raise
        raise ConfigError(
            f"{exc} (after excluding {len(excluded)} slide(s) with no tiles: {excluded[:10]})"
        ) from exc
    if len(splits.classes) != 2:
        raise ConfigError(
            f"labels hold {len(splits.classes)} classes {list(splits.classes)}; "
            "expected two (the mil stage is binary)"
        )
    st = splits.table.set_index("slide_id")
    y_of = st["class_index"].to_dict()

    def ys(slides: list[str]) -> np.ndarray:
        return np.array([y_of[s] for s in slides], np.int64)

    notes: list[str] = []
    rows: list[dict[str, Any]] = []
    folds: list[dict[str, Any]] = []
    fold_preprocessors: list[dict[str, Any]] = []
    for k, (train_ids, val_ids) in enumerate(splits.folds):
        stop_ids: list[str] | None = val_ids
        if params.early_stopping == "inner":
            inner = inner_split(
                splits, train_ids, fraction=params.inner_fraction, seed=params.seed + k
            )
            stop_ids = None if inner is None else inner[1]
            if inner is None:
                notes.append(
                    f"fold {k}: a class has fewer than 2 training patients, so no slide could "
                    f"be held out for early stopping; AMIL ran all {params.epochs} epochs"
                )
        record: dict[str, Any] = {
            "fold": k,
            "n_train": len(train_ids),
            "n_val": len(val_ids),
            "early_stopping_slides": stop_ids,
        }
        fold_preprocessors.append({})
        for source in sources:
            fitted = _fit(params, source, y_of, train_ids, stop_ids=stop_ids, epochs=params.epochs)
            fold_preprocessors[-1][source.name] = fitted.preprocessor
            p_train, p_val = fitted.predict(train_ids), fitted.predict(val_ids)
            for method in source.methods:
                record[method] = {
                    "train_auc": _auc(ys(train_ids), p_train[method]),
                    "val_auc": _auc(ys(val_ids), p_val[method]),
                }
                rows += [
                    {"slide_id": s, "role": f"fold {k}", "method": method, "probability": float(p)}
                    for s, p in zip(val_ids, p_val[method], strict=True)
                ]
            record[source.methods[0]]["best_epoch"] = fitted.history.best_epoch
            record[source.methods[0]]["history"] = fitted.history.to_dict()
            if source.name == "features":
                record["preprocessing"] = fitted.preprocessor.summary()
        folds.append(record)
        log.info(
            "fold %d: %s",
            k,
            ", ".join(f"{m} val AUC {record[m]['val_auc']:.3f}" for m in methods),
        )

    dev_ids, test_ids = splits.development, splits.test
    final: dict[str, _Fitted] = {}
    final_epochs: dict[str, int] = {}
    for source in sources:
        best = [int(f[source.methods[0]]["best_epoch"]) for f in folds]
        final_epochs[source.name] = max(1, round(float(np.median(best))))
        final[source.name] = _fit(
            params, source, y_of, dev_ids, stop_ids=None, epochs=final_epochs[source.name]
        )
    test_auc = dict.fromkeys(methods, math.nan)
    if test_ids:
        for fitted in final.values():
            for method, p in fitted.predict(test_ids).items():
                test_auc[method] = _auc(ys(test_ids), p)
                rows += [
                    {"slide_id": s, "role": "test", "method": method, "probability": float(v)}
                    for s, v in zip(test_ids, p, strict=True)
                ]
        if len(np.unique(ys(test_ids))) < 2:
            notes.append(f"test AUC is NaN: the {len(test_ids)} test slide(s) hold one class only")
    else:
        notes.append("test AUC is NaN: there is no test split")

    table1 = pd.DataFrame(
        [
            {
                "method": method,
                "train_auc_mean": float(np.mean([f[method]["train_auc"] for f in folds])),
                "train_auc_std": _std([f[method]["train_auc"] for f in folds]),
                "val_auc_mean": float(np.mean([f[method]["val_auc"] for f in folds])),
                "val_auc_std": _std([f[method]["val_auc"] for f in folds]),
                "test_auc": test_auc[method],
            }
            for method in methods
        ]
    )
    predictions = pd.DataFrame(rows)
    predictions.insert(1, "patient", predictions["slide_id"].map(st["patient"]))
    predictions.insert(2, "label", predictions["slide_id"].map(st["label"]))

    roc: dict[str, dict[str, dict[str, Any]]] = {}
    for method in methods:
        roc[method] = {}
        of_method = predictions[predictions["method"] == method]
        for part, sel in (
            ("out_of_fold", of_method[of_method["role"] != "test"]),
            ("test", of_method[of_method["role"] == "test"]),
        ):
            curve = _roc(ys(sel["slide_id"].tolist()), sel["probability"].to_numpy())
            if curve is not None:
                roc[method][part] = curve
    features = final["features"]
    return MILResult(
        table1=table1,
        predictions=predictions,
        model=features.amil,
        preprocessor=features.preprocessor,
        rf=features.rf,
        classes=list(splits.classes),
        feature_columns=sources[0].columns,
        params=params,
        folds=folds,
        best_epochs=[int(f[AMIL_METHOD]["best_epoch"]) for f in folds],
        final_epochs=final_epochs["features"],
        roc=roc,
        excluded=excluded,
        slides={"development": list(dev_ids), "test": list(test_ids)},
        notes=[
            *notes,
            *(
                f"final {name} model: {f.history.seconds:.1f} s on {f.history.device}, "
                f"{final_epochs[name]} epochs"
                for name, f in final.items()
            ),
        ],
        embedding_model=final["embeddings"].amil if "embeddings" in final else None,
        embedding_preprocessor=(
            final["embeddings"].preprocessor if "embeddings" in final else None
        ),
        fold_preprocessors=fold_preprocessors,
    )


def _std(values: list[float]) -> float:
    return float(np.std(values, ddof=1)) if len(values) > 1 else math.nan
