"""Additive per-tile counts of the segmentation metrics, and dataset summaries.

:func:`evaluate_tile` measures one tile against its ground truth (Dice, AJI, PQ,
centroid detection and per-class detection, definitions in
:mod:`pathpipe.segmentation.metrics`) as :class:`TileCounts`, counts that add
over tiles; :func:`summarise` turns the counts of a dataset into its scores,
pooled (counts summed, ratios taken once) and, for PQ, also as the mean of
per-tile PQ. Pure functions on arrays.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation._matching import (
    aji_sums,
    centroids,
    check_iou_threshold,
    class_counts,
    label_map,
    label_pair,
    match_overlap,
    overlap_table,
    pair_points,
    pq_counts,
    pq_scores,
    prf,
    ratio,
    types_of,
)

__all__ = ["TileCounts", "evaluate_tile", "summarise"]


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
        return ratio(2 * self.dice_inter, self.dice_total, empty=self.dice_total == 0)

    @property
    def aji(self) -> float:
        """AJI ``aji_inter / aji_union`` (1.0 when both maps are empty)."""
        return ratio(self.aji_inter, self.aji_union, empty=self.aji_union == 0)

    @property
    def pq(self) -> float:
        """PQ ``pq_iou_sum / (pq_tp + pq_fp / 2 + pq_fn / 2)`` (1.0 when nothing either side)."""
        return pq_scores(self.pq_tp, self.pq_fp, self.pq_fn, self.pq_iou_sum)[2]

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
        dq, sq, pq = pq_scores(self.pq_tp, self.pq_fp, self.pq_fn, self.pq_iou_sum)
        det_empty = self.det_tp == self.det_fp == self.det_fn == 0
        return {
            "dice": self.dice,
            "aji": self.aji,
            "dq": dq,
            "sq": sq,
            "pq": pq,
            **prf(self.det_tp, self.det_fp, self.det_fn),
            "type_accuracy": (
                ratio(self.type_correct, self.type_matched, empty=det_empty) if self.typed else None
            ),
            "per_class": {
                k: {**prf(*c), "tp": c[0], "fp": c[1], "fn": c[2]}
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
    true_inst, pred_inst = label_pair(true_inst, pred_inst)
    thr = check_iou_threshold(iou_threshold)
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
        true_type = label_map("true_type", true_type)
        pred_type = label_map("pred_type", pred_type)
        for name, arr in (("true_type", true_type), ("pred_type", pred_type)):
            if arr.shape != true_inst.shape:
                raise ConfigError(
                    f"{name} must have the shape of the instance maps {true_inst.shape}, "
                    f"received {arr.shape}"
                )

    # Dice and AJI, PQ: one intersection table.
    t_fg, p_fg = true_inst > 0, pred_inst > 0
    ov = overlap_table(true_inst, pred_inst)
    aji_inter, aji_union = aji_sums(ov)
    pq_tp, pq_fp, pq_fn, iou_sum = pq_counts(ov, match_overlap(ov, thr))

    # Detection on centroids.
    t_index, p_index = ov.true_index, ov.pred_index
    n, m = ov.true_ids.size, ov.pred_ids.size
    pairs = pair_points(
        centroids(t_index, n, true_inst.shape), centroids(p_index, m, pred_inst.shape), radius
    )
    det_tp = int(pairs.shape[0])

    type_correct = 0
    per_class: dict[int, tuple[int, int, int]] = {}
    if typed:
        t_types = types_of(t_index, n, true_type)
        p_types = types_of(p_index, m, pred_type)
        type_correct = int((t_types[pairs[:, 0]] == p_types[pairs[:, 1]]).sum())
        present = sorted((set(t_types.tolist()) | set(p_types.tolist())) - {0})
        per_class = class_counts(t_types, p_types, pairs, present)

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
