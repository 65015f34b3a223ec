"""``pathpipe reconstruction run|warp|cells|figures``: the reconstruction stage's commands.

run      one block of serial sections: registration.tsv, transforms.json, points.ply,
         volume.zarr, mesh.ply, summary.json
warp     points (a table) or QuPath GeoJSON of one section (µm or pixels) into the
         block frame (x, y, z µm)
cells    every nucleus of a block's sections in block coordinates: cells.parquet
figures  a block's report figures (pairs, slices, 3D view) and its 3D viewer page
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb, log
from pathpipe.params import add_options, params_from_args
from pathpipe.reconstruction.params import ReconstructionParams

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Add ``reconstruction`` and its verbs to the top-level sub-parsers."""
    verbs = add_stage(sub, "reconstruction", "3D reconstruction of a block of serial sections")

    q = add_verb(verbs, "run", "register a block's sections and build its 3D model", _cmd_run)
    _block_arguments(q, "tissue.png and tissue.json")
    q.add_argument("--out-dir", required=True, type=Path, help="output folder of the block")
    add_options(q.add_argument_group("parameters (config reconstruction)"), ReconstructionParams)

    q = add_verb(verbs, "warp", "map one section's points into the block frame", _cmd_warp)
    q.add_argument("--transforms", required=True, type=Path, help="the block's transforms.json")
    q.add_argument("--section", required=True, type=int, help="the section the points lie on")
    what = q.add_mutually_exclusive_group(required=True)
    what.add_argument("--points", type=Path, help="points table (.parquet/.csv/.tsv)")
    what.add_argument(
        "--geojson",
        type=Path,
        help="QuPath GeoJSON (FeatureCollection); out: block x, y µm, properties.block_z_um",
    )
    q.add_argument(
        "--out", required=True, type=Path, help="output table (.parquet/.csv/.tsv) or .geojson"
    )
    q.add_argument(
        "--mpp",
        type=_mpp,
        default=None,
        help="the input is level-0 pixels of this µm/px ('0.5' or 'x,y'); default: µm",
    )
    q.add_argument("--x", default="x", help="x column (default: %(default)s)")
    q.add_argument("--y", default="y", help="y column (default: %(default)s)")
    q.add_argument("--z", action="store_true", help="GeoJSON: also write z as a third coordinate")

    q = add_verb(verbs, "cells", "every nucleus of a block in block coordinates", _cmd_cells)
    q.add_argument("--transforms", required=True, type=Path, help="the block's transforms.json")
    _block_arguments(q, "nuclei.parquet and tissue.json")
    q.add_argument("--out", required=True, type=Path, help="cells.parquet to write")

    q = add_verb(
        verbs, "figures", "draw a block's report figures and its 3D viewer page", _cmd_figures
    )
    q.add_argument("--dir", required=True, type=Path, help="the block's `run` output folder")
    _block_arguments(q, "tissue.png and tissue.json")
    q.add_argument(
        "--out-dir",
        type=Path,
        default=None,
        help="folder of pairs.png, slices.png, view3d.png (default: DIR/figures)",
    )
    q.add_argument(
        "--viewer", type=Path, default=None, help="also write the 3D viewer page (HTML) here"
    )


def _block_arguments(q: argparse.ArgumentParser, reads: str) -> None:
    """``--sheet``, ``--block`` and ``--results`` (whose per-slide files the verb ``reads``)."""
    q.add_argument("--sheet", required=True, type=Path, help="slide sheet TSV (block, section)")
    q.add_argument("--block", required=True, help="the block")
    q.add_argument(
        "--results", required=True, type=Path, help=f"results folder holding {{slide_id}}/{reads}"
    )


def _mpp(text: str) -> float | tuple[float, float]:
    try:
        values = [float(v) for v in text.split(",")]
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"{text!r}; expected a number or 'x,y'") from exc
    if len(values) not in (1, 2):
        raise argparse.ArgumentTypeError(f"{text!r}; expected a number or 'x,y'")
    return values[0] if len(values) == 1 else (values[0], values[1])


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.reconstruction.run import run_reconstruction_sheet

    summary = run_reconstruction_sheet(
        args.sheet,
        args.block,
        args.results,
        args.out_dir,
        params=params_from_args(ReconstructionParams, args),
    )
    log.info(
        "reconstruction: block %s: %d sections (%d registered), %.4f mm³, %.3f mm²",
        summary["block"],
        summary["sections"],
        summary["sections_registered"],
        summary["volume_mm3"],
        summary["surface_area_mm2"],
    )


def _cmd_warp(args: argparse.Namespace) -> None:
    from pathpipe.reconstruction.warp import run_warp, run_warp_geojson

    if args.geojson is not None:
        run_warp_geojson(
            args.transforms, args.section, args.geojson, args.out, mpp=args.mpp, z=args.z
        )
        return
    run_warp(args.transforms, args.section, args.points, args.out, mpp=args.mpp, x=args.x, y=args.y)


def _cmd_cells(args: argparse.Namespace) -> None:
    from pathpipe.reconstruction.cells import run_cells

    run_cells(args.transforms, args.sheet, args.block, args.results, args.out)


def _cmd_figures(args: argparse.Namespace) -> None:
    from pathpipe.reconstruction.figures import run_reconstruction_figures

    out_dir = args.out_dir if args.out_dir is not None else args.dir / "figures"
    drawn = run_reconstruction_figures(
        args.dir, args.sheet, args.block, args.results, out_dir, viewer=args.viewer
    )
    log.info(
        "reconstruction figures: block %s: %d pairs in %s%s",
        args.block,
        len(drawn["pairs"]),
        out_dir,
        f", viewer {args.viewer}" if args.viewer else "",
    )
