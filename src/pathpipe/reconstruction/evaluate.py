"""A reconstruction compared with the truth of a generated serial block.

:func:`evaluate_against_truth` reads what ``pathpipe reconstruction run`` wrote
(``transforms.json``, ``volume.zarr``) and the truth of the block it was run on
(the mapping :func:`pathpipe.synthetic.serial.read_serial_truth` returns; taken
as an argument, so this module needs nothing of the generator).

Frames. Ours: the block frame is the reference section's slide frame (µm). The
truth gives each section's map ``T_k``: slide µm -> truth block µm, with level-0
pixel ``j``'s centre at ``j × mpp``; our masks put it half a pixel further, so
``T'_k = T_k ∘ shift(-mpp/2)`` maps our section frame to the truth block.

* Registration: for consecutive written sections ``a < b``, the relative
  transform ``A_a⁻¹ A_b`` (ours) against ``T'_a⁻¹ T'_b`` (truth): the rotation
  difference (degrees), the displacement error at the object's centre (in
  section ``b``'s frame) in working pixels, and whether the mirror agrees.
* Dice: the truth volume's voxel centres (truth block µm) are mapped into our
  block frame through the reference section (``T'_r⁻¹``), which is exactly how
  our frame is defined, and our labels are sampled there (nearest voxel).
  Registration drift away from the reference shows in it. ``plane_dice_own``
  maps each plane through its own section's registered transform instead
  (``A_k T'_k⁻¹``): it checks the resampling alone, whatever the registration.
* Volume: our labels' volume (plane areas integrated over z by the trapezoid
  rule, as the stage's ``volume_mm3``) over the truth's tissue volume.

:func:`write_threshold_masks` gives a generated block's sections the tissue
stage's files (``tissue.png``, ``tissue.json``) from a grey-level threshold that
keeps the ducts open, so the tests and the benchmark reconstruct blocks without
running the workflow.
"""

from __future__ import annotations

import itertools
import json
import os
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import StorageError
from pathpipe.reconstruction.transforms import RigidTransform2D, rotation_error_deg
from pathpipe.reconstruction.warp import read_transforms

__all__ = [
    "TARGETS",
    "evaluate_against_truth",
    "meets_targets",
    "truth_transforms",
    "write_threshold_masks",
]

#: Issue #12's targets: median rotation error (°), median displacement error
#: (working px), every mirror right, Dice from the reference section.
TARGETS = {"median_rotation_deg": 0.5, "median_displacement_px": 1.0, "dice": 0.9}


def truth_transforms(truth: dict[str, Any]) -> dict[int, RigidTransform2D]:
    """The truth's map of each section, from our section frame to the truth block.

    Parameters
    ----------
    truth : dict
        A block's truth (:func:`pathpipe.synthetic.serial.read_serial_truth`).

    Returns
    -------
    dict of int to RigidTransform2D
        ``T'_k = T_k ∘ shift(-mpp/2)`` by section: section µm with level-0 pixel
        ``j``'s centre at ``(j + ½) mpp`` (our masks' convention) -> truth block µm.
    """
    half = RigidTransform2D(0.0, -0.5 * truth["mpp"], -0.5 * truth["mpp"], False)
    return {
        s["section"]: RigidTransform2D.from_matrix(s["transform"].matrix()).compose(half)
        for s in truth["sections"]
    }


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    total = float(a.sum() + b.sum())
    return 2.0 * float((a & b).sum()) / total if total else float("nan")


def _sample_labels(
    labels: np.ndarray,
    grid: dict[str, Any],
    working_mpp: float,
    xy_truth: np.ndarray,
    through: dict[int, RigidTransform2D],
    n_planes: int,
) -> np.ndarray:
    """Per truth plane ``k``: our labels at the truth voxel centres mapped by ``through[k]``."""
    _, oy, ox = grid["origin_um_zyx"]
    out = np.zeros((n_planes, xy_truth.shape[0]), dtype=bool)
    for k in range(min(n_planes, labels.shape[0])):
        p = through[k].apply(xy_truth)
        col = np.rint((p[:, 0] - ox) / working_mpp).astype(int)
        row = np.rint((p[:, 1] - oy) / working_mpp).astype(int)
        ok = (row >= 0) & (row < labels.shape[1]) & (col >= 0) & (col < labels.shape[2])
        out[k, ok] = labels[k][row[ok], col[ok]] > 0
    return out


