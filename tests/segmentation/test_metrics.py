"""Segmentation metrics: hand-computed tiny maps, edge cases, and a brute-force cross-check."""

from __future__ import annotations

import numpy as np
import pytest
from scipy.optimize import linear_sum_assignment
from skimage.draw import disk

from pathpipe.errors import ConfigError
from pathpipe.segmentation.metrics import (
    Matching,
    aji,
    detection_scores,
    dice,
    instance_types,
    match_instances,
    panoptic_quality,
)
from pathpipe.segmentation.tile_counts import evaluate_tile, summarise

# --------------------------------------------------------------------------- fixtures


def two_squares() -> tuple[np.ndarray, np.ndarray]:
    """12x12: GT 1 and 2 are 4x4 squares; pred 5 = GT 1, pred 9 = GT 2 shifted right 1 px.

    GT 1 ∩ P5 = 16, union 16, IoU 1.
    GT 2 ∩ P9 = 4 rows x 3 cols = 12, union 16 + 16 - 12 = 20, IoU 12/20 = 0.6.
    """
    t = np.zeros((12, 12), np.int32)
    p = np.zeros((12, 12), np.int32)
    t[1:5, 1:5] = 1
    t[6:10, 6:10] = 2
    p[1:5, 1:5] = 5
    p[6:10, 7:11] = 9
    return t, p


def split_nucleus() -> tuple[np.ndarray, np.ndarray]:
    """4x8: one GT (32 px) covered by pred 1 (cols 0-4, 20 px) and pred 2 (cols 5-7, 12 px).

    IoU(G, P1) = 20/32 = 0.625, IoU(G, P2) = 12/32 = 0.375.
    """
    t = np.ones((4, 8), np.int32)
    p = np.zeros((4, 8), np.int32)
    p[:, :5] = 1
    p[:, 5:] = 2
    return t, p


def random_discs(seed: int, shape: tuple[int, int] = (64, 64), n: int = 12) -> np.ndarray:
    """Random overlapping discs; later discs overwrite earlier ones, some ids may vanish."""
    rng = np.random.default_rng(seed)
    lab = np.zeros(shape, np.int32)
    for i in range(1, n + 1):
        rr, cc = disk(
            (rng.uniform(0, shape[0]), rng.uniform(0, shape[1])), rng.uniform(3, 8), shape=shape
        )
        lab[rr, cc] = i
    return lab


def jitter(lab: np.ndarray, seed: int) -> np.ndarray:
    """A 'prediction': the discs of `lab` shifted by up to 2 px, some dropped, one added."""
    rng = np.random.default_rng(seed)
    out = np.zeros_like(lab)
    for i in np.unique(lab)[1:]:
        if rng.random() < 0.15:
            continue
        rr, cc = np.nonzero(lab == i)
        rr = np.clip(rr + rng.integers(-2, 3), 0, lab.shape[0] - 1)
        cc = np.clip(cc + rng.integers(-2, 3), 0, lab.shape[1] - 1)
        out[rr, cc] = i + 100
    rr, cc = disk((10, 50), 4, shape=lab.shape)
    out[rr, cc] = 999
    return out


# --------------------------------------------------------------------------- hand-computed


def test_two_squares_one_shifted():
    t, p = two_squares()
    m = match_instances(t, p)
    assert isinstance(m, Matching)
    np.testing.assert_array_equal(m.true_ids, [1, 2])
    np.testing.assert_array_equal(m.pred_ids, [5, 9])
    np.testing.assert_array_equal(m.pairs, [[1, 5], [2, 9]])
    np.testing.assert_allclose(m.ious, [1.0, 0.6])
    # |T| = |P| = 32, |T ∩ P| = 16 + 12 = 28 -> Dice = 56 / 64
    assert dice(t, p) == pytest.approx(0.875)
    # AJI = (16 + 12) / (16 + 20) = 28 / 36
    assert aji(t, p) == pytest.approx(28 / 36)
    # TP = 2, FP = FN = 0, ΣIoU = 1.6 -> DQ 1, SQ 0.8, PQ 0.8
    pq = panoptic_quality(t, p)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (2, 0, 0)
    assert pq["iou_sum"] == pytest.approx(1.6)
    assert (pq["dq"], pq["sq"], pq["pq"]) == pytest.approx((1.0, 0.8, 0.8))


