"""Nuclei segmentation and detection metrics: Dice, AJI, PQ, detection and per-class F1.

Pure functions on arrays, one label map (or point set) against another; the
matching kernels they share live in :mod:`pathpipe.segmentation._matching`. Label maps are ``(H, W)`` integer arrays, 0 is background and
every positive id is one instance (ids need not be sequential; a bool mask is one
instance). Type maps are ``(H, W)`` integer arrays (usually uint8), 0 is background or
"untyped", ``k >= 1`` is class ``k``.
Point coordinates are ``(N, 2)`` float arrays of ``(x, y)`` = ``(col, row)`` pixels.

Definitions (``T`` = ground truth, ``P`` = prediction):

- **Dice** (HoVer-Net "DICE1"): ``2 |T ∩ P| / (|T| + |P|)`` on the foregrounds.
- **AJI** (Kumar et al. 2017, IEEE TMI 36(7), Algorithm 1; HoVer-Net ``get_fast_aji``):
  each ground truth ``G_i`` is paired with the prediction ``P_j`` of largest IoU (a
  prediction may serve several ground truths); ``AJI = Σ|G_i ∩ P_j| / (Σ|G_i ∪ P_j| +
  Σ_{G unpaired}|G| + Σ_{P unused}|P|)``.
- **PQ** (Kirillov et al. 2019, CVPR, eq. 1–2): pairs with ``IoU > t``;
  ``PQ = Σ_TP IoU / (TP + FP/2 + FN/2) = SQ × DQ`` with ``SQ = Σ_TP IoU / TP`` and
  ``DQ = TP / (TP + FP/2 + FN/2)``. For ``t >= 0.5`` the pairs are unique (Kirillov et
  al. 2019, Theorem 1); below, pairs come from a maximum-IoU assignment (Hungarian,
  :func:`scipy.optimize.linear_sum_assignment`) as in HoVer-Net ``get_fast_pq``.
- **Detection** (HoVer-Net ``pair_coordinates``, Graham et al. 2019, MedIA 58):
  centroids are paired one to one by a minimum-distance assignment; pairs farther apart
  than ``radius`` are forbidden before the assignment (HoVer-Net drops them after it,
  which can lose a feasible pair), so the number of pairs is maximal. ``precision = TP/(TP+FP)``, ``recall = TP/(TP+FN)``,
  ``F1 = 2TP/(2TP+FP+FN)``. For class ``k``: ``TP_k`` = pairs whose two types are both
  ``k``, ``FP_k`` = predictions of type ``k`` unpaired or paired with another type,
  ``FN_k`` = ground truths of type ``k`` unpaired or paired with another predicted type.
  Type accuracy is the fraction of pairs whose two types agree.

Edge cases (one rule, never NaN): a ratio whose denominator is 0 is **1.0 when there was
nothing to find and nothing was found** (no instance or point on either side, or for a
class, none of that class on either side) and **0.0 otherwise**. So two empty maps score
1.0 everywhere; predictions on an empty ground truth score precision, recall, F1, DQ, SQ,
PQ, Dice and AJI 0.0; an empty prediction on a non-empty ground truth scores 0.0 too.

Aggregating over a dataset (:mod:`pathpipe.segmentation.tile_counts`).
:func:`~pathpipe.segmentation.tile_counts.evaluate_tile` returns additive counts
(:class:`~pathpipe.segmentation.tile_counts.TileCounts`) and
:func:`~pathpipe.segmentation.tile_counts.summarise` has two conventions:

- **pooled** (the keys ``dice``, ``aji``, ``dq``, ``sq``, ``pq``, ``precision``, …):
  counts are summed over tiles and the ratios taken once, as for the AJI of a whole
  image set and CoNIC's multi-class PQ. Large tiles weigh more; empty tiles weigh nothing.
- **per-tile mean** (``pq_mean_per_tile``): the mean of per-tile PQ, as HoVer-Net's
  ``compute_stats.py`` reports. Every tile weighs the same, and an empty tile scores 1.0.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation._matching import (
    aji_sums,
    check_iou_threshold,
    class_counts,
    compact,
    label_map,
    label_pair,
    match_overlap,
    overlap_table,
    pair_points,
    points,
    pq_counts,
    pq_scores,
    prf,
    ratio,
    types_1d,
    types_of,
)

__all__ = [
    "Matching",
    "aji",
    "detection_scores",
    "dice",
    "instance_types",
    "match_instances",
    "panoptic_quality",
]


@dataclass(frozen=True)
class Matching:
    """One-to-one pairing of ground-truth and predicted instances.

    Attributes
    ----------
    true_ids : (N,) int64 ndarray
        Sorted ids of the ground-truth instances present.
    pred_ids : (M,) int64 ndarray
        Sorted ids of the predicted instances present.
    pairs : (K, 2) int64 ndarray
        Matched ``(true_id, pred_id)`` pairs, sorted by true id.
    ious : (K,) float64 ndarray
        IoU of each pair, each above the threshold.
    """

    true_ids: np.ndarray
    pred_ids: np.ndarray
    pairs: np.ndarray
    ious: np.ndarray


def instance_types(inst: np.ndarray, type_map: np.ndarray) -> dict[int, int]:
    """Majority type of each instance.

    Parameters
    ----------
    inst : (H, W) integer ndarray
        Instance label map, 0 = background.
    type_map : (H, W) integer ndarray, usually uint8
        Type of every pixel, 0 = background/untyped.

    Returns
    -------
    dict of int to int
        ``{instance_id: type}``: the most frequent non-zero type among the instance's
        pixels (ties go to the smaller type), or 0 when all its pixels are 0.

    Raises
    ------
    ConfigError
        If a map is not 2-D, not integer, holds negative values, or the shapes differ.
    """
    inst = label_map("inst", inst)
    type_map = label_map("type_map", type_map)
    if inst.shape != type_map.shape:
        raise ConfigError(
            f"inst and type_map must have the same shape, received {inst.shape} and {type_map.shape}"
        )
    ids, index = compact(inst)
    types = types_of(index, ids.size, type_map)
    return {int(i): int(t) for i, t in zip(ids, types, strict=True)}


def match_instances(
    true_inst: np.ndarray, pred_inst: np.ndarray, *, iou_threshold: float = 0.5
) -> Matching:
    """Pair ground-truth and predicted instances one to one by IoU.

    A pair needs ``IoU > iou_threshold`` (strictly). For ``iou_threshold >= 0.5`` such pairs
    are unique (Kirillov et al. 2019, Theorem 1). Below 0.5 the pairs come from a
    maximum-summed-IoU assignment (Hungarian) on the raw IoUs, keeping the assigned pairs
    above the threshold, as HoVer-Net ``get_fast_pq`` does.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer ndarray
        Instance label maps, 0 = background, ids >= 1 (not necessarily sequential).
    iou_threshold : float, default 0.5
        In ``[0, 1)``.

    Returns
    -------
    Matching

    Raises
    ------
    ConfigError
        On different shapes, negative ids, non-integer maps or a threshold outside [0, 1).
    """
    true_inst, pred_inst = label_pair(true_inst, pred_inst)
    thr = check_iou_threshold(iou_threshold)
    ov = overlap_table(true_inst, pred_inst)
    sel = match_overlap(ov, thr)
    pairs = np.stack([ov.true_ids[ov.t[sel]], ov.pred_ids[ov.p[sel]]], axis=1).reshape(-1, 2)
    return Matching(ov.true_ids, ov.pred_ids, pairs.astype(np.int64), ov.iou[sel].astype(float))


def dice(true_inst: np.ndarray, pred_inst: np.ndarray) -> float:
    """Foreground Dice coefficient (HoVer-Net "DICE1").

    ``Dice = 2 |T ∩ P| / (|T| + |P|)`` where ``T`` and ``P`` are the foreground
    (id > 0) pixels of the two maps. When both are empty the result is 1.0.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer or bool ndarray
        Instance or binary maps, 0 = background.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    true_inst, pred_inst = label_pair(true_inst, pred_inst)
    t, p = true_inst > 0, pred_inst > 0
    total = int(t.sum() + p.sum())
    return ratio(2 * int((t & p).sum()), total, empty=total == 0)


