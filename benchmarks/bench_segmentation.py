"""Nuclei segmentation: throughput of each method and accuracy against ground truth.

Throughput (tiles/s, 256-px tiles at 0.5 µm/px of a generated slide):

* **pathpipe classical** — ``pathpipe segmentation run`` as the workflow runs it
  (stain estimate, segmentation, phenotypes, label chunks, table, GeoJSON,
  figure), in a subprocess, start-up included.
* **plain scikit-image** — the loop a user would otherwise write: ``rgb2hed``,
  Otsu, ``peak_local_max`` on the distance transform, ``watershed``,
  ``regionprops_table``, one tile at a time, nothing written.
* **pathpipe unet** — ``predict_tiles`` of an untrained default-size model
  (speed does not depend on the weights), when ``--unet`` is given.

Accuracy (``pathpipe segmentation evaluate``, classical): generated tiles at 0.5
and 0.25 µm/px, and the real NuCLS tiles in ``tests/data/nucls``.

    .venv/bin/python benchmarks/bench_segmentation.py [--size 8192] [--unet]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

OUT = Path(__file__).parent / "out"
REPO = Path(__file__).resolve().parents[1]


def plain_skimage(tile: np.ndarray) -> int:
    """The per-tile classical pipeline of a typical script (scikit-image only)."""
    from scipy import ndimage
    from skimage.color import rgb2hed
    from skimage.feature import peak_local_max
    from skimage.filters import gaussian, threshold_otsu
    from skimage.measure import label, regionprops_table
    from skimage.morphology import remove_small_objects
    from skimage.segmentation import watershed

    h = gaussian(rgb2hed(tile)[..., 0], 1)
    mask = h > threshold_otsu(h)
    mask = remove_small_objects(ndimage.binary_fill_holes(mask), 30)
    dist = ndimage.distance_transform_edt(mask)
    peaks = peak_local_max(dist, min_distance=4, labels=label(mask))
    markers = np.zeros(mask.shape, np.int32)
    markers[tuple(peaks.T)] = np.arange(1, len(peaks) + 1)
    labels = watershed(-dist, markers, mask=mask)
    regionprops_table(labels, intensity_image=h, properties=("label", "area", "centroid"))
    return int(labels.max())


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--size", type=int, default=8192, help="level-0 side of the slide")
    ap.add_argument("--workers", type=int, default=os.cpu_count() or 1)
    ap.add_argument("--unet", action="store_true", help="also time the unet model")
    args = ap.parse_args()

    from pathpipe.io.storage import open_store
    from pathpipe.segmentation.annotations import write_annotated_dir
    from pathpipe.segmentation.evaluate import evaluate_segmentation
    from pathpipe.segmentation.params import SegmentationParams
    from pathpipe.synthetic.generate import SyntheticSlideSpec, write_slide
    from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles
    from pathpipe.tiling.run import TilingParams, run_tiling
    from pathpipe.tissue import run_tissue

    OUT.mkdir(exist_ok=True)
    work = OUT / f"seg_{args.size}"
    work.mkdir(exist_ok=True)
    slide = OUT / f"bench_{args.size}.tiff"
    if not slide.exists():
        spec = SyntheticSlideSpec(width=args.size, height=args.size, slide_class="high", seed=7)
        write_slide(slide, spec)
    tiles = work / "tiles.zarr"
    if not tiles.exists():
        run_tissue(
            slide, mask_path=work / "m.png", overlay_path=work / "o.png", qc_path=work / "q.json"
        )
        run_tiling(slide, mask_path=work / "m.png", out_path=tiles, params=TilingParams())
    tiles_arr = open_store(tiles, stage="tiling")["tiles"]
    n = tiles_arr.shape[0]
    result: dict = {"slide": str(slide), "tiles": n, "rows": {}}

    t = time.perf_counter()
    cmd = [
        sys.executable, "-m", "pathpipe.cli", "segmentation", "run", "--tiles", str(tiles),
        "--labels", str(work / "nuclei.zarr"), "--table", str(work / "nuclei.parquet"),
        "--geojson", str(work / "nuclei.geojson"), "--figure", str(work / "seg.png"),
        "--workers", str(args.workers),
    ]  # fmt: skip
    subprocess.run(cmd, check=True, capture_output=True)
    dt = time.perf_counter() - t
    meta = open_store(work / "nuclei.zarr", stage="segmentation").attrs["pathpipe"]
    result["rows"]["pathpipe classical"] = {
        "tiles_per_s": n / dt,
        "nuclei": meta["n_nuclei"],
        "workers": args.workers,
    }
    print(f"pathpipe classical: {n / dt:.1f} tiles/s ({meta['n_nuclei']} nuclei, {dt:.1f} s)")

    sample = np.asarray(tiles_arr[: min(n, 100)])
    t = time.perf_counter()
    found = sum(plain_skimage(tile) for tile in sample)
    dt = time.perf_counter() - t
    result["rows"]["plain scikit-image loop"] = {"tiles_per_s": len(sample) / dt, "workers": 1}
    print(f"plain scikit-image loop: {len(sample) / dt:.1f} tiles/s ({found} objects)")

    if args.unet:
        import torch

        from pathpipe.segmentation.unet.config import ModelConfig
        from pathpipe.segmentation.unet.model import build_model
        from pathpipe.segmentation.unet.predict import predict_tiles

        model = build_model(ModelConfig(classes=("tumour", "lymphocyte", "other"))).eval()
        batch = sample[:16]
        predict_tiles(model, ModelConfig(classes=("tumour", "lymphocyte", "other")), batch[:2])
        t = time.perf_counter()
        predict_tiles(
            model, ModelConfig(classes=("tumour", "lymphocyte", "other")), batch, batch_size=8
        )
        dt = time.perf_counter() - t
        result["rows"]["pathpipe unet (CPU)"] = {
            "tiles_per_s": len(batch) / dt,
            "threads": torch.get_num_threads(),
        }
        print(f"pathpipe unet (CPU): {len(batch) / dt:.2f} tiles/s")

    ratio = (
        result["rows"]["pathpipe classical"]["tiles_per_s"]
        / result["rows"]["plain scikit-image loop"]["tiles_per_s"]
    )
    result["classical_vs_plain"] = ratio
    print(f"pathpipe classical / plain loop: {ratio:.2f}x")

    evals = {}
    for mpp in (0.5, 0.25):
        d = OUT / f"synthetic_tiles_{mpp:g}"
        if not d.exists():
            gen = synthetic_annotated_tiles(n_tiles=32, mpp=mpp, seed=100)
            write_annotated_dir(d, list(gen), classes=SYNTHETIC_CLASSES, mpp=mpp)
        scores, _ = evaluate_segmentation(d, params=SegmentationParams())
        evals[f"synthetic {mpp:g} µm/px"] = scores
    scores, _ = evaluate_segmentation(
        REPO / "tests" / "data" / "nucls",
        params=SegmentationParams(),
        class_map={"lymphocyte": "non_tumour", "other": "non_tumour"},
    )
    evals["NuCLS (real, ~0.25 µm/px)"] = scores
    result["evaluation"] = evals
    print("\n| data | Dice | AJI | DQ | SQ | PQ | precision | recall | F1 | per-class F1 |")
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|---|")
    for name, s in evals.items():
        per = ", ".join(f"{k} {v['f1']:.2f}" for k, v in s["per_class"].items())
        print(
            f"| {name} | {s['dice']:.3f} | {s['aji']:.3f} | {s['dq']:.3f} | {s['sq']:.3f} | "
            f"{s['pq']:.3f} | {s['precision']:.3f} | {s['recall']:.3f} | {s['f1']:.3f} | {per} |"
        )
    result["machine"] = {"platform": platform.platform(), "cpus": os.cpu_count()}
    (OUT / "segmentation.json").write_text(json.dumps(result, indent=2, default=str) + "\n")


if __name__ == "__main__":
    main()
