"""``pathpipe synthetic slide|cohort|tiles|serial``: generated data with known truth."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb, log, write_tsv
from pathpipe.errors import ConfigError
from pathpipe.params import add_options, params_from_args
from pathpipe.synthetic.serial_spec import SerialBlockSpec

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    verbs = add_stage(sub, "synthetic", "synthetic H&E slides and tiles with known nuclei")
    q = add_verb(verbs, "slide", "one pyramidal TIFF slide + ground-truth nuclei table", _cmd_slide)
    q.add_argument("--out", required=True, type=Path)
    q.add_argument(
        "--class", dest="slide_class", required=True, help="nuclear class preset: low or high"
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--width", type=int, default=4096)
    q.add_argument("--height", type=int, default=4096)
    q.add_argument("--mpp", type=float, default=0.25)
    q.add_argument("--workers", type=int, default=None)

    q = add_verb(verbs, "cohort", "a cohort of synthetic slides and its slide sheet", _cmd_cohort)
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument("--sheet", type=Path, default=None, help="write the slide sheet TSV here")
    q.add_argument("--n-per-class", type=int, default=4)
    q.add_argument("--size", type=int, default=4096)
    q.add_argument("--mpp", type=float, default=0.25)
    q.add_argument("--seed", type=int, default=0)

    q = add_verb(
        verbs,
        "tiles",
        "annotated tiles (RGB, instance and type maps) for training and evaluation",
        _cmd_tiles,
    )
    q.add_argument("--out", required=True, type=Path, help="output annotated tile folder")
    q.add_argument("--n-tiles", type=int, default=64)
    q.add_argument("--tile-size", type=int, default=256)
    q.add_argument("--mpp", type=float, default=0.5)
    q.add_argument("--seed", type=int, default=0)

    q = add_verb(
        verbs,
        "serial",
        "a block of serial sections of a 3D object, with known transforms, faults and truth",
        _cmd_serial,
    )
    q.add_argument("--out-dir", required=True, type=Path, help="the block's folder")
    q.add_argument("--sheet", type=Path, default=None, help="also write the slide sheet TSV here")
    q.add_argument("--workers", type=int, default=None, help="rendering processes per slide")
    add_options(q, SerialBlockSpec)


def _cmd_slide(args: argparse.Namespace) -> None:
    from pathpipe.synthetic.generate import SyntheticSlideSpec, write_slide

    spec = SyntheticSlideSpec(
        width=args.width,
        height=args.height,
        mpp=args.mpp,
        slide_class=args.slide_class,
        seed=args.seed,
    )
    path = write_slide(args.out, spec, workers=args.workers)
    log.info("synthetic slide written: %s", path)


def _cmd_cohort(args: argparse.Namespace) -> None:
    from pathpipe.synthetic.generate import write_cohort

    if args.n_per_class < 1:
        raise ConfigError(f"--n-per-class must be >= 1, received {args.n_per_class}")
    sheet = write_cohort(
        args.out_dir, n_per_class=args.n_per_class, size=args.size, mpp=args.mpp, seed=args.seed
    )
    if args.sheet is not None:
        write_tsv(sheet, args.sheet)
    log.info("synthetic cohort: %d slides in %s", len(sheet), args.out_dir)


def _cmd_tiles(args: argparse.Namespace) -> None:
    from pathpipe.synthetic.tiles import write_synthetic_tiles

    write_synthetic_tiles(
        args.out, n_tiles=args.n_tiles, tile_size=args.tile_size, mpp=args.mpp, seed=args.seed
    )
    log.info("synthetic annotated tiles: %d in %s", args.n_tiles, args.out)


def _cmd_serial(args: argparse.Namespace) -> None:
    from pathpipe.synthetic.serial import write_serial_block

    spec = params_from_args(SerialBlockSpec, args)
    sheet = write_serial_block(args.out_dir, spec, workers=args.workers)
    if args.sheet is not None:
        write_tsv(sheet, args.sheet)
    log.info(
        "synthetic serial block %s: %d of %d sections in %s",
        spec.block,
        len(sheet),
        spec.sections,
        args.out_dir,
    )
