"""Cohort-level MIL experiment: cross-validation, final model, Table 1, outputs.

The path-level layer of the ``mil`` stage, after CellFiNet (MICCAI 2023
workshops, Table 1): gated attention MIL (AMIL) on preprocessed tile features
against a tile-level random forest (RF), both scored by slide-level ROC AUC.

Protocol of :func:`run_cross_validation`:

1. :func:`load_bags` reads one ``tile_features.parquet`` per slide (one row per
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

import dataclasses
import logging
import math
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError

__all__ = [
    "AMIL_METHOD",
    "EMBEDDING_METHOD",
    "NON_FEATURE_COLUMNS",
    "RF_METHOD",
    "MILParams",
    "MILResult",
    "load_bags",
    "predict_slides",
    "run_cross_validation",
    "write_mil_outputs",
]

log = logging.getLogger(__name__)

#: Method names of Table 1 (as in CellFiNet's Table 1).
AMIL_METHOD = "AMIL (CellFiNet features)"
RF_METHOD = "Random forest (tile features)"
EMBEDDING_METHOD = "AMIL (tile embeddings)"
#: Values of :attr:`MILParams.early_stopping`.
EARLY_STOPPING = ("inner", "validation")
#: Columns of ``tile_features.parquet`` that are not features.
NON_FEATURE_COLUMNS = ("tile", "l0_x", "l0_y")


@dataclass(frozen=True, kw_only=True)
class MILParams:
    """Options of the ``mil`` stage.

    Attributes
    ----------
    n_folds, test_fraction :
        See :func:`~pathpipe.mil.splits.make_splits` (``seed`` is shared).
    max_tiles, epochs, lr, weight_decay, patience, batch_size, dropout, seed, device :
        See :func:`~pathpipe.mil.train.train_amil`.
    max_nan_fraction, min_std, max_mode_fraction, max_correlation :
        See :class:`~pathpipe.mil.preprocessing.FeaturePreprocessor`.
    rf_n_estimators : int
        Trees of the random forest baseline.
    early_stopping : {"inner", "validation"}
        Which slides AMIL stops early on in each fold. ``"inner"`` (default):
        a patient-grouped, stratified ``inner_fraction`` of the fold's training
        slides (:func:`~pathpipe.mil.splits.inner_split`), so the validation
        AUC is measured on slides that chose nothing. ``"validation"``: the
        fold's validation slides, as in CellFiNet; this makes the AMIL
        validation AUC optimistic (the epoch is picked on the slides it is
        scored on).
    inner_fraction : float
        Fraction of each class's training patients held out for early
        stopping (``"inner"``), at least one patient per class.
    """

    n_folds: int = 5
    test_fraction: float = 0.2
    max_tiles: int = 30
    epochs: int = 100
    lr: float = 1e-3
    weight_decay: float = 1e-4
    patience: int = 10
    batch_size: int = 8
    dropout: float = 0.25
    seed: int = 0
    device: str = "auto"
    max_nan_fraction: float = 0.5
    min_std: float = 1e-8
    max_mode_fraction: float = 0.95
    max_correlation: float = 0.95
    rf_n_estimators: int = 200
    early_stopping: str = "inner"
    inner_fraction: float = 0.25

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy."""
        return dataclasses.asdict(self)


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


# --------------------------------------------------------------------- loading
def _read_table(slide_id: str, path: str | os.PathLike[str]) -> Any:
    import pandas as pd

    try:
        return pd.read_parquet(path)
    except (OSError, ValueError) as exc:
        raise StorageError(
            f"slide {slide_id!r}: cannot read tile features {str(path)!r}: {exc}"
        ) from exc