def aji(true_inst: np.ndarray, pred_inst: np.ndarray) -> float:
    """Aggregated Jaccard Index (Kumar et al. 2017, IEEE TMI, Algorithm 1).

    Each ground truth ``G_i`` is paired with the prediction ``P_j`` of largest IoU with it
    (ties: the smaller prediction id; a prediction may be paired with several ground
    truths, as in the original and HoVer-Net ``get_fast_aji``)::

        AJI = Σ_i |G_i ∩ P_j(i)| / (Σ_i |G_i ∪ P_j(i)| + Σ_{P unused} |P|)

    Ground truths that touch no prediction contribute ``|G_i|`` to the union only. Both
    maps empty gives 1.0; otherwise an empty union cannot happen.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer ndarray
        Instance label maps, 0 = background.

    Returns
    -------
    float
        In ``[0, 1]``.
    """
    true_inst, pred_inst = label_pair(true_inst, pred_inst)
    inter, union = aji_sums(overlap_table(true_inst, pred_inst))
    return ratio(inter, union, empty=union == 0)


def panoptic_quality(
    true_inst: np.ndarray, pred_inst: np.ndarray, *, iou_threshold: float = 0.5
) -> dict[str, float | int]:
    """Panoptic quality of one instance class (Kirillov et al. 2019, eq. 1–2).

    With pairs from :func:`match_instances`::

        DQ = TP / (TP + FP/2 + FN/2)
        SQ = Σ_TP IoU / TP
        PQ = DQ × SQ = Σ_TP IoU / (TP + FP/2 + FN/2)

    Both maps empty gives DQ = SQ = PQ = 1.0; no pair but some instance gives 0.0.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer ndarray
        Instance label maps, 0 = background.
    iou_threshold : float, default 0.5
        A pair needs IoU strictly above it; in ``[0, 1)``.

    Returns
    -------
    dict
        ``dq``, ``sq``, ``pq`` (float), ``tp``, ``fp``, ``fn`` (int), ``iou_sum`` (float).
    """
    true_inst, pred_inst = label_pair(true_inst, pred_inst)
    thr = check_iou_threshold(iou_threshold)
    ov = overlap_table(true_inst, pred_inst)
    tp, fp, fn, iou_sum = pq_counts(ov, match_overlap(ov, thr))
    dq, sq, pq = pq_scores(tp, fp, fn, iou_sum)
    return {"dq": dq, "sq": sq, "pq": pq, "tp": tp, "fp": fp, "fn": fn, "iou_sum": iou_sum}


