"""``pathpipe features ...``: sub-commands of the features stage (private).

run          one slide: nuclear_features.parquet, tile_features.parquet, figure
dictionary   the generated feature dictionary (docs/features.md)
"""

from __future__ import annotations

import argparse
import logging
from pathlib import Path
from typing import Any

__all__ = ["add_parser"]

log = logging.getLogger("pathpipe")

_FAMILIES = ("geometry", "intensity", "texture", "morphology", "chromatin", "boundary")


def _csv(value: str) -> tuple[str, ...]:
    return tuple(v.strip() for v in value.split(",") if v.strip())


def _mapping(kind: type):
    def parse(value: str) -> dict[str, Any]:
        out = {}
        for item in _csv(value):
            key, sep, v = item.partition("=")
            try:
                out[key] = kind(v)
            except ValueError:
                sep = ""
            if not sep or not key:
                raise argparse.ArgumentTypeError(
                    f"expected channel=value pairs such as 'h=10,grey=8', got {item!r}"
                )
        return out

    return parse


def add_parser(sub: Any) -> None:
    """Add ``features`` and its sub-commands to the top-level sub-parsers."""
    p = sub.add_parser("features", help="CellFiNet nuclear and tile features")
    fsub = p.add_subparsers(dest="features_command", metavar="WHAT", required=True)

    q = fsub.add_parser("run", help="features of one slide")
    q.add_argument("--tiles", required=True, type=Path, help="tiles.zarr")
    q.add_argument("--labels", required=True, type=Path, help="nuclei.zarr")
    q.add_argument("--nuclei", required=True, type=Path, help="nuclei.parquet")
    q.add_argument("--nuclear-out", required=True, type=Path, help="nuclear_features.parquet")
    q.add_argument("--tile-out", required=True, type=Path, help="tile_features.parquet")
    q.add_argument("--figure", type=Path, default=None, help="report figure PNG")
    q.add_argument("--families", type=_csv, default=_FAMILIES)
    q.add_argument("--channels", type=_csv, default=("h", "grey"))
    q.add_argument("--bin-width", type=_mapping(float), default={"h": 10.0, "grey": 8.0})
    q.add_argument("--bin-count", type=_mapping(int), default={})
    q.add_argument("--per-phenotype", type=_csv, default=())
    q.add_argument("--aggregate-border-nuclei", action="store_true")
    q.add_argument("--graph", default="knn", choices=["knn", "delaunay"])
    q.add_argument("--graph-k", type=int, default=5)
    q.add_argument("--workers", type=int, default=None)
    q.set_defaults(func=_cmd_run)

    q = fsub.add_parser("dictionary", help="write the feature dictionary (Markdown)")
    q.add_argument("--out", required=True, type=Path)
    q.set_defaults(func=_cmd_dictionary)


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.features.run import FeatureParams, run_features

    params = FeatureParams(
        families=args.families,
        channels=args.channels,
        bin_width=args.bin_width,
        bin_count=args.bin_count,
        per_phenotype=args.per_phenotype,
        aggregate_border_nuclei=args.aggregate_border_nuclei,
        graph=args.graph,
        graph_k=args.graph_k,
        workers=args.workers,
    )
    run_features(
        args.tiles,
        args.labels,
        args.nuclei,
        nuclear_out=args.nuclear_out,
        tile_out=args.tile_out,
        figure_path=args.figure,
        params=params,
    )


def _cmd_dictionary(args: argparse.Namespace) -> None:
    from pathpipe.features.run import feature_dictionary
    from pathpipe.io.storage import atomic_file

    with atomic_file(args.out) as tmp:
        tmp.write_text(feature_dictionary() + "\n", encoding="utf-8")
