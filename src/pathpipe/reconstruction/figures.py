"""The reconstruction's report figures, from a block's output files and raw masks.

Three PNGs in ``figures/`` and the interactive viewer (:mod:`pathpipe.reconstruction.viewer`):

``pairs.png``
    Each pair of consecutive sections, before (both masks in their own slides'
    frames, as mounted) and after registration (both warped into the block
    frame by ``transforms.json``): the lower section magenta, the upper green,
    their overlap dark grey, with the Dice coefficient of the two masks.
``slices.png``
    Orthogonal slices of ``volume.zarr`` through the mask's centre: xy (a
    section plane), xz and yz, each with its physical aspect (µm on both axes),
    the mask outline drawn over the image. Where the block is much thinner than
    wide, the xz and yz slices are drawn again with z exaggerated (the factor
    in the title).
``view3d.png``
    A rendered 3D view: the decimated mesh (matplotlib, no OpenGL needed) over a
    sample of the registered points.

Pure functions on arrays first, then the drawing, then the path-level
:func:`run_reconstruction_figures` (``pathpipe reconstruction figures``), which
reads only the block's files (:mod:`pathpipe.reconstruction.readers`) and the
sections' masks (:func:`~pathpipe.reconstruction.inputs.sections_from_sheet`,
:func:`~pathpipe.reconstruction.inputs.load_section_mask`). matplotlib and
Open3D are imported inside the functions.
"""

from __future__ import annotations

import itertools
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import VolumeGrid, plane_from_image

__all__ = [
    "FIGURES",
    "PairPanels",
    "crop_box",
    "decimate_mesh",
    "dice",
    "overlay_rgb",
    "pair_panels",
    "run_reconstruction_figures",
    "sample_points",
    "slice_centre",
    "z_exaggeration",
]

#: File names of the figures in the output folder.
FIGURES = ("pairs.png", "slices.png", "view3d.png")

#: Overlay colours: background, lower section only, upper section only, both.
_COLOURS = np.array([[255, 255, 255], [214, 39, 160], [44, 160, 44], [70, 70, 70]], np.uint8)

#: The z extent the 3D views and the exaggerated slices stretch a thin block to,
#: as a share of its widest xy extent.
MIN_Z_RATIO = 0.25


# ---- pure functions on arrays --------------------------------------------------


def overlay_rgb(lower: np.ndarray, upper: np.ndarray) -> np.ndarray:
    """Two masks in one picture: lower magenta, upper green, overlap grey, else white.

    Parameters
    ----------
    lower, upper : (H, W) bool ndarray

    Returns
    -------
    (H, W, 3) uint8 ndarray
    """
    if lower.shape != upper.shape:
        raise ValueError(f"masks of shapes {lower.shape} and {upper.shape}; expected one shape")
    code = lower.astype(np.uint8) + 2 * upper.astype(np.uint8)
    return _COLOURS[np.array([0, 1, 2, 3])[code]]


def dice(a: np.ndarray, b: np.ndarray) -> float:
    """Dice coefficient ``2 |A ∩ B| / (|A| + |B|)`` of two masks (NaN when both are empty)."""
    total = int(a.sum()) + int(b.sum())
    return float("nan") if total == 0 else 2.0 * float(np.logical_and(a, b).sum()) / total


