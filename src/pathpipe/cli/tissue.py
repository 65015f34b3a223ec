"""``pathpipe tissue run``: the tissue stage's command."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_slide_options, add_stage, add_verb, log, slide_kwargs
from pathpipe.params import add_options, params_from_args
from pathpipe.tissue import TissueParams

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    verbs = add_stage(sub, "tissue", "tissue detection: mask PNG, overlay PNG, QC JSON")
    q = add_verb(verbs, "run", "detect a slide's tissue", _cmd_run)
    add_slide_options(q)
    q.add_argument("--mask", required=True, type=Path, help="output mask PNG")
    q.add_argument("--overlay", required=True, type=Path, help="output overlay PNG")
    q.add_argument("--qc", required=True, type=Path, help="output QC JSON")
    add_options(q.add_argument_group("parameters (config tissue)"), TissueParams)


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.tissue import run_tissue

    rec = run_tissue(
        args.slide,
        mask_path=args.mask,
        overlay_path=args.overlay,
        qc_path=args.qc,
        params=params_from_args(TissueParams, args),
        **slide_kwargs(args),
    )
    log.info(
        "tissue: %s: %.3f mm² (%.1f %% of the slide), MPP %.4f from %s",
        args.slide,
        rec["tissue_area_mm2"],
        100 * rec["tissue_fraction"],
        rec["mpp"]["x"],
        rec["mpp"]["source"],
    )
