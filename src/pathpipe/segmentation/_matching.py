"""Matching kernels shared by :mod:`~pathpipe.segmentation.metrics` and
:mod:`~pathpipe.segmentation.tile_counts` (private to the segmentation package).

Label-map validation, the sparse intersection table of two label maps, the
maximum-IoU and minimum-distance assignments, and the count-to-score ratios with
the edge-case rule of :mod:`pathpipe.segmentation.metrics` (a ratio whose
denominator is 0 is 1.0 when there was nothing to find and nothing was found,
else 0.0).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.optimize import linear_sum_assignment
from scipy.sparse import coo_matrix
from scipy.sparse.csgraph import connected_components
from scipy.spatial import cKDTree

from pathpipe.errors import ConfigError


def ratio(num: float, den: float, *, empty: bool) -> float:
    """``num / den``; when ``den == 0``: 1.0 if ``empty`` (nothing to find, none found), else 0.0."""
    if den > 0:
        return float(num) / float(den)
    return 1.0 if empty else 0.0


def label_map(name: str, labels: Any) -> np.ndarray:
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


def label_pair(true_inst: Any, pred_inst: Any) -> tuple[np.ndarray, np.ndarray]:
    true_inst = label_map("true_inst", true_inst)
    pred_inst = label_map("pred_inst", pred_inst)
    if true_inst.shape != pred_inst.shape:
        raise ConfigError(
            f"true_inst and pred_inst must have the same shape, received "
            f"{true_inst.shape} and {pred_inst.shape}"
        )
    return true_inst, pred_inst


def compact(labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
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
class Overlap:
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


def overlap_table(true_inst: np.ndarray, pred_inst: np.ndarray) -> Overlap:
    """Intersection table from one pass over paired pixel ids (no per-instance masks)."""
    true_ids, ti = compact(true_inst)
    pred_ids, pi = compact(pred_inst)
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
    return Overlap(true_ids, pred_ids, true_area, pred_area, t, p, inter, inter / union, ti, pi)


def check_iou_threshold(iou_threshold: float) -> float:
    thr = float(iou_threshold)
    if not 0.0 <= thr < 1.0:
        raise ConfigError(f"iou_threshold must be in [0, 1), received {iou_threshold!r}")
    return thr


def assign(
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


def match_overlap(ov: Overlap, thr: float) -> np.ndarray:
    """Positions (into ``ov.t``/``ov.p``) of the matched pairs, sorted by true index."""
    if thr >= 0.5:
        # IoU > 0.5 pairs are unique (Kirillov et al. 2019, Theorem 1): no assignment needed.
        return np.flatnonzero(ov.iou > thr)
    # Maximum-IoU assignment on raw IoU, then drop pairs not above the threshold
    # (HoVer-Net get_fast_pq). Non-overlapping pairs weigh 0.
    sel = assign(ov.t, ov.p, ov.iou, maximize=True, fill=0.0)
    return sel[ov.iou[sel] > thr]


def pq_counts(ov: Overlap, sel: np.ndarray) -> tuple[int, int, int, float]:
    tp = int(sel.size)
    return tp, int(ov.pred_ids.size) - tp, int(ov.true_ids.size) - tp, float(ov.iou[sel].sum())


def pq_scores(tp: int, fp: int, fn: int, iou_sum: float) -> tuple[float, float, float]:
    """(DQ, SQ, PQ), Kirillov et al. 2019 eq. 2, with the module's empty-case rule."""
    empty = tp == fp == fn == 0
    dq = ratio(tp, tp + 0.5 * fp + 0.5 * fn, empty=empty)
    sq = ratio(iou_sum, tp, empty=empty)
    return dq, sq, dq * sq


def aji_sums(ov: Overlap) -> tuple[int, int]:
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


def points(name: str, xy: Any) -> np.ndarray:
    arr = np.asarray(xy, dtype=np.float64)
    if arr.size == 0:
        return np.zeros((0, 2))
    if arr.ndim != 2 or arr.shape[1] != 2:
        raise ConfigError(f"{name} must be an (N, 2) array of (x, y), received shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ConfigError(f"{name} must hold finite coordinates, received NaN or inf")
    return arr


def pair_points(true_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> np.ndarray:
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
    sel = assign(i, j, d, maximize=False, fill=big)
    return np.stack([i[sel], j[sel]], axis=1)


def types_1d(name: str, types: Any, n: int) -> np.ndarray:
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


def class_counts(
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


def prf(tp: int, fp: int, fn: int) -> dict[str, float]:
    empty = tp == fp == fn == 0
    return {
        "precision": ratio(tp, tp + fp, empty=empty),
        "recall": ratio(tp, tp + fn, empty=empty),
        "f1": ratio(2 * tp, 2 * tp + fp + fn, empty=empty),
    }


def centroids(index: np.ndarray, n: int, shape: tuple[int, int]) -> np.ndarray:
    """(n, 2) float64 ``(x, y)`` centroids of instances 1..n of a compacted flat index."""
    h, w = shape
    area = np.bincount(index, minlength=n + 1)[1:]
    rows = np.repeat(np.arange(h, dtype=np.float64), w)
    cols = np.tile(np.arange(w, dtype=np.float64), h)
    y = np.bincount(index, weights=rows, minlength=n + 1)[1:] / np.maximum(area, 1)
    x = np.bincount(index, weights=cols, minlength=n + 1)[1:] / np.maximum(area, 1)
    return np.stack([x, y], axis=1)


def types_of(index: np.ndarray, n: int, type_map: np.ndarray) -> np.ndarray:
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