def _feature_columns(slide_ids: list[str], frames: list[Any]) -> list[str]:
    """Numeric non-coordinate columns, identical across slides."""
    import pandas as pd

    def numeric(frame: Any) -> list[str]:
        return [
            c
            for c in frame.columns
            if c not in NON_FEATURE_COLUMNS and pd.api.types.is_numeric_dtype(frame[c])
        ]

    columns = numeric(frames[0])
    if not columns:
        raise ConfigError(
            f"slide {slide_ids[0]!r}: tile table has no numeric feature columns besides "
            f"{list(NON_FEATURE_COLUMNS)}; expected tile features"
        )
    for sid, frame in zip(slide_ids[1:], frames[1:], strict=True):
        other = numeric(frame)
        if other != columns:
            diff = sorted(set(columns) ^ set(other))
            raise ConfigError(
                f"slide {sid!r}: feature columns differ from slide {slide_ids[0]!r} "
                f"(e.g. {diff[:5] or 'order'}); expected the same feature extraction settings"
            )
    return columns


def load_bags(
    tables: Mapping[str, str | os.PathLike[str]], sheet: Any
) -> tuple[list[str], list[Any], list[Any]]:
    """Read the tile tables of the slide sheet's slides.

    Parameters
    ----------
    tables : mapping of str to path-like
        ``slide_id`` → its ``tile_features.parquet``. Tables of slides not in
        the sheet are ignored.
    sheet : pandas.DataFrame
        Slide sheet with at least ``slide_id`` and ``label``.

    Returns
    -------
    slide_ids : list of str
        Slides kept, in sheet order.
    frames : list of pandas.DataFrame
        Their tile tables (at least one tile each).
    labels : list
        Their labels.

    Raises
    ------
    ConfigError
        A missing column, a slide without a label or without a table, or a
        class left without slides after excluding slides with no tiles.
    StorageError
        An unreadable table.
    """
    import pandas as pd

    if not isinstance(sheet, pd.DataFrame):
        raise ConfigError(f"sheet is a {type(sheet).__name__}; expected a pandas DataFrame")
    missing = [c for c in ("slide_id", "label") if c not in sheet.columns]
    if missing:
        raise ConfigError(f"slide sheet lacks column(s) {missing}; expected slide_id and label")
    ids = sheet["slide_id"].astype(str).tolist()
    no_label = [
        sid
        for sid, lab in zip(ids, sheet["label"], strict=True)
        if pd.isna(lab) or str(lab).strip() == ""
    ]
    if no_label:
        raise ConfigError(
            f"{len(no_label)} slide(s) have no label: {no_label[:10]}; "
            "expected a label for every slide of the MIL cohort"
        )
    keys = {str(k): v for k, v in tables.items()}
    no_table = [sid for sid in ids if sid not in keys]
    if no_table:
        raise ConfigError(
            f"{len(no_table)} slide(s) of the sheet have no tile feature table: "
            f"{no_table[:10]}; expected one tile_features.parquet per slide"
        )
    kept_ids, frames, labels, empty = [], [], [], []
    for sid, lab in zip(ids, sheet["label"], strict=True):
        frame = _read_table(sid, keys[sid])
        if len(frame) == 0:
            empty.append(sid)
            continue
        kept_ids.append(sid)
        frames.append(frame)
        labels.append(lab)
    if empty:
        log.warning(
            "excluding %d slide(s) whose tile table is empty (all tiles filtered out): %s",
            len(empty),
            ", ".join(empty),
        )
    single = [sid for sid, frame in zip(kept_ids, frames, strict=True) if len(frame) == 1]
    if single:
        log.warning(
            "%d slide(s) have a single tile (kept; their attention is trivially 1 and the "
            "slide is classified by that tile alone): %s",
            len(single),
            ", ".join(single[:10]),
        )
    lost = sorted(set(sheet["label"]) - set(labels), key=str)
    if lost or not kept_ids:
        raise ConfigError(
            f"after excluding {len(empty)} slide(s) with no tiles (all tiles filtered out: "
            f"{empty[:10]}), class(es) {lost} have no slide left; expected slides of every class"
        )
    _feature_columns(kept_ids, frames)
    return kept_ids, frames, labels


