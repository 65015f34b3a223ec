"""``pathpipe features ...``: sub-commands of the features stage (private).

run          one slide: nuclear_features.parquet, tile_features.parquet, figure
dictionary   the generated feature dictionary (docs/features.md)
preprocess   fit the cohort feature filter + standardiser on the training slides
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb
from pathpipe.errors import ConfigError
from pathpipe.features.run import FeatureParams
from pathpipe.params import add_options, params_from_args

__all__ = ["add_parser"]

log = logging.getLogger("pathpipe")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def add_parser(sub: Any) -> None:
    """Add ``features`` and its sub-commands to the top-level sub-parsers."""
    fsub = add_stage(sub, "features", "CellFiNet nuclear and tile features")

    q = add_verb(fsub, "run", "features of one slide", _cmd_run)
    q.add_argument("--tiles", required=True, type=Path, help="tiles.zarr")
    q.add_argument("--labels", required=True, type=Path, help="nuclei.zarr")
    q.add_argument("--nuclei", required=True, type=Path, help="nuclei.parquet")
    q.add_argument("--nuclear-out", required=True, type=Path, help="nuclear_features.parquet")
    q.add_argument("--tile-out", required=True, type=Path, help="tile_features.parquet")
    q.add_argument("--figure", type=Path, default=None, help="report figure PNG")
    add_options(q.add_argument_group("parameters (config features)"), FeatureParams)

    q = add_verb(fsub, "dictionary", "write the feature dictionary (Markdown)", _cmd_dictionary)
    q.add_argument("--out", required=True, type=Path, help="output Markdown file")

    q = fsub.add_parser(
        "preprocess", help="fit the feature filter and standardiser on the training slides"
    )
    q.add_argument("--tables", nargs="+", required=True, type=Path, help="tile_features.parquet")
    q.add_argument("--train", required=True, type=_csv, help="training slide ids, comma-separated")
    q.add_argument("--out", required=True, type=Path, help="output JSON")
    q.add_argument("--max-nan-fraction", type=float, default=0.5)
    q.add_argument("--min-std", type=float, default=1e-8)
    q.add_argument("--max-mode-fraction", type=float, default=0.95)
    q.add_argument("--max-correlation", type=float, default=0.95)
    q.set_defaults(func=_cmd_preprocess)


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.features.run import run_features

    run_features(
        args.tiles,
        args.labels,
        args.nuclei,
        nuclear_out=args.nuclear_out,
        tile_out=args.tile_out,
        figure_path=args.figure,
        params=params_from_args(FeatureParams, args),
    )


def _cmd_dictionary(args: argparse.Namespace) -> None:
    from pathpipe.features.dictionary import write_feature_dictionary

    write_feature_dictionary(args.out)


def _cmd_preprocess(args: argparse.Namespace) -> None:
    import pandas as pd

    from pathpipe.mil.preprocessing import FeaturePreprocessor

    by_slide = {p.parent.name: p for p in args.tables}
    missing = [s for s in args.train if s not in by_slide]
    if missing:
        raise ConfigError(
            f"training slides {missing} have no tile_features.parquet among --tables "
            f"(slides are named by the folder: {sorted(by_slide)[:5]}...)"
        )
    train = pd.concat([pd.read_parquet(by_slide[s]) for s in args.train], ignore_index=True)
    skip = {"tile", "l0_x", "l0_y"}
    pre = FeaturePreprocessor(
        max_nan_fraction=args.max_nan_fraction,
        min_std=args.min_std,
        max_mode_fraction=args.max_mode_fraction,
        max_correlation=args.max_correlation,
    ).fit(train, [c for c in train.columns if c not in skip])
    pre.save(args.out)
    s = pre.summary()
    log.info(
        "feature preprocessing: %d in, %d near-constant, %d mostly NaN, %d correlated, %d kept",
        s["input"],
        s["dropped_constant"],
        s["dropped_nan"],
        s["dropped_correlated"],
        s["kept"],
    )
