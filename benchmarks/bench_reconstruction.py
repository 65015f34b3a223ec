"""Registration of one large layer pair: the ICP subsets against full ICP, with a known truth.

A generated section pair (:mod:`pathpipe.reconstruction.phantom`: an irregular
object with lobes and holes) of about 470,000 points per layer at the default
working resolution (16 µm/px), the moving section turned, shifted and (with
``--mirrored``) mirrored by a known transform. Every method starts from the same
coarse alignment (the best candidate of
:func:`~pathpipe.reconstruction.coarse.coarse_candidates`, up to half an angle
step from the truth) and runs Open3D ICP with the default parameters on its
subset:

* ``full`` — every moving point, point-to-point (the paper's baseline, "regular ICP");
* ``band_and`` — the paper's Algorithm 1 band, rectangle (x AND y in range);
* ``band_or`` — the band as the paper's results text reads, cross (x OR y);
* ``voxel`` — multi-scale voxel centroids of both layers, coarse to fine;
* ``contour`` (the default) — the outlines of both layers, point-to-line.

For each: ICP seconds (median of ``--repeat`` runs), fitness and inlier RMSE on the
whole layers, rotation error against the truth (degrees), largest displacement
error over the section (working pixels), and the ratio of its time to full ICP's.
``contour`` also reports its time plus the outline extraction (which the other
methods do not need), and the whole default ``register_pair`` (coarse search,
candidate refinement and fine ICP) is timed once.

    python benchmarks/bench_reconstruction.py               # ~470k points per layer
    python benchmarks/bench_reconstruction.py --size 16000  # quicker (~110k)
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np

from machine import describe
from pathpipe.reconstruction import ReconstructionParams, layer_points
from pathpipe.reconstruction.coarse import coarse_candidates
from pathpipe.reconstruction.icp import icp_align
from pathpipe.reconstruction.phantom import Phantom, canvas_transform
from pathpipe.reconstruction.register import register_pair
from pathpipe.reconstruction.transforms import RigidTransform2D, rotation_error_deg

METHODS = ("full", "band_and", "band_or", "voxel", "contour")


def machine() -> str:
    import open3d

    return describe(f"Open3D {open3d.__version__}")


def _table(fixed, moving, init, truth, params, tree, repeat: int) -> list:
    """Run every method from ``init``; print the table; return (method, seconds, result) rows."""
    w = params.working_mpp
    rows = []
    for method in METHODS:
        runs = [
            icp_align(
                fixed,
                moving,
                init,
                subset=method,
                band_half_width=params.band_half_width,
                voxel_sizes=params.voxel_sizes,
                max_correspondence_um=params.max_correspondence_um,
                iterations=params.icp_iterations,
                tree=tree,
            )
            for _ in range(repeat)
        ]
        rows.append((method, statistics.median(x.seconds for x in runs), runs[-1]))
    full_seconds = rows[0][1]
    print(
        "| method | points used | ICP s | vs full | fitness | inlier RMSE µm "
        "| rotation error ° | max displacement error px |"
    )
    print("|---|---:|---:|---:|---:|---:|---:|---:|")
    for method, seconds, r in rows:
        name = method + (" (default)" if method == params.subset else "")
        rot_err = rotation_error_deg(r.transform, truth)
        shift = np.abs(r.transform.apply(moving.xy) - truth.apply(moving.xy)).max() / w
        print(
            f"| {name} | {r.points_used:,} | {seconds:.3f} | {100 * seconds / full_seconds:.1f} % "
            f"| {r.fitness:.4f} | {r.inlier_rmse_um:.2f} | {rot_err:.3f} | {shift:.2f} |"
        )
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--size", type=float, default=33000.0, help="canvas edge in µm")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--angle", type=float, default=23.5, help="truth rotation, degrees")
    parser.add_argument("--mirrored", action="store_true", help="mirror the moving section")
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args()

    params = ReconstructionParams()
    w = params.working_mpp
    phantom = Phantom(args.size, args.seed)
    truth = canvas_transform(
        args.size, args.angle, (args.size / 9, -args.size / 13), mirrored=args.mirrored
    )
    t0 = time.perf_counter()
    fixed_mask, moving_mask = phantom.mask(w), phantom.mask(w, truth)
    t_masks = time.perf_counter() - t0
    layer_points(fixed_mask[:64, :64], w, w)  # imports (SciPy, scikit-image) out of the timing
    t0 = time.perf_counter()
    fixed = layer_points(fixed_mask, w, w, outline=False)
    moving = layer_points(moving_mask, w, w, outline=False)
    t_points = (time.perf_counter() - t0) / 2
    t0 = time.perf_counter()
    fixed = layer_points(fixed_mask, w, w)
    moving = layer_points(moving_mask, w, w)
    t_outline = (time.perf_counter() - t0) / 2 - t_points
    print(machine())
    print(
        f"layers: {len(fixed):,} and {len(moving):,} points ({fixed_mask.shape[1]} px wide at "
        f"{w:g} µm/px), outlines {len(fixed.contour):,} and {len(moving.contour):,} points; "
        f"masks generated in {t_masks:.1f} s; layer_points {t_points:.2f} s per layer "
        f"+ outline {t_outline:.2f} s"
    )
    print(f"truth: {truth.normalised()}")
    coarse = coarse_candidates(fixed.xy, moving.xy, angle_step=params.angle_step)[0].transform
    # a start near the truth, where every method can converge: 1° about the section's
    # centroid and 2 working px off
    c = moving.xy.mean(axis=0)
    turn = RigidTransform2D(1.0)
    turn = RigidTransform2D(1.0, *(c - turn.apply(c[None])[0]))
    shift = RigidTransform2D(0.0, 2 * w, -2 * w)
    near = shift.compose(truth.compose(turn))
    from pathpipe.reconstruction.fitness import fixed_tree

    tree = fixed_tree(fixed.xy)
    icp_align(fixed, moving, coarse, subset="contour", tree=tree)  # import Open3D, warm up
    for label, init in (
        ("best coarse candidate", coarse),
        ("truth + 1° about the centroid and 2 px", near),
    ):
        print(
            f"\nstart: {label}: rotation error {rotation_error_deg(init, truth):.2f}°, "
            f"mirrored {init.mirrored}\n"
        )
        rows = _table(fixed, moving, init, truth, params, tree, args.repeat)
        full_seconds, contour_seconds = rows[0][1], rows[-1][1]
        both = contour_seconds + 2 * t_outline
        print(
            f"\ncontour ICP + outline extraction of both layers: {both:.3f} s "
            f"= {100 * both / full_seconds:.1f} % of full ICP"
        )
    t0 = time.perf_counter()
    pair = register_pair(fixed, moving, params, tree=tree)
    whole = time.perf_counter() - t0
    print(
        f"default register_pair (coarse search over {360 / params.angle_step:.0f} angles × mirror, "
        f"candidate refinement, contour ICP): {whole:.2f} s, rotation error "
        f"{rotation_error_deg(pair.transform, truth):.3f}°, mirrored {pair.transform.mirrored}"
    )


if __name__ == "__main__":
    main()
