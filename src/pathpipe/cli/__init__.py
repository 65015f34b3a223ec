"""The ``pathpipe`` command line. Snakemake rules call only this.

Each stage has one sub-command with explicit options. Expected failures
(:class:`~pathpipe.errors.PathpipeError`) print ``ERROR: <message>`` and exit
with status 1 and no traceback; anything else is a bug and keeps its traceback.
Heavy libraries are imported inside the handlers so ``pathpipe --help`` is fast.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any, TypeVar

from pathpipe.cli import features as _cli_features
from pathpipe.cli import mil as _cli_mil
from pathpipe.cli import provenance as _cli_provenance
from pathpipe.cli import segmentation as _cli_segmentation
from pathpipe.errors import ConfigError, PathpipeError

__all__ = ["main"]

log = logging.getLogger("pathpipe")
P = TypeVar("P")


def _threshold(value: str) -> str | float:
    if value == "otsu":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected 'otsu' or a number in [0, 1], got {value!r}"
        ) from None


def _optional_int(value: str) -> int | None:
    if value.lower() in ("none", "null", ""):
        return None
    try:
        return int(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer or 'none', got {value!r}") from None


def _add_slide_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--slide", required=True, type=Path, help="whole-slide image file")
    p.add_argument(
        "--backend",
        default="auto",
        choices=["auto", "openslide", "tiffslide"],
        help="slide reader; auto tries openslide then tiffslide (default: %(default)s)",
    )
    p.add_argument(
        "--slide-mpp",
        type=float,
        default=None,
        help="level-0 µm/px to use when the slide has no MPP metadata",
    )
    p.add_argument(
        "--slide-mpp-source",
        default="override",
        choices=["sheet", "config", "override"],
        help="where --slide-mpp came from, recorded in the outputs (default: %(default)s)",
    )


def build_parser() -> argparse.ArgumentParser:
    from pathpipe import __version__

    parser = argparse.ArgumentParser(
        prog="pathpipe",
        description="Whole-slide pathology pipeline: tissue, tiling, and the later stages.",
    )
    parser.add_argument("--version", action="version", version=f"pathpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    # info ------------------------------------------------------------------
    p = sub.add_parser("info", help="print a slide's metadata as JSON")
    p.add_argument("slide", type=Path)
    p.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide"])
    p.add_argument("--slide-mpp", type=float, default=None)
    p.set_defaults(func=_cmd_info)

    # tissue ----------------------------------------------------------------
    p = sub.add_parser("tissue", help="detect tissue: mask PNG, overlay PNG, QC JSON")
    _add_slide_options(p)
    p.add_argument("--mask", required=True, type=Path, help="output mask PNG")
    p.add_argument("--overlay", required=True, type=Path, help="output overlay PNG")
    p.add_argument("--qc", required=True, type=Path, help="output QC JSON")
    p.add_argument(
        "--detection-mpp", type=float, default=8.0, help="µm/px of detection (default: %(default)s)"
    )
    p.add_argument(
        "--threshold", type=_threshold, default="otsu", help="'otsu' or saturation in [0,1]"
    )
    p.add_argument("--median-um", type=float, default=40.0, help="median filter window, µm")
    p.add_argument("--closing-um", type=float, default=32.0, help="closing disk radius, µm")
    p.add_argument(
        "--min-region-um2", type=float, default=50_000.0, help="smallest tissue region, µm²"
    )
    p.add_argument("--no-fill-holes", action="store_true", help="keep holes inside tissue")
    p.set_defaults(func=_cmd_tissue)

    # tiling ----------------------------------------------------------------
    p = sub.add_parser("tiling", help="tile a slide into tiles.zarr")
    _add_slide_options(p)
    p.add_argument(
        "--tissue-mask", required=True, type=Path, help="mask PNG from 'pathpipe tissue'"
    )
    p.add_argument("--out", required=True, type=Path, help="output tiles.zarr directory")
    p.add_argument(
        "--mpp", type=float, default=0.5, help="µm/px of the tiles (default: %(default)s)"
    )
    p.add_argument(
        "--tile-size", type=int, default=256, help="tile edge in px (default: %(default)s)"
    )
    p.add_argument("--overlap", type=int, default=0, help="overlap in px (default: %(default)s)")
    p.add_argument("--min-tissue-fraction", type=float, default=0.5)
    p.add_argument("--max-white-fraction", type=float, default=1.0)
    p.add_argument("--min-blur", type=float, default=0.0)
    p.add_argument("--max-tiles", type=_optional_int, default=None, help="seeded cap per slide")
    p.add_argument(
        "--compression",
        default="lz4",
        choices=["lz4", "zstd", "none", "source"],
        help="codec of the tile chunks; source keeps the slide's JPEG tiles where possible (default: %(default)s)",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--workers", type=int, default=None, help="reader threads (default: CPU count)")
    p.add_argument("--no-checksum", action="store_true", help="skip the SHA-256 of the slide")
    p.set_defaults(func=_cmd_tiling)

    p = sub.add_parser("tiling-summary", help="one-row-per-slide table of tiles.zarr stores")
    p.add_argument("--stores", nargs="+", required=True, type=Path)
    p.add_argument("--out", required=True, type=Path, help="output TSV")
    p.set_defaults(func=_cmd_tiling_summary)

    # synthetic -------------------------------------------------------------
    p = sub.add_parser("synthetic", help="generate synthetic H&E slides with known nuclei")
    ssub = p.add_subparsers(dest="synthetic_command", metavar="WHAT", required=True)
    q = ssub.add_parser("slide", help="one pyramidal TIFF slide + ground-truth nuclei table")
    q.add_argument("--out", required=True, type=Path)
    q.add_argument(
        "--class", dest="slide_class", required=True, help="nuclear class preset: low or high"
    )
    q.add_argument("--seed", type=int, default=0)
    q.add_argument("--width", type=int, default=4096)
    q.add_argument("--height", type=int, default=4096)
    q.add_argument("--mpp", type=float, default=0.25)
    q.add_argument("--workers", type=int, default=None)
    q.set_defaults(func=_cmd_synthetic_slide)
    q = ssub.add_parser("cohort", help="a cohort of synthetic slides and its slide sheet")
    q.add_argument("--out-dir", required=True, type=Path)
    q.add_argument("--sheet", type=Path, default=None, help="write the slide sheet TSV here")
    q.add_argument("--n-per-class", type=int, default=4)
    q.add_argument("--size", type=int, default=4096)
    q.add_argument("--mpp", type=float, default=0.25)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_synthetic_cohort)
    q = ssub.add_parser(
        "tiles", help="annotated tiles (RGB, instance and type maps) for training and evaluation"
    )
    q.add_argument("--out", required=True, type=Path, help="output annotated tile folder")
    q.add_argument("--n-tiles", type=int, default=64)
    q.add_argument("--tile-size", type=int, default=256)
    q.add_argument("--mpp", type=float, default=0.5)
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_synthetic_tiles)

    # segmentation ----------------------------------------------------------
    _cli_segmentation.add_parser(sub)
    _cli_features.add_parser(sub)
    _cli_mil.add_parser(sub)
    _cli_provenance.add_parser(sub)
    return parser


# ---------------------------------------------------------------------------
# handlers
# ---------------------------------------------------------------------------


def _params_from_args(cls: type[P], args: argparse.Namespace, **overrides: Any) -> P:
    """A stage's parameter dataclass from the options of the same names."""
    names = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    kwargs = {name: getattr(args, name) for name in names if hasattr(args, name)}
    kwargs.update(overrides)
    missing = names - kwargs.keys()
    if missing:  # a parser/dataclass mismatch is a bug, not a user error
        raise TypeError(f"{cls.__name__}: no command-line option for {sorted(missing)}")
    return cls(**kwargs)


