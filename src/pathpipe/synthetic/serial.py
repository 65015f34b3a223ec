"""Synthetic serial sections of a 3D object, with known transforms and faults.

A block (:class:`~pathpipe.synthetic.serial_spec.SerialBlockSpec`) is a seeded 3D
object (:func:`~pathpipe.synthetic.block.make_block_object`: tissue, an embedded
tumour, ducts) cut into ``sections`` planes ``z = k * spacing_um``. Each section
is placed on its slide by a known random rigid transform (any rotation, a shift
of up to ``max_translation`` of the width, some mirrored) and written as an
H&E-like pyramidal TIFF by the slide generator (:func:`~pathpipe.synthetic.generate.write_layout`):
its tissue layout is the section's slice of the object seen through the
transform, its nuclei are of the ``high`` class in the tumour and ``low``
elsewhere. Faults: missing sections (listed, no slide), torn sections (a piece
of tissue missing at one edge) and stain variation between sections.

:func:`write_serial_block` (the path-level function, ``pathpipe synthetic
serial``) writes, in one folder per block:

* ``{block}_sNN.tiff`` and ``{block}_sNN.nuclei.parquet`` per written section;
* ``truth.json``: the spec, per-section transforms (the map slide -> block,
  :class:`~pathpipe.synthetic.serial_spec.SectionTransform`), missing and torn
  sections, stain strengths, slice areas and the object's volumes (mm³);
* ``truth_volume.npz``: the object's labels (:data:`~pathpipe.synthetic.block.LABELS`)
  ``(z, y, x)`` at the section planes on a ``truth_um`` grid, in the block frame;
* ``slides.tsv``: the slide sheet rows (``block``, ``section`` filled).
"""

from __future__ import annotations

import hashlib
import json
import math
import os
from pathlib import Path

import numpy as np
import pandas as pd

from pathpipe.errors import ConfigError, StorageError
from pathpipe.synthetic.block import LABELS, BlockObject, make_block_object
from pathpipe.synthetic.generate import GENERATOR_VERSION, SHEET_COLUMNS, is_written, write_layout
from pathpipe.synthetic.sectioning import (
    plan_sections,
    section_layouts,
    section_nuclei,
    section_slide_spec,
    slice_grid,
    tear_cut,
)
from pathpipe.synthetic.serial_spec import SectionPlan, SectionTransform, SerialBlockSpec

__all__ = [
    "SHEET_FILE",
    "TRUTH_FILE",
    "TRUTH_VOLUME_FILE",
    "read_serial_truth",
    "write_serial_block",
]

TRUTH_FILE = "truth.json"
TRUTH_VOLUME_FILE = "truth_volume.npz"
SHEET_FILE = "slides.tsv"

_VOLUME_PLANES_PER_SPACING = 4


# --------------------------------------------------------------------------- truth


def _slice_labels(spec: SerialBlockSpec, obj: BlockObject, z: np.ndarray) -> np.ndarray:
    """Labels ``(len(z), ny, nx)`` on the truth grid at depths ``z`` (µm)."""
    g = slice_grid(spec)
    return np.stack([obj.labels(g[None, :], g[:, None], zk) for zk in z])


def _volumes(spec: SerialBlockSpec, obj: BlockObject) -> dict[str, float]:
    """Tissue and tumour volume (mm³) within the slab between the end sections.

    Slice areas on the ``truth_um`` grid at four planes per section spacing,
    integrated over z by the trapezoid rule.
    """
    planes = (spec.sections - 1) * _VOLUME_PLANES_PER_SPACING + 1
    z = np.linspace(0.0, (spec.sections - 1) * spec.spacing_um, planes)
    labels = _slice_labels(spec, obj, z)
    px_mm2 = (spec.truth_um / 1000.0) ** 2
    out = {}
    for name, code in (("tissue", LABELS["tissue"]), ("tumour", LABELS["tumour"])):
        area = (labels >= code).sum(axis=(1, 2)) * px_mm2
        out[f"{name}_mm3"] = float(np.trapezoid(area, z / 1000.0))
    return out


