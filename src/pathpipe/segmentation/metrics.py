"""Nuclei segmentation and detection metrics: Dice, AJI, PQ, detection and per-class F1.

Pure functions on arrays. Label maps are ``(H, W)`` integer arrays, 0 is background and
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

Aggregating over a dataset. :func:`evaluate_tile` returns additive counts
(:class:`TileCounts`) and :func:`summarise` has two conventions:

- **pooled** (the keys ``dice``, ``aji``, ``dq``, ``sq``, ``pq``, ``precision``, …):
  counts are summed over tiles and the ratios taken once, as for the AJI of a whole
  image set and CoNIC's multi-class PQ. Large tiles weigh more; empty tiles weigh nothing.
- **per-tile mean** (``pq_mean_per_tile``): the mean of per-tile PQ, as HoVer-Net's
  ``compute_stats.py`` reports. Every tile weighs the same, and an empty tile scores 1.0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from pathpipe.errors import ConfigError

__all__ = [
    "Matching",
    "TileCounts",
    "aji",
    "detection_scores",
    "dice",
    "evaluate_tile",
    "instance_types",
    "match_instances",
    "panoptic_quality",
    "summarise",
]


# --------------------------------------------------------------------------- helpers


def _ratio(num: float, den: float, *, empty: bool) -> float:
    """``num / den``; when ``den == 0``: 1.0 if ``empty`` (nothing to find, none found), else 0.0."""
    if den > 0:
        return float(num) / float(den)
    return 1.0 if empty else 0.0


def _label_map(name: str, labels: Any) -> np.ndarray:
    """Validate an ``(H, W)`` non-negative integer label (or type) map."""
    arr = np.asarray(labels)
    if arr.ndim != 2:
        raise ConfigError(f"{name} must be a 2-D (H, W) array, received shape {arr.shape}")
    if arr.dtype == np.bool_:
        return arr.view(np.uint8)  # a binary mask: one instance, id 1
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{name} must have an integer or bool dtype, received {arr.dtype}")
    if arr.size and np.issubdtype(arr.dtype, np.signedinteger) and int(arr.min()) < 0:
        raise ConfigError(
            f"{name} must hold ids >= 0 (0 = background), received minimum {int(arr.min())}"
        )
    return arr


def _label_pair(true_inst: Any, pred_inst: Any) -> tuple[np.ndarray, np.ndarray]:
    true_inst = _label_map("true_inst", true_inst)
    pred_inst = _label_map("pred_inst", pred_inst)
    if true_inst.shape != pred_inst.shape:
        raise ConfigError(
            f"true_inst and pred_inst must have the same shape, received "
            f"{true_inst.shape} and {pred_inst.shape}"
        )
    return true_inst, pred_inst


def _compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positive ids ``(N,)`` and a flat index ``(H*W,)``: 0 background, ``i`` = ``ids[i-1]``."""
    flat = labels.ravel()
    top = int(flat.max()) if flat.size else 0
    if top == 0:
        return np.zeros(0, np.int64), np.zeros(flat.size, np.int64)
    if top <= max(flat.size, 1 << 16):
        # Dense look-up table: a bincount is much faster than a sort on large tiles.
        flat = flat.astype(np.intp, copy=False)
        present = np.bincount(flat, minlength=top + 1) > 0
        present[0] = False
        ids = np.flatnonzero(present).astype(np.int64)
        lut = np.zeros(top + 1, np.int64)
        lut[ids] = np.arange(1, ids.size + 1)
        return ids, lut[flat]
    uniq, inverse = np.unique(flat, return_inverse=True)
    if uniq[0] == 0:
        return uniq[1:].astype(np.int64), inverse.astype(np.int64)
    return uniq.astype(np.int64), inverse.astype(np.int64) + 1


