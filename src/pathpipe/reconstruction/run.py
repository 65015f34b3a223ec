"""The reconstruction stage's path-level function: one block's sections -> 3D.

:func:`run_reconstruction` reads each section's mask (the tissue stage's
``tissue.png`` and its µm/px from ``tissue.json``), makes its layer of points
(:func:`~pathpipe.reconstruction.points.layer_points`), registers the stack
bottom to top (:func:`~pathpipe.reconstruction.register.register_stack`; with
``reference="largest"`` outwards from the largest section, up and down) and
writes into ``out_dir`` (each file atomically):

``registration.tsv``
    One row per section between the block's first and last (a section missing
    from the sheet is a ``missing`` row): ``section``, ``slide_id`` and the
    columns of :data:`~pathpipe.reconstruction.register.ROW_COLUMNS` (rotation
    in degrees, translation in µm, mirrored, fitness, inlier RMSE in µm, points
    used, seconds, flag); ``torn`` is added to the flag of a torn section,
    ``stain`` to that of a section stained differently from the block
    (:mod:`~pathpipe.reconstruction.stain_check`; it stays in the stack).
``transforms.json``
    The transforms, as parameters (the format :func:`~pathpipe.reconstruction.warp.read_transforms`
    and ``pathpipe reconstruction warp`` read)::

        {"format": "pathpipe.reconstruction.transforms", "version": 1,
         "block": str, "spacing_um": float, "working_mpp": float, "mask": str,
         "reference": str, "reference_section": int,
         "frame": str, "volume": {"origin_um_zyx", "shape_zyx", "spacing_um_zyx"},
         "sections": [{"section": int, "slide_id": str | null, "z_um": float,
                       "mask_mpp": [x, y] | null, "flag": str, "plane": str,
                       "transform": {"rotation_deg", "translation_x_um",
                                     "translation_y_um", "mirrored"} | null}, ...]}

    A section's ``transform`` (:class:`~pathpipe.reconstruction.transforms.RigidTransform2D`)
    maps its slide's µm ``(x, y)`` (level 0, from the slide's top-left corner;
    the tissue mask covers the whole slide) into the block frame: the frame of
    the reference section's slide (``reference``: the bottom usable section, or
    the largest), µm; ``z_um = section × spacing_um``.
    ``plane`` says how the volume's plane was made: ``registered``,
    ``interpolated`` (no usable section: shape-based interpolation from its
    neighbours), ``registered+interpolated`` (torn: its own mask plus the
    interpolation) or ``empty``.
``points.ply``
    The registered layers' points ``(x, y, z)`` µm, coloured by the section's
    RGB when its slide is given, else by section.
``volume.zarr``
    OME-Zarr of the registered sections (see :mod:`~pathpipe.reconstruction.outputs`).
``mesh.ply``
    The object's surface: marching cubes on the registered mask stack.
``summary.json``
    ``volume_mm3`` (between the first and last section's planes, trapezoid
    rule), ``mesh_volume_mm3`` and ``surface_area_mm2`` of the mesh, the
    sections used and each section's flag.

Memory is bounded by one layer pair, whatever the number of sections: layers
are loaded as the registration asks for them
(:func:`~pathpipe.reconstruction.register.iter_register` holds the layer below
and the current one); each registered layer's points go to a scratch file
until ``points.ply`` is written chunk by chunk; each plane of ``volume.zarr``
(image and labels) is written as it is resampled, gaps and tears are filled
with at most three planes read back, and the mesh is marching cubes two planes
at a time (:func:`~pathpipe.reconstruction.outputs.marching_cubes_slabs`). The
mesh itself (an output) and a few numbers per section grow with the block.
(``tests/reconstruction/test_reconstruction_memory.py`` measures it.)
"""

from __future__ import annotations

import colorsys
import json
import os
import tempfile
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.inputs import SectionInput, sections_from_sheet, slide_rgb
from pathpipe.reconstruction.masks import section_mask
from pathpipe.reconstruction.params import ReconstructionParams, mask_source
from pathpipe.reconstruction.points import layer_points
from pathpipe.reconstruction.register import MIN_POINTS, ROW_COLUMNS, iter_register
from pathpipe.reconstruction.stain_check import STAIN_ANGLE_DEG, stain_angles, stain_direction
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import (
    TORN_AREA_RATIO,
    VolumeGrid,
    area_ratio,
    interpolate_plane,
    plane_from_image,
)

__all__ = [
    "TRANSFORMS_FORMAT",
    "SectionInput",
    "run_reconstruction",
    "run_reconstruction_sheet",
]

TRANSFORMS_FORMAT = "pathpipe.reconstruction.transforms"

#: Flags of register_stack that reject a layer's transform for the volume.
_REJECTED = ("low_fitness", "high_rmse")


