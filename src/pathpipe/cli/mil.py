"""``pathpipe mil ...``: cohort slide classification (private).

train      cross-validate AMIL and the random-forest baseline, train and test the final model
predict    classify slides with a saved model
explain    SHAP of a saved model: slide-level beeswarms, tile-level waterfalls, importance table
attention  attention heatmap over the thumbnail and top/bottom tile gallery of one slide
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
from pathlib import Path
from typing import Any

from pathpipe.errors import ConfigError

__all__ = ["add_parser"]

log = logging.getLogger("pathpipe")


def _tables(paths: list[Path]) -> dict[str, Path]:
    """slide_id -> tile_features.parquet, the slide id being the file's folder name."""
    out: dict[str, Path] = {}
    for p in paths:
        slide = p.parent.name
        if slide in out:
            raise ConfigError(
                f"two tables for slide {slide!r}: {out[slide]} and {p}; expected "
                "results/<slide>/tile_features.parquet, one per slide"
            )
        out[slide] = p
    return out


def add_parser(sub: Any) -> None:
    """Add ``mil`` and its sub-commands to the top-level sub-parsers."""
    from pathpipe.mil.cohort import EARLY_STOPPING, MILParams

    p = sub.add_parser("mil", help="AMIL slide classification of a cohort")
    msub = p.add_subparsers(dest="mil_command", metavar="WHAT", required=True)

    q = msub.add_parser("train", help="cross-validate, train and test on a cohort")
    q.add_argument(
        "--tables", nargs="+", required=True, type=Path,
        help="results/<slide>/tile_features.parquet of every slide",
    )  # fmt: skip
    q.add_argument(
        "--sheet", required=True, type=Path, help="slide sheet TSV (label, patient, split)"
    )
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument(
        "--embeddings",
        metavar="PATTERN",
        help="tile embeddings per slide for the conventional-AMIL row, e.g. "
        "'embeddings/{slide}.h5' (.h5 as CLAM writes, .pt, .npy or .parquet)",
    )
    g = q.add_argument_group("training (config mil)")
    for f in dataclasses.fields(MILParams):
        kwargs: dict[str, Any] = {"type": type(f.default), "default": f.default}
        if f.name == "early_stopping":
            kwargs["choices"] = EARLY_STOPPING
        g.add_argument("--" + f.name.replace("_", "-"), **kwargs)
    q.set_defaults(func=_cmd_train)

    q = msub.add_parser("predict", help="classify slides with a saved model")
    q.add_argument("--model", required=True, type=Path, help="the model/ folder of 'mil train'")
    q.add_argument("--tables", nargs="+", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="output TSV")
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_predict)

    q = msub.add_parser("explain", help="SHAP explanations of a saved model (cohort)")
    q.add_argument("--model", required=True, type=Path, help="the model/ folder of 'mil train'")
    q.add_argument(
        "--tables", nargs="+", required=True, type=Path,
        help="results/<slide>/tile_features.parquet of the slides to explain",
    )  # fmt: skip
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument("--n-permutations", type=int, default=10)
    q.add_argument("--n-background", type=int, default=100)
    q.add_argument("--n-waterfall", type=int, default=4)
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_explain)

    q = msub.add_parser("attention", help="attention heatmap and tile gallery of one slide")
    q.add_argument("--model", required=True, type=Path, help="the model/ folder of 'mil train'")
    q.add_argument("--table", required=True, type=Path, help="the slide's tile_features.parquet")
    q.add_argument("--tiles", required=True, type=Path, help="the slide's tiles.zarr")
    q.add_argument("--slide", required=True, type=Path, help="the slide file (thumbnail)")
    q.add_argument("--heatmap", required=True, type=Path, help="output PNG")
    q.add_argument("--gallery", required=True, type=Path, help="output PNG")
    q.add_argument("--out", required=True, type=Path, help="output attention.parquet")
    q.add_argument("--backend", default="auto", choices=("auto", "openslide", "tiffslide"))
    q.add_argument("--slide-mpp", type=float, help="fallback level-0 µm/px")
    q.add_argument(
        "--slide-mpp-source", default="override", choices=("sheet", "config", "override")
    )
    q.add_argument("--thumbnail-mpp", type=float, default=8.0)
    q.add_argument("--n-gallery", type=int, default=5)
    q.add_argument("--device", default="cpu")
    q.set_defaults(func=_cmd_attention)


def _cmd_train(args: argparse.Namespace) -> None:
    import pandas as pd

    from pathpipe.mil.cohort import MILParams, run_cross_validation, write_mil_outputs

    params = MILParams(**{f.name: getattr(args, f.name) for f in dataclasses.fields(MILParams)})
    try:
        sheet = pd.read_csv(args.sheet, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise ConfigError(f"cannot read slide sheet {args.sheet}: {exc}") from exc
    tables = _tables(args.tables)
    unknown = sorted(set(tables) - set(sheet["slide_id"]))
    if unknown:
        raise ConfigError(f"slides {unknown} have tables but are not in the sheet {args.sheet}")
    # The cohort is the slides whose tables were given; other sheet rows are ignored.
    sheet = sheet[sheet["slide_id"].isin(tables)]
    embeddings = None
    if args.embeddings:
        from pathpipe.mil.embeddings import embedding_paths

        embeddings = embedding_paths(args.embeddings, sorted(tables))
    result = run_cross_validation(tables, sheet, params=params, embeddings=embeddings)
    write_mil_outputs(result, args.out_dir)
    for row in result.table1.itertuples(index=False):
        log.info("mil: %s", " ".join(f"{k}={v}" for k, v in row._asdict().items()))


def _cmd_predict(args: argparse.Namespace) -> None:
    from pathpipe.io.storage import atomic_file
    from pathpipe.mil.cohort import predict_slides

    df = predict_slides(args.model, _tables(args.tables), device=args.device)
    with atomic_file(args.out) as tmp:
        df.to_csv(tmp, sep="\t", index=False)
    log.info("mil predict: %d slides -> %s", len(df), args.out)


def _cmd_explain(args: argparse.Namespace) -> None:
    from pathpipe.mil.explain import explain_cohort

    summary = explain_cohort(
        args.model,
        _tables(args.tables),
        args.out_dir,
        n_permutations=args.n_permutations,
        n_background=args.n_background,
        n_waterfall=args.n_waterfall,
        seed=args.seed,
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
        slide_id=args.table.parent.name,
        backend=args.backend,
        slide_mpp=args.slide_mpp,
        slide_mpp_source=args.slide_mpp_source,
        thumbnail_mpp=args.thumbnail_mpp,
        device=args.device,
        n_gallery=args.n_gallery,
    )
    log.info("mil attention: %s", summary)