def _description(spec: SerialBlockSpec, plan: SectionPlan) -> str:
    canonical = json.dumps(
        {**spec.to_dict(), "generator_version": GENERATOR_VERSION}, sort_keys=True
    ).encode()
    return (
        f"pathpipe synthetic serial section block={spec.block} section={plan.section} "
        f"z_um={plan.z_um:g} mpp={spec.mpp:g} size={spec.size}x{spec.size} "
        f"version={GENERATOR_VERSION} serial_sha1={hashlib.sha1(canonical).hexdigest()[:12]}"
    )


def _save_npz(path: Path, **arrays: np.ndarray) -> None:
    from pathpipe.io.storage import atomic_file

    with atomic_file(path) as tmp, open(tmp, "wb") as f:
        np.savez_compressed(f, **arrays)


# --------------------------------------------------------------------------- files


def write_serial_block(
    out_dir: str | os.PathLike, spec: SerialBlockSpec, *, workers: int | None = None
) -> pd.DataFrame:
    """Write a block of synthetic serial sections, its truth and its slide sheet.

    One folder per block (see the module docstring for the files). A section
    whose slide and ground truth already exist from the same spec is not
    rewritten, so rerunning is cheap; ``truth.json``, ``truth_volume.npz`` and
    ``slides.tsv`` are always rewritten (atomically).

    ``truth.json`` holds ``spec``, ``mpp``, ``width_px``, ``spacing_um``,
    ``transform`` (the formula), ``labels``, ``missing_sections``,
    ``torn_sections``, ``volumes`` (``tissue_mm3``, ``tumour_mm3``: the
    object between the planes of the first and the last section, by dense
    sampling) and per section: ``section``, ``slide_id``, ``file`` (None when
    missing), ``z_um``, ``missing``, ``torn``, ``torn_removed_fraction``,
    ``transform`` (:class:`SectionTransform` fields and its 3x3 ``matrix``),
    ``stain_strength``, ``tissue_area_mm2`` and ``tumour_area_mm2`` (the
    object's slice, before any tear). ``truth_volume.npz`` holds ``labels``
    (uint8 ``(sections, ny, nx)``), ``spacing_um`` and ``origin_um`` (``(z, y, x)``
    of voxel ``[0, 0, 0]``'s centre).

    Parameters
    ----------
    out_dir : path-like
        The block's folder (created).
    spec : SerialBlockSpec
    workers : int or None
        Rendering processes per slide (see :func:`~pathpipe.synthetic.generate.write_slide`).

    Returns
    -------
    sheet : pandas.DataFrame
        The slide sheet's columns; one row per written section with
        ``patient`` = ``block``, ``mpp``, ``block`` and ``section`` filled.
    """
    from pathpipe.io.storage import write_json

    out_dir = Path(out_dir)
    truth_path = out_dir / TRUTH_FILE
    if truth_path.is_file():
        try:
            other = json.loads(truth_path.read_text(encoding="utf-8"))["spec"]["block"]
        except (OSError, ValueError, KeyError, TypeError):
            other = None
        if other != spec.block:
            raise ConfigError(
                f"out_dir={str(out_dir)!r} holds block {other!r}; expected a folder of "
                f"block {spec.block!r} or a new one (one block per folder)"
            )
    out_dir.mkdir(parents=True, exist_ok=True)
    obj = make_block_object(spec)
    plans = plan_sections(spec)
    labels = _slice_labels(spec, obj, np.array([p.z_um for p in plans]))
    px_mm2 = (spec.truth_um / 1000.0) ** 2

    sections, rows = [], []
    for plan, plane in zip(plans, labels, strict=True):
        cut, removed = tear_cut(spec, obj, plan) if plan.torn else (math.inf, 0.0)
        slide_id = spec.slide_id(plan.section)
        path = out_dir / f"{slide_id}.tiff"
        if not plan.missing:
            slide_spec = section_slide_spec(spec, plan)
            description = _description(spec, plan)
            if not is_written(path, slide_spec, description):
                layouts = section_layouts(spec, obj, plan, cut)
                nuclei = section_nuclei(slide_spec, layouts)
                write_layout(
                    path,
                    slide_spec,
                    layouts["tissue"],
                    nuclei,
                    description=description,
                    workers=workers,
                )
            rows.append(
                {
                    "slide_id": slide_id,
                    "path": str(path),
                    "label": np.nan,
                    "patient": spec.block,
                    "split": np.nan,
                    "mpp": float(spec.mpp),
                    "block": spec.block,
                    "section": plan.section,
                }
            )
        sections.append(
            {
                "section": plan.section,
                "slide_id": slide_id,
                "file": None if plan.missing else path.name,
                "z_um": plan.z_um,
                "missing": plan.missing,
                "torn": plan.torn,
                "torn_removed_fraction": removed,
                "transform": plan.transform.to_dict(),
                "stain_strength": list(plan.stain_strength),
                "tissue_area_mm2": float((plane >= LABELS["tissue"]).sum() * px_mm2),
                "tumour_area_mm2": float((plane >= LABELS["tumour"]).sum() * px_mm2),
            }
        )

    g = slice_grid(spec)
    _save_npz(
        out_dir / TRUTH_VOLUME_FILE,
        labels=labels,
        spacing_um=np.array([spec.spacing_um, spec.truth_um, spec.truth_um]),
        origin_um=np.array([0.0, g[0], g[0]]),
    )
    write_json(
        truth_path,
        {
            "spec": spec.to_dict(),
            "generator_version": GENERATOR_VERSION,
            "mpp": spec.mpp,
            "width_px": spec.size,
            "height_px": spec.size,
            "spacing_um": spec.spacing_um,
            "transform": (
                "slide -> block: p_block = R(theta) F (p_slide - c) + c + t, µm; "
                "R(theta) = [[cos, -sin], [sin, cos]] with theta = rotation_deg, "
                "F = diag(-1, 1) if mirrored else I, c = (centre_x_um, centre_y_um), "
                "t = (translation_x_um, translation_y_um); matrix: the same, homogeneous"
            ),
            "labels": LABELS,
            "missing_sections": [p.section for p in plans if p.missing],
            "torn_sections": [p.section for p in plans if p.torn],
            "volumes": {
                **_volumes(spec, obj),
                "definition": "object between the planes of the first and last section",
            },
            "truth_volume": {
                "file": TRUTH_VOLUME_FILE,
                "shape_zyx": list(labels.shape),
                "spacing_um_zyx": [spec.spacing_um, spec.truth_um, spec.truth_um],
                "origin_um_zyx": [0.0, float(g[0]), float(g[0])],
                "frame": "block; plane z = section * spacing_um",
            },
            "sections": sections,
        },
    )
    sheet = pd.DataFrame(rows, columns=SHEET_COLUMNS)
    from pathpipe.io.storage import atomic_file

    with atomic_file(out_dir / SHEET_FILE) as tmp:
        sheet.to_csv(tmp, sep="\t", index=False)
    return sheet


def read_serial_truth(path: str | os.PathLike) -> dict:
    """Read a block's ``truth.json`` and its truth volume.

    Parameters
    ----------
    path : path-like
        The block's folder or its ``truth.json``.

    Returns
    -------
    dict
        ``truth.json`` with ``spec`` as a :class:`SerialBlockSpec`, each
        section's ``transform`` as a :class:`SectionTransform` and
        ``truth_volume["labels"]`` the ``(z, y, x)`` uint8 array.
    """
    path = Path(path)
    if path.is_dir():
        path = path / TRUTH_FILE
    if not path.is_file():
        raise StorageError(f"serial truth {str(path)!r} is missing; expected {TRUTH_FILE}")
    truth = json.loads(path.read_text(encoding="utf-8"))
    truth["spec"] = SerialBlockSpec.from_dict(truth["spec"])
    for section in truth["sections"]:
        section["transform"] = SectionTransform.from_dict(section["transform"])
    with np.load(path.parent / truth["truth_volume"]["file"]) as data:
        truth["truth_volume"]["labels"] = data["labels"]
    return truth