def evaluate_against_truth(out_dir: str | os.PathLike, truth: dict[str, Any]) -> dict[str, Any]:
    """Registration errors, Dice and volume of a reconstruction against its block's truth.

    Parameters
    ----------
    out_dir : path-like
        The folder ``pathpipe reconstruction run`` wrote (``transforms.json``,
        ``volume.zarr``) for a generated block.
    truth : dict
        That block's truth, as :func:`pathpipe.synthetic.serial.read_serial_truth`
        returns it (``mpp``, ``spec.width_um``, ``sections[*].transform``,
        ``truth_volume``, ``volumes.tissue_mm3``).

    Returns
    -------
    dict
        ``pairs``: one row per consecutive pair of registered sections —
        ``section_a``, ``section_b``, ``rotation_error_deg``,
        ``displacement_error_px`` (working px, at the object's centre) and
        ``mirror_ok``; ``median_rotation_deg``, ``median_displacement_px``,
        ``mirrors_right`` and ``pairs_count`` over them; ``reference_section``;
        ``dice`` (the labels volume against the truth volume through the
        reference section), ``plane_dice`` and ``plane_dice_own`` (per truth
        plane, through the reference and through the plane's own transform;
        NaN where the plane has no registered transform or both are empty);
        ``volume_ratio`` (our labels' volume over the truth's tissue volume).

    Raises
    ------
    StorageError
        When ``transforms.json`` or ``volume.zarr`` is missing or unreadable, or
        the truth's sections do not match the reconstruction's.
    """
    import zarr

    out_dir = Path(out_dir)
    data = read_transforms(out_dir / "transforms.json")
    working_mpp = float(data["working_mpp"])
    ours = {s["section"]: s["transform"] for s in data["sections"] if s["transform"] is not None}
    tt = truth_transforms(truth)
    if not set(ours) <= set(tt):
        raise StorageError(
            f"{out_dir} has sections {sorted(set(ours) - set(tt))} that the truth lacks "
            f"(truth sections {sorted(tt)}); expected the reconstruction of the truth's block"
        )
    reference = int(data["reference_section"])

    half_width = truth["spec"].width_um / 2
    centre = np.array([[half_width, half_width]])
    pairs = []
    for a, b in itertools.pairwise(sorted(ours)):
        est = ours[a].inverse().compose(ours[b])
        tru = tt[a].inverse().compose(tt[b])
        at = tt[b].inverse().apply(centre)  # the object's centre in section b's frame
        shift = float(np.linalg.norm(est.apply(at) - tru.apply(at))) / working_mpp
        pairs.append(
            {
                "section_a": a,
                "section_b": b,
                "rotation_error_deg": rotation_error_deg(est, tru),
                "displacement_error_px": shift,
                "mirror_ok": est.mirrored == tru.mirrored,
            }
        )

    try:
        labels = zarr.open_group(str(out_dir / "volume.zarr"), mode="r")["labels/mask/0"][:]
    except (OSError, KeyError, ValueError) as exc:
        raise StorageError(f"{out_dir / 'volume.zarr'} unreadable: {exc}") from exc
    tv = truth["truth_volume"]
    truth_mask = tv["labels"] >= 1
    _, toy, tox = tv["origin_um_zyx"]
    _, tsy, tsx = tv["spacing_um_zyx"]
    ny, nx = truth_mask.shape[1:]
    x, y = np.meshgrid(tox + tsx * np.arange(nx), toy + tsy * np.arange(ny))
    xy = np.column_stack([x.ravel(), y.ravel()])
    n = truth_mask.shape[0]
    flat_truth = truth_mask.reshape(n, -1)

    via_ref = dict.fromkeys(tt, tt[reference].inverse())
    mine = _sample_labels(labels, data["volume"], working_mpp, xy, via_ref, n)
    via_own = {k: ours[k].compose(tt[k].inverse()) if k in ours else via_ref[k] for k in tt}
    mine_own = _sample_labels(labels, data["volume"], working_mpp, xy, via_own, n)

    dz, dy, dx = (v / 1000.0 for v in data["volume"]["spacing_um_zyx"])
    areas = labels.reshape(len(labels), -1).astype(bool).sum(axis=1) * dy * dx
    volume = float(np.trapezoid(areas, dx=dz)) if len(areas) > 1 else 0.0
    rot = [p["rotation_error_deg"] for p in pairs]
    shift = [p["displacement_error_px"] for p in pairs]
    return {
        "pairs": pairs,
        "pairs_count": len(pairs),
        "median_rotation_deg": float(np.median(rot)) if pairs else float("nan"),
        "median_displacement_px": float(np.median(shift)) if pairs else float("nan"),
        "mirrors_right": sum(p["mirror_ok"] for p in pairs),
        "reference_section": reference,
        "dice": _dice(mine, flat_truth),
        "plane_dice": [_dice(mine[k], flat_truth[k]) for k in range(n)],
        "plane_dice_own": [
            _dice(mine_own[k], flat_truth[k]) if k in ours else float("nan") for k in range(n)
        ],
        "volume_ratio": volume / float(truth["volumes"]["tissue_mm3"]),
    }