def test_pq_threshold_is_strict():
    t, p = two_squares()
    # IoU 0.6 is not > 0.6: TP 1 (IoU 1), FP 1, FN 1 -> DQ = 1 / (1 + 1) = 0.5, SQ = 1.
    pq = panoptic_quality(t, p, iou_threshold=0.6)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 1)
    assert (pq["dq"], pq["sq"], pq["pq"]) == pytest.approx((0.5, 1.0, 0.5))


def test_unmatched_instances_enter_union_and_counts():
    t, p = two_squares()
    p[10:12, 0:2] = 3  # isolated prediction, 4 px
    t[0, 10:12] = 7  # isolated ground truth, 2 px
    # Dice: |T| = 34, |P| = 36, ∩ = 28 -> 56 / 70 = 0.8
    assert dice(t, p) == pytest.approx(0.8)
    # AJI: 28 / (36 + 2 + 4) = 28 / 42
    assert aji(t, p) == pytest.approx(2 / 3)
    # PQ: TP 2, FP 1, FN 1 -> DQ = 2 / 3, SQ = 1.6 / 2 = 0.8, PQ = 1.6 / 3
    pq = panoptic_quality(t, p)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (2, 1, 1)
    assert (pq["dq"], pq["sq"], pq["pq"]) == pytest.approx((2 / 3, 0.8, 1.6 / 3))


def test_split_nucleus():
    t, p = split_nucleus()
    assert dice(t, p) == 1.0  # same foreground
    assert dice(t > 0, p > 0) == 1.0  # bool masks are accepted
    # AJI: G -> P1 (IoU 0.625): ∩ 20, ∪ 32; P2 unused adds 12 -> 20 / 44
    assert aji(t, p) == pytest.approx(20 / 44)
    # PQ: TP 1 (0.625), FP 1 (P2) -> DQ = 1 / 1.5, SQ 0.625, PQ = 0.625 / 1.5
    pq = panoptic_quality(t, p)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 0)
    assert (pq["dq"], pq["sq"], pq["pq"]) == pytest.approx((2 / 3, 0.625, 0.625 / 1.5))


def test_merged_nuclei():
    p, t = split_nucleus()  # roles swapped: G1 (20 px) and G2 (12 px) under one pred (32 px)
    # AJI: G1 -> P: ∩ 20, ∪ 32; G2 -> P: ∩ 12, ∪ 32 (P's pixels counted twice) -> 32 / 64
    assert aji(t, p) == pytest.approx(0.5)
    # PQ: TP 1 (G1, 0.625), FN 1 (G2) -> DQ 2/3, SQ 0.625
    pq = panoptic_quality(t, p)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 0, 1)
    assert (pq["dq"], pq["sq"], pq["pq"]) == pytest.approx((2 / 3, 0.625, 0.625 / 1.5))


def test_low_threshold_uses_assignment():
    # One row: G1 = [0, 10), G2 = [10, 14); P2 = [0, 3), P1 = [3, 13), pixel 13 background.
    # IoU(G1, P1) = 7 / 13 = 0.538, IoU(G1, P2) = 3 / 10 = 0.3, IoU(G2, P1) = 3 / 11 = 0.273.
    t = np.array([[1] * 10 + [2] * 4])
    p = np.array([[2] * 3 + [1] * 10 + [0]])
    # t = 0.5: only (G1, P1) -> TP 1, FP 1, FN 1
    pq = panoptic_quality(t, p)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 1)
    assert pq["iou_sum"] == pytest.approx(7 / 13)
    # t = 0.25: max ΣIoU picks (G1, P2) + (G2, P1) = 0.3 + 0.273 = 0.573 > 0.538
    m = match_instances(t, p, iou_threshold=0.25)
    np.testing.assert_array_equal(m.pairs, [[1, 2], [2, 1]])
    np.testing.assert_allclose(m.ious, [0.3, 3 / 11])
    pq = panoptic_quality(t, p, iou_threshold=0.25)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (2, 0, 0)
    assert (pq["dq"], pq["sq"]) == pytest.approx((1.0, (0.3 + 3 / 11) / 2))
    # t = 0.29: (G2, P1) = 0.273 falls below -> TP 1 (G1, P2), FP 1, FN 1
    pq = panoptic_quality(t, p, iou_threshold=0.29)
    assert (pq["tp"], pq["fp"], pq["fn"]) == (1, 1, 1)
    # AJI: G1 -> P1 (∩ 7, ∪ 13), G2 -> P1 (∩ 3, ∪ 11), P2 unused (+3) -> 10 / 27
    assert aji(t, p) == pytest.approx(10 / 27)
    # Dice: |T| 14, |P| 13, ∩ 13 -> 26 / 27
    assert dice(t, p) == pytest.approx(26 / 27)