def slice_centre(labels: np.ndarray) -> tuple[int, int, int]:
    """``(z, y, x)`` indices of the slices: the plane with most mask, the mask's centroid.

    Falls back to the volume's centre where the mask is empty.
    """
    if not labels.any():
        return tuple(n // 2 for n in labels.shape)  # type: ignore[return-value]
    k = int(np.argmax(labels.reshape(labels.shape[0], -1).sum(axis=1)))
    _, rows, cols = np.nonzero(labels)
    return k, round(float(rows.mean())), round(float(cols.mean()))


def z_exaggeration(
    xy_extent_um: float, z_extent_um: float, *, min_ratio: float = MIN_Z_RATIO
) -> int:
    """Whole factor that stretches z to at least ``min_ratio`` of the xy extent (1: none).

    The factor is rounded up to 1, 2 or 5 × a power of ten, so titles read ``z ×20``.
    """
    if z_extent_um <= 0 or xy_extent_um <= 0 or z_extent_um >= min_ratio * xy_extent_um:
        return 1
    need = min_ratio * xy_extent_um / z_extent_um
    power = 10 ** math.floor(math.log10(need))
    return int(next(m * power for m in (1, 2, 5, 10) if m * power >= need))


def crop_box(*masks: np.ndarray, margin: int = 4) -> tuple[slice, slice]:
    """Rows and columns of the masks' union bounding box, widened by ``margin``, clipped.

    The whole array where every mask is empty. Figures crop to it so a block whose
    grid is much larger than its object (a misplaced layer widens it) stays legible.
    """
    union = np.logical_or.reduce([np.asarray(m, bool) for m in masks])
    if union.ndim > 2:
        union = union.reshape(-1, *union.shape[-2:]).any(axis=0)
    if not union.any():
        return slice(0, union.shape[0]), slice(0, union.shape[1])
    rows, cols = np.nonzero(union.any(axis=1))[0], np.nonzero(union.any(axis=0))[0]
    return (
        slice(max(rows[0] - margin, 0), min(rows[-1] + margin + 1, union.shape[0])),
        slice(max(cols[0] - margin, 0), min(cols[-1] + margin + 1, union.shape[1])),
    )


def sample_points(
    xyz: np.ndarray, rgb: np.ndarray, max_points: int, *, seed: int = 0
) -> tuple[np.ndarray, np.ndarray]:
    """At most ``max_points`` of the points (a seeded random sample, in their order)."""
    if len(xyz) <= max_points:
        return xyz, rgb
    keep = np.sort(np.random.default_rng(seed).choice(len(xyz), max_points, replace=False))
    return xyz[keep], rgb[keep]


def decimate_mesh(
    vertices: np.ndarray, faces: np.ndarray, max_faces: int
) -> tuple[np.ndarray, np.ndarray]:
    """The mesh with at most ``max_faces`` triangles (quadric decimation, Open3D).

    Garland & Heckbert, "Surface simplification using quadric error metrics",
    SIGGRAPH 1997, as ``open3d.geometry.TriangleMesh.simplify_quadric_decimation``.
    """
    if len(faces) <= max_faces:
        return vertices, faces
    import open3d as o3d

    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, np.float64)),
        o3d.utility.Vector3iVector(np.asarray(faces, np.int32)),
    )
    small = mesh.simplify_quadric_decimation(target_number_of_triangles=int(max_faces))
    small.remove_unreferenced_vertices()
    return np.asarray(small.vertices, np.float64), np.asarray(small.triangles, np.int64)


@dataclass(frozen=True)
class PairPanels:
    """Two consecutive sections before and after registration, as masks on common grids.

    ``before_*`` are on a grid over both slides' extents (the sections as mounted);
    ``after_*`` on a plane of the block's volume grid, or None when either
    section has no transform (empty or rejected).
    """

    lower: int
    upper: int
    before_lower: np.ndarray
    before_upper: np.ndarray
    after_lower: np.ndarray | None
    after_upper: np.ndarray | None
    flag: str = ""

    @property
    def dice_before(self) -> float:
        return dice(self.before_lower, self.before_upper)

    @property
    def dice_after(self) -> float:
        if self.after_lower is None or self.after_upper is None:
            return float("nan")
        return dice(self.after_lower, self.after_upper)


def pair_panels(
    lower: tuple[int, np.ndarray, tuple[float, float], RigidTransform2D | None],
    upper: tuple[int, np.ndarray, tuple[float, float], RigidTransform2D | None],
    grid: VolumeGrid,
    *,
    flag: str = "",
) -> PairPanels:
    """Masks of two sections before and after registration on common grids.

    Parameters
    ----------
    lower, upper : (section, mask, mask µm/px (x, y), transform or None)
        ``mask`` is (H, W) bool in the section's slide frame.
    grid : VolumeGrid
        The block's volume grid (one of its planes is the "after" canvas; its
        ``working_mpp`` is also the "before" canvas's pixel size).
    """
    step = grid.spacing_um[1]
    extent = np.max(
        [[m.shape[1] * mpp[0], m.shape[0] * mpp[1]] for _, m, mpp, _ in (lower, upper)], axis=0
    )
    before = VolumeGrid.around(
        np.zeros(2), extent, first_section=0, planes=1, spacing_um=1.0, working_mpp=step
    )
    plane = VolumeGrid(grid.origin_um, (1, *grid.shape[1:]), grid.spacing_um)
    identity = RigidTransform2D()
    b = [plane_from_image(m, mpp, identity, before).astype(bool) for _, m, mpp, _ in (lower, upper)]
    if lower[3] is None or upper[3] is None:
        a: list[np.ndarray | None] = [None, None]
    else:
        a = [plane_from_image(m, mpp, t, plane).astype(bool) for _, m, mpp, t in (lower, upper)]
    return PairPanels(lower[0], upper[0], b[0], b[1], a[0], a[1], flag)


