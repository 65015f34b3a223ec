"""Cutting a synthetic block into sections: the draws, the slices, tears and nuclei.

Pure functions for :mod:`pathpipe.synthetic.serial`: :func:`plan_sections` draws
each section's transform, faults and stain; :func:`section_layouts` turns the
object's slice, seen through the transform, into the slide generator's tissue
layouts; :func:`section_nuclei` fills them with nuclei. Frames: see
:mod:`pathpipe.synthetic.serial_spec`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd

from pathpipe.synthetic.block import BlockObject
from pathpipe.synthetic.generate import make_nuclei
from pathpipe.synthetic.serial_spec import SectionPlan, SectionTransform, SerialBlockSpec
from pathpipe.synthetic.spec import SyntheticSlideSpec, TissueLayout

__all__ = [
    "plan_sections",
    "section_layouts",
    "section_nuclei",
    "section_slide_spec",
    "slice_grid",
    "tear_cut",
]

_STREAM_TRANSFORM, _STREAM_FAULTS, _STREAM_STAIN, _STREAM_SEEDS = 21, 22, 23, 24


def plan_sections(spec: SerialBlockSpec) -> list[SectionPlan]:
    """The seeded transforms, faults and stains of every section.

    Rotations are uniform in ``[-max_rotation_deg, max_rotation_deg)``, shifts
    uniform in a disc of radius ``max_translation * width``, each section is
    mirrored with ``mirror_probability`` (and one written section is forced to
    be when none is, ``sections >= 4`` and the probability is above 0).
    Missing sections are drawn among ``1 .. sections - 2``; torn ones among the
    written sections whose neighbours are written, then among the others. Stain
    strength ``(h, e)``: the block's (a thickness factor in ``[0.8, 1.25]``
    times stain jitter) times ``exp(stain_variation (z0 + z_stain / 2))`` per
    section, ``z ~ N(0, 1)``. Each concern draws from its own random stream.
    """
    n, seed = spec.sections, spec.seed
    rng = np.random.default_rng([seed, _STREAM_TRANSFORM])
    rotation = rng.uniform(-spec.max_rotation_deg, spec.max_rotation_deg, n)
    radius = spec.max_translation * spec.width_um * np.sqrt(rng.uniform(0, 1, n))
    direction = rng.uniform(0, 2 * math.pi, n)
    mirrored = rng.uniform(0, 1, n) < spec.mirror_probability

    rng = np.random.default_rng([seed, _STREAM_FAULTS])
    missing = set(rng.choice(np.arange(1, n - 1), spec.missing_sections, replace=False).tolist())
    present = [k for k in range(n) if k not in missing]
    inner = [k for k in present if 0 < k < n - 1 and {k - 1, k + 1} <= set(present)]
    outer = [k for k in present if k not in inner]
    order = [*rng.permutation(inner).tolist(), *rng.permutation(outer).tolist()]
    torn = set(order[: spec.torn_sections])
    tear_angle = rng.uniform(0, 2 * math.pi, n)
    tear_waves = [
        tuple(
            (float(rng.uniform(30, 200)), float(rng.uniform(4, 15)), float(rng.uniform(0, 7)))
            for _ in range(3)
        )
        for _ in range(n)
    ]
    if spec.mirror_probability > 0 and n >= 4 and not mirrored[present].any():
        mirrored[int(rng.choice(present))] = True

    rng = np.random.default_rng([seed, _STREAM_STAIN])
    thickness = math.exp(rng.uniform(math.log(0.8), math.log(1.25)))
    base = np.array([thickness * rng.uniform(0.9, 1.1), thickness * rng.uniform(0.85, 1.15)])
    z = rng.standard_normal((n, 3))
    stain = base * np.exp(spec.stain_variation * (z[:, :1] + 0.5 * z[:, 1:]))
    stain = np.clip(stain, 0.2, 5.0)

    seeds = np.random.SeedSequence([seed, _STREAM_SEEDS]).generate_state(n) >> 1
    centre = spec.width_um / 2
    return [
        SectionPlan(
            section=k,
            z_um=k * spec.spacing_um,
            transform=SectionTransform(
                rotation_deg=float(rotation[k]),
                translation_x_um=float(radius[k] * math.cos(direction[k])),
                translation_y_um=float(radius[k] * math.sin(direction[k])),
                mirrored=bool(mirrored[k]),
                centre_x_um=centre,
                centre_y_um=centre,
            ),
            missing=k in missing,
            torn=k in torn,
            tear_angle=float(tear_angle[k]),
            tear_waves=tear_waves[k],
            stain_strength=(float(stain[k, 0]), float(stain[k, 1])),
            seed=int(seeds[k]),
        )
        for k in range(n)
    ]


# --------------------------------------------------------------------------- slices


def slice_grid(spec: SerialBlockSpec) -> np.ndarray:
    """Block-frame x (= y) centres of the truth grid: ``(i + 0.5) * truth_um``, µm."""
    n = math.ceil(spec.width_um / spec.truth_um)
    return (np.arange(n) + 0.5) * spec.truth_um


def _tear_coordinate(plan: SectionPlan, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Position along the tear direction minus the ragged line's offset (µm)."""
    t = plan.transform
    dx, dy = x - t.centre_x_um, y - t.centre_y_um
    ca, sa = math.cos(plan.tear_angle), math.sin(plan.tear_angle)
    along, across = dx * ca + dy * sa, -dx * sa + dy * ca
    for wavelength, amp, phase in plan.tear_waves:
        along = along - amp * np.sin(2 * math.pi * across / wavelength + phase)
    return along