def read_slide_bags(
    tables: Mapping[str, str | os.PathLike[str]], pre: Any, *, doing: str = "skipping"
) -> tuple[list[str], list[Any], list[np.ndarray], list[str]]:
    """Tile tables and preprocessed bags of the slides a saved model is applied to.

    Slides whose table is empty (all tiles filtered out) are skipped with one
    warning naming them, ``"<doing> N slide(s) ..."``.

    Returns
    -------
    ids, frames, bags, empty
        Slide ids with tiles, their tables, their ``pre.transform`` bags, and
        the ids skipped.
    """
    ids, frames, bags, empty = [], [], [], []
    for sid, path in tables.items():
        frame = _read_table(str(sid), path)
        if len(frame) == 0:
            empty.append(str(sid))
            continue
        ids.append(str(sid))
        frames.append(frame)
        bags.append(pre.transform(frame))
    if empty:
        log.warning(
            "%s %d slide(s) whose tile table is empty (all tiles filtered out): %s",
            doing,
            len(empty),
            ", ".join(empty),
        )
    return ids, frames, bags, empty


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
    ``max_*``/``min_std`` thresholds of :class:`MILParams`); ``embeddings`` is the
    user's tile embeddings (standardised only: no filter drops a dimension of a
    learned embedding, except a constant one).
    """

    name: str
    frames: dict[str, Any]
    columns: list[str]
    methods: tuple[str, ...]

    def fit_preprocessor(self, params: MILParams, slide_ids: list[str]) -> Any:
        import pandas as pd

        from pathpipe.mil.preprocessing import FeaturePreprocessor

        if self.name == "features":
            pre = FeaturePreprocessor(
                max_nan_fraction=params.max_nan_fraction,
                min_std=params.min_std,
                max_mode_fraction=params.max_mode_fraction,
                max_correlation=params.max_correlation,
            )
        else:
            pre = FeaturePreprocessor(
                max_nan_fraction=0.0, min_std=params.min_std, max_mode_fraction=1.0,
                max_correlation=1.0,
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
        See :func:`load_bags` and :func:`~pathpipe.mil.splits.make_splits`;
        also labels with more than two classes.
    """
    import pandas as pd

    from pathpipe.mil.splits import inner_split, make_splits

    if not isinstance(params, MILParams):
        raise ConfigError(f"params is a {type(params).__name__}; expected MILParams")
    if params.early_stopping not in EARLY_STOPPING:
        raise ConfigError(
            f"early_stopping={params.early_stopping!r}; expected one of {list(EARLY_STOPPING)}"
        )
    ids, frames, _ = load_bags(tables, sheet)
    sources = [_Source("features", dict(zip(ids, frames, strict=True)),
                       _feature_columns(ids, frames), (AMIL_METHOD, RF_METHOD))]  # fmt: skip
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