# ---- drawing --------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _legend(fig: Any) -> None:
    from matplotlib.patches import Patch

    names = ("lower section", "upper section", "both")
    handles = [Patch(color=_COLOURS[i + 1] / 255, label=n) for i, n in enumerate(names)]
    fig.legend(handles=handles, loc="lower center", ncol=3, frameon=False, fontsize=8)


def draw_pairs(
    pairs: list[PairPanels], path: str | os.PathLike, *, block: str, step_um: float
) -> None:
    """``pairs.png``: one row per pair, before | after, Dice in each title."""
    from pathpipe.io.storage import atomic_file

    plt = _pyplot()
    n = max(len(pairs), 1)
    fig, axes = plt.subplots(n, 2, figsize=(6.4, 2.9 * n + 0.6), squeeze=False)
    for row, p in zip(axes, pairs, strict=False):
        panels = (
            ("before", p.before_lower, p.before_upper, p.dice_before),
            ("after", p.after_lower, p.after_upper, p.dice_after),
        )
        for ax, (name, lo, up, d) in zip(row, panels, strict=True):
            ax.set_axis_off()
            if lo is None or up is None:
                ax.set_title(f"{name}: not registered ({p.flag or 'no transform'})", fontsize=9)
                continue
            rows, cols = crop_box(lo, up)
            lo, up = lo[rows, cols], up[rows, cols]
            h, w = lo.shape
            ax.imshow(overlay_rgb(lo, up), extent=(0, w * step_um, h * step_um, 0))
            flag = f"\nflagged {p.flag}" if name == "after" and p.flag else ""
            title = f"sections {p.lower}→{p.upper} {name}: Dice {d:.2f}{flag}"
            ax.set_title(title, fontsize=7 if flag else 9)
    for ax in axes[len(pairs) :].ravel():
        ax.set_axis_off()
    if not pairs:
        axes[0, 0].set_title("no two consecutive sections with masks", fontsize=9)
    fig.suptitle(f"block {block}: consecutive sections before and after registration", fontsize=10)
    _legend(fig)
    fig.tight_layout(rect=(0, 0.4 / (2.9 * n + 0.6), 1, 1 - 0.2 / (2.9 * n + 0.6)))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def _slice_extent(grid: VolumeGrid, axes: tuple[int, int]) -> tuple[float, float, float, float]:
    """imshow extent (left, right, bottom, top) in µm of a slice over grid axes (row, col)."""
    lo = [grid.origin_um[a] - grid.spacing_um[a] / 2 for a in axes]
    hi = [lo[i] + grid.shape[a] * grid.spacing_um[a] for i, a in enumerate(axes)]
    return lo[1], hi[1], hi[0], lo[0]