def test_instance_types_majority_excludes_background():
    inst = np.array(
        [
            [1, 1, 1, 2, 3, 4],
            [1, 1, 0, 2, 3, 4],
        ]
    )
    types = np.array(
        [
            [0, 0, 3, 2, 0, 1],
            [0, 3, 0, 0, 0, 2],
        ],
        np.uint8,
    )
    # 1: types 0,0,3,0,3 -> 3 (0 ignored although most frequent); 2: 2,0 -> 2;
    # 3: only 0 -> 0; 4: tie 1 vs 2 -> the smaller, 1.
    assert instance_types(inst, types) == {1: 3, 2: 2, 3: 0, 4: 1}
    assert instance_types(np.zeros((2, 2), np.int32), np.zeros((2, 2), np.uint8)) == {}


def test_detection_radius_inclusive():
    true_xy = [[0, 0], [100, 0], [200, 0]]
    pred_xy = [[0, 5.9], [106, 0], [200, 6.01]]  # distances 5.9, 6.0 (kept), 6.01 (not)
    s = detection_scores(true_xy, pred_xy, radius=6)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 1, 1)
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((2 / 3, 2 / 3, 2 / 3))
    assert "per_class" not in s


def test_detection_far_pairs_do_not_displace_feasible_ones():
    # A-P = 5.0, B-Q = sqrt(2.9² + 4²) = 4.94 (both allowed at r = 5) versus the cheaper
    # A-Q = 6 (> r) + B-P = 0.1. Assigning on raw distances and cutting afterwards would
    # keep only B-P; forbidding far pairs first keeps both.
    true_xy = [[0, 0], [3.1, 4]]  # A, B
    pred_xy = [[3, 4], [6, 0]]  # P, Q
    s = detection_scores(true_xy, pred_xy, radius=5)
    assert (s["tp"], s["fp"], s["fn"]) == (2, 0, 0)


def test_detection_per_class_with_one_mistyped_match():
    true_xy = [[0, 0], [100, 0], [200, 0], [300, 0]]
    pred_xy = [[1, 0], [101, 0], [201, 0], [400, 0]]
    true_types = np.array([1, 1, 2, 2])
    pred_types = np.array([1, 2, 2, 2])
    # pairs (0,0) 1/1 correct, (1,1) 1/2 mistyped, (2,2) 2/2 correct; GT 3 and pred 3 alone.
    s = detection_scores(
        true_xy, pred_xy, radius=6, true_types=true_types, pred_types=pred_types, classes=[1, 2, 3]
    )
    # overall TP 3, FP 1, FN 1 -> 0.75 each
    assert (s["tp"], s["fp"], s["fn"]) == (3, 1, 1)
    assert s["f1"] == pytest.approx(0.75)
    assert s["type_accuracy"] == pytest.approx(2 / 3)
    # class 1: TP 1; preds of type 1 = {0} -> FP 0; GT of type 1 = {0, 1} -> FN 1
    c1 = s["per_class"][1]
    assert (c1["tp"], c1["fp"], c1["fn"]) == (1, 0, 1)
    assert (c1["precision"], c1["recall"], c1["f1"]) == pytest.approx((1.0, 0.5, 2 / 3))
    # class 2: TP 1; preds of type 2 = {1, 2, 3} -> FP 2; GT of type 2 = {2, 3} -> FN 1
    c2 = s["per_class"][2]
    assert (c2["tp"], c2["fp"], c2["fn"]) == (1, 2, 1)
    assert (c2["precision"], c2["recall"], c2["f1"]) == pytest.approx((1 / 3, 0.5, 0.4))
    # class 3: nothing on either side -> 1.0 by convention
    assert s["per_class"][3] == {
        "precision": 1.0,
        "recall": 1.0,
        "f1": 1.0,
        "tp": 0,
        "fp": 0,
        "fn": 0,
    }
    # default classes: the non-zero types present
    s = detection_scores(true_xy, pred_xy, radius=6, true_types=true_types, pred_types=pred_types)
    assert sorted(s["per_class"]) == [1, 2]


