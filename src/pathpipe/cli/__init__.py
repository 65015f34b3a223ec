"""The ``pathpipe`` command line. Snakemake rules call only this.

Every command is ``pathpipe <stage> <verb>``; each stage's group lives in the
module of the same name (``pathpipe.cli.tiling`` adds ``pathpipe tiling run`` and
``pathpipe tiling summary``). A handler parses its options and calls one
path-level function of the stage. Expected failures
(:class:`~pathpipe.errors.PathpipeError`) print ``ERROR: <message>`` and exit
with status 1 and no traceback; anything else is a bug and keeps its traceback.
Heavy libraries are imported inside the handlers so ``pathpipe --help`` is fast.
"""

from __future__ import annotations

import argparse
import logging
import sys
from collections.abc import Sequence

from pathpipe.cli import (
    features,
    mil,
    provenance,
    reconstruction,
    segmentation,
    slide,
    synthetic,
    tiling,
    tissue,
)
from pathpipe.errors import PathpipeError

__all__ = ["build_parser", "main"]

# The command groups, in the order of the pipeline.
GROUPS = (
    slide,
    tissue,
    tiling,
    segmentation,
    features,
    mil,
    reconstruction,
    provenance,
    synthetic,
)


def build_parser() -> argparse.ArgumentParser:
    """The ``pathpipe`` parser with every stage's command group."""
    from pathpipe import __version__

    parser = argparse.ArgumentParser(
        prog="pathpipe",
        description="Whole-slide pathology pipeline: pathpipe <stage> <verb> [options].",
    )
    parser.add_argument("--version", action="version", version=f"pathpipe {__version__}")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="STAGE", required=True)
    for group in GROUPS:
        group.add_parser(sub)
    return parser


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