def _section_colour(index: int, count: int) -> np.ndarray:
    r, g, b = colorsys.hsv_to_rgb(0.8 * index / max(count - 1, 1), 0.8, 0.9)
    return np.array([r, g, b]) * 255


def _check_sections(sections: list[SectionInput], block: str) -> None:
    if not sections:
        raise ConfigError(f"block {block!r} has no sections; expected at least 2")
    numbers = [int(s.section) for s in sections]
    if any(n < 0 for n in numbers) or len(set(numbers)) != len(numbers):
        raise ConfigError(
            f"block {block!r} sections {numbers}; expected distinct non-negative positions"
        )


def _mask(s: SectionInput, params: ReconstructionParams) -> tuple[np.ndarray, tuple[float, float]]:
    """The section's layer mask from ``params.mask`` and its µm/px (:mod:`.masks`)."""
    return section_mask(s, params.mask, threshold=params.phenotype_threshold)


def _layer(
    s: SectionInput | None,
    params: ReconstructionParams,
    colour: bool,
    mpps: dict[int, tuple[float, float]],
):
    """The section's layer (loaded now, dropped by the caller when done); None when missing.

    The mask's µm/px goes to ``mpps`` (by section), for ``transforms.json``.
    """
    if s is None:
        return None
    mask, mpp = _mask(s, params)
    mpps[int(s.section)] = mpp
    rgb = slide_rgb(s.slide_path, mask.shape, mpp) if colour else None
    return layer_points(mask, mpp, params.working_mpp, rgb=rgb)


def _chains(
    sections: dict[int, SectionInput], first: int, last: int, params: ReconstructionParams
) -> list[list[int]]:
    """The section orders registered: bottom to top, or outwards from the largest.

    ``reference="largest"``: the sections above the largest (by mask area, read
    one mask at a time) bottom to top from it, those below top to bottom, so the
    largest section's frame is the block frame.
    """
    order = list(range(first, last + 1))
    if params.reference == "bottom":
        return [order]
    areas = []
    for k in order:
        s = sections.get(k)
        if s is None:
            areas.append(0.0)
            continue
        mask, mpp = _mask(s, params)
        areas.append(float(mask.sum()) * mpp[0] * mpp[1])
    m = int(np.argmax(areas))
    usable = [a / params.working_mpp**2 >= MIN_POINTS for a in areas]
    if sum(usable[: m + 1]) < 2:  # nothing usable below: the largest is the bottom usable
        return [order]
    if sum(usable[m:]) < 2:  # nothing usable above: top to bottom from it
        return [order[::-1]]
    return [order[m:], order[: m + 1][::-1]]


def _plane(
    s: SectionInput,
    transform: RigidTransform2D,
    grid: VolumeGrid,
    *,
    colour: bool,
    params: ReconstructionParams,
) -> tuple[np.ndarray, np.ndarray | None]:
    """A section's mask (and RGB, ``(3, Y, X)``) resampled on a plane of ``grid``."""
    mask, mpp = _mask(s, params)
    labels = plane_from_image(mask, mpp, transform, grid)
    if not colour:
        return labels, None
    rgb = slide_rgb(s.slide_path, mask.shape, mpp)
    return labels, np.moveaxis(plane_from_image(rgb, mpp, transform, grid, fill=255), -1, 0)


def _fill_volume(
    sections: dict[int, SectionInput],
    first: int,
    transforms: list[RigidTransform2D | None],
    rows: list[dict[str, Any]],
    grid: VolumeGrid,
    image: Any,
    labels: Any,
    *,
    colour: bool,
    params: ReconstructionParams,
) -> tuple[list[str], np.ndarray]:
    """Write the registered planes, then fill gaps and patch tears, a few planes at a time.

    ``image`` and ``labels`` are the OME-Zarr arrays (:func:`~pathpipe.reconstruction.outputs.ome_zarr_volume`);
    at most three planes are in memory. Returns each plane's kind and its mask area (pixels).
    """
    kind = ["empty"] * grid.shape[0]
    for k, (transform, row) in enumerate(zip(transforms, rows, strict=True)):
        if transform is None or any(f in row["flag"] for f in _REJECTED):
            continue
        plane, rgb = _plane(sections[first + k], transform, grid, colour=colour, params=params)
        labels[k] = plane.astype(np.uint8)
        if rgb is not None:
            image[:, k] = rgb
        kind[k] = "registered"
    good = [k for k, t in enumerate(kind) if t == "registered"]
    areas = np.zeros(grid.shape[0])
    for k in range(grid.shape[0]):
        below = [g for g in good if g < k]
        above = [g for g in good if g > k]
        plane = labels[k] > 0
        if below and above:
            lo, hi = below[-1], above[0]
            if kind[k] == "empty":
                plane = interpolate_plane(labels[lo] > 0, labels[hi] > 0, (k - lo) / (hi - lo))
                labels[k] = plane.astype(np.uint8)
                kind[k] = "interpolated"
            elif lo == k - 1 and hi == k + 1:
                low, high = labels[lo] > 0, labels[hi] > 0
                ratio = area_ratio(plane, low, high)
                rows[k]["area_ratio"] = ratio
                if ratio < TORN_AREA_RATIO:
                    rows[k]["flag"] = ";".join(f for f in (rows[k]["flag"], "torn") if f)
                    plane = plane | interpolate_plane(low, high, 0.5)
                    labels[k] = plane.astype(np.uint8)
                    kind[k] = "registered+interpolated"
        if not colour:
            image[0, k] = plane.astype(np.uint8) * 255
        areas[k] = plane.sum()
    return kind, areas