@dataclass(frozen=True)
class _Overlap:
    """Sparse intersection table of two label maps (indices are 0-based into the ids)."""

    true_ids: np.ndarray  # (N,) int64
    pred_ids: np.ndarray  # (M,) int64
    true_area: np.ndarray  # (N,) int64
    pred_area: np.ndarray  # (M,) int64
    t: np.ndarray  # (Q,) int64, index into true_ids of each overlapping pair
    p: np.ndarray  # (Q,) int64, index into pred_ids
    inter: np.ndarray  # (Q,) int64, |T_t ∩ P_p| > 0
    iou: np.ndarray  # (Q,) float64
    true_index: np.ndarray  # (H*W,) int64, compacted true map (0 background, i = ids[i-1])
    pred_index: np.ndarray  # (H*W,) int64, compacted pred map


def _overlap(true_inst: np.ndarray, pred_inst: np.ndarray) -> _Overlap:
    """Intersection table from one pass over paired pixel ids (no per-instance masks)."""
    true_ids, ti = _compact(true_inst)
    pred_ids, pi = _compact(pred_inst)
    n, m = true_ids.size, pred_ids.size
    true_area = np.bincount(ti, minlength=n + 1)[1:].astype(np.int64)
    pred_area = np.bincount(pi, minlength=m + 1)[1:].astype(np.int64)
    both = (ti > 0) & (pi > 0)
    key = ti[both] * (m + 1) + pi[both]
    if (n + 1) * (m + 1) <= 1 << 22:
        counts = np.bincount(key, minlength=(n + 1) * (m + 1))
        key = np.flatnonzero(counts)
        inter = counts[key]
    else:
        key, inter = np.unique(key, return_counts=True)
    t = key // (m + 1) - 1
    p = key % (m + 1) - 1
    inter = inter.astype(np.int64)
    union = true_area[t] + pred_area[p] - inter
    return _Overlap(true_ids, pred_ids, true_area, pred_area, t, p, inter, inter / union, ti, pi)


def _check_threshold(iou_threshold: float) -> float:
    thr = float(iou_threshold)
    if not 0.0 <= thr < 1.0:
        raise ConfigError(f"iou_threshold must be in [0, 1), received {iou_threshold!r}")
    return thr


def _assign(
    r: np.ndarray, c: np.ndarray, w: np.ndarray, *, maximize: bool, fill: float
) -> np.ndarray:
    """Optimal one-to-one subset of candidate edges ``(r[q], c[q], w[q])``.

    Linear assignment (Hungarian, :func:`scipy.optimize.linear_sum_assignment`) with
    ``fill`` as the weight of non-candidate entries. The optimum splits over connected
    components of the candidate graph, so each component is solved on its own small
    dense matrix (components of one edge are taken as they are) and memory stays
    proportional to the number of candidates. Returns positions into ``r`` (sorted);
    non-candidate entries chosen by the solver are dropped.
    """
    q = r.size
    if q == 0:
        return np.zeros(0, np.int64)
    n_r = int(r.max()) + 1
    graph = coo_matrix((np.ones(q), (r, n_r + c)), shape=(n_r + int(c.max()) + 1,) * 2)
    _, comp = connected_components(graph, directed=False)
    edge_comp = comp[r]
    sizes = np.bincount(edge_comp)
    chosen = [np.flatnonzero(sizes[edge_comp] == 1)]
    multi = np.flatnonzero(sizes[edge_comp] > 1)
    multi = multi[np.argsort(edge_comp[multi], kind="stable")]
    starts = np.flatnonzero(np.diff(edge_comp[multi], prepend=-1))
    for group in np.split(multi, starts[1:]) if multi.size else []:
        rows, r_inv = np.unique(r[group], return_inverse=True)
        cols, c_inv = np.unique(c[group], return_inverse=True)
        weight = np.full((rows.size, cols.size), fill, np.float64)
        pos = np.full((rows.size, cols.size), -1, np.int64)
        weight[r_inv, c_inv] = w[group]
        pos[r_inv, c_inv] = group
        ri, ci = linear_sum_assignment(weight, maximize=maximize)
        picked = pos[ri, ci]
        chosen.append(picked[picked >= 0])
    return np.sort(np.concatenate(chosen))