def _cmd_info(args: argparse.Namespace) -> None:
    from pathpipe.io.slide import open_slide

    with open_slide(args.slide, backend=args.backend, mpp=args.slide_mpp) as slide:
        print(json.dumps(slide.info.as_dict(), indent=2))


def _cmd_tissue(args: argparse.Namespace) -> None:
    from pathpipe.tissue import TissueParams, run_tissue

    params = _params_from_args(TissueParams, args, fill_holes=not args.no_fill_holes)
    rec = run_tissue(
        args.slide,
        mask_path=args.mask,
        overlay_path=args.overlay,
        qc_path=args.qc,
        backend=args.backend,
        slide_mpp=args.slide_mpp,
        slide_mpp_source=args.slide_mpp_source,
        params=params,
    )
    log.info(
        "tissue: %s: %.3f mm² (%.1f %% of the slide), MPP %.4f from %s",
        args.slide,
        rec["tissue_area_mm2"],
        100 * rec["tissue_fraction"],
        rec["mpp"]["x"],
        rec["mpp"]["source"],
    )


def _cmd_tiling(args: argparse.Namespace) -> None:
    from pathpipe.tiling import TilingParams, run_tiling

    params = _params_from_args(TilingParams, args)
    t0 = time.perf_counter()
    rec = run_tiling(
        args.slide,
        mask_path=args.tissue_mask,
        out_path=args.out,
        params=params,
        backend=args.backend,
        slide_mpp=args.slide_mpp,
        slide_mpp_source=args.slide_mpp_source,
        checksum=not args.no_checksum,
    )
    dt = time.perf_counter() - t0
    log.info(
        "tiling: %s: %d tiles of %d px at %.3g µm/px (%d with tissue of %d in the grid) in %.1f s",
        args.slide,
        rec["n_tiles"],
        params.tile_size,
        params.mpp,
        rec["n_candidates"],
        rec["n_grid"],
        dt,
    )


def _cmd_tiling_summary(args: argparse.Namespace) -> None:
    from pathpipe.io.storage import atomic_file
    from pathpipe.tiling import tiling_summary

    df = tiling_summary(args.stores)
    with atomic_file(args.out) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _cmd_synthetic_slide(args: argparse.Namespace) -> None:
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


def _cmd_synthetic_cohort(args: argparse.Namespace) -> None:
    from pathpipe.io.storage import atomic_file
    from pathpipe.synthetic.generate import write_cohort

    if args.n_per_class < 1:
        raise ConfigError(f"--n-per-class must be >= 1, received {args.n_per_class}")
    sheet = write_cohort(
        args.out_dir, n_per_class=args.n_per_class, size=args.size, mpp=args.mpp, seed=args.seed
    )
    if args.sheet is not None:
        with atomic_file(args.sheet) as tmp:
            sheet.to_csv(tmp, sep="\t", index=False)
    log.info("synthetic cohort: %d slides in %s", len(sheet), args.out_dir)


def _cmd_synthetic_tiles(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.annotations import (
        SYNTHETIC_CLASSES,
        synthetic_annotated_tiles,
        write_annotated_dir,
    )

    if args.n_tiles < 1:
        raise ConfigError(f"--n-tiles must be >= 1, received {args.n_tiles}")
    tiles = synthetic_annotated_tiles(
        n_tiles=args.n_tiles, tile_size=args.tile_size, mpp=args.mpp, seed=args.seed
    )
    write_annotated_dir(args.out, list(tiles), classes=SYNTHETIC_CLASSES, mpp=args.mpp)
    log.info("synthetic annotated tiles: %d in %s", args.n_tiles, args.out)


# ---------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``pathpipe`` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    try:
        args.func(args)
    except PathpipeError as exc:
        print(f"ERROR: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