def _nan_to_none(value: Any) -> Any:
    """Strict-JSON copy: NaN floats become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value


# --------------------------------------------------------------------- outputs
def _plot_roc(result: MILResult, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(5, 5))
    styles = {"out_of_fold": "-", "test": "--"}
    for i, (method, parts) in enumerate(result.roc.items()):
        for part, curve in parts.items():
            ax.plot(
                curve["fpr"],
                curve["tpr"],
                styles[part],
                color=f"C{i}",
                label=f"{method}, {part.replace('_', '-')} (AUC {curve['auc']:.3f})",
            )
    ax.plot([0, 1], [0, 1], ":", color="grey", lw=1)
    ax.set(
        xlabel="False positive rate",
        ylabel="True positive rate",
        xlim=(0, 1),
        ylim=(0, 1.01),
        title=f"Slide-level ROC (positive class {result.classes[1]!r})",
    )
    ax.legend(loc="lower right", fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def write_mil_outputs(result: MILResult, out_dir: str | os.PathLike[str]) -> None:
    """Write the results of :func:`run_cross_validation`.

    Files, each written atomically::

        table1.tsv        Table 1 (AUC per method)
        predictions.tsv   per slide and method
        roc.png           ROC curves, out-of-fold and test, per method
        metrics.json      provenance, Table 1, folds, preprocessing summary, notes
        model/            final AMIL + preprocessing (see pathpipe.mil.io)
        model_embeddings/ final AMIL on tile embeddings, when they were given

    The final random forest is not saved (it is the benchmark, not a product;
    refit it from the tile tables if needed).

    Parameters
    ----------
    result : MILResult
    out_dir : path-like
        Created if missing.
    """
    from pathpipe.io.storage import atomic_file, provenance, write_json
    from pathpipe.mil.io import save_amil

    if not isinstance(result, MILResult):
        raise ConfigError(f"result is a {type(result).__name__}; expected a MILResult")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    with atomic_file(out / "table1.tsv") as tmp:
        result.table1.to_csv(tmp, sep="\t", index=False)
    with atomic_file(out / "predictions.tsv") as tmp:
        result.predictions.to_csv(tmp, sep="\t", index=False)
    with atomic_file(out / "roc.png") as tmp:
        _plot_roc(result, tmp)
    params = result.params.to_dict()
    write_json(
        out / "metrics.json",
        _nan_to_none(
            provenance(
                stage="mil",
                params=params,
                classes=result.classes,
                table1=result.table1.to_dict(orient="records"),
                preprocessing=result.preprocessor.summary(),
                preprocessing_dropped=result.preprocessor.dropped,
                best_epochs=result.best_epochs,
                final_epochs=result.final_epochs,
                excluded_no_tiles=result.excluded,
                folds=result.folds,
                notes=result.notes,
                rf_saved=False,
            )
        ),
    )
    save_amil(
        out / "model",
        result.model,
        config=_nan_to_none(
            {
                "classes": result.classes,
                "feature_columns": result.feature_columns,
                "features": result.preprocessor.features,
                "params": params,
                "best_epochs": result.best_epochs,
                "final_epochs": result.final_epochs,
                "slides": result.slides,
            }
        ),
        preprocessor=result.preprocessor,
    )
    if result.embedding_model is not None:
        save_amil(
            out / "model_embeddings",
            result.embedding_model,
            config={"classes": result.classes, "params": params, "slides": result.slides},
            preprocessor=result.embedding_preprocessor,
        )


def predict_slides(
    model_dir: str | os.PathLike[str],
    tables: Mapping[str, str | os.PathLike[str]],
    *,
    device: str = "cpu",
) -> Any:
    """Classify slides with a model written by :func:`write_mil_outputs`.

    Parameters
    ----------
    model_dir : path-like
        The ``model/`` directory.
    tables : mapping of str to path-like
        ``slide_id`` → ``tile_features.parquet``. Slides with no tiles are
        skipped with a warning.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.

    Returns
    -------
    pandas.DataFrame
        ``slide_id``, ``probability`` (of ``classes[1]``), ``predicted_label``
        (``classes[1]`` when the probability is at least 0.5).
    """
    import pandas as pd

    from pathpipe.mil.io import load_amil
    from pathpipe.mil.train import predict_amil

    model, config, pre = load_amil(model_dir, device=device)
    classes = config.get("classes")
    if pre is None or not isinstance(classes, list) or len(classes) != 2:
        raise StorageError(
            f"{str(model_dir)!r}: model has preprocessing={pre is not None} and classes "
            f"{classes!r}; expected a model written by write_mil_outputs"
        )
    ids, _, bags, _ = read_slide_bags(tables, pre, doing="not predicting")
    if not ids:
        return pd.DataFrame({"slide_id": [], "probability": [], "predicted_label": []})
    p = predict_amil(model, bags)[0]
    return pd.DataFrame(
        {
            "slide_id": ids,
            "probability": p,
            "predicted_label": [classes[1] if v >= 0.5 else classes[0] for v in p],
        }
    )
