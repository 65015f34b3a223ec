"""``pathpipe mil train|predict|explain|attention|preprocess``: the mil stage's commands.

train       cross-validate AMIL and the random-forest baseline, train and test the final model
predict     classify slides with a saved model
explain     SHAP of a saved model: slide-level beeswarms, tile-level waterfalls, importance tables
attention   attention heatmap over the thumbnail and top/bottom tile gallery of one slide
preprocess  fit the cohort feature filter and standardiser on the training slides
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_slide_options, add_stage, add_verb, log, slide_kwargs
from pathpipe.mil.params import ExplainParams, HeatmapParams, MILParams
from pathpipe.mil.preprocessing import PreprocessingParams
from pathpipe.params import add_options, comma_list, params_from_args

__all__ = ["add_parser"]

_TABLES_HELP = "results/<slide>/tile_features.parquet of every slide (named by the folder)"
_MODEL_HELP = "the model/ folder of 'pathpipe mil train'"


def _pattern_or_none(value: str) -> str | None:
    return None if value.lower() in ("none", "null") else value


def add_parser(sub: Any) -> None:
    verbs = add_stage(sub, "mil", "AMIL slide classification of a cohort")

    q = add_verb(verbs, "train", "cross-validate, train and test on a cohort", _cmd_train)
    q.add_argument("--tables", nargs="+", required=True, type=Path, help=_TABLES_HELP)
    q.add_argument(
        "--sheet", required=True, type=Path, help="slide sheet TSV (label, patient, split)"
    )
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument(
        "--embeddings",
        metavar="PATTERN",
        type=_pattern_or_none,
        default=None,
        help="tile embeddings per slide for the conventional-AMIL row, e.g. "
        "'embeddings/{slide}.h5' (.h5 as CLAM writes, .pt, .npy or .parquet); none = none",
    )
    add_options(q.add_argument_group("parameters (config mil)"), MILParams)
    add_options(
        q.add_argument_group("feature preprocessing (config mil.preprocessing)"),
        PreprocessingParams,
    )

    q = add_verb(verbs, "predict", "classify slides with a saved model", _cmd_predict)
    q.add_argument("--model", required=True, type=Path, help=_MODEL_HELP)
    q.add_argument("--tables", nargs="+", required=True, type=Path, help=_TABLES_HELP)
    q.add_argument("--out", required=True, type=Path, help="output TSV")
    q.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")

    q = add_verb(verbs, "explain", "SHAP explanations of a saved model (cohort)", _cmd_explain)
    q.add_argument("--model", required=True, type=Path, help=_MODEL_HELP)
    q.add_argument("--tables", nargs="+", required=True, type=Path, help=_TABLES_HELP)
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    add_options(q.add_argument_group("parameters (config mil.explain)"), ExplainParams)

    q = add_verb(
        verbs, "attention", "attention heatmap and tile gallery of one slide", _cmd_attention
    )
    add_slide_options(q)
    q.add_argument("--model", required=True, type=Path, help=_MODEL_HELP)
    q.add_argument("--table", required=True, type=Path, help="the slide's tile_features.parquet")
    q.add_argument("--tiles", required=True, type=Path, help="the slide's tiles.zarr")
    q.add_argument("--heatmap", required=True, type=Path, help="output PNG")
    q.add_argument("--gallery", required=True, type=Path, help="output PNG")
    q.add_argument("--out", required=True, type=Path, help="output attention.parquet")
    q.add_argument("--device", default="cpu", help="cpu, auto, cuda or cuda:N")
    add_options(q.add_argument_group("parameters (config mil.heatmap)"), HeatmapParams)

    q = add_verb(
        verbs,
        "preprocess",
        "fit the feature filter and standardiser on the training slides",
        _cmd_preprocess,
    )
    q.add_argument("--tables", nargs="+", required=True, type=Path, help=_TABLES_HELP)
    q.add_argument(
        "--train", required=True, type=comma_list, help="training slide ids, comma-separated"
    )
    q.add_argument("--out", required=True, type=Path, help="output JSON")
    add_options(q.add_argument_group("parameters (config mil.preprocessing)"), PreprocessingParams)


def _cmd_train(args: argparse.Namespace) -> None:
    from pathpipe.mil.cohort import train_cohort

    params = params_from_args(
        MILParams, args, preprocessing=params_from_args(PreprocessingParams, args)
    )
    result = train_cohort(
        args.tables, args.sheet, args.out_dir, params=params, embeddings=args.embeddings
    )
    for row in result.table1.itertuples(index=False):
        log.info("mil: %s", " ".join(f"{k}={v}" for k, v in row._asdict().items()))


def _cmd_predict(args: argparse.Namespace) -> None:
    from pathpipe.mil.cohort import predict_slides

    table = predict_slides(args.model, args.tables, out=args.out, device=args.device)
    log.info("mil predict: %d slides -> %s", len(table), args.out)


def _cmd_explain(args: argparse.Namespace) -> None:
    from pathpipe.mil.explain import explain_cohort

    summary = explain_cohort(
        args.model,
        args.tables,
        args.out_dir,
        params=params_from_args(ExplainParams, args),
        device=args.device,
    )
    log.info(
        "mil explain: %s; top features: %s",
        {k: v for k, v in summary.items() if k in ("classes", "n_features", "seconds")},
        ", ".join(r["feature"] for r in summary.get("top_features", [])),
    )


def _cmd_attention(args: argparse.Namespace) -> None:
    from pathpipe.mil.attention import explain_slide_attention

    summary = explain_slide_attention(
        args.model,
        args.table,
        args.tiles,
        args.slide,
        heatmap_out=args.heatmap,
        gallery_out=args.gallery,
        table_out=args.out,
        params=params_from_args(HeatmapParams, args),
        device=args.device,
        **slide_kwargs(args),
    )
    log.info("mil attention: %s", summary)


def _cmd_preprocess(args: argparse.Namespace) -> None:
    from pathpipe.mil.preprocessing import preprocess_cohort

    pre = preprocess_cohort(
        args.tables, args.train, args.out, params=params_from_args(PreprocessingParams, args)
    )
    s = pre.summary()
    log.info(
        "mil preprocess: %d in, %d near-constant, %d mostly NaN, %d correlated, %d kept",
        s["input"],
        s["dropped_constant"],
        s["dropped_nan"],
        s["dropped_correlated"],
        s["kept"],
    )
