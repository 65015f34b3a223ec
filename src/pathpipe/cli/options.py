"""Options and helpers shared by the stages' command groups.

Each stage module of :mod:`pathpipe.cli` has ``add_parser(sub)``, which adds the
group ``pathpipe <stage>`` and its verbs, and one handler per verb that parses
its arguments and calls one path-level function of the stage.
"""

from __future__ import annotations

import argparse
import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["add_slide_options", "add_stage", "add_verb", "log", "slide_kwargs", "write_tsv"]

log = logging.getLogger("pathpipe")


def add_stage(sub: Any, name: str, help: str) -> Any:
    """Add the command group ``pathpipe <name>``; return its sub-parsers for the verbs."""
    p = sub.add_parser(name, help=help, description=help)
    return p.add_subparsers(dest=f"{name}_command", metavar="VERB", required=True)


def add_verb(
    verbs: Any, name: str, help: str, func: Callable[[argparse.Namespace], None]
) -> argparse.ArgumentParser:
    """Add ``pathpipe <stage> <name>`` handled by ``func``."""
    q = verbs.add_parser(name, help=help, description=help)
    q.set_defaults(func=func)
    return q


def add_slide_options(p: argparse.ArgumentParser) -> None:
    """``--slide``, ``--backend``, ``--slide-mpp`` and ``--slide-mpp-source``."""
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


def slide_kwargs(args: argparse.Namespace) -> dict[str, Any]:
    """The keyword arguments of a path-level function that opens ``args.slide``."""
    return {
        "backend": args.backend,
        "slide_mpp": args.slide_mpp,
        "slide_mpp_source": args.slide_mpp_source,
    }


def write_tsv(table: Any, out: str | os.PathLike[str]) -> None:
    """Write a summary DataFrame atomically as TSV."""
    from pathpipe.io.storage import atomic_file

    with atomic_file(out) as tmp:
        table.to_csv(tmp, sep="\t", index=False)
