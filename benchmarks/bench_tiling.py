"""Tiling throughput: pathpipe vs a naive read_region loop vs the decode bound.

Generates (once, cached under ``benchmarks/out/``) a synthetic H&E pyramidal
JPEG TIFF of at least 40,000 × 40,000 px and measures, in one run, on the same
tissue tiles:

1. **pathpipe** — ``pathpipe tiling`` in a subprocess (tiles/s, peak RSS of the
   process), writing ``tiles.zarr`` with QC values, as the workflow runs it;
2. **naive** — a single-threaded loop of OpenSlide ``read_region`` + RGB array
   conversion per tile, as CLAM-style tools do (nothing written);
3. **decode bound** — decoding every JPEG tile of level 0 and nothing else
   (imagecodecs/libjpeg-turbo), single-threaded and on every core (threads
   take batches of 64 tiles); also on the tissue tiles alone.

Each measurement runs ``--repeat`` times (3) and the median is reported. Prints
a table with ratios and writes ``benchmarks/out/tiling.json``.

    python benchmarks/bench_tiling.py            # 40,960² slide (~5 min first run)
    python benchmarks/bench_tiling.py --size 16384 --naive-tiles 1000   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from machine import describe

OUT = Path(__file__).resolve().parent / "out"


def machine() -> str:
    return describe()


def make_slide(size: int, seed: int) -> Path:
    from pathpipe.synthetic.generate import SyntheticSlideSpec, write_slide

    path = OUT / f"bench_{size}.tiff"
    if path.exists():
        return path
    OUT.mkdir(parents=True, exist_ok=True)
    spec = SyntheticSlideSpec(width=size, height=size, mpp=0.25, slide_class="high", seed=seed)
    t0 = time.perf_counter()
    write_slide(path, spec)
    print(
        f"generated {path.name} ({path.stat().st_size / 2**20:.0f} MiB) in {time.perf_counter() - t0:.0f} s"
    )
    return path


def run_cli(args: list[str]) -> tuple[float, float]:
    """Run ``pathpipe ARGS``; return (wall seconds, peak RSS of the child in MiB)."""
    exe = Path(sys.executable).with_name("pathpipe")
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t0 = time.perf_counter()
    subprocess.run([str(exe), *args], check=True)
    dt = time.perf_counter() - t0
    peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if peak_kib <= before:  # ru_maxrss is the max over children so far
        peak_kib = before
    return dt, peak_kib / 1024


def naive_loop(slide_path: Path, l0_xy: np.ndarray, tile: int) -> float:
    """CLAM-style: one read_region per tile, convert to an RGB array. Tiles/s."""
    import openslide

    slide = openslide.OpenSlide(str(slide_path))
    t0 = time.perf_counter()
    for x, y in l0_xy:
        region = slide.read_region((int(x), int(y)), 0, (tile, tile)).convert("RGB")
        arr = np.asarray(region)
        assert arr.shape == (tile, tile, 3)
    dt = time.perf_counter() - t0
    slide.close()
    return len(l0_xy) / dt


def decode_bound(
    slide_path: Path, workers: int, tiles: np.ndarray | None = None
) -> tuple[float, int]:
    """Decode JPEG tiles of level 0 with ``workers`` threads, nothing else.

    Every tile of the level, or the tiles whose level-0 top-left corners are
    ``tiles`` (K, 2). Threads take batches of 64 tiles (imagecodecs releases the
    GIL while decoding), so the bound is not held down by per-tile task
    overhead. Returns tiles/s and the tile count.
    """
    import imagecodecs
    import tifffile

    with tifffile.TiffFile(slide_path) as tf:
        page = tf.pages[0]
        offsets, counts, tables = page.dataoffsets, page.databytecounts, page.jpegtables
        tw, th, width = page.tilewidth, page.tilelength, page.imagewidth
    if tiles is None:
        index = np.arange(len(offsets))
    else:
        assert not (tiles[:, 0] % tw).any() and not (tiles[:, 1] % th).any(), "tiles off the grid"
        index = (tiles[:, 1] // th) * -(-width // tw) + tiles[:, 0] // tw
    fd = os.open(slide_path, os.O_RDONLY)
    n = len(index)

    def decode(start: int) -> None:
        for i in index[start : start + 64]:
            data = os.pread(fd, int(counts[i]), int(offsets[i]))
            imagecodecs.jpeg8_decode(data, tables=tables)

    t0 = time.perf_counter()
    if workers == 1:
        for start in range(0, n, 64):
            decode(start)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(decode, range(0, n, 64)):
                pass
    dt = time.perf_counter() - t0
    os.close(fd)
    return n / dt, n


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--size", type=int, default=40_960, help="slide edge in px (default 40,960)")
    ap.add_argument("--tile", type=int, default=256)
    ap.add_argument("--naive-tiles", type=int, default=3000, help="tiles timed in the naive loop")
    ap.add_argument("--workers", type=int, default=os.cpu_count())
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument(
        "--repeat", type=int, default=3, help="runs of each measurement; the median is reported"
    )
    ap.add_argument(
        "--codecs",
        nargs="+",
        default=["lz4", "none", "zstd", "source"],
        help="tile codecs to time (first = headline)",
    )
    args = ap.parse_args()

    slide = make_slide(args.size, args.seed)
    work = OUT / f"run_{args.size}"
    work.mkdir(parents=True, exist_ok=True)
    mask = work / "tissue.png"
    run_cli(
        [
            "tissue",
            "run",
            "--slide",
            str(slide),
            "--mask",
            str(mask),
            "--overlay",
            str(work / "overlay.png"),
            "--qc",
            str(work / "tissue.json"),
        ]
    )

    # 1. pathpipe tiling at the slide's own resolution (0.25 µm/px, level 0),
    #    once per tile codec (lz4 is the default)
    import zarr

    codec_runs = {}
    for codec in args.codecs:
        store = work / f"tiles_{codec}.zarr"
        times, rss = [], 0.0
        for _ in range(args.repeat):
            # As under Snakemake, which removes a job's outputs before it runs: no
            # old store to replace, no dirty pages of earlier runs being flushed.
            shutil.rmtree(store, ignore_errors=True)
            os.sync()
            dt, peak = run_cli(
                [
                    "tiling", "run", "--slide", str(slide), "--tissue-mask", str(mask), "--out", str(store),
                    "--mpp", "0.25", "--tile-size", str(args.tile), "--workers", str(args.workers),
                    "--compression", codec, "--no-checksum",
                ]
            )  # fmt: skip
            times.append(dt)
            rss = max(rss, peak)
        g = zarr.open_group(str(store), mode="r")
        n_tiles = g["tiles"].shape[0]
        codec_runs[codec] = {
            "tiles_per_s": n_tiles / statistics.median(times),
            "tiles_per_s_runs": [n_tiles / t for t in times],
            "seconds": statistics.median(times),
            "peak_rss_mib": rss,
            "store_mib": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20,
            "store_files": sum(1 for p in store.rglob("*") if p.is_file()),
        }
        l0_xy = g["l0_xy"][:]
    ours = codec_runs[args.codecs[0]]["tiles_per_s"]
    dt = codec_runs[args.codecs[0]]["seconds"]  # headline codec
    rss = max(r["peak_rss_mib"] for r in codec_runs.values())
    store_mib = codec_runs[args.codecs[0]]["store_mib"]

    # 2. naive loop over (a seeded sample of) the same tiles
    rng = np.random.default_rng(args.seed)
    sample = l0_xy[
        np.sort(rng.choice(len(l0_xy), size=min(args.naive_tiles, len(l0_xy)), replace=False))
    ]
    naive_runs = [naive_loop(slide, sample, args.tile) for _ in range(args.repeat)]
    naive = statistics.median(naive_runs)

    # 3. decode bound: every JPEG tile of level 0 (the definition), and
    #    only the tissue tiles pathpipe stored (the same tiles; they are busier
    #    than background tiles and slower to decode)
    def median_rate(workers: int, tiles: np.ndarray | None = None) -> tuple[float, int]:
        runs = [decode_bound(slide, workers, tiles) for _ in range(args.repeat)]
        return statistics.median(r[0] for r in runs), runs[0][1]

    bound_1, n_jpeg = median_rate(1)
    bound_n, _ = median_rate(args.workers)
    on_grid = args.tile == 256  # the generated slide's JPEG tiles are 256 px
    same_1, _ = median_rate(1, l0_xy) if on_grid else (float("nan"), 0)
    same_n, _ = median_rate(args.workers, l0_xy) if on_grid else (float("nan"), 0)

    res = {
        "machine": machine(),
        "slide": {
            "path": slide.name,
            "size": args.size,
            "jpeg_tiles_level0": n_jpeg,
            "bytes": slide.stat().st_size,
        },
        "tiles": n_tiles,
        "tile_size": args.tile,
        "workers": args.workers,
        "codecs": codec_runs,
        "pathpipe_tiles_per_s": ours,
        "pathpipe_seconds": dt,
        "pathpipe_peak_rss_mib": rss,
        "store_mib": store_mib,
        "naive_tiles_per_s": naive,
        "naive_tiles_per_s_runs": naive_runs,
        "repeats": args.repeat,
        "naive_tiles_timed": len(sample),
        "decode_bound_1thread_tiles_per_s": bound_1,
        f"decode_bound_{args.workers}threads_tiles_per_s": bound_n,
        "decode_bound_tissue_1thread_tiles_per_s": same_1,
        f"decode_bound_tissue_{args.workers}threads_tiles_per_s": same_n,
        f"fraction_of_tissue_decode_bound_{args.workers}threads": ours / same_n,
        "ratio_vs_naive": ours / naive,
        "fraction_of_decode_bound_1thread": ours / bound_1,
        f"fraction_of_decode_bound_{args.workers}threads": ours / bound_n,
    }
    (OUT / "tiling.json").write_text(json.dumps(res, indent=2))
    print(f"\nmachine: {res['machine']}")
    print(
        f"slide: {args.size}² px, {n_jpeg} JPEG tiles at level 0; {n_tiles} tissue tiles of {args.tile} px"
    )
    print(f"{'method':44s} {'tiles/s':>8s}  vs naive  vs decode bound ({args.workers} thr)")
    for codec, r in codec_runs.items():
        label = f"pathpipe tiling, {codec} ({args.workers} threads)"
        print(
            f"{label:44s} {r['tiles_per_s']:8.0f}  {r['tiles_per_s'] / naive:7.2f}×  "
            f"{r['tiles_per_s'] / bound_n:6.0%}   store {r['store_mib']:.0f} MiB in "
            f"{r['store_files']} files, peak RSS {r['peak_rss_mib']:.0f} MiB; runs "
            + ", ".join(f"{v:.0f}" for v in r["tiles_per_s_runs"])
        )
    print(
        f"{'naive read_region loop (1 thread)':44s} {naive:8.0f}  runs "
        + ", ".join(f"{v:.0f}" for v in naive_runs)
    )
    print(
        f"{'decode bound, 1 thread':44s} {bound_1:8.0f}  (pathpipe {args.codecs[0]}: {ours / bound_1:.0%})"
    )
    print(f"{'decode bound, ' + str(args.workers) + ' threads':44s} {bound_n:8.0f}")
    print(
        f"{'decode bound, tissue tiles only, 1 thread':44s} {same_1:8.0f}  (pathpipe: {ours / same_1:.0%})"
    )
    print(
        f"{'decode bound, tissue tiles only, ' + str(args.workers) + ' threads':44s} {same_n:8.0f}  "
        f"(pathpipe: {ours / same_n:.0%})"
    )
    print(
        f"pathpipe ({args.codecs[0]}) peak RSS: {rss:.0f} MiB; tiles.zarr: {store_mib:.0f} MiB; wall {dt:.1f} s"
    )


if __name__ == "__main__":
    main()
