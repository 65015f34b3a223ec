"""``pathpipe segmentation ...``: sub-commands of the segmentation stage (private).

run                slide tiles.zarr -> nuclei.zarr, nuclei.parquet, nuclei.geojson, figure
summary            one row per slide's nuclei.zarr
evaluate           score a method on an annotated tile folder (Dice, AJI, PQ, F1)
train              train the unet model on an annotated tile folder
pretrain           pretrain its backbone as a denoising diffusion model on unlabelled tiles
train-phenotypes   train the classical method's phenotype classifier on labelled nuclei
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

from pathpipe.errors import ConfigError
from pathpipe.segmentation.classical import ClassicalParams

__all__ = ["add_parser"]

log = logging.getLogger("pathpipe")


def _csv(value: str) -> tuple[str, ...]:
    items = tuple(v.strip() for v in value.split(",") if v.strip())
    if not items:
        raise argparse.ArgumentTypeError(f"expected a comma-separated list, got {value!r}")
    return items


def _class_map(value: str) -> dict[str, str]:
    out = {}
    for item in _csv(value):
        key, sep, target = item.partition("=")
        if not sep or not key or not target:
            raise argparse.ArgumentTypeError(
                f"expected predicted=true pairs such as 'lymphocyte=non_tumour', got {item!r}"
            )
        out[key] = target
    return out


def _threshold(value: str) -> str | float:
    if value == "otsu":
        return value
    try:
        return float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected 'otsu' or a number, got {value!r}") from None


def _add_classical_options(p: argparse.ArgumentParser) -> None:
    """One ``--<field>`` option per :class:`ClassicalParams` field, defaulting to it."""
    g = p.add_argument_group("classical method (config segmentation.classical)")
    for f in dataclasses.fields(ClassicalParams):
        flag = "--" + f.name.replace("_", "-")
        if f.name == "threshold":
            g.add_argument(flag, type=_threshold, default=f.default, help="'otsu' or a number")
        elif isinstance(f.default, bool):
            g.add_argument(
                flag, type=lambda v: v.lower() in ("1", "true", "yes"), default=f.default
            )
        else:
            g.add_argument(flag, type=type(f.default), default=f.default)


def _add_method_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--method", default="classical", choices=["classical", "unet"])
    p.add_argument(
        "--classes",
        type=_csv,
        default=("tumour", "lymphocyte", "other"),
        help="phenotype names, comma-separated (default: %(default)s)",
    )
    p.add_argument("--stain", default="macenko", choices=["macenko", "fixed"])
    p.add_argument("--stain-tiles", type=int, default=32)
    p.add_argument("--phenotype-model", default=None, help="classifier JSON (classical)")
    p.add_argument("--model", default=None, help="trained model directory (unet)")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N (unet)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    p.add_argument("--workers", type=int, default=None, help="worker processes (classical)")
    p.add_argument("--seed", type=int, default=0)
    _add_classical_options(p)


def _params(args: argparse.Namespace) -> Any:
    from pathpipe.segmentation.run import SegmentationParams

    classical = ClassicalParams(
        **{f.name: getattr(args, f.name) for f in dataclasses.fields(ClassicalParams)}
    )
    return SegmentationParams(
        method=args.method,
        classes=args.classes,
        classical=classical,
        stain=args.stain,
        stain_tiles=args.stain_tiles,
        phenotype_model=args.phenotype_model,
        model=args.model,
        device=args.device,
        batch_size=args.batch_size,
        amp=not args.no_amp,
        workers=args.workers,
        seed=args.seed,
    )


def add_parser(sub: Any) -> None:
    """Add ``segmentation`` and its sub-commands to the top-level sub-parsers."""
    p = sub.add_parser("segmentation", help="nuclei segmentation and phenotyping")
    ssub = p.add_subparsers(dest="segmentation_command", metavar="WHAT", required=True)

    q = ssub.add_parser("run", help="segment a slide's tiles.zarr")
    q.add_argument("--tiles", required=True, type=Path, help="tiles.zarr of the slide")
    q.add_argument("--labels", required=True, type=Path, help="output nuclei.zarr")
    q.add_argument("--table", required=True, type=Path, help="output nuclei.parquet")
    q.add_argument("--geojson", required=True, type=Path, help="output nuclei.geojson")
    q.add_argument("--figure", type=Path, default=None, help="output report figure PNG")
    q.add_argument("--summary", type=Path, default=None, help="output summary JSON")
    _add_method_options(q)
    q.set_defaults(func=_cmd_run)

    q = ssub.add_parser("summary", help="one-row-per-slide table of nuclei.zarr stores")
    q.add_argument("--stores", nargs="+", required=True, type=Path)
    q.add_argument("--out", required=True, type=Path, help="output TSV")
    q.set_defaults(func=_cmd_summary)

    q = ssub.add_parser("evaluate", help="score a method against annotated tiles")
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
    q.add_argument("--match-radius-um", type=float, default=3.0)
    _add_method_options(q)
    q.set_defaults(func=_cmd_evaluate)

    q = ssub.add_parser(
        "train-phenotypes", help="train the classical phenotype classifier on labelled nuclei"
    )
    q.add_argument("--data", required=True, type=Path, help="annotated tile folder with types")
    q.add_argument("--out", required=True, type=Path, help="output classifier JSON")
    q.add_argument("--mpp", type=float, default=None, help="µm/px if classes.json has none")
    q.add_argument("--stain", default="macenko", choices=["macenko", "fixed"])
    q.add_argument("--seed", type=int, default=0)
    q.set_defaults(func=_cmd_train_phenotypes)

    _add_nn_parsers(ssub)


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
    from pathpipe.io.storage import atomic_file
    from pathpipe.segmentation.run import segmentation_summary

    df = segmentation_summary(args.stores)
    with atomic_file(args.out) as tmp:
        df.to_csv(tmp, sep="\t", index=False)


def _cmd_evaluate(args: argparse.Namespace) -> None:
    from pathpipe.io.storage import atomic_file, write_json
    from pathpipe.segmentation.run import evaluate_segmentation

    scores, per_tile = evaluate_segmentation(
        args.data,
        params=_params(args),
        class_map=args.class_map,
        match_radius_um=args.match_radius_um,
        mpp=args.mpp,
    )
    write_json(args.out, scores)
    if args.per_tile is not None:
        with atomic_file(args.per_tile) as tmp:
            per_tile.to_csv(tmp, sep="\t", index=False)
    print(
        json.dumps(
            {k: scores[k] for k in ("dice", "aji", "dq", "sq", "pq", "precision", "recall", "f1")},
            indent=2,
        )
    )


def _cmd_train_phenotypes(args: argparse.Namespace) -> None:
    import numpy as np

    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.segmentation.phenotype import PhenotypeClassifier, labelled_descriptors
    from pathpipe.stain import estimate_stain_matrix

    ann = read_annotated_dir(args.data, require_types=True)
    mpp = ann.mpp if ann.mpp is not None else args.mpp
    if mpp is None:
        raise ConfigError(
            f"{args.data}/classes.json gives no 'mpp' and --mpp was not passed; expected the "
            "µm/px of the annotated tiles"
        )
    if not ann.classes:
        raise ConfigError(f"{args.data}/classes.json must name the classes of the type maps")
    stain = estimate_stain_matrix([t.rgb for t in ann.tiles], method=args.stain, seed=args.seed)
    desc, y = labelled_descriptors(
        ann.tiles, mpp=mpp, classes=ann.classes, stain_matrix=stain.matrix
    )
    clf = PhenotypeClassifier.fit(desc, y, classes=ann.classes, seed=args.seed)
    clf.save(args.out)
    codes, _ = clf.predict(desc)
    acc = float(np.mean(np.asarray(ann.classes)[codes] == np.asarray(y)))
    log.info(
        "phenotype classifier: %d nuclei, classes %s, training accuracy %.3f -> %s",
        len(y),
        ", ".join(ann.classes),
        acc,
        args.out,
    )


# ---------------------------------------------------------------------------
# unet: train and pretrain
# ---------------------------------------------------------------------------


def _add_model_options(q: argparse.ArgumentParser) -> None:
    q.add_argument("--iterations", type=int, default=2000)
    q.add_argument("--batch-size", type=int, default=8)
    q.add_argument("--lr", type=float, default=None, help="learning rate (default per mode)")
    q.add_argument("--crop-size", type=int, default=None, help="training crop edge, px")
    q.add_argument(
        "--block-out-channels",
        type=lambda v: tuple(int(x) for x in _csv(v)),
        default=None,
        help="UNet widths per level, e.g. 32,64,128",
    )
    q.add_argument("--layers-per-block", type=int, default=None, help="ResNet blocks per level")
    q.add_argument("--device", default="auto", help="auto, cpu, cuda or cuda:N")
    q.add_argument("--no-amp", action="store_true", help="no mixed precision on GPU")
    q.add_argument("--seed", type=int, default=0)


def _add_nn_parsers(ssub: Any) -> None:
    q = ssub.add_parser("train", help="train the unet model on an annotated tile folder")
    q.add_argument("--data", required=True, type=Path, help="annotated tile folder with types")
    q.add_argument("--out", required=True, type=Path, help="output model directory")
    q.add_argument("--mpp", type=float, default=None, help="µm/px if classes.json has none")
    q.add_argument("--init", type=Path, default=None, help="diffusion checkpoint from 'pretrain'")
    q.add_argument(
        "--strategy",
        default="scratch",
        choices=["scratch", "linear", "decoder", "full"],
        help="scratch; or, with --init: linear (frozen backbone, linear head), decoder "
        "(fine-tune the decoder), full (fine-tune everything)",
    )
    q.add_argument(
        "--fraction", type=float, default=1.0, help="seeded share of the labelled tiles to use"
    )
    _add_model_options(q)
    q.set_defaults(func=_cmd_train)

    q = ssub.add_parser(
        "pretrain", help="pretrain the backbone as a denoising diffusion model (unlabelled tiles)"
    )
    q.add_argument("--tiles", nargs="+", required=True, type=Path, help="tiles.zarr stores")
    q.add_argument("--out", required=True, type=Path, help="output checkpoint directory")
    q.add_argument("--mpp", type=float, default=None, help="µm/px (default: the stores')")
    _add_model_options(q)
    q.set_defaults(func=_cmd_pretrain)


def _model_config(args: argparse.Namespace, *, mpp: float | None) -> Any:
    """ModelConfig from the options given (the others keep ModelConfig's defaults)."""
    from pathpipe.segmentation.unet import ModelConfig

    given = {
        "crop_size": args.crop_size,
        "block_out_channels": args.block_out_channels,
        "layers_per_block": args.layers_per_block,
        "mpp": mpp,
    }
    return ModelConfig(**{k: v for k, v in given.items() if v is not None})


def _cmd_train(args: argparse.Namespace) -> None:
    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.segmentation.unet import train_segmentation

    ann = read_annotated_dir(args.data)
    mpp = args.mpp if args.mpp is not None else ann.mpp
    if args.init is not None:
        if any(v is not None for v in (args.crop_size, args.block_out_channels)):
            log.info("--init given: the architecture comes from the checkpoint")
        config = None
    else:
        config = _model_config(args, mpp=mpp)
    t0 = time.perf_counter()
    result = train_segmentation(
        ann,
        args.out,
        config=config,
        init=args.init,
        strategy=args.strategy,
        fraction=args.fraction,
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        amp=not args.no_amp,
        seed=args.seed,
    )
    log.info(
        "train: %s, final loss %.4f, %d trainable parameters, %.0f s -> %s",
        args.strategy,
        result.final_loss,
        result.n_trainable,
        time.perf_counter() - t0,
        args.out,
    )


def _cmd_pretrain(args: argparse.Namespace) -> None:
    from pathpipe.io.storage import open_store
    from pathpipe.segmentation.unet import pretrain_diffusion
    from pathpipe.segmentation.unet.data import store_mpp

    mpp = args.mpp
    if mpp is None:
        mpps = {store_mpp(open_store(p, stage="tiling")) for p in args.tiles}
        if len(mpps) != 1:
            raise ConfigError(
                f"the tile stores have different MPPs {sorted(mpps)}; expected one (pass --mpp "
                "to choose, stores at another MPP are refused)"
            )
        (mpp,) = mpps
    t0 = time.perf_counter()
    result = pretrain_diffusion(
        [str(p) for p in args.tiles],
        args.out,
        config=_model_config(args, mpp=mpp),
        iterations=args.iterations,
        batch_size=args.batch_size,
        lr=args.lr,
        device=args.device,
        amp=not args.no_amp,
        seed=args.seed,
    )
    log.info(
        "pretrain: final loss %.4f, %.0f s -> %s",
        result.final_loss,
        time.perf_counter() - t0,
        args.out,
    )