def _match_overlap(ov: _Overlap, thr: float) -> np.ndarray:
    """Positions (into ``ov.t``/``ov.p``) of the matched pairs, sorted by true index."""
    if thr >= 0.5:
        # IoU > 0.5 pairs are unique (Kirillov et al. 2019, Theorem 1): no assignment needed.
        return np.flatnonzero(ov.iou > thr)
    # Maximum-IoU assignment on raw IoU, then drop pairs not above the threshold
    # (HoVer-Net get_fast_pq). Non-overlapping pairs weigh 0.
    sel = _assign(ov.t, ov.p, ov.iou, maximize=True, fill=0.0)
    return sel[ov.iou[sel] > thr]


def _pq_counts(ov: _Overlap, sel: np.ndarray) -> tuple[int, int, int, float]:
    tp = int(sel.size)
    return tp, int(ov.pred_ids.size) - tp, int(ov.true_ids.size) - tp, float(ov.iou[sel].sum())


def _pq_scores(tp: int, fp: int, fn: int, iou_sum: float) -> tuple[float, float, float]:
    """(DQ, SQ, PQ), Kirillov et al. 2019 eq. 2, with the module's empty-case rule."""
    empty = tp == fp == fn == 0
    dq = _ratio(tp, tp + 0.5 * fp + 0.5 * fn, empty=empty)
    sq = _ratio(iou_sum, tp, empty=empty)
    return dq, sq, dq * sq


def _aji_sums(ov: _Overlap) -> tuple[int, int]:
    """(Σ intersection, Σ union) of the AJI, Kumar et al. 2017 Algorithm 1."""
    if ov.t.size == 0:
        return 0, int(ov.true_area.sum() + ov.pred_area.sum())
    # For each ground truth, its prediction of largest IoU; ties go to the smaller pred id
    # (np.argmax in HoVer-Net get_fast_aji). lexsort: last key is the primary one.
    order = np.lexsort((ov.p, -ov.iou, ov.t))
    first = np.ones(order.size, bool)
    first[1:] = ov.t[order][1:] != ov.t[order][:-1]
    best = order[first]
    inter = int(ov.inter[best].sum())
    union = int((ov.true_area[ov.t[best]] + ov.pred_area[ov.p[best]] - ov.inter[best]).sum())
    paired_true = np.zeros(ov.true_ids.size, bool)
    paired_true[ov.t[best]] = True
    used_pred = np.zeros(ov.pred_ids.size, bool)
    used_pred[ov.p[best]] = True
    union += int(ov.true_area[~paired_true].sum() + ov.pred_area[~used_pred].sum())
    return inter, union


def _points(name: str, xy: Any) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigError(f"{name} must be an (N, 2) array of (x, y), received shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} must hold finite coordinates, received NaN or inf")
    return arr


