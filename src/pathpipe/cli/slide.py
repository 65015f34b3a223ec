"""``pathpipe slide info``: a slide's metadata, as every stage reads it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    verbs = add_stage(sub, "slide", "whole-slide image files")
    q = add_verb(verbs, "info", "print a slide's metadata as JSON", _cmd_info)
    q.add_argument("slide", type=Path)
    q.add_argument("--backend", default="auto", choices=["auto", "openslide", "tiffslide"])
    q.add_argument("--slide-mpp", type=float, default=None)


def _cmd_info(args: argparse.Namespace) -> None:
    from pathpipe.io.slide import open_slide

    with open_slide(args.slide, backend=args.backend, mpp=args.slide_mpp) as slide:
        print(json.dumps(slide.info.as_dict(), indent=2))