def typed_tiles() -> list:
    """Tile A: two squares, types GT 1->1, 2->2; pred 5->1, 9->1 (pair (2, 9) mistyped).

    Tile B: split nucleus, GT type 2; pred 1 (matched) type 2, pred 2 (unmatched) type 1.
    """
    ta, pa = two_squares()
    tta = np.where(ta == 1, 1, np.where(ta == 2, 2, 0)).astype(np.uint8)
    pta = (pa > 0).astype(np.uint8)
    tb, pb = split_nucleus()
    ttb = np.full(tb.shape, 2, np.uint8)
    ptb = np.where(pb == 1, 2, 1).astype(np.uint8)
    return [
        evaluate_tile(ta, pa, true_type=tta, pred_type=pta),
        evaluate_tile(tb, pb, true_type=ttb, pred_type=ptb),
    ]


def test_evaluate_tile_counts():
    a, b = typed_tiles()
    assert (a.dice_inter, a.dice_total, a.aji_inter, a.aji_union) == (28, 64, 28, 36)
    assert (a.pq_tp, a.pq_fp, a.pq_fn) == (2, 0, 0)
    assert a.pq_iou_sum == pytest.approx(1.6)
    # centroids: (2.5, 2.5) vs (2.5, 2.5); (7.5, 7.5) vs (8.5, 7.5), 1 px apart
    assert (a.det_tp, a.det_fp, a.det_fn) == (2, 0, 0)
    assert (a.type_matched, a.type_correct) == (2, 1)
    # class 1: TP 1, preds of type 1 = 2 -> FP 1, GT of type 1 = 1 -> FN 0
    # class 2: TP 0, FP 0, GT of type 2 = 1 -> FN 1
    assert dict(a.per_class) == {1: (1, 1, 0), 2: (0, 0, 1)}
    # Tile B: GT centroid (3.5, 1.5); P1 (2, 1.5) 1.5 px, P2 (6, 1.5) 2.5 px -> P1 paired
    assert (b.det_tp, b.det_fp, b.det_fn) == (1, 1, 0)
    assert dict(b.per_class) == {1: (0, 1, 0), 2: (1, 0, 0)}
    sa = a.scores()
    assert (sa["dice"], sa["aji"], sa["pq"]) == pytest.approx((0.875, 28 / 36, 0.8))
    assert sa["type_accuracy"] == pytest.approx(0.5)
    assert (sa["n_true"], sa["n_pred"]) == (2, 2)


