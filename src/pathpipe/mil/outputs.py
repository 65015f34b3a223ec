"""Outputs of the cohort MIL experiment: Table 1, predictions, ROC curves, metrics, models.

:func:`write_mil_outputs` writes what :func:`~pathpipe.mil.crossval.run_cross_validation`
measured and trained (the files are listed there); the models are AMIL model
folders (:mod:`pathpipe.mil.io`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any

from pathpipe.errors import ConfigError
from pathpipe.mil.crossval import MILResult

__all__ = ["write_mil_outputs"]


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
    """Write the results of :func:`~pathpipe.mil.crossval.run_cross_validation`.

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


def _nan_to_none(value: Any) -> Any:
    """Strict-JSON copy: NaN floats become null."""
    if isinstance(value, float) and math.isnan(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_nan_to_none(v) for v in value]
    return value
