"""``pathpipe segmentation run|summary|evaluate|train|pretrain|train-phenotypes``.

run                slide tiles.zarr -> nuclei.zarr, nuclei.parquet, nuclei.geojson, figure
summary            one row per slide's nuclei.zarr
evaluate           score a method on an annotated tile folder (Dice, AJI, PQ, F1)
train              train the unet model on an annotated tile folder
pretrain           pretrain its backbone as a denoising diffusion model on unlabelled tiles
train-phenotypes   train the classical method's phenotype classifier on labelled nuclei
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb, log, write_tsv
from pathpipe.params import add_options, comma_list, params_from_args
from pathpipe.segmentation.classical import ClassicalParams
from pathpipe.segmentation.params import STAINS, SegmentationParams
from pathpipe.segmentation.unet.run import TrainingParams

__all__ = ["add_parser"]


def add_parser(sub: Any) -> None:
    """Add ``segmentation`` and its verbs to the top-level sub-parsers."""
    verbs = add_stage(sub, "segmentation", "nuclei segmentation and phenotyping")

    q = add_verb(verbs, "run", "segment a slide's tiles.zarr", _cmd_run)
    q.add_argument("--tiles", required=True, type=Path, help="tiles.zarr of the slide")
    q.add_argument("--labels", required=True, type=Path, help="output nuclei.zarr")
    q.add_argument("--table", required=True, type=Path, help="output nuclei.parquet")
    q.add_argument("--geojson", required=True, type=Path, help="output nuclei.geojson")
    q.add_argument("--figure", type=Path, default=None, help="output report figure PNG")
    q.add_argument("--summary", type=Path, default=None, help="output summary JSON")
    _add_params(q)

    q = add_verb(verbs, "summary", "one-row-per-slide table of nuclei.zarr stores", _cmd_summary)
    q.add_argument("--stores", nargs="+", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="output TSV")

    q = add_verb(verbs, "evaluate", "score a method against annotated tiles", _cmd_evaluate)
    q.add_argument("--data", required=True, type=Path, help="annotated tile folder")
    q.add_argument("--out", required=True, type=Path, help="output JSON of the scores")
    q.add_argument("--per-tile", type=Path, default=None, help="output TSV, one row per tile")
    q.add_argument("--mpp", type=float, default=None, help="µm/px if classes.json has none")
    q.add_argument(
        "--class-map",
        type=_class_map,
        default=None,
        help="predicted=true class names, e.g. lymphocyte=non_tumour,other=non_tumour",
    )
    q.add_argument(
        "--match-radius-um",
        type=float,
        default=3.0,
        help="centroid distance within which a prediction detects a nucleus, µm "
        "(default: %(default)s)",
    )
    _add_params(q)

    q = add_verb(
        verbs,
        "train-phenotypes",
        "train the classical phenotype classifier on labelled nuclei",
        _cmd_train_phenotypes,
    )
    q.add_argument("--data", required=True, type=Path, help="annotated tile folder with types")
    q.add_argument("--out", required=True, type=Path, help="output classifier JSON")
    q.add_argument("--mpp", type=float, default=None, help="µm/px if classes.json has none")
    q.add_argument(
        "--stain", default="macenko", choices=STAINS, help="stain vectors (default: %(default)s)"
    )
    q.add_argument("--seed", type=int, default=0, help="(default: %(default)s)")

    q = add_verb(verbs, "train", "train the unet model on an annotated tile folder", _cmd_train)
    q.add_argument("--data", required=True, type=Path, help="annotated tile folder with types")
    q.add_argument("--out", required=True, type=Path, help="output model directory")
    q.add_argument(
        "--mpp", type=float, default=None, help="µm/px of the model (default: classes.json's)"
    )
    q.add_argument("--init", type=Path, default=None, help="diffusion checkpoint from 'pretrain'")
    _add_training_options(q)

    q = add_verb(
        verbs,
        "pretrain",
        "pretrain the backbone as a denoising diffusion model (unlabelled tiles)",
        _cmd_pretrain,
    )
    q.add_argument("--tiles", nargs="+", required=True, type=Path, help="tiles.zarr stores")
    q.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    q.add_argument("--mpp", type=float, default=None, help="µm/px (default: the stores')")
    _add_training_options(q, exclude=("strategy", "fraction"))


# ---- options ------------------------------------------------------------------------


def _class_map(value: str) -> dict[str, str]:
    """``--class-map``: ``predicted=true`` class-name pairs, comma-separated."""
    out = {}
    for item in comma_list(value):
        key, sep, target = item.partition("=")
        if not sep or not key or not target:
            raise argparse.ArgumentTypeError(
                f"expected predicted=true pairs such as 'lymphocyte=non_tumour', got {item!r}"
            )
        out[key] = target
    return out


def _int_list(value: str) -> tuple[int, ...]:
    """``--block-out-channels``: comma-separated integers."""
    try:
        return tuple(int(v) for v in comma_list(value))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated integers such as 32,64,128, got {value!r}"
        ) from None


def _add_params(q: argparse.ArgumentParser) -> None:
    """The options of config ``segmentation`` and, flat, of ``segmentation.classical``."""
    add_options(q.add_argument_group("parameters (config segmentation)"), SegmentationParams)
    add_options(
        q.add_argument_group("classical method (config segmentation.classical)"), ClassicalParams
    )


def _params(args: argparse.Namespace) -> SegmentationParams:
    return params_from_args(
        SegmentationParams, args, classical=params_from_args(ClassicalParams, args)
    )


def _add_training_options(q: argparse.ArgumentParser, *, exclude: tuple[str, ...] = ()) -> None:
    g = q.add_argument_group("training")
    add_options(g, TrainingParams, exclude=exclude)
    g.add_argument(
        "--block-out-channels",
        type=_int_list,
        default=None,
        help="UNet widths per level, e.g. 32,64,128 (default: the model config's)",
    )


# ---- handlers -----------------------------------------------------------------------


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.run import run_segmentation

    rec = run_segmentation(
        args.tiles,
        labels_path=args.labels,
        table_path=args.table,
        geojson_path=args.geojson,
        figure_path=args.figure,
        summary_path=args.summary,
        params=_params(args),
    )
    log.info(
        "segmentation: %s: %d nuclei in %d tiles, %.1f tiles/s",
        args.tiles,
        rec["n_nuclei"],
        rec["n_tiles"],
        rec["tiles_per_second"] or 0.0,
    )


def _cmd_summary(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.run import segmentation_summary

    write_tsv(segmentation_summary(args.stores), args.out)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.evaluate import evaluate_segmentation

    scores, _ = evaluate_segmentation(
        args.data,
        params=_params(args),
        class_map=args.class_map,
        match_radius_um=args.match_radius_um,
        mpp=args.mpp,
        out_path=args.out,
        per_tile_path=args.per_tile,
    )
    keys = ("dice", "aji", "dq", "sq", "pq", "precision", "recall", "f1")
    print(json.dumps({k: scores[k] for k in keys}, indent=2))


def _cmd_train_phenotypes(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.classifier import train_phenotypes

    rec = train_phenotypes(args.data, args.out, mpp=args.mpp, stain=args.stain, seed=args.seed)
    log.info(
        "phenotype classifier: %d nuclei, classes %s, training accuracy %.3f -> %s",
        rec["n_nuclei"],
        ", ".join(rec["classes"]),
        rec["training_accuracy"],
        rec["path"],
    )


def _cmd_train(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.unet.run import train_unet

    params = params_from_args(TrainingParams, args)
    t0 = time.perf_counter()
    result = train_unet(args.data, args.out, params=params, init=args.init, mpp=args.mpp)
    log.info(
        "train: %s, final loss %.4f, %d trainable parameters, %.0f s -> %s",
        params.strategy,
        result.final_loss,
        result.n_trainable,
        time.perf_counter() - t0,
        args.out,
    )


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.unet.run import pretrain_unet

    t0 = time.perf_counter()
    result = pretrain_unet(
        args.tiles, args.out, params=params_from_args(TrainingParams, args), mpp=args.mpp
    )
    log.info(
        "pretrain: final loss %.4f, %.0f s -> %s",
        result.final_loss,
        time.perf_counter() - t0,
        args.out,
    )