def test_summarise_pools_counts():
    tiles = typed_tiles()
    s = summarise(tiles, classes=["tumour", "stroma"])
    # Dice: 2 (28 + 32) / (64 + 64) = 120 / 128
    assert s["dice"] == pytest.approx(0.9375)
    # AJI: (28 + 20) / (36 + 44) = 48 / 80
    assert s["aji"] == pytest.approx(0.6)
    # PQ: TP 3, FP 1, FN 0, ΣIoU 1.6 + 0.625 = 2.225 -> DQ 3 / 3.5, SQ 2.225 / 3
    assert s["dq"] == pytest.approx(6 / 7)
    assert s["sq"] == pytest.approx(2.225 / 3)
    assert s["pq"] == pytest.approx(2.225 / 3.5)  # 0.6357
    # per-tile mean: (0.8 + 0.625 / 1.5) / 2 = 0.6083, not the pooled 0.6357
    assert s["pq_mean_per_tile"] == pytest.approx((0.8 + 0.625 / 1.5) / 2)
    assert s["pq_mean_per_tile"] != pytest.approx(s["pq"])
    # detection: TP 3, FP 1, FN 0 -> P 0.75, R 1, F1 6/7
    assert (s["precision"], s["recall"], s["f1"]) == pytest.approx((0.75, 1.0, 6 / 7))
    # types: 3 pairs, 2 correct
    assert s["type_accuracy"] == pytest.approx(2 / 3)
    # class 1 "tumour": TP 1, FP 1 + 1, FN 0 -> F1 2 / 4; class 2 "stroma": TP 1, FP 0, FN 1 -> 2/3
    assert set(s["per_class"]) == {"tumour", "stroma"}
    assert s["per_class"]["tumour"]["f1"] == pytest.approx(0.5)
    assert s["per_class"]["stroma"]["f1"] == pytest.approx(2 / 3)
    assert (s["n_tiles"], s["n_true"], s["n_pred"]) == (2, 3, 4)
    # without names: integer keys; a named class absent everywhere is reported as 1.0
    assert set(summarise(tiles)["per_class"]) == {1, 2}
    s3 = summarise(tiles, classes=["tumour", "stroma", "other"])
    assert s3["per_class"]["other"]["f1"] == 1.0


def test_untyped_tiles():
    t, p = two_squares()
    c = evaluate_tile(t, p)
    s = summarise([c])
    assert s["type_accuracy"] is None
    assert s["per_class"] == {}
    assert s["pq"] == pytest.approx(0.8)


# --------------------------------------------------------------------------- invariances


