"""``pathpipe features run|dictionary``: the features stage's commands.

run          one slide: nuclear_features.parquet, tile_features.parquet, figure
dictionary   the generated feature dictionary (docs/features.md)

The cohort's feature preprocessing is fitted by the mil stage (``pathpipe mil preprocess``).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb
from pathpipe.features.params import FeatureParams
from pathpipe.params import add_options, params_from_args

__all__ = ["add_parser"]


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