def run_reconstruction(
    sections: list[SectionInput],
    out_dir: str | os.PathLike,
    *,
    params: ReconstructionParams,
    block: str = "block",
) -> dict[str, Any]:
    """Reconstruct one block in 3D and write its files (see the module docstring).

    Parameters
    ----------
    sections : list of SectionInput
        The block's sections (any order; sorted by ``section``). Positions
        between the first and the last that no input has are ``missing``.
    out_dir : path-like
        Receives the files (created).
    params : ReconstructionParams
        ``params.mask`` chooses each section's mask
        (:func:`~pathpipe.reconstruction.masks.section_mask`).
    block : str
        The block's id.

    Returns
    -------
    dict
        The summary written to ``summary.json``.

    Raises
    ------
    ConfigError
        For a bad mask source, duplicate sections, or fewer than two usable
        sections (naming the block).
    StorageError
        When a mask or its record is missing or unreadable.
    """
    import pandas as pd

    from pathpipe.io.storage import atomic_file, provenance, write_json
    from pathpipe.reconstruction.outputs import (
        marching_cubes_slabs,
        ome_zarr_volume,
        write_mesh_ply,
        write_points_ply_chunks,
    )

    start = time.perf_counter()
    mask_source(params.mask)
    sections = sorted(sections, key=lambda s: int(s.section))
    _check_sections(sections, block)
    by_section = {int(s.section): s for s in sections}
    first, last = int(sections[0].section), int(sections[-1].section)
    colour = all(s.slide_path is not None for s in sections)

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    count = last - first + 1
    names = [
        by_section[k].slide_id if k in by_section else f"s{k}" for k in range(first, count + first)
    ]
    transforms: list[RigidTransform2D | None] = [None] * count
    mpps: dict[int, tuple[float, float]] = {}
    rows: list[dict[str, Any] | None] = [None] * count
    lo_xy, hi_xy = np.full(2, np.inf), np.full(2, -np.inf)
    n_points = 0
    stains: dict[int, np.ndarray] = {}  # each section's OD direction (stain_check)
    # one layer pair in memory: layers are loaded as the loop asks for them, and each
    # registered layer's points go to a file of their own until points.ply is written
    with tempfile.TemporaryDirectory(dir=out_dir, prefix=".points-") as scratch:
        for chain in _chains(by_section, first, last, params):
            layers = (_layer(by_section.get(k), params, colour, mpps) for k in chain)
            steps = iter_register(layers, params, [names[k - first] for k in chain])
            for k, (layer, transform, row) in zip(chain, steps, strict=True):
                if rows[k - first] is not None:  # the reference, in both chains
                    continue
                transforms[k - first], rows[k - first] = transform, row
                if layer is None or transform is None or layer.empty:
                    continue
                if layer.rgb is not None and (d := stain_direction(layer.rgb)) is not None:
                    stains[k - first] = d
                xy = transform.apply(layer.xy)
                lo_xy, hi_xy = np.minimum(lo_xy, xy.min(axis=0)), np.maximum(hi_xy, xy.max(axis=0))
                rgb = (
                    layer.rgb
                    if layer.rgb is not None
                    else np.tile(_section_colour(k - first, count), (len(xy), 1))
                )
                z = np.full(len(xy), k * params.section_spacing)
                np.save(Path(scratch) / f"{k}-xyz.npy", np.column_stack([xy, z]))
                np.save(
                    Path(scratch) / f"{k}-rgb.npy", np.clip(np.rint(rgb), 0, 255).astype(np.uint8)
                )
                n_points += len(xy)
        for i, angle in stain_angles(stains).items():
            rows[i]["stain_angle_deg"] = angle
            if angle > STAIN_ANGLE_DEG:
                rows[i]["flag"] = ";".join(f for f in (rows[i]["flag"], "stain") if f)
        usable = sum(t is not None for t in transforms)
        if usable < 2:
            raise ConfigError(
                f"block {block!r} has {usable} usable section(s) of {count} "
                f"(with at least {MIN_POINTS} mask points); expected at least 2 to reconstruct"
            )
        written = [k for k in range(first, last + 1) if (Path(scratch) / f"{k}-xyz.npy").exists()]
        write_points_ply_chunks(
            out_dir / "points.ply",
            (
                (np.load(Path(scratch) / f"{k}-xyz.npy"), np.load(Path(scratch) / f"{k}-rgb.npy"))
                for k in written
            ),
            n_points,
        )

    grid = VolumeGrid.around(
        lo_xy,
        hi_xy,
        first_section=first,
        planes=count,
        spacing_um=params.section_spacing,
        working_mpp=params.working_mpp,
    )
    record = provenance(stage="reconstruction", params=asdict(params), block=block)
    attrs = {"pathpipe": json.loads(json.dumps(record, default=str))}
    with ome_zarr_volume(
        out_dir / "volume.zarr", grid, channels=3 if colour else 1, attrs=attrs
    ) as (image, labels):
        plane_kind, areas = _fill_volume(
            by_section,
            first,
            transforms,
            rows,
            grid,
            image,
            labels,
            colour=colour,
            params=params,
        )
        vertices, faces, area_mm2, mesh_mm3 = marching_cubes_slabs(lambda k: labels[k], grid)
    write_mesh_ply(out_dir / "mesh.ply", vertices, faces)
    dz, dy, dx = (v / 1000.0 for v in grid.spacing_um)
    volume_mm3 = float(np.trapezoid(areas * dy * dx, dx=dz)) if count > 1 else 0.0

    table = pd.DataFrame(rows)
    table.insert(
        0,
        "slide_id",
        [by_section[k].slide_id if k in by_section else "" for k in range(first, last + 1)],
    )
    table.insert(0, "section", list(range(first, last + 1)))
    table = table[["section", "slide_id", *ROW_COLUMNS]]
    with atomic_file(out_dir / "registration.tsv") as tmp:
        table.to_csv(tmp, sep="\t", index=False)

    reference = next(
        first + k
        for k, (t, row) in enumerate(zip(transforms, rows, strict=True))
        if t is not None and np.isnan(row["fitness"])
    )
    section_records = []
    for k, (transform, row) in enumerate(zip(transforms, rows, strict=True)):
        s = by_section.get(first + k)
        section_records.append(
            {
                "section": first + k,
                "slide_id": None if s is None else s.slide_id,
                "z_um": (first + k) * params.section_spacing,
                "mask_mpp": list(mpps[first + k]) if first + k in mpps else None,
                "flag": row["flag"],
                "plane": plane_kind[k],
                "transform": None if transform is None else transform.to_dict(),
            }
        )
    write_json(
        out_dir / "transforms.json",
        {
            "format": TRANSFORMS_FORMAT,
            "version": 1,
            "block": block,
            "spacing_um": params.section_spacing,
            "working_mpp": params.working_mpp,
            "mask": params.mask,
            "phenotype_threshold": params.phenotype_threshold,
            "reference": params.reference,
            "reference_section": reference,
            "frame": (
                "transform: section slide µm (x, y from the slide's top-left corner) -> "
                "block µm (the reference section's slide frame); z_um = section * spacing_um"
            ),
            "volume": grid.to_dict(),
            "sections": section_records,
        },
    )

    summary = {
        "block": block,
        "sections": last - first + 1,
        "sections_registered": plane_kind.count("registered")
        + plane_kind.count("registered+interpolated"),
        "sections_interpolated": plane_kind.count("interpolated"),
        "volume_mm3": volume_mm3,
        "volume_definition": "mask stack between the first and last section planes (trapezoid)",
        "mesh_volume_mm3": mesh_mm3,
        "surface_area_mm2": area_mm2,
        "points": n_points,
        "seconds": time.perf_counter() - start,
        "layers": [
            {
                "section": r["section"],
                "slide_id": r["slide_id"],
                "flag": r["flag"],
                "plane": r["plane"],
                **{
                    key: rows[i][key] for key in ("area_ratio", "stain_angle_deg") if key in rows[i]
                },
            }
            for i, r in enumerate(section_records)
        ],
        "provenance": record,
    }
    write_json(out_dir / "summary.json", summary)
    return summary


def run_reconstruction_sheet(
    sheet: str | os.PathLike,
    block: str,
    results: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    params: ReconstructionParams,
) -> dict[str, Any]:
    """:func:`run_reconstruction` on a block of the slide sheet (``pathpipe reconstruction run``)."""
    sections = sections_from_sheet(sheet, block, results)
    return run_reconstruction(sections, out_dir, params=params, block=block)