def draw_slices(volume: Any, path: str | os.PathLike, *, block: str) -> dict[str, Any]:
    """``slices.png``: xy, xz and yz slices through the mask's centre at physical aspect.

    Returns
    -------
    dict
        ``grid`` (the volume's grid cropped to the mask, :func:`crop_box`), ``centre``
        (z, y, x indices in it), ``extents`` (µm, per slice) and ``z_factor`` (1 when
        no exaggerated row was drawn).
    """
    from pathpipe.io.storage import atomic_file

    plt = _pyplot()
    # Crop y and x to the mask (over all planes) with a margin; the grid follows.
    rows, cols = crop_box(volume.labels)
    image, labels = volume.image[:, :, rows, cols], volume.labels[:, rows, cols]
    g = volume.grid
    grid = VolumeGrid(
        (g.origin_um[0], g.origin_um[1] + rows.start * g.spacing_um[1],
         g.origin_um[2] + cols.start * g.spacing_um[2]),
        labels.shape,
        g.spacing_um,
    )  # fmt: skip
    k, i, j = slice_centre(labels)
    rgb = np.moveaxis(image, 0, -1)
    rgb = np.repeat(rgb, 3, axis=-1) if rgb.shape[-1] == 1 else rgb
    slices = {
        f"xy (z = {grid.origin_um[0] + k * grid.spacing_um[0]:.0f} µm)": (
            rgb[k],
            labels[k],
            (1, 2),
        ),
        f"xz (y = {grid.origin_um[1] + i * grid.spacing_um[1]:.0f} µm)": (
            rgb[:, i],
            labels[:, i],
            (0, 2),
        ),
        f"yz (x = {grid.origin_um[2] + j * grid.spacing_um[2]:.0f} µm)": (
            rgb[:, :, j],
            labels[:, :, j],
            (0, 1),
        ),
    }
    extents = {name: _slice_extent(grid, axes) for name, (_, _, axes) in slices.items()}
    xy_um = max(grid.shape[1] * grid.spacing_um[1], grid.shape[2] * grid.spacing_um[2])
    z_um = grid.shape[0] * grid.spacing_um[0]
    factor = z_exaggeration(xy_um, z_um)
    rows = [(name, 1) for name in slices]
    if factor > 1:
        rows += [(name, factor) for name in list(slices)[1:]]
    # Each panel spans the figure's 6-inch width; its height keeps the physical aspect.
    heights = []
    for name, f in rows:
        left, right, bottom, top = extents[name]
        heights.append(max(6.0 * (bottom - top) * f / (right - left), 0.05))
    fig, axes = plt.subplots(
        len(rows), 1, figsize=(6.4, sum(heights) + 0.9 * len(rows) + 0.5),
        gridspec_kw={"height_ratios": heights}, squeeze=False,
    )  # fmt: skip
    for ax, (name, f) in zip(axes[:, 0], rows, strict=True):
        img, mask, _ = slices[name]
        ax.imshow(img, extent=extents[name], interpolation="nearest")
        if mask.any() and min(mask.shape) > 1:
            left, right, bottom, top = extents[name]
            ys = (
                np.linspace(top, bottom, mask.shape[0] + 1)[:-1]
                + (bottom - top) / mask.shape[0] / 2
            )
            xs = (
                np.linspace(left, right, mask.shape[1] + 1)[:-1]
                + (right - left) / mask.shape[1] / 2
            )
            ax.contour(xs, ys, mask.astype(float), levels=[0.5], colors=["#d62728"], linewidths=0.8)
        ax.set_aspect(f)
        ax.set_title(name + ("" if f == 1 else f", z ×{f}"), fontsize=9)
        ax.set_xlabel("µm", fontsize=8)
        ax.tick_params(labelsize=7)
    fig.suptitle(f"block {block}: orthogonal slices of volume.zarr (mask outline red)", fontsize=10)
    fig.tight_layout()
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)
    return {"grid": grid, "centre": (k, i, j), "extents": extents, "z_factor": factor}


