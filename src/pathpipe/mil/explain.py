"""SHAP explanations of a model of ``pathpipe mil train``: the path-level layer.

:func:`explain_cohort` reads the model folder and the slides' tile tables,
computes slide- and tile-level SHAP values of the AMIL log-odds
(:mod:`pathpipe.mil.explain_shap`, whose docstring gives the method), the
importance tables (:mod:`pathpipe.mil.explain_importance`) and the figures
(:mod:`pathpipe.mil.explain_figures`), and writes them.

"Train" in the file names means the development slides the final model was
trained on, as listed in the model's config.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.explain_figures import explanation, plot_beeswarm, plot_waterfalls
from pathpipe.mil.explain_importance import (
    feature_families,
    shap_family_importance,
    shap_importance,
)
from pathpipe.mil.explain_shap import slide_shap, tile_shap
from pathpipe.mil.params import ExplainParams

__all__ = ["explain_cohort"]

log = logging.getLogger(__name__)

_TOP_TILE_FEATURES = 5  # features listed per tile in shap_tiles.tsv
_META_COLUMNS = ("slide_id", "role", "n_tiles", "probability", "log_odds", "base_value")
_FILES = (
    "shap_values.parquet",
    "shap_importance.tsv",
    "shap_families.tsv",
    "shap_tiles.tsv",
    "shap_beeswarm_train.png",
    "shap_beeswarm_test.png",
    "shap_waterfall.png",
)
_TILE_COLUMNS = (
    "slide_id",
    "role",
    "tile",
    "l0_x",
    "l0_y",
    "attention",
    "probability",
    "tile_log_odds",
    "base_value",
    "top_features",
)


def _model_slides(model_dir: Any, config: dict[str, Any], pre: Any) -> tuple[list, set, set]:
    """``classes`` and the development and test slide ids of a ``pathpipe mil train`` model."""
    slides, classes = config.get("slides"), config.get("classes")
    where = f"model {str(model_dir)!r}"
    if not isinstance(slides, dict) or not all(
        isinstance(slides.get(k), list) for k in ("development", "test")
    ):
        raise ConfigError(
            f"{where}: config has slides={slides!r}; expected {{'development': [...], "
            "'test': [...]}} (a model written by `pathpipe mil train`)"
        )
    if pre is None or not isinstance(classes, list) or len(classes) != 2:
        raise ConfigError(
            f"{where}: preprocessing={pre is not None}, classes={classes!r}; expected feature "
            "preprocessing and two classes (a model written by `pathpipe mil train`)"
        )
    return classes, {str(s) for s in slides["development"]}, {str(s) for s in slides["test"]}


def _pick_tiles(
    ids: list[str],
    frames: list[Any],
    proba: np.ndarray,
    attention: list[np.ndarray],
    labelled: np.ndarray,
    n_waterfall: int,
    explicit: Sequence[tuple[str, Any]] | None,
) -> list[tuple[int, int]]:
    """(slide index, table row) of the tiles to explain (see :func:`explain_cohort`)."""
    if explicit is None:
        order = [i for i in np.argsort(-proba, kind="stable") if labelled[i] or not labelled.any()]
        n_pos = (n_waterfall + 1) // 2
        pos = [i for i in order if proba[i] >= 0.5][:n_pos]
        neg = [i for i in reversed(order) if proba[i] < 0.5][: n_waterfall - n_pos]
        return [(int(i), int(np.argmax(attention[i]))) for i in pos + neg]
    picks = []
    for sid, tile in explicit:
        if str(sid) not in ids:
            raise ConfigError(
                f"waterfall tile ({sid!r}, {tile!r}): no slide {sid!r} with tiles among {ids[:10]}"
            )
        i = ids.index(str(sid))
        tile_ids = (
            frames[i]["tile"].tolist() if "tile" in frames[i] else list(range(len(frames[i])))
        )
        if tile not in tile_ids:
            raise ConfigError(
                f"waterfall tile ({sid!r}, {tile!r}): slide {sid!r} has no tile {tile!r}; "
                f"expected one of its {len(tile_ids)} tile ids"
            )
        picks.append((i, tile_ids.index(tile)))
    return picks


def explain_cohort(
    model_dir: str | os.PathLike[str],
    tables: Any,
    out_dir: str | os.PathLike[str],
    *,
    params: ExplainParams | None = None,
    waterfall_tiles: Sequence[tuple[str, Any]] | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Explain a model written by ``pathpipe mil train`` on its slides (module docstring).

    Files written to ``out_dir``, each atomically::

        shap_values.parquet        one row per slide: slide_id, role ("development",
                                   "test" or "unlabelled"), n_tiles, probability,
                                   log_odds, base_value, then φ_j per feature
        shap_importance.tsv        see shap_importance (train = development slides)
        shap_families.tsv          see shap_family_importance
        shap_beeswarm_train.png    slide-level beeswarm, development slides
        shap_beeswarm_test.png     the same, test slides (a note when there are none)
        shap_waterfall.png         waterfall plot of each selected tile
        shap_tiles.tsv             selected tiles: slide_id, role, tile, l0_x, l0_y,
                                   attention, probability (of the slide),
                                   tile_log_odds, base_value, top_features

    Parameters
    ----------
    model_dir : path-like
        The ``model/`` directory of ``pathpipe mil train``.
    tables : mapping of str to path-like, or sequence of path-like
        ``slide_id`` → ``tile_features.parquet``, or the tables' paths
        (:func:`~pathpipe.mil.bags.slide_tables`); slides with no tiles are
        skipped with a warning. Slides in neither the model's development nor
        its test list are explained with role ``"unlabelled"`` (not plotted).
    out_dir : path-like
    params : ExplainParams, optional
        ``n_permutations`` (permutation passes per slide and per tile),
        ``n_background`` (training tiles sampled, seeded, as the tile-level
        background), ``n_waterfall`` (tiles selected by default: the
        highest-attention tile of each of the ``ceil(n/2)`` slides with the
        highest probability of ``classes[1]`` (among those predicted
        ``classes[1]``) and of the ``floor(n/2)`` with the lowest (among those
        predicted ``classes[0]``), among the development and test slides;
        unlabelled slides are chosen only by ``waterfall_tiles``) and ``seed``.
    waterfall_tiles : sequence of (slide_id, tile), optional
        Explicit selection instead (``tile`` as in the table's ``tile`` column).
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.

    Returns
    -------
    dict
        ``classes``, ``n_slides`` per role, ``skipped_empty``, ``n_features``,
        ``base_value``, ``top_features`` (first 10 rows of the importance
        table), ``tiles`` (rows of ``shap_tiles.tsv``), ``files``, ``seconds``.

    Raises
    ------
    ConfigError
        A model without ``slides``, preprocessing or two classes; no
        development slide with tiles in ``tables``; invalid options.
    StorageError
        Unreadable model or tables.
    """
    import pandas as pd

    from pathpipe.io.storage import atomic_file, provenance, write_parquet
    from pathpipe.mil.bags import read_slide_bags, slide_tables
    from pathpipe.mil.io import load_amil
    from pathpipe.mil.train import predict_amil

    t0 = time.perf_counter()
    params = ExplainParams() if params is None else params
    if not isinstance(params, ExplainParams):
        raise ConfigError(f"params is a {type(params).__name__}; expected ExplainParams")
    n_permutations, n_background = params.n_permutations, params.n_background
    n_waterfall, seed = params.n_waterfall, params.seed
    model, config, pre = load_amil(model_dir, device=device)
    classes, dev_set, test_set = _model_slides(model_dir, config, pre)
    names = list(pre.features)
    if set(names) & set(_META_COLUMNS):
        raise ConfigError(
            f"feature names {sorted(set(names) & set(_META_COLUMNS))} clash with the columns "
            f"{list(_META_COLUMNS)} of shap_values.parquet; expected other feature names"
        )
    ids, frames, bags, empty = read_slide_bags(slide_tables(tables), pre)
    roles = np.array(
        ["development" if s in dev_set else "test" if s in test_set else "unlabelled" for s in ids]
    )
    is_dev, is_test = roles == "development", roles == "test"
    if not is_dev.any():
        raise ConfigError(
            f"none of the {len(dev_set)} development slides of model {str(model_dir)!r} has "
            f"tiles in the given tables ({sorted(ids)[:10]}); expected the tile tables of the "
            "slides the model was trained on (they define the background)"
        )
    if dev_set - set(ids):
        log.warning(
            "background from %d of the %d development slides; missing: %s",
            int(is_dev.sum()),
            len(dev_set),
            ", ".join(sorted(dev_set - set(ids))),
        )
    background = np.concatenate([b for b, d in zip(bags, is_dev, strict=True) if d])

    # Slide level (explain_shap item 1; importance table: explain_importance).
    proba, attention = predict_amil(model, bags)
    rep = np.stack([a.astype(np.float64) @ x for a, x in zip(attention, bags, strict=True)])
    values, base = slide_shap(
        model, bags, background=background, n_permutations=n_permutations, seed=seed
    )
    importance = shap_importance(
        values[is_dev], rep[is_dev], names, values_test=values[is_test] if is_test.any() else None
    )

    # Tile level (explain_shap item 2): a seeded sample of the training tiles as background.
    rng = np.random.default_rng([seed, 0x5AB])
    tile_bg = background[
        np.sort(rng.choice(len(background), min(n_background, len(background)), replace=False))
    ]
    picks = _pick_tiles(
        ids, frames, proba, attention, is_dev | is_test, n_waterfall, waterfall_tiles
    )
    tile_rows, panels = [], []
    if picks:
        x = np.stack([bags[i][r] for i, r in picks])
        t_values, t_base = tile_shap(
            model, x, background=tile_bg, n_permutations=n_permutations, seed=seed
        )
    for n, (i, r) in enumerate(picks):
        row = _tile_row(ids[i], str(roles[i]), frames[i], r, t_values[n], t_base[n], names)
        row.update(attention=float(attention[i][r]), probability=float(proba[i]))
        tile_rows.append(row)
        title = (
            f"slide {ids[i]}, tile {row['tile']}, attention {row['attention']:.2f}, "
            f"p({classes[1]})={row['probability']:.2f}"
        )
        panels.append((explanation(t_values[n], t_base[n], x[n], names), title))

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    params = {
        "model_dir": str(model_dir),
        "n_permutations": n_permutations,
        "n_background": n_background,
        "n_waterfall": n_waterfall,
        "waterfall_tiles": None if waterfall_tiles is None else [list(t) for t in waterfall_tiles],
        "seed": seed,
        "device": device,
    }
    meta = {
        "slide_id": ids,
        "role": roles,
        "n_tiles": [len(b) for b in bags],
        "probability": proba,
        "log_odds": base + values.sum(axis=1),
        "base_value": base,
    }
    record = provenance(
        stage="mil",
        params=params,
        step="explain",
        classes=classes,
        output=f"log-odds of {classes[1]!r}",
        background_tiles=len(background),
    )
    write_parquet(
        pd.concat([pd.DataFrame(meta), pd.DataFrame(values, columns=names)], axis=1),
        out / "shap_values.parquet",
        record,
    )
    with atomic_file(out / "shap_importance.tsv") as tmp:
        importance.to_csv(tmp, sep="\t", index=False)
    families = shap_family_importance(
        values[is_dev],
        feature_families(names),
        values_test=values[is_test] if is_test.any() else None,
    )
    with atomic_file(out / "shap_families.tsv") as tmp:
        families.to_csv(tmp, sep="\t", index=False)
    with atomic_file(out / "shap_tiles.tsv") as tmp:
        pd.DataFrame(tile_rows, columns=list(_TILE_COLUMNS)).to_csv(tmp, sep="\t", index=False)
    for part, mask, who in (("train", is_dev, "development (training)"), ("test", is_test, "test")):
        plot_beeswarm(
            out / f"shap_beeswarm_{part}.png",
            explanation(values[mask], base[mask], rep[mask], names),
            f"Slide-level SHAP, {who} slides (n={int(mask.sum())})\n"
            f"output: log-odds of {classes[1]!r}; colour: attention-weighted mean feature",
        )
    plot_waterfalls(out / "shap_waterfall.png", panels)
    return {
        "classes": classes,
        "n_slides": {r: int((roles == r).sum()) for r in ("development", "test", "unlabelled")},
        "skipped_empty": empty,
        "n_features": len(names),
        "base_value": float(base[0]),
        "top_features": importance.head(10).to_dict(orient="records"),
        "tiles": tile_rows,
        "files": [str(out / f) for f in _FILES],
        "seconds": time.perf_counter() - t0,
    }


def _tile_row(
    slide_id: str, role: str, frame: Any, r: int, v: np.ndarray, base: float, names: list[str]
) -> dict[str, Any]:
    """Row of ``shap_tiles.tsv`` (without attention and probability) for table row ``r``."""

    def cell(column: str, default: Any) -> Any:
        return np.asarray(frame[column].iloc[r]).item() if column in frame else default

    top = np.argsort(-np.abs(v), kind="stable")[:_TOP_TILE_FEATURES]
    return {
        "slide_id": slide_id,
        "role": role,
        "tile": cell("tile", r),
        "l0_x": cell("l0_x", None),
        "l0_y": cell("l0_y", None),
        "attention": None,
        "probability": None,
        "tile_log_odds": float(base + v.sum()),
        "base_value": float(base),
        "top_features": "; ".join(f"{names[j]} ({v[j]:+.3g})" for j in top),
    }
