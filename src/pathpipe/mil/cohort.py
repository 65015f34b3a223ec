"""The cohort commands of the mil stage: train on a labelled cohort, predict slides.

The path-level layer of ``pathpipe mil train`` and ``pathpipe mil predict``:

* :func:`train_cohort` reads the slide sheet and the tile tables, cross-validates
  AMIL against the random-forest baseline and trains the final models
  (:func:`~pathpipe.mil.crossval.run_cross_validation`), and writes Table 1,
  the predictions, the ROC curves, the metrics and the model folders
  (:func:`~pathpipe.mil.outputs.write_mil_outputs`);
* :func:`predict_slides` classifies slides with a saved model.

The other commands: :func:`pathpipe.mil.explain.explain_cohort` (SHAP),
:func:`pathpipe.mil.attention.explain_slide_attention` (heatmaps) and
:func:`pathpipe.mil.preprocessing.preprocess_cohort`.
"""

from __future__ import annotations

import os
from typing import Any

from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.storage import atomic_file
from pathpipe.mil.bags import read_slide_bags, slide_tables
from pathpipe.mil.crossval import MILResult, run_cross_validation
from pathpipe.mil.params import MILParams

__all__ = ["predict_slides", "read_sheet", "train_cohort"]


def read_sheet(path: str | os.PathLike[str]) -> Any:
    """The slide sheet TSV, every column as text (patient "007" stays "007")."""
    import pandas as pd

    try:
        return pd.read_csv(path, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise ConfigError(f"cannot read slide sheet {path}: {exc}") from exc


def train_cohort(
    tables: Any,
    sheet: Any,
    out_dir: str | os.PathLike[str],
    *,
    params: MILParams,
    embeddings: Any = None,
) -> MILResult:
    """Cross-validate, train and test on a labelled cohort; write the results.

    Parameters
    ----------
    tables : mapping of str to path-like, or sequence of path-like
        Tile tables of the cohort (:func:`~pathpipe.mil.bags.slide_tables`);
        the cohort is the slides whose tables are given.
    sheet : path-like or pandas.DataFrame
        Slide sheet (``slide_id``, ``label``, optionally ``patient``,
        ``split``); rows of slides without a table are ignored.
    out_dir : path-like
        Receives the files of :func:`~pathpipe.mil.outputs.write_mil_outputs`.
    params : MILParams
    embeddings : str, mapping or None
        User tile embeddings for the "conventional AMIL" row: a path pattern
        with ``{slide}`` (:func:`~pathpipe.mil.embeddings.embedding_paths`) or
        a mapping slide id -> file.

    Returns
    -------
    MILResult

    Raises
    ------
    ConfigError
        An unreadable sheet, a table whose slide is not in the sheet, and see
        :func:`~pathpipe.mil.crossval.run_cross_validation`.
    """
    import pandas as pd

    from pathpipe.mil.outputs import write_mil_outputs

    if not isinstance(sheet, pd.DataFrame):
        sheet_name, sheet = str(sheet), read_sheet(sheet)
    else:
        sheet_name = "given"
    by_slide = slide_tables(tables)
    unknown = sorted(set(by_slide) - set(sheet["slide_id"]))
    if unknown:
        raise ConfigError(f"slides {unknown} have tables but are not in the sheet {sheet_name}")
    # The cohort is the slides whose tables were given; other sheet rows are ignored.
    sheet = sheet[sheet["slide_id"].isin(by_slide)]
    if isinstance(embeddings, str):
        from pathpipe.mil.embeddings import embedding_paths

        embeddings = embedding_paths(embeddings, sorted(by_slide))
    result = run_cross_validation(by_slide, sheet, params=params, embeddings=embeddings)
    write_mil_outputs(result, out_dir)
    return result


def predict_slides(
    model_dir: str | os.PathLike[str],
    tables: Any,
    *,
    out: str | os.PathLike[str] | None = None,
    device: str = "cpu",
) -> Any:
    """Classify slides with a model written by :func:`~pathpipe.mil.outputs.write_mil_outputs`.

    Parameters
    ----------
    model_dir : path-like
        The ``model/`` directory.
    tables : mapping of str to path-like, or sequence of path-like
        ``slide_id`` → ``tile_features.parquet``, or the tables' paths
        (:func:`~pathpipe.mil.bags.slide_tables`). Slides with no tiles are
        skipped with a warning.
    out : path-like, optional
        TSV to write the table to.
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
    ids, _, bags, _ = read_slide_bags(slide_tables(tables), pre, doing="not predicting")
    if ids:
        p = predict_amil(model, bags)[0]
        table = pd.DataFrame(
            {
                "slide_id": ids,
                "probability": p,
                "predicted_label": [classes[1] if v >= 0.5 else classes[0] for v in p],
            }
        )
    else:
        table = pd.DataFrame({"slide_id": [], "probability": [], "predicted_label": []})
    if out is not None:
        with atomic_file(out) as tmp:
            table.to_csv(tmp, sep="\t", index=False)
    return table