def tear_cut(spec: SerialBlockSpec, obj: BlockObject, plan: SectionPlan) -> tuple[float, float]:
    """Where a torn section's tissue ends, and the share of tissue removed.

    Tissue whose :func:`_tear_coordinate` exceeds the cut is torn off; the cut
    is the ``1 - torn_fraction`` quantile over the slice's tissue on the truth
    grid, so the removed share (measured on that grid) is ``torn_fraction``.

    Returns
    -------
    (cut_um, removed_fraction) : (float, float)
    """
    g = slice_grid(spec)
    x, y = g[None, :], g[:, None]
    inside = obj.tissue(x, y, plan.z_um) > 0
    coord = np.broadcast_to(_tear_coordinate(plan, x, y), inside.shape)[inside]
    if coord.size == 0:
        return math.inf, 0.0
    cut = float(np.quantile(coord, 1.0 - spec.torn_fraction))
    return cut, float((coord > cut).mean())


def _in_plane_distance(f: np.ndarray, step_um: float) -> np.ndarray:
    """``f / |grad f|``: an implicit field on a grid as in-plane signed distance (µm)."""
    gy, gx = np.gradient(f, step_um)
    return f / np.maximum(np.hypot(gx, gy), 0.2)


def _layout(sdf_um: np.ndarray, spacing: float, mpp: float) -> TissueLayout:
    sdf = (sdf_um / mpp).astype(np.float32)
    return TissueLayout(sdf=sdf, spacing=spacing, coverage=float((sdf[1:-1, 1:-1] > 0).mean()))


def section_layouts(
    spec: SerialBlockSpec, obj: BlockObject, plan: SectionPlan, cut_um: float = math.inf
) -> dict[str, TissueLayout]:
    """The slide-frame tissue layouts of a section.

    Nodes of the generator's layout grid (as :func:`~pathpipe.synthetic.generate.make_tissue`
    spaces it) are mapped to the block by the section's transform, the
    object's fields are evaluated in the plane ``z_um`` and turned into in-plane
    signed distances (``f / |grad f|``, per part, then combined by min), minus
    the torn-off piece beyond ``cut_um`` (:func:`tear_cut`) when the section is torn.

    Returns
    -------
    dict of str to TissueLayout
        ``tissue`` (all tissue: what is stained), ``tumour`` (where ``high``
        nuclei go) and ``rest`` (tissue outside the tumour: ``low`` nuclei).
    """
    spacing = max(8.0, spec.size / 512.0)
    n = math.ceil(spec.size / spacing) + 2
    g = np.arange(n) * spacing * spec.mpp
    x, y = plan.transform.to_block(g[None, :], g[:, None])
    z, step = plan.z_um, spacing * spec.mpp

    def dist(f: np.ndarray) -> np.ndarray:
        return _in_plane_distance(f, step)

    tissue = dist(obj.tissue_blob.value(x, y, z))
    for tube in obj.ducts:
        tissue = np.minimum(tissue, -dist(tube.value(x, y, z)))
    tumour = np.minimum(dist(obj.tumour_blob.value(x, y, z)), tissue)
    if plan.torn and math.isfinite(cut_um):
        tear = dist(cut_um - _tear_coordinate(plan, x, y))
        tissue, tumour = np.minimum(tissue, tear), np.minimum(tumour, tear)
    rest = np.minimum(tissue, -tumour)
    return {
        k: _layout(v, spacing, spec.mpp)
        for k, v in (("tissue", tissue), ("tumour", tumour), ("rest", rest))
    }


def section_slide_spec(spec: SerialBlockSpec, plan: SectionPlan) -> SyntheticSlideSpec:
    """The slide spec of a section: size, MPP, seed and stain strength of its plan."""
    return SyntheticSlideSpec(
        width=spec.size,
        height=spec.size,
        mpp=spec.mpp,
        slide_class="low",
        seed=plan.seed,
        stain_strength=plan.stain_strength,
    )


def section_nuclei(
    slide_spec: SyntheticSlideSpec, layouts: dict[str, TissueLayout]
) -> pd.DataFrame:
    """Nuclei of a section: ``high`` class in the tumour, ``low`` in the rest.

    Two :func:`~pathpipe.synthetic.generate.make_nuclei` draws from the same
    seed (so the same appearance and nest field) on the ``tumour`` and ``rest``
    layouts, which are disjoint; nuclei keep the generator's margin to their
    layout's edge, so they do not overlap across the tumour border. Rows in
    raster order of centres, ``nucleus_id`` renumbered ``1..N``.
    """
    parts = [
        make_nuclei(dataclasses.replace(slide_spec, slide_class=cls), tissue=layouts[part])
        for cls, part in (("low", "rest"), ("high", "tumour"))
    ]
    df = pd.concat(parts, ignore_index=True)
    df = df.iloc[np.lexsort((df["l0_x"].to_numpy(), df["l0_y"].to_numpy()))]
    df = df.reset_index(drop=True)
    df["nucleus_id"] = np.arange(1, len(df) + 1, dtype=np.int64)
    return df