def detection_scores(
    true_xy: np.ndarray,
    pred_xy: np.ndarray,
    *,
    radius: float,
    true_types: np.ndarray | None = None,
    pred_types: np.ndarray | None = None,
    classes: Sequence[int] | None = None,
) -> dict[str, Any]:
    """Detection precision, recall and F1 from centroids, optionally per class.

    Points are paired one to one by a minimum-distance assignment (HoVer-Net
    ``pair_coordinates``); pairs farther apart than ``radius`` are not allowed, so the
    assignment maximises the number of pairs first. A distance equal to ``radius``
    counts as within it.

    Parameters
    ----------
    true_xy : (N, 2) float ndarray
        Ground-truth ``(x, y)`` in pixels.
    pred_xy : (M, 2) float ndarray
        Predicted ``(x, y)`` in pixels.
    radius : float
        Largest pairing distance in pixels, > 0.
    true_types : (N,) int ndarray, optional
        Type of each ground truth (0 = untyped). Give both type arrays or neither.
    pred_types : (M,) int ndarray, optional
        Type of each prediction.
    classes : sequence of int, optional
        Types reported in ``per_class``; default: every non-zero type present.

    Returns
    -------
    dict
        ``precision``, ``recall``, ``f1`` (float), ``tp``, ``fp``, ``fn`` (int); with
        types also ``type_accuracy`` (fraction of pairs whose types agree) and
        ``per_class`` ``{k: {"precision", "recall", "f1", "tp", "fp", "fn"}}`` where
        ``TP_k`` = pairs with both types ``k``, ``FP_k`` = predictions of type ``k``
        minus ``TP_k``, ``FN_k`` = ground truths of type ``k`` minus ``TP_k``.
        Zero denominators follow the module rule (1.0 only when nothing on either side).

    Raises
    ------
    ConfigError
        On a bad radius, bad shapes, or only one of the two type arrays.
    """
    radius = float(radius)
    if not (radius > 0 and np.isfinite(radius)):
        raise ConfigError(f"radius must be a finite number > 0 (pixels), received {radius!r}")
    true_xy = points("true_xy", true_xy)
    pred_xy = points("pred_xy", pred_xy)
    if (true_types is None) != (pred_types is None):
        raise ConfigError(
            "give both true_types and pred_types or neither, received only "
            + ("true_types" if pred_types is None else "pred_types")
        )
    pairs = pair_points(true_xy, pred_xy, radius)
    tp = int(pairs.shape[0])
    fp, fn = pred_xy.shape[0] - tp, true_xy.shape[0] - tp
    out: dict[str, Any] = {**prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}
    if true_types is None:
        return out
    t_types = types_1d("true_types", true_types, true_xy.shape[0])
    p_types = types_1d("pred_types", pred_types, pred_xy.shape[0])
    if classes is None:
        classes = sorted(set(np.unique(np.concatenate([t_types, p_types])).tolist()) - {0})
    correct = int((t_types[pairs[:, 0]] == p_types[pairs[:, 1]]).sum())
    out["type_accuracy"] = ratio(correct, tp, empty=tp == fp == fn == 0)
    out["per_class"] = {
        k: {**prf(*c), "tp": c[0], "fp": c[1], "fn": c[2]}
        for k, c in class_counts(t_types, p_types, pairs, classes).items()
    }
    return out
