"""Tiling throughput: pathpipe vs a naive read_region loop vs the decode bound.

Generates (once, cached under ``benchmarks/out/``) a synthetic H&E pyramidal
JPEG TIFF of at least 40,000 × 40,000 px and measures, in one run, on the same
tissue tiles:

1. **pathpipe** — ``pathpipe tiling`` in a subprocess (tiles/s, peak RSS of the
   process), writing ``tiles.zarr`` with QC values, as the workflow runs it;
2. **naive** — a single-threaded loop of OpenSlide ``read_region`` + RGB array
   conversion per tile, as CLAM-style tools do (nothing written);
3. **decode bound** — decoding every JPEG tile of level 0 and nothing else
   (imagecodecs/libjpeg-turbo), single-threaded and on every core.

Prints a table with ratios and writes ``benchmarks/out/tiling.json``.

    python benchmarks/bench_tiling.py            # 40,960² slide (~5 min first run)
    python benchmarks/bench_tiling.py --size 16384 --naive-tiles 1000   # quick look
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

OUT = Path(__file__).resolve().parent / "out"


def machine() -> str:
    try:
        cpu = next(
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        )
    except (OSError, StopIteration):
        cpu = platform.processor() or "unknown CPU"
    import psutil

    mem = psutil.virtual_memory().total / 2**30
    return f"{os.cpu_count()} cores ({cpu}), {mem:.0f} GiB RAM, Python {platform.python_version()}"


def make_slide(size: int, seed: int) -> Path:
    from pathpipe.synthetic import SyntheticSlideSpec, write_slide

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


def decode_bound(slide_path: Path, workers: int) -> tuple[float, int]:
    """Decode every JPEG tile of level 0 with ``workers`` threads. Tiles/s, tile count."""
    import imagecodecs
    import tifffile

    with tifffile.TiffFile(slide_path) as tf:
        page = tf.pages[0]
        offsets, counts, tables = page.dataoffsets, page.databytecounts, page.jpegtables
    fd = os.open(slide_path, os.O_RDONLY)
    n = len(offsets)

    def decode(i: int) -> int:
        data = os.pread(fd, counts[i], offsets[i])
        return imagecodecs.jpeg8_decode(data, tables=tables).shape[0]

    t0 = time.perf_counter()
    if workers == 1:
        for i in range(n):
            decode(i)
    else:
        with ThreadPoolExecutor(workers) as pool:
            for _ in pool.map(decode, range(n), chunksize=64):
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
        "--codecs",
        nargs="+",
        default=["lz4", "none", "zstd"],
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
        dt, rss = run_cli(
            [
                "tiling", "--slide", str(slide), "--tissue-mask", str(mask), "--out", str(store),
                "--mpp", "0.25", "--tile-size", str(args.tile), "--workers", str(args.workers),
                "--compression", codec, "--no-checksum",
            ]
        )  # fmt: skip
        g = zarr.open_group(str(store), mode="r")
        n_tiles = g["tiles"].shape[0]
        codec_runs[codec] = {
            "tiles_per_s": n_tiles / dt,
            "seconds": dt,
            "peak_rss_mib": rss,
            "store_mib": sum(p.stat().st_size for p in store.rglob("*") if p.is_file()) / 2**20,
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
    naive = naive_loop(slide, sample, args.tile)

    # 3. decode bound
    bound_1, n_jpeg = decode_bound(slide, 1)
    bound_n, _ = decode_bound(slide, args.workers)

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
        "naive_tiles_timed": len(sample),
        "decode_bound_1thread_tiles_per_s": bound_1,
        f"decode_bound_{args.workers}threads_tiles_per_s": bound_n,
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
            f"{r['tiles_per_s'] / bound_n:6.0%}   store {r['store_mib']:.0f} MiB, "
            f"peak RSS {r['peak_rss_mib']:.0f} MiB"
        )
    print(f"{'naive read_region loop (1 thread)':44s} {naive:8.0f}")
    print(
        f"{'decode bound, 1 thread':44s} {bound_1:8.0f}  (pathpipe {args.codecs[0]}: {ours / bound_1:.0%})"
    )
    print(f"{'decode bound, ' + str(args.workers) + ' threads':44s} {bound_n:8.0f}")
    print(
        f"pathpipe ({args.codecs[0]}) peak RSS: {rss:.0f} MiB; tiles.zarr: {store_mib:.0f} MiB; wall {dt:.1f} s"
    )


if __name__ == "__main__":
    main()
