"""Generated serial blocks reconstructed and compared with their truth (issue #12's targets).

For each seed and object depth, ``pathpipe synthetic serial`` writes a block of
12 sections (1024 px at 2 µm/px, 20 µm apart: a missing section, a torn one,
some mirrored); each section's mask is made from its slide's thumbnail at
4 µm/px as ``tests/reconstruction/test_reconstruction_run.py`` does (blurred
grey level below 225, holes under 8 px filled); :func:`run_reconstruction_sheet`
reconstructs the block at 8 µm/px with the default parameters, and
:func:`~pathpipe.reconstruction.evaluate.evaluate_against_truth` compares it with
the truth. At the default depth the block is also run with ``refine="none"``
(coarse search and contour ICP only), the baseline without the intensity
refinement.

``object_depth`` 4 (the default) sections the middle quarter of the object;
1.25 is the lens cut nearly tip to tip (end sections ~0.6 of its width that
change shape fast).

Printed: one row per run (seed, depth, refine, median rotation error °, median
displacement error in working px, mirrors right of the consecutive pairs, Dice
from the bottom section, volume ratio, seconds of ``run_reconstruction_sheet``),
then per depth and refine the share of blocks meeting each target.

    python benchmarks/bench_reconstruction_blocks.py                 # seeds 3 5 7 11
    python benchmarks/bench_reconstruction_blocks.py --seeds 3 --depths 4
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path

from machine import describe
from pathpipe.reconstruction import ReconstructionParams
from pathpipe.reconstruction.evaluate import (
    TARGETS,
    evaluate_against_truth,
    meets_targets,
    write_threshold_masks,
)
from pathpipe.reconstruction.run import run_reconstruction_sheet
from pathpipe.synthetic.serial import read_serial_truth, write_serial_block
from pathpipe.synthetic.serial_spec import SerialBlockSpec


def _block(root: Path, seed: int, depth: float) -> dict:
    """Write the block and its masks under ``root``; return its truth."""
    spec = SerialBlockSpec(
        block="blk",
        sections=12,
        spacing_um=20.0,
        size=1024,
        mpp=2.0,
        seed=seed,
        object_depth=depth,
    )
    sheet = write_serial_block(root / "blk", spec, workers=1)
    write_threshold_masks(zip(sheet["slide_id"], sheet["path"], strict=True), root / "results")
    return read_serial_truth(root / "blk")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[3, 5, 7, 11])
    parser.add_argument("--depths", type=float, nargs="+", default=[4.0, 1.25])
    args = parser.parse_args()
    print(describe())
    print(f"targets: {TARGETS}, every mirror right\n")

    rows = []
    print("| seed | depth | refine | rotation ° | translation px | mirrors | Dice | volume | s |")
    print("|---:|---:|---|---:|---:|---:|---:|---:|---:|")
    with tempfile.TemporaryDirectory() as tmp:
        for depth in args.depths:
            for seed in args.seeds:
                root = Path(tmp) / f"s{seed}_d{depth}"
                truth = _block(root, seed, depth)
                for refine in ("intensity", "none") if depth == 4.0 else ("intensity",):
                    out = root / f"out_{refine}"
                    params = ReconstructionParams(
                        section_spacing=20.0, working_mpp=8.0, refine=refine
                    )
                    start = time.perf_counter()
                    run_reconstruction_sheet(
                        root / "blk" / "slides.tsv", "blk", root / "results", out, params=params
                    )
                    seconds = time.perf_counter() - start
                    r = evaluate_against_truth(out, truth)
                    rows.append((depth, refine, meets_targets(r)))
                    print(
                        f"| {seed} | {depth:g} | {refine} | {r['median_rotation_deg']:.2f} "
                        f"| {r['median_displacement_px']:.2f} "
                        f"| {r['mirrors_right']}/{r['pairs_count']} | {r['dice']:.3f} "
                        f"| {r['volume_ratio']:.3f} | {seconds:.0f} |",
                        flush=True,
                    )

    print("\nshare of blocks meeting each target:")
    print("| depth | refine | blocks | rotation | translation | mirrors | Dice | all |")
    print("|---:|---|---:|---:|---:|---:|---:|---:|")
    for key in dict.fromkeys((d, f) for d, f, _ in rows):
        met = [m for d, f, m in rows if (d, f) == key]
        share = " | ".join(
            f"{sum(m[t] for m in met)}/{len(met)}"
            for t in ("rotation", "displacement", "mirrors", "dice", "all")
        )
        print(f"| {key[0]:g} | {key[1]} | {len(met)} | {share} |")


if __name__ == "__main__":
    main()
