"""``pathpipe tiling run|summary``: the tiling stage's commands."""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from pathpipe.cli.options import (
    add_slide_options,
    add_stage,
    add_verb,
    log,
    slide_kwargs,
    write_tsv,
)
from pathpipe.params import add_options, params_from_args
from pathpipe.tiling.params import TilingParams

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    verbs = add_stage(sub, "tiling", "tiles of a slide's tissue in tiles.zarr")
    q = add_verb(verbs, "run", "tile a slide into tiles.zarr", _cmd_run)
    add_slide_options(q)
    q.add_argument(
        "--tissue-mask", required=True, type=Path, help="mask PNG from 'pathpipe tissue run'"
    )
    q.add_argument("--out", required=True, type=Path, help="output tiles.zarr directory")
    q.add_argument(
        "--checksum",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="SHA-256 of the slide file, recorded in the store",
    )
    add_options(q.add_argument_group("parameters (config tiling)"), TilingParams)

    q = add_verb(verbs, "summary", "one-row-per-slide table of tiles.zarr stores", _cmd_summary)
    q.add_argument("--stores", nargs="+", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="output TSV")


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.tiling.run import run_tiling

    params = params_from_args(TilingParams, args)
    t0 = time.perf_counter()
    rec = run_tiling(
        args.slide,
        mask_path=args.tissue_mask,
        out_path=args.out,
        params=params,
        checksum=args.checksum,
        **slide_kwargs(args),
    )
    log.info(
        "tiling: %s: %d tiles of %d px at %.3g µm/px (%d with tissue of %d in the grid) in %.1f s",
        args.slide,
        rec["n_tiles"],
        params.tile_size,
        params.mpp,
        rec["n_candidates"],
        rec["n_grid"],
        time.perf_counter() - t0,
    )


def _cmd_summary(args: argparse.Namespace) -> None:
    from pathpipe.tiling.run import tiling_summary

    write_tsv(tiling_summary(args.stores), args.out)