def all_scores(t: np.ndarray, p: np.ndarray) -> dict:
    """Every score as a flat dict; types from position (left/right, top/bottom halves)."""
    cols = np.arange(t.shape[1])[None, :]
    rows = np.arange(t.shape[0])[:, None]
    tt = np.where(t > 0, 1 + (cols >= t.shape[1] // 2), 0).astype(np.uint8)
    pt = np.where(p > 0, 1 + (rows >= t.shape[0] // 2), 0).astype(np.uint8)
    s = evaluate_tile(t, p, true_type=tt, pred_type=pt).scores()
    for k, v in s.pop("per_class").items():
        s.update({f"class{k}_{name}": x for name, x in v.items()})
    s.update({f"pq_{k}": v for k, v in panoptic_quality(t, p).items()})
    s["aji_fn"], s["dice_fn"] = aji(t, p), dice(t, p)
    return s


def test_identity_scores_one():
    t = random_discs(3)
    s = all_scores(t, t.copy())
    for key in ("dice", "aji", "dq", "sq", "pq", "precision", "recall", "f1", "aji_fn"):
        assert s[key] == pytest.approx(1.0), key
    assert s["pq_fp"] == s["pq_fn"] == 0


def test_permuting_ids_changes_nothing():
    t = random_discs(4)
    p = jitter(t, 5)
    rng = np.random.default_rng(0)

    def relabel(lab: np.ndarray) -> np.ndarray:
        ids = np.unique(lab)[1:]
        lut = np.zeros(lab.max() + 1, np.int64)
        lut[ids] = rng.choice(10_000, ids.size, replace=False) + 1
        return lut[lab]

    base = all_scores(t, p)
    permuted = all_scores(relabel(t), relabel(p))
    assert permuted == pytest.approx(base)
    assert base["pq"] < 1.0  # the jitter makes the comparison non-trivial


# --------------------------------------------------------------------------- brute force


def brute_iou(t: np.ndarray, p: np.ndarray) -> tuple[list, list, np.ndarray, np.ndarray]:
    t_ids = [i for i in np.unique(t) if i]
    p_ids = [j for j in np.unique(p) if j]
    inter = np.zeros((len(t_ids), len(p_ids)))
    union = np.zeros_like(inter)
    for a, i in enumerate(t_ids):
        for b, j in enumerate(p_ids):
            mi, mj = t == i, p == j
            inter[a, b] = (mi & mj).sum()
            union[a, b] = (mi | mj).sum()
    return t_ids, p_ids, inter, union


def brute_aji(t: np.ndarray, p: np.ndarray) -> float:
    t_ids, p_ids, inter, union = brute_iou(t, p)
    iou = inter / union
    num = den = 0.0
    used = set()
    for a, i in enumerate(t_ids):
        b = int(np.argmax(iou[a])) if p_ids else 0
        if p_ids and iou[a, b] > 0:
            num += inter[a, b]
            den += union[a, b]
            used.add(b)
        else:
            den += (t == i).sum()
    den += sum((p == j).sum() for b, j in enumerate(p_ids) if b not in used)
    return num / den


def brute_pq(t: np.ndarray, p: np.ndarray, thr: float) -> tuple[int, int, int, float]:
    t_ids, p_ids, inter, union = brute_iou(t, p)
    iou = inter / union
    if thr >= 0.5:
        pairs = [(a, b) for a in range(len(t_ids)) for b in range(len(p_ids)) if iou[a, b] > thr]
    else:  # dense Hungarian on the whole matrix, as HoVer-Net get_fast_pq
        r, c = linear_sum_assignment(-iou)
        pairs = [(a, b) for a, b in zip(r, c, strict=True) if iou[a, b] > thr]
    tp = len(pairs)
    return tp, len(p_ids) - tp, len(t_ids) - tp, sum(iou[a, b] for a, b in pairs)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_aji_and_pq_match_brute_force(seed):
    t = random_discs(seed, n=15)
    p = jitter(t, seed + 10)
    assert aji(t, p) == pytest.approx(brute_aji(t, p))
    for thr in (0.5, 0.7, 0.1):
        pq = panoptic_quality(t, p, iou_threshold=thr)
        tp, fp, fn, iou_sum = brute_pq(t, p, thr)
        assert (pq["tp"], pq["fp"], pq["fn"]) == (tp, fp, fn)
        assert pq["iou_sum"] == pytest.approx(iou_sum)
        assert pq["pq"] == pytest.approx(iou_sum / (tp + 0.5 * fp + 0.5 * fn))


@pytest.mark.parametrize("seed", [0, 1])
def test_detection_matches_dense_assignment(seed):
    # Dense reference: the whole (N, M) distance matrix, far pairs priced above any
    # feasible total, so the assignment maximises the pair count, then minimises distance.
    rng = np.random.default_rng(seed)
    true_xy = rng.uniform(0, 60, (40, 2))
    pred_xy = np.concatenate([true_xy[:30] + rng.normal(0, 3, (30, 2)), rng.uniform(0, 60, (8, 2))])
    radius = 4.0
    dist = np.linalg.norm(true_xy[:, None] - pred_xy[None], axis=-1)
    cost = np.where(dist <= radius, dist, 1e6)
    r, c = linear_sum_assignment(cost)
    keep = dist[r, c] <= radius
    s = detection_scores(true_xy, pred_xy, radius=radius)
    assert s["tp"] == keep.sum()
    assert (s["fp"], s["fn"]) == (38 - keep.sum(), 40 - keep.sum())


# --------------------------------------------------------------------------- edge cases


def test_both_empty_scores_one():
    z = np.zeros((8, 8), np.uint16)
    assert dice(z, z) == aji(z, z) == 1.0
    pq = panoptic_quality(z, z)
    assert (pq["dq"], pq["sq"], pq["pq"], pq["tp"], pq["fp"], pq["fn"]) == (1.0, 1.0, 1.0, 0, 0, 0)
    s = detection_scores(np.zeros((0, 2)), np.zeros((0, 2)), radius=6)
    assert (s["precision"], s["recall"], s["f1"]) == (1.0, 1.0, 1.0)
    c = evaluate_tile(z, z, true_type=z.astype(np.uint8), pred_type=z.astype(np.uint8))
    sc = c.scores()
    assert sc["type_accuracy"] == 1.0
    assert all(sc[k] == 1.0 for k in ("dice", "aji", "dq", "sq", "pq", "precision", "recall", "f1"))
    m = match_instances(z, z)
    assert m.pairs.shape == (0, 2) and m.ious.shape == (0,)


def test_empty_ground_truth_with_predictions():
    t, p = two_squares()
    z = np.zeros_like(t)
    assert dice(z, p) == aji(z, p) == 0.0
    pq = panoptic_quality(z, p)
    assert (pq["pq"], pq["fp"], pq["fn"]) == (0.0, 2, 0)
    s = evaluate_tile(z, p).scores()
    assert (s["precision"], s["recall"], s["f1"], s["pq"]) == (0.0, 0.0, 0.0, 0.0)
    d = detection_scores(np.zeros((0, 2)), [[1.0, 2.0]], radius=3)
    assert (d["precision"], d["fp"]) == (0.0, 1)


def test_empty_prediction_with_ground_truth():
    t, _ = two_squares()
    z = np.zeros_like(t)
    assert dice(t, z) == aji(t, z) == 0.0
    s = evaluate_tile(t, z).scores()
    assert (s["precision"], s["recall"], s["f1"], s["pq"], s["sq"]) == (0.0,) * 5
    d = detection_scores([[1.0, 2.0]], np.zeros((0, 2)), radius=3)
    assert (d["recall"], d["fn"]) == (0.0, 1)


def test_bad_inputs_raise_config_error():
    t, p = two_squares()
    with pytest.raises(ConfigError, match=r"\(12, 12\) and \(12, 11\)"):
        dice(t, p[:, :11])
    with pytest.raises(ConfigError, match=r"\(12, 12\) and \(12, 11\)"):
        evaluate_tile(t, p[:, :11])
    neg = t.copy()
    neg[0, 0] = -3
    for fn in (dice, aji, panoptic_quality, match_instances, evaluate_tile):
        with pytest.raises(ConfigError, match="-3"):
            fn(neg, p)
    with pytest.raises(ConfigError, match="integer or bool dtype, received float64"):
        aji(t.astype(float), p)
    with pytest.raises(ConfigError, match="2-D"):
        aji(t[None], p[None])
    with pytest.raises(ConfigError, match=r"\[0, 1\)"):
        panoptic_quality(t, p, iou_threshold=1.0)
    with pytest.raises(ConfigError, match="radius"):
        detection_scores([[0, 0]], [[0, 0]], radius=0)
    with pytest.raises(ConfigError, match="both"):
        detection_scores([[0, 0]], [[0, 0]], radius=1, true_types=[1])
    with pytest.raises(ConfigError, match=r"\(1,\)"):
        detection_scores([[0, 0]], [[0, 0]], radius=1, true_types=[1, 2], pred_types=[1])
    with pytest.raises(ConfigError, match="both"):
        evaluate_tile(t, p, true_type=t.astype(np.uint8))
    with pytest.raises(ConfigError, match="pred_type"):
        evaluate_tile(t, p, true_type=t.astype(np.uint8), pred_type=np.zeros((3, 3), np.uint8))
    with pytest.raises(ConfigError, match="received 0"):
        summarise([])
    typed = typed_tiles()
    with pytest.raises(ConfigError, match="1 typed and 1 untyped"):
        summarise([typed[0], evaluate_tile(t, p)])
    with pytest.raises(ConfigError, match=r"\[2\]"):
        summarise(typed, classes=["tumour"])


def test_large_tile_with_a_thousand_nuclei():
    # 1024 x 1024 with ~1000 instances: a 32 x 32 grid of 24 x 24 squares, pred shifted 2 px.
    t = np.zeros((1024, 1024), np.int32)
    ids = np.arange(1, 32 * 32 + 1).reshape(32, 32)
    t[:] = np.kron(ids, np.ones((32, 32), np.int32))
    t[np.logical_or.outer(np.arange(1024) % 32 >= 24, np.arange(1024) % 32 >= 24)] = 0
    p = np.roll(t, 2, axis=1) * 3
    c = evaluate_tile(t, p, true_type=(t % 3).astype(np.uint8), pred_type=(p % 4).astype(np.uint8))
    # each square: ∩ 24 x 22, ∪ 24 x 26 -> IoU 22/26
    assert (c.pq_tp, c.pq_fp, c.pq_fn) == (1024, 0, 0)
    assert c.pq_iou_sum == pytest.approx(1024 * 22 / 26)
    assert c.det_tp == 1024