def _pair_points(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> np.ndarray:
    """(K, 2) int64 index pairs ``(i_true, j_pred)``, one to one, each within ``radius``.

    Minimum-distance assignment (HoVer-Net ``pair_coordinates``), except that pairs
    farther than ``radius`` are forbidden *before* the assignment (cost ``big``, larger
    than any sum of allowed costs) rather than dropped after it. The assignment thus
    first maximises the number of pairs, then minimises their summed distance; HoVer-Net
    can lose a pair when a cheap far pair displaces a feasible one. Candidate pairs come
    from a k-d tree, so no (N, M) matrix is built.
    """
    if true_xy.shape[0] == 0 or pred_xy.shape[0] == 0:
        return np.zeros((0, 2), np.int64)
    cand = cKDTree(true_xy).sparse_distance_matrix(cKDTree(pred_xy), radius, output_type="ndarray")
    i, j, d = cand["i"].astype(np.int64), cand["j"].astype(np.int64), cand["v"]
    big = radius * (min(true_xy.shape[0], pred_xy.shape[0]) + 1) + 1.0
    sel = _assign(i, j, d, maximize=False, fill=big)
    return np.stack([i[sel], j[sel]], axis=1)


def _types_1d(name: str, types: Any, n: int) -> np.ndarray:
    arr = np.asarray(types)
    if arr.size == 0 and n == 0:
        return np.zeros(0, np.int64)
    if arr.shape != (n,):
        raise ConfigError(f"{name} must have shape ({n},) (one per point), received {arr.shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        raise ConfigError(f"{name} must have an integer dtype, received {arr.dtype}")
    if arr.size and int(arr.min()) < 0:
        raise ConfigError(f"{name} must hold types >= 0, received minimum {int(arr.min())}")
    return arr.astype(np.int64)


def _class_counts(
    true_types: np.ndarray, pred_types: np.ndarray, pairs: np.ndarray, classes: Sequence[int]
) -> dict[int, tuple[int, int, int]]:
    """``{k: (TP_k, FP_k, FN_k)}``: FP_k = #pred of type k − TP_k, FN_k = #true of type k − TP_k."""
    t_pair = true_types[pairs[:, 0]]
    p_pair = pred_types[pairs[:, 1]]
    out = {}
    for k in classes:
        tp = int(((t_pair == k) & (p_pair == k)).sum())
        out[int(k)] = (tp, int((pred_types == k).sum()) - tp, int((true_types == k).sum()) - tp)
    return out


def _prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    empty = tp == fp == fn == 0
    return {
        "precision": _ratio(tp, tp + fp, empty=empty),
        "recall": _ratio(tp, tp + fn, empty=empty),
        "f1": _ratio(2 * tp, 2 * tp + fp + fn, empty=empty),
    }


def _centroids(index: np.ndarray, n: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, 2) float64 ``(x, y)`` centroids of instances 1..n of a compacted flat index."""
    h, w = shape
    area = np.bincount(index, minlength=n + 1)[1:]
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    y = np.bincount(index, weights=rows, minlength=n + 1)[1:] / np.maximum(area, 1)
    x = np.bincount(index, weights=cols, minlength=n + 1)[1:] / np.maximum(area, 1)
    return np.stack([x, y], axis=1)


def _types_of(index: np.ndarray, n: int, type_map: np.ndarray) -> np.ndarray:
    """(n,) int64 majority non-zero type of instances 1..n (0 when all their pixels are 0)."""
    if n == 0:
        return np.zeros(0, np.int64)
    tflat = type_map.ravel()
    fg = index > 0
    type_vals, t_inv = np.unique(tflat[fg], return_inverse=True)
    nz = type_vals != 0
    if not nz.any():
        return np.zeros(n, np.int64)
    k = type_vals.size
    counts = np.bincount((index[fg] - 1) * k + t_inv, minlength=n * k).reshape(n, k)
    counts = counts[:, nz]
    best = np.argmax(counts, axis=1)  # ties: the smaller type
    out = type_vals[nz][best].astype(np.int64)
    out[counts.sum(axis=1) == 0] = 0
    return out


# --------------------------------------------------------------------------- public API


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
    inst = _label_map("inst", inst)
    type_map = _label_map("type_map", type_map)
    if inst.shape != type_map.shape:
        raise ConfigError(
            f"inst and type_map must have the same shape, received {inst.shape} and {type_map.shape}"
        )
    ids, index = _compact(inst)
    types = _types_of(index, ids.size, type_map)
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
    true_inst, pred_inst = _label_pair(true_inst, pred_inst)
    thr = _check_threshold(iou_threshold)
    ov = _overlap(true_inst, pred_inst)
    sel = _match_overlap(ov, thr)
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
    true_inst, pred_inst = _label_pair(true_inst, pred_inst)
    t, p = true_inst > 0, pred_inst > 0
    total = int(t.sum() + p.sum())
    return _ratio(2 * int((t & p).sum()), total, empty=total == 0)


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
    true_inst, pred_inst = _label_pair(true_inst, pred_inst)
    inter, union = _aji_sums(_overlap(true_inst, pred_inst))
    return _ratio(inter, union, empty=union == 0)


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
    true_inst, pred_inst = _label_pair(true_inst, pred_inst)
    thr = _check_threshold(iou_threshold)
    ov = _overlap(true_inst, pred_inst)
    tp, fp, fn, iou_sum = _pq_counts(ov, _match_overlap(ov, thr))
    dq, sq, pq = _pq_scores(tp, fp, fn, iou_sum)
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
    true_xy = _points("true_xy", true_xy)
    pred_xy = _points("pred_xy", pred_xy)
    if (true_types is None) != (pred_types is None):
        raise ConfigError(
            "give both true_types and pred_types or neither, received only "
            + ("true_types" if pred_types is None else "pred_types")
        )
    pairs = _pair_points(true_xy, pred_xy, radius)
    tp = int(pairs.shape[0])
    fp, fn = pred_xy.shape[0] - tp, true_xy.shape[0] - tp
    out: dict[str, Any] = {**_prf(tp, fp, fn), "tp": tp, "fp": fp, "fn": fn}
    if true_types is None:
        return out
    t_types = _types_1d("true_types", true_types, true_xy.shape[0])
    p_types = _types_1d("pred_types", pred_types, pred_xy.shape[0])
    if classes is None:
        classes = sorted(set(np.unique(np.concatenate([t_types, p_types])).tolist()) - {0})
    correct = int((t_types[pairs[:, 0]] == p_types[pairs[:, 1]]).sum())
    out["type_accuracy"] = _ratio(correct, tp, empty=tp == fp == fn == 0)
    out["per_class"] = {
        k: {**_prf(*c), "tp": c[0], "fp": c[1], "fn": c[2]}
        for k, c in _class_counts(t_types, p_types, pairs, classes).items()
    }
    return out


@dataclass(frozen=True)
class TileCounts:
    """Additive counts of one tile; sums over tiles give dataset-level scores.

    Attributes
    ----------
    n_true, n_pred : int
        Number of ground-truth and predicted instances.
    dice_inter : int
        ``|T ∩ P|`` foreground pixels (Dice numerator / 2).
    dice_total : int
        ``|T| + |P|`` foreground pixels (Dice denominator).
    aji_inter, aji_union : int
        AJI numerator and denominator in pixels.
    pq_tp, pq_fp, pq_fn : int
        PQ matching counts.
    pq_iou_sum : float
        Sum of the IoUs of the PQ pairs.
    det_tp, det_fp, det_fn : int
        Centroid detection counts.
    typed : bool
        Whether type maps were given (the type fields below are meaningful).
    type_matched, type_correct : int
        Detection pairs, and those whose types agree.
    per_class : dict of int to (int, int, int)
        ``{k: (TP_k, FP_k, FN_k)}`` for every non-zero type present in the tile.

    The per-tile scores are computed from these counts: the properties :attr:`dice`,
    :attr:`aji` and :attr:`pq`, and :meth:`scores` for all of them.
    """

    n_true: int
    n_pred: int
    dice_inter: int
    dice_total: int
    aji_inter: int
    aji_union: int
    pq_tp: int
    pq_fp: int
    pq_fn: int
    pq_iou_sum: float
    det_tp: int
    det_fp: int
    det_fn: int
    typed: bool
    type_matched: int
    type_correct: int
    per_class: Mapping[int, tuple[int, int, int]]

    @property
    def dice(self) -> float:
        """Dice ``2 dice_inter / dice_total`` (1.0 when both foregrounds are empty)."""
        return _ratio(2 * self.dice_inter, self.dice_total, empty=self.dice_total == 0)

    @property
    def aji(self) -> float:
        """AJI ``aji_inter / aji_union`` (1.0 when both maps are empty)."""
        return _ratio(self.aji_inter, self.aji_union, empty=self.aji_union == 0)

    @property
    def pq(self) -> float:
        """PQ ``pq_iou_sum / (pq_tp + pq_fp / 2 + pq_fn / 2)`` (1.0 when nothing either side)."""
        return _pq_scores(self.pq_tp, self.pq_fp, self.pq_fn, self.pq_iou_sum)[2]

    def scores(self) -> dict[str, Any]:
        """Scores of these counts.

        Returns
        -------
        dict
            ``dice``, ``aji``, ``dq``, ``sq``, ``pq``, ``precision``, ``recall``, ``f1``,
            ``type_accuracy`` (None when untyped), ``per_class``
            ``{k: {"precision", "recall", "f1", "tp", "fp", "fn"}}`` (empty when
            untyped), ``n_true``, ``n_pred``.
        """
        dq, sq, pq = _pq_scores(self.pq_tp, self.pq_fp, self.pq_fn, self.pq_iou_sum)
        det_empty = self.det_tp == self.det_fp == self.det_fn == 0
        return {
            "dice": self.dice,
            "aji": self.aji,
            "dq": dq,
            "sq": sq,
            "pq": pq,
            **_prf(self.det_tp, self.det_fp, self.det_fn),
            "type_accuracy": (
                _ratio(self.type_correct, self.type_matched, empty=det_empty)
                if self.typed
                else None
            ),
            "per_class": {
                k: {**_prf(*c), "tp": c[0], "fp": c[1], "fn": c[2]}
                for k, c in sorted(self.per_class.items())
            },
            "n_true": self.n_true,
            "n_pred": self.n_pred,
        }


def evaluate_tile(
    true_inst: np.ndarray,
    pred_inst: np.ndarray,
    *,
    true_type: np.ndarray | None = None,
    pred_type: np.ndarray | None = None,
    match_radius_px: float = 6.0,
    iou_threshold: float = 0.5,
) -> TileCounts:
    """All counts of one tile: Dice, AJI, PQ, centroid detection and per-class detection.

    Detection pairs instance centroids (mean pixel ``(x, y)``) within ``match_radius_px``
    (see :func:`detection_scores`); instance types are the majority types of
    :func:`instance_types`.

    Parameters
    ----------
    true_inst, pred_inst : (H, W) integer ndarray
        Instance label maps, 0 = background.
    true_type, pred_type : (H, W) integer ndarray, optional
        Type maps (0 = background/untyped); give both or neither.
    match_radius_px : float, default 6.0
        Centroid pairing radius in pixels.
    iou_threshold : float, default 0.5
        PQ pairing threshold, in ``[0, 1)``.

    Returns
    -------
    TileCounts
        Counts to sum over a dataset (see :func:`summarise`); ``.scores()`` gives the
        per-tile scores.
    """
    true_inst, pred_inst = _label_pair(true_inst, pred_inst)
    thr = _check_threshold(iou_threshold)
    radius = float(match_radius_px)
    if not (radius > 0 and np.isfinite(radius)):
        raise ConfigError(f"match_radius_px must be a finite number > 0, received {radius!r}")
    if (true_type is None) != (pred_type is None):
        raise ConfigError(
            "give both true_type and pred_type or neither, received only "
            + ("true_type" if pred_type is None else "pred_type")
        )
    typed = true_type is not None
    if typed:
        true_type = _label_map("true_type", true_type)
        pred_type = _label_map("pred_type", pred_type)
        for name, arr in (("true_type", true_type), ("pred_type", pred_type)):
            if arr.shape != true_inst.shape:
                raise ConfigError(
                    f"{name} must have the shape of the instance maps {true_inst.shape}, "
                    f"received {arr.shape}"
                )

    # Dice and AJI, PQ: one intersection table.
    t_fg, p_fg = true_inst > 0, pred_inst > 0
    ov = _overlap(true_inst, pred_inst)
    aji_inter, aji_union = _aji_sums(ov)
    pq_tp, pq_fp, pq_fn, iou_sum = _pq_counts(ov, _match_overlap(ov, thr))

    # Detection on centroids.
    t_index, p_index = ov.true_index, ov.pred_index
    n, m = ov.true_ids.size, ov.pred_ids.size
    pairs = _pair_points(
        _centroids(t_index, n, true_inst.shape), _centroids(p_index, m, pred_inst.shape), radius
    )
    det_tp = int(pairs.shape[0])

    type_correct = 0
    per_class: dict[int, tuple[int, int, int]] = {}
    if typed:
        t_types = _types_of(t_index, n, true_type)
        p_types = _types_of(p_index, m, pred_type)
        type_correct = int((t_types[pairs[:, 0]] == p_types[pairs[:, 1]]).sum())
        present = sorted((set(t_types.tolist()) | set(p_types.tolist())) - {0})
        per_class = _class_counts(t_types, p_types, pairs, present)

    return TileCounts(
        n_true=n,
        n_pred=m,
        dice_inter=int((t_fg & p_fg).sum()),
        dice_total=int(t_fg.sum() + p_fg.sum()),
        aji_inter=aji_inter,
        aji_union=aji_union,
        pq_tp=pq_tp,
        pq_fp=pq_fp,
        pq_fn=pq_fn,
        pq_iou_sum=iou_sum,
        det_tp=det_tp,
        det_fp=m - det_tp,
        det_fn=n - det_tp,
        typed=typed,
        type_matched=det_tp if typed else 0,
        type_correct=type_correct,
        per_class=per_class,
    )


def summarise(
    counts: Sequence[TileCounts], *, classes: Sequence[str] | None = None
) -> dict[str, Any]:
    """Dataset-level scores from tile counts.

    Pooled scores sum the counts over tiles and take each ratio once (see the module
    docstring); ``pq_mean_per_tile`` is the other common convention, the mean of per-tile
    PQ.

    Parameters
    ----------
    counts : sequence of TileCounts
        One per tile, at least one; all typed or all untyped.
    classes : sequence of str, optional
        Class names: type ``k`` is reported as ``classes[k - 1]`` and every class is
        reported even when absent. Default: integer keys of the types present.

    Returns
    -------
    dict
        ``dice``, ``aji``, ``dq``, ``sq``, ``pq``, ``precision``, ``recall``, ``f1``,
        ``type_accuracy`` (None when untyped), ``per_class`` ``{name or k: {"precision",
        "recall", "f1", "tp", "fp", "fn"}}``, ``pq_mean_per_tile``, ``n_tiles``,
        ``n_true``, ``n_pred``.

    Raises
    ------
    ConfigError
        On no tiles, a mix of typed and untyped tiles, or a type beyond ``classes``.
    """
    counts = list(counts)
    if not counts:
        raise ConfigError("summarise needs at least one TileCounts, received 0")
    typed = {c.typed for c in counts}
    if len(typed) > 1:
        n_typed = sum(c.typed for c in counts)
        raise ConfigError(
            f"tiles must be all typed or all untyped, received {n_typed} typed and "
            f"{len(counts) - n_typed} untyped"
        )
    per_class: dict[int, tuple[int, int, int]] = {}
    for c in counts:
        for k, v in c.per_class.items():
            old = per_class.get(k, (0, 0, 0))
            per_class[k] = (old[0] + v[0], old[1] + v[1], old[2] + v[2])
    names: dict[int, Any] = {k: k for k in per_class}
    if classes is not None:
        classes = list(classes)
        beyond = sorted(k for k in per_class if not 1 <= k <= len(classes))
        if beyond:
            raise ConfigError(
                f"type(s) {beyond} have no name: {len(classes)} classes given "
                f"({classes}), expected types 1..{len(classes)}"
            )
        names = {k: classes[k - 1] for k in range(1, len(classes) + 1)}
        if typed == {True}:
            for k in names:
                per_class.setdefault(k, (0, 0, 0))

    total = TileCounts(
        n_true=sum(c.n_true for c in counts),
        n_pred=sum(c.n_pred for c in counts),
        dice_inter=sum(c.dice_inter for c in counts),
        dice_total=sum(c.dice_total for c in counts),
        aji_inter=sum(c.aji_inter for c in counts),
        aji_union=sum(c.aji_union for c in counts),
        pq_tp=sum(c.pq_tp for c in counts),
        pq_fp=sum(c.pq_fp for c in counts),
        pq_fn=sum(c.pq_fn for c in counts),
        pq_iou_sum=float(sum(c.pq_iou_sum for c in counts)),
        det_tp=sum(c.det_tp for c in counts),
        det_fp=sum(c.det_fp for c in counts),
        det_fn=sum(c.det_fn for c in counts),
        typed=typed == {True},
        type_matched=sum(c.type_matched for c in counts),
        type_correct=sum(c.type_correct for c in counts),
        per_class=per_class,
    )
    out = total.scores()
    out["per_class"] = {names[k]: v for k, v in out["per_class"].items()}
    out["pq_mean_per_tile"] = float(np.mean([c.pq for c in counts]))
    out["n_tiles"] = len(counts)
    return out
