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
    used, seconds, flag); ``torn`` is added to the flag of a torn section.
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

Memory: the layers' points (at the working resolution), one section's mask
and image at a time, and the volume at the working resolution.
"""

from __future__ import annotations

import colorsys
import json
import os
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.inputs import SectionInput, sections_from_sheet, slide_rgb
from pathpipe.reconstruction.masks import section_mask
from pathpipe.reconstruction.params import ReconstructionParams, mask_source
from pathpipe.reconstruction.points import LayerPoints, layer_points
from pathpipe.reconstruction.register import MIN_POINTS, ROW_COLUMNS, register_stack
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import (
    TORN_AREA_RATIO,
    VolumeGrid,
    area_ratio,
    interpolate_plane,
    plane_from_image,
    volume_between_ends_mm3,
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


def _register(
    layers: list[LayerPoints | None], params: ReconstructionParams, *, block: str, names: list[str]
) -> tuple[list[RigidTransform2D | None], list[dict[str, Any]]]:
    """:func:`register_stack` from the bottom, or outwards from the largest layer.

    ``reference="largest"``: the layers above the largest are registered bottom
    to top from it, those below top to bottom (the same loop on the reversed
    list), so the largest layer's frame is the block frame.
    """
    if params.reference == "bottom":
        return register_stack(layers, params, block=block, names=names)
    sizes = [0 if layer is None else len(layer) for layer in layers]
    m = int(np.argmax(sizes))
    usable = [size >= MIN_POINTS for size in sizes]
    if sum(usable[: m + 1]) < 2:  # nothing usable below: the largest is the bottom usable
        return register_stack(layers, params, block=block, names=names)
    if sum(usable[m:]) < 2:  # nothing usable above: top to bottom from it
        t, rows = register_stack(layers[::-1], params, block=block, names=names[::-1])
        return t[::-1], rows[::-1]
    up_t, up_rows = register_stack(layers[m:], params, block=block, names=names[m:])
    down_t, down_rows = register_stack(
        layers[: m + 1][::-1], params, block=block, names=names[: m + 1][::-1]
    )
    return down_t[::-1][:m] + up_t, down_rows[::-1][:m] + up_rows


def _planes(
    sections: dict[int, SectionInput],
    first: int,
    transforms: list[RigidTransform2D | None],
    rows: list[dict[str, Any]],
    grid: VolumeGrid,
    *,
    colour: bool,
    source: str = "tissue",
) -> tuple[np.ndarray, np.ndarray | None, list[str]]:
    """The registered mask (and RGB) planes, gaps interpolated, tears flagged and patched."""
    labels = np.zeros(grid.shape, dtype=bool)
    image = np.full((3, *grid.shape), 255, dtype=np.uint8) if colour else None
    kind = ["empty"] * grid.shape[0]
    for k, (transform, row) in enumerate(zip(transforms, rows, strict=True)):
        if transform is None or any(f in row["flag"] for f in _REJECTED):
            continue
        s = sections[first + k]
        mask, mpp = section_mask(s, source)  # mask source (masks.py)
        labels[k] = plane_from_image(mask, mpp, transform, grid)
        if image is not None:
            rgb = slide_rgb(s.slide_path, mask.shape, mpp)
            image[:, k] = np.moveaxis(plane_from_image(rgb, mpp, transform, grid, fill=255), -1, 0)
        kind[k] = "registered"
    good = [k for k, t in enumerate(kind) if t == "registered"]
    for k in range(grid.shape[0]):
        below = [g for g in good if g < k]
        above = [g for g in good if g > k]
        if not below or not above:
            continue
        lo, hi = below[-1], above[0]
        if kind[k] == "empty":
            labels[k] = interpolate_plane(labels[lo], labels[hi], (k - lo) / (hi - lo))
            kind[k] = "interpolated"
        elif lo == k - 1 and hi == k + 1:
            ratio = area_ratio(labels[k], labels[lo], labels[hi])
            rows[k]["area_ratio"] = ratio
            if ratio < TORN_AREA_RATIO:
                rows[k]["flag"] = ";".join(f for f in (rows[k]["flag"], "torn") if f)
                labels[k] |= interpolate_plane(labels[lo], labels[hi], 0.5)
                kind[k] = "registered+interpolated"
    return labels, image, kind


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
        marching_cubes_mesh,
        write_mesh_ply,
        write_ome_zarr,
        write_points_ply,
    )

    start = time.perf_counter()
    mask_source(params.mask)
    sections = sorted(sections, key=lambda s: int(s.section))
    _check_sections(sections, block)
    by_section = {int(s.section): s for s in sections}
    first, last = int(sections[0].section), int(sections[-1].section)
    colour = all(s.slide_path is not None for s in sections)

    layers: list[LayerPoints | None] = []
    mask_mpps: dict[int, tuple[float, float]] = {}
    for k in range(first, last + 1):
        s = by_section.get(k)
        if s is None:
            layers.append(None)
            continue
        mask, mpp = section_mask(s, params.mask)  # mask source (masks.py)
        mask_mpps[k] = mpp
        rgb = slide_rgb(s.slide_path, mask.shape, mpp) if colour else None
        layers.append(layer_points(mask, mpp, params.working_mpp, rgb=rgb))
    names = [by_section[k].slide_id if k in by_section else f"s{k}" for k in range(first, last + 1)]
    transforms, rows = _register(layers, params, block=block, names=names)

    # registered points
    xyz, colours = [], []
    for k, (layer, transform) in enumerate(zip(layers, transforms, strict=True)):
        if layer is None or transform is None or layer.empty:
            continue
        xy = transform.apply(layer.xy)
        xyz.append(np.column_stack([xy, np.full(len(xy), (first + k) * params.section_spacing)]))
        if layer.rgb is not None:
            colours.append(layer.rgb)
        else:
            colours.append(np.tile(_section_colour(k, len(layers)), (len(xy), 1)))
    points, point_rgb = np.concatenate(xyz), np.concatenate(colours)

    grid = VolumeGrid.around(
        points[:, :2].min(axis=0),
        points[:, :2].max(axis=0),
        first_section=first,
        planes=last - first + 1,
        spacing_um=params.section_spacing,
        working_mpp=params.working_mpp,
    )
    labels, image, plane_kind = _planes(
        by_section, first, transforms, rows, grid, colour=colour, source=params.mask
    )

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = provenance(stage="reconstruction", params=asdict(params), block=block)
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
                "mask_mpp": None if s is None else list(mask_mpps[first + k]),
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
    write_points_ply(out_dir / "points.ply", points, point_rgb)
    write_ome_zarr(
        out_dir / "volume.zarr",
        labels.astype(np.uint8),
        grid,
        image=image,
        attrs={"pathpipe": json.loads(json.dumps(record, default=str))},
    )
    vertices, faces, area_mm2, mesh_mm3 = marching_cubes_mesh(labels, grid)
    write_mesh_ply(out_dir / "mesh.ply", vertices, faces)

    summary = {
        "block": block,
        "sections": last - first + 1,
        "sections_registered": plane_kind.count("registered")
        + plane_kind.count("registered+interpolated"),
        "sections_interpolated": plane_kind.count("interpolated"),
        "volume_mm3": volume_between_ends_mm3(labels, grid.spacing_um),
        "volume_definition": "mask stack between the first and last section planes (trapezoid)",
        "mesh_volume_mm3": mesh_mm3,
        "surface_area_mm2": area_mm2,
        "points": len(points),
        "seconds": time.perf_counter() - start,
        "layers": [
            {
                "section": r["section"],
                "slide_id": r["slide_id"],
                "flag": r["flag"],
                "plane": r["plane"],
                **({"area_ratio": rows[i]["area_ratio"]} if "area_ratio" in rows[i] else {}),
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