def draw_view3d(
    vertices: np.ndarray,
    faces: np.ndarray,
    xyz: np.ndarray,
    rgb: np.ndarray,
    path: str | os.PathLike,
    *,
    block: str,
    z_factor: int = 1,
) -> None:
    """``view3d.png``: the (decimated) mesh over a sample of the points, µm axes.

    ``z_factor`` stretches z in the picture (the title says so); the axis labels
    stay in µm.
    """
    from pathpipe.io.storage import atomic_file

    plt = _pyplot()
    fig = plt.figure(figsize=(6.4, 5.6))
    ax = fig.add_subplot(projection="3d")
    if len(xyz):
        ax.scatter(xyz[:, 0], xyz[:, 1], xyz[:, 2], c=rgb / 255.0, s=2.0, alpha=0.6, linewidths=0)
    if len(faces):
        ax.plot_trisurf(
            vertices[:, 0], vertices[:, 1], faces, vertices[:, 2],
            color="#d62728", alpha=0.45, linewidth=0, shade=True,
        )  # fmt: skip
    both = np.concatenate([a for a in (vertices, xyz) if len(a)] or [np.zeros((1, 3))])
    span = np.maximum(both.max(axis=0) - both.min(axis=0), 1e-6)
    ax.set_box_aspect((span[0], span[1], span[2] * z_factor))
    ax.invert_yaxis()  # slide rows grow downwards
    ax.view_init(elev=30, azim=-60)
    ax.set_xlabel("x (µm)", fontsize=8)
    ax.set_ylabel("y (µm)", fontsize=8)
    ax.set_zlabel("z (µm)", fontsize=8)
    ax.tick_params(labelsize=7)
    stretch = "" if z_factor == 1 else f", z ×{z_factor}"
    ax.set_title(f"block {block}: surface (red) and registered points{stretch}", fontsize=10)
    with atomic_file(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


# ---- path level -------------------------------------------------------------------

#: Most faces and points drawn in the 3D view and sent to the viewer (file size).
MAX_FACES = 20_000
MAX_POINTS = 30_000


def run_reconstruction_figures(
    block_dir: str | os.PathLike,
    sheet: str | os.PathLike,
    block: str,
    results: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    viewer: str | os.PathLike | None = None,
) -> dict[str, Any]:
    """Write a block's figures (:data:`FIGURES`) and, optionally, its 3D viewer page.

    Parameters
    ----------
    block_dir : path-like
        ``pathpipe reconstruction run``'s output folder of the block.
    sheet, block, results : the slide sheet, the block id and the results folder
        holding each section's ``{slide_id}/tissue.png`` and ``tissue.json``.
    out_dir : path-like
        Receives ``pairs.png``, ``slices.png`` and ``view3d.png`` (created).
    viewer : path-like, optional
        The interactive viewer page (:func:`pathpipe.reconstruction.viewer.write_viewer`).

    Returns
    -------
    dict
        What was drawn: the pairs with their Dice before and after, the slices'
        centre, the z factor of the 3D views.
    """
    from pathpipe.reconstruction.inputs import sections_from_sheet
    from pathpipe.reconstruction.masks import section_mask
    from pathpipe.reconstruction.readers import read_mesh_ply, read_points_ply, read_volume
    from pathpipe.reconstruction.viewer import write_viewer
    from pathpipe.reconstruction.warp import read_transforms

    block_dir, out_dir = Path(block_dir), Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    transforms = read_transforms(block_dir / "transforms.json")
    grid = VolumeGrid(
        *(tuple(transforms["volume"][k]) for k in ("origin_um_zyx", "shape_zyx", "spacing_um_zyx"))
    )
    records = {int(r["section"]): r for r in transforms["sections"]}
    masks = {int(s.section): s for s in sections_from_sheet(sheet, block, results)}
    present = [k for k in sorted(masks) if Path(masks[k].mask_path).is_file() and k in records]
    source = transforms.get("mask", "tissue")  # the layers' masks, as the run made them
    threshold = transforms.get("phenotype_threshold", 0.5)
    pairs = []
    for lo, up in itertools.pairwise(present):
        sides = [
            (k, *section_mask(masks[k], source, threshold=threshold), records[k]["transform"])
            for k in (lo, up)
        ]
        flags = [f"{k}: {records[k]['flag']}" for k in (lo, up) if records[k]["flag"]]
        pairs.append(pair_panels(*sides, grid, flag="; ".join(flags)))
    draw_pairs(pairs, out_dir / "pairs.png", block=block, step_um=grid.spacing_um[1])

    volume = read_volume(block_dir / "volume.zarr")
    slices = draw_slices(volume, out_dir / "slices.png", block=block)

    vertices, faces = read_mesh_ply(block_dir / "mesh.ply")
    xyz, rgb = read_points_ply(block_dir / "points.ply")
    small_v, small_f = decimate_mesh(vertices, faces, MAX_FACES // 4)
    few_xyz, few_rgb = sample_points(xyz, rgb, MAX_POINTS // 6)
    both = np.concatenate([a for a in (vertices, xyz) if len(a)] or [np.zeros((1, 3))])
    span = both.max(axis=0) - both.min(axis=0)
    z_factor = z_exaggeration(float(span[:2].max()), float(span[2]))
    draw_view3d(
        small_v, small_f, few_xyz, few_rgb, out_dir / "view3d.png", block=block, z_factor=z_factor
    )
    if viewer is not None:
        v, f = decimate_mesh(vertices, faces, MAX_FACES)
        p, c = sample_points(xyz, rgb, MAX_POINTS)
        write_viewer(viewer, p, c, v, f, block=block, z_factor=z_factor)
    return {
        "pairs": [
            {
                "lower": p.lower,
                "upper": p.upper,
                "dice_before": p.dice_before,
                "dice_after": p.dice_after,
            }
            for p in pairs
        ],
        "slice_centre": slices["centre"],
        "z_factor": z_factor,
    }
