"""Parameters of the mil stage, one dataclass per config block.

========================  ======================  =====================================
config block              dataclass               command
========================  ======================  =====================================
``mil``                   :class:`MILParams`      ``pathpipe mil train``
``mil.preprocessing``     :class:`~pathpipe.mil.preprocessing.PreprocessingParams`
                                                  ``pathpipe mil train|preprocess``
``mil.explain``           :class:`ExplainParams`  ``pathpipe mil explain``
``mil.heatmap``           :class:`HeatmapParams`  ``pathpipe mil attention``
========================  ======================  =====================================

``mil.enabled`` and ``mil.embeddings`` are read by the workflow (the embeddings
pattern is an input of the rule and a ``--embeddings`` option of ``pathpipe mil
train``); the seed is the config's top-level ``seed``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from pathpipe.errors import ConfigError
from pathpipe.mil.preprocessing import PreprocessingParams
from pathpipe.params import check_params, param

__all__ = ["EARLY_STOPPING", "ExplainParams", "HeatmapParams", "MILParams"]

#: Values of :attr:`MILParams.early_stopping`.
EARLY_STOPPING = ("inner", "validation")


@dataclass(frozen=True, kw_only=True)
class MILParams:
    """Options of the cross-validation and training of ``pathpipe mil train``.

    ``n_folds`` and ``test_fraction``: see :func:`~pathpipe.mil.splits.make_splits`;
    ``max_tiles`` to ``dropout``, ``seed`` and ``device``: see
    :func:`~pathpipe.mil.train.train_amil`; ``preprocessing``: the feature filter
    fitted on each fold's training slides
    (:class:`~pathpipe.mil.preprocessing.FeaturePreprocessor`; a mapping is
    converted). ``early_stopping``: ``"inner"`` stops AMIL on a patient-grouped,
    stratified ``inner_fraction`` of each fold's training slides
    (:func:`~pathpipe.mil.splits.inner_split`), so the validation AUC is measured
    on slides that chose nothing; ``"validation"`` stops on the fold's validation
    slides, as in CellFiNet, which makes the AMIL validation AUC optimistic.
    """

    n_folds: int = param(5, "cross-validation folds, stratified and grouped by patient", ge=2)
    test_fraction: float = param(
        0.2,
        "fraction of each class's patients held out as test set when the sheet's `split` "
        "names no test slide",
        ge=0,
        lt=1,
    )
    max_tiles: int = param(30, "tiles sampled per slide per training epoch (K)", ge=1)
    epochs: int = param(100, "maximum training epochs", ge=1)
    lr: float = param(1e-3, "Adam learning rate", gt=0)
    weight_decay: float = param(1e-4, "Adam L2 weight decay", ge=0)
    patience: int = param(
        10, "epochs without a better early-stopping AUC before training stops", ge=1
    )
    batch_size: int = param(8, "slides per training mini-batch", ge=1)
    dropout: float = param(0.25, "dropout of the attention encoder and the classifier", ge=0, lt=1)
    seed: int = param(0, "seed of the splits, the initialisation and the tile sampling", ge=0)
    device: str = param("auto", "device: auto (a GPU when there is one), cpu, cuda or cuda:N")
    rf_n_estimators: int = param(200, "trees of the random-forest baseline", ge=1)
    early_stopping: str = param(
        "inner",
        "AMIL stops early on held-out training slides (inner) or on the validation fold",
        choices=EARLY_STOPPING,
    )
    inner_fraction: float = param(
        0.25,
        "fraction of each class's training patients held out for early stopping (inner)",
        gt=0,
        lt=1,
    )
    preprocessing: PreprocessingParams = dataclasses.field(default_factory=PreprocessingParams)

    def __post_init__(self) -> None:
        check_params(self, "mil")
        pre = self.preprocessing
        if isinstance(pre, Mapping):
            pre = PreprocessingParams(**pre)
            object.__setattr__(self, "preprocessing", pre)
        if not isinstance(pre, PreprocessingParams):
            raise ConfigError(
                f"mil.preprocessing={pre!r}; expected PreprocessingParams or a mapping of its fields"
            )

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready copy (``preprocessing`` as a nested dict)."""
        return dataclasses.asdict(self)


@dataclass(frozen=True, kw_only=True)
class ExplainParams:
    """Options of ``pathpipe mil explain`` (:func:`~pathpipe.mil.explain.explain_cohort`).

    ``n_waterfall`` tiles are chosen by default: the highest-attention tile of
    each of the ``ceil(n/2)`` slides most confidently predicted ``classes[1]``
    and of the ``floor(n/2)`` most confidently predicted ``classes[0]``.
    """

    n_permutations: int = param(
        10, "permutations of the SHAP permutation explainer per slide or tile", ge=1
    )
    n_background: int = param(
        100, "training tiles sampled as the background of tile-level SHAP", ge=1
    )
    n_waterfall: int = param(4, "tiles with a tile-level SHAP waterfall plot", ge=0)
    seed: int = param(0, "seed of the feature orders and of the background sample", ge=0)

    def __post_init__(self) -> None:
        check_params(self, "mil.explain")


@dataclass(frozen=True, kw_only=True)
class HeatmapParams:
    """Options of ``pathpipe mil attention`` (:func:`~pathpipe.mil.attention.explain_slide_attention`)."""

    thumbnail_mpp: float = param(8.0, "resolution (µm/px) of the thumbnail under the heatmap", gt=0)
    n_gallery: int = param(5, "highest- and lowest-attention tiles shown per slide", ge=1)

    def __post_init__(self) -> None:
        check_params(self, "mil.heatmap")
