"""Label-efficient segmentation: diffusion-pretrained backbone vs training from scratch.

The experiment of "Label-efficient multi-organ segmentation with a diffusion
model", on generated H&E tiles with exact nuclei: a DDPM is pretrained on every
tile of a pool *without* labels; then the segmentation network is trained on 1 %
and 10 % of the pool's tiles *with* labels, either from scratch or from the
pretrained backbone with the paper's two fine-tuning strategies (frozen backbone
+ linear head; fine-tuned decoder). Every model gets the same iterations and is
scored on held-out tiles (Dice, AJI, PQ, detection F1, type accuracy).

    .venv/bin/python benchmarks/bench_label_efficiency.py                # defaults below
    .venv/bin/python benchmarks/bench_label_efficiency.py --pool 200 --train-iters 400

Results go to benchmarks/out/label_efficiency.json and are printed as a table.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--pool", type=int, default=100, help="tiles in the pool (unlabelled)")
    ap.add_argument("--test", type=int, default=16, help="held-out test tiles")
    ap.add_argument("--tile-size", type=int, default=128)
    ap.add_argument("--mpp", type=float, default=0.5)
    ap.add_argument("--fractions", type=float, nargs="+", default=[0.01, 0.1])
    ap.add_argument("--strategies", nargs="+", default=["scratch", "linear", "decoder"])
    ap.add_argument("--pretrain-iters", type=int, default=600)
    ap.add_argument("--train-iters", type=int, default=150)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--channels", default="16,32,64", help="UNet block_out_channels")
    ap.add_argument("--crop", type=int, default=64)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--reuse-pretrained", action="store_true", help="reuse a finished pretraining run"
    )
    args = ap.parse_args()

    import torch

    from pathpipe.segmentation.tile_counts import evaluate_tile, summarise
    from pathpipe.segmentation.unet.config import ModelConfig
    from pathpipe.segmentation.unet.diffusion import pretrain_diffusion
    from pathpipe.segmentation.unet.io import load_model
    from pathpipe.segmentation.unet.predict import predict_tiles
    from pathpipe.segmentation.unet.train import train_segmentation
    from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

    torch.set_num_threads(max(1, torch.get_num_threads()))
    work = OUT / "label_efficiency"
    work.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    pool = list(
        synthetic_annotated_tiles(
            n_tiles=args.pool, tile_size=args.tile_size, mpp=args.mpp, seed=args.seed
        )
    )
    test = list(
        synthetic_annotated_tiles(
            n_tiles=args.test, tile_size=args.tile_size, mpp=args.mpp, seed=args.seed + 1000
        )
    )
    print(f"data: {len(pool)} pool + {len(test)} test tiles in {time.perf_counter() - t0:.0f} s")
    config = ModelConfig(
        classes=SYNTHETIC_CLASSES,
        mpp=args.mpp,
        block_out_channels=tuple(int(c) for c in args.channels.split(",")),
        layers_per_block=1,
        crop_size=args.crop,
    )
    common = {"batch_size": args.batch_size, "device": args.device, "seed": args.seed}

    t = time.perf_counter()
    diffusion_dir = work / f"diffusion_{args.pretrain_iters}_{args.channels.replace(',', '-')}"
    if args.reuse_pretrained and (diffusion_dir / "diffusion.json").exists():
        meta = json.loads((diffusion_dir / "diffusion.json").read_text())
        pretrain = {"final_loss": meta.get("training", {}).get("final_loss"), "reused": True}
        print(f"pretrain: reusing {diffusion_dir}")
    else:
        pre = pretrain_diffusion(
            np.stack([tile.rgb for tile in pool]),
            diffusion_dir,
            config=config,
            iterations=args.pretrain_iters,
            **common,
        )
        pretrain = {"final_loss": pre.final_loss, "seconds": round(time.perf_counter() - t, 1)}
        print(
            f"pretrain: {args.pretrain_iters} it, loss {pre.final_loss:.4f}, {pretrain['seconds']} s"
        )

    def score(model_dir: Path) -> dict:
        model, cfg = load_model(model_dir, device=args.device)
        preds = predict_tiles(model, cfg, np.stack([tile.rgb for tile in test]), device=args.device)
        counts = []
        for tile, pred in zip(test, preds, strict=True):
            lut = np.zeros(pred.n + 1, np.uint8)
            lut[1:] = np.where(pred.types >= 0, pred.types + 1, 0)
            counts.append(
                evaluate_tile(
                    tile.inst_map,
                    pred.inst,
                    true_type=tile.type_map,
                    pred_type=lut[pred.inst],
                    match_radius_px=3.0 / args.mpp,
                )
            )
        return summarise(counts, classes=SYNTHETIC_CLASSES)

    rows = []
    for fraction in args.fractions:
        n_labelled = max(1, round(fraction * len(pool)))
        for strategy in args.strategies:
            t = time.perf_counter()
            out = work / f"seg_{strategy}_{fraction:g}"
            res = train_segmentation(
                pool,
                out,
                config=config if strategy == "scratch" else None,
                init=None if strategy == "scratch" else diffusion_dir,
                strategy=strategy,
                fraction=fraction,
                iterations=args.train_iters,
                **common,
            )
            s = score(out)
            rows.append(
                {
                    "fraction": fraction,
                    "labelled_tiles": n_labelled,
                    "strategy": strategy,
                    "trainable_params": res.n_trainable,
                    "final_loss": res.final_loss,
                    "seconds": round(time.perf_counter() - t, 1),
                    **{k: s[k] for k in ("dice", "aji", "pq", "f1", "type_accuracy")},
                }
            )
            r = rows[-1]
            print(
                f"{fraction:>5g} ({n_labelled:3d} tiles) {strategy:8s} dice {r['dice']:.3f} "
                f"aji {r['aji']:.3f} pq {r['pq']:.3f} f1 {r['f1']:.3f} "
                f"type acc {_fmt(r['type_accuracy'])} loss {r['final_loss']:.3f} ({r['seconds']:.0f} s)"
            )
    result = {
        "args": vars(args),
        "machine": {
            "platform": platform.platform(),
            "processor": platform.processor(),
            "torch": torch.__version__,
            "threads": torch.get_num_threads(),
        },
        "pretrain": pretrain,
        "rows": rows,
    }
    (OUT / "label_efficiency.json").write_text(json.dumps(result, indent=2) + "\n")
    print("\n| labelled | strategy | Dice | AJI | PQ | F1 | type acc. |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        print(
            f"| {r['fraction']:g} ({r['labelled_tiles']} tiles) | {r['strategy']} | "
            f"{r['dice']:.3f} | {r['aji']:.3f} | {r['pq']:.3f} | {r['f1']:.3f} | "
            f"{_fmt(r['type_accuracy'])} |"
        )


def _fmt(x: float | None) -> str:
    return "–" if x is None or (isinstance(x, float) and math.isnan(x)) else f"{x:.3f}"


if __name__ == "__main__":
    main()