def meets_targets(result: dict[str, Any]) -> dict[str, bool]:
    """Which of :data:`TARGETS` an :func:`evaluate_against_truth` result meets.

    Returns
    -------
    dict
        ``rotation``, ``displacement``, ``mirrors`` (every pair's mirror right),
        ``dice`` and ``all``.
    """
    met = {
        "rotation": result["median_rotation_deg"] <= TARGETS["median_rotation_deg"],
        "displacement": result["median_displacement_px"] <= TARGETS["median_displacement_px"],
        "mirrors": result["mirrors_right"] == result["pairs_count"],
        "dice": result["dice"] >= TARGETS["dice"],
    }
    met["all"] = all(met.values())
    return met


def write_threshold_masks(
    slides: Iterable[tuple[str, str | os.PathLike]],
    results_dir: str | os.PathLike,
    *,
    mask_mpp: float = 4.0,
) -> None:
    """Write ``{results_dir}/{slide_id}/tissue.png`` and ``tissue.json`` for each slide.

    The mask is the slide's thumbnail at ``mask_mpp`` µm/px, grey level (mean of
    R, G, B, Gaussian-blurred by 1.5 px) below 225, with holes under 8 px filled
    (the ducts stay open). ``tissue.json`` records the mask's µm/px per axis, as
    the tissue stage does.

    Parameters
    ----------
    slides : iterable of (slide_id, path)
        E.g. the rows of the sheet :func:`pathpipe.synthetic.serial.write_serial_block` returns.
    results_dir : path-like
        Results root; each slide's folder is created.
    mask_mpp : float
        µm per mask pixel.
    """
    from PIL import Image
    from scipy import ndimage
    from skimage.morphology import remove_small_holes

    from pathpipe.io.slide import open_slide

    for slide_id, path in slides:
        with open_slide(path) as slide:
            rgb = slide.thumbnail_at_mpp(mask_mpp)
            (w, h), mpp = slide.info.dimensions, slide.info.mpp.x
        grey = ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), 1.5)
        mask = remove_small_holes(grey < 225, max_size=8)
        folder = Path(results_dir) / slide_id
        folder.mkdir(parents=True, exist_ok=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "tissue.png")
        record = {"mask_mpp": [w * mpp / mask.shape[1], h * mpp / mask.shape[0]]}
        (folder / "tissue.json").write_text(json.dumps(record))
