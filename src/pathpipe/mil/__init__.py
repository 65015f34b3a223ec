"""Slide classification by gated attention-based deep MIL (AMIL) on tile features.

The ``mil`` stage, after CellFiNet (MICCAI 2023 workshops) on top of
attention-based deep multiple instance learning (Ilse, Tomczak & Welling
2018, gated attention): each slide is a bag of its tiles' preprocessed
cellular features (:class:`pathpipe.mil.preprocessing.FeaturePreprocessor`), the
model weighs the tiles by attention and classifies the slide; a tile-level
random forest is the benchmark.

Modules, one concern each:

========================  ====================================================
``splits``                :func:`make_splits`: patient-grouped test set and
                          stratified folds (no torch)
``model``                 :class:`GatedAttentionMIL`
``train``                 :func:`train_amil`, :func:`predict_amil`
``baseline``              :class:`RandomForestBaseline` (no torch)
``io``                    :func:`save_amil`, :func:`load_amil` (safetensors)
``embeddings``            :func:`read_embeddings`: user tile embeddings (the
                          "conventional AMIL" row)
``cohort``                :func:`run_cross_validation`, :func:`write_mil_outputs`,
                          :func:`predict_slides` (the path-level layer)
``explain``               :func:`explain_cohort`: slide- and tile-level SHAP
``attention``             :func:`explain_slide_attention`: heatmap and gallery
``_bags``                 bag and label validation (numpy)
========================  ====================================================

Names are imported lazily: ``from pathpipe.mil import make_splits`` does not
import torch; the model, training and I/O names import it on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "GatedAttentionMIL",
    "MILParams",
    "RandomForestBaseline",
    "Splits",
    "TrainHistory",
    "explain_cohort",
    "explain_slide_attention",
    "load_amil",
    "make_splits",
    "predict_amil",
    "predict_slides",
    "read_embeddings",
    "run_cross_validation",
    "save_amil",
    "train_amil",
    "write_mil_outputs",
]

_WHERE = {
    "GatedAttentionMIL": "model",
    "MILParams": "cohort",
    "explain_cohort": "explain",
    "explain_slide_attention": "attention",
    "predict_slides": "cohort",
    "read_embeddings": "embeddings",
    "run_cross_validation": "cohort",
    "write_mil_outputs": "cohort",
    "RandomForestBaseline": "baseline",
    "Splits": "splits",
    "TrainHistory": "train",
    "load_amil": "io",
    "make_splits": "splits",
    "predict_amil": "train",
    "save_amil": "io",
    "train_amil": "train",
}

if TYPE_CHECKING:
    from pathpipe.mil.attention import explain_slide_attention
    from pathpipe.mil.baseline import RandomForestBaseline
    from pathpipe.mil.cohort import (
        MILParams,
        predict_slides,
        run_cross_validation,
        write_mil_outputs,
    )
    from pathpipe.mil.embeddings import read_embeddings
    from pathpipe.mil.explain import explain_cohort
    from pathpipe.mil.io import load_amil, save_amil
    from pathpipe.mil.model import GatedAttentionMIL
    from pathpipe.mil.splits import Splits, make_splits
    from pathpipe.mil.train import TrainHistory, predict_amil, train_amil


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pathpipe.mil' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pathpipe.mil.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
