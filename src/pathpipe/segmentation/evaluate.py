"""Scoring a segmentation method on annotated tiles (``pathpipe segmentation evaluate``).

The path-level layer: :func:`evaluate_segmentation` reads an annotated tile
folder (:mod:`pathpipe.segmentation.annotations`), segments every tile as the
stage would segment a slide (:class:`pathpipe.segmentation.segmenter.Segmenter`),
scores each against its ground truth
(:func:`pathpipe.segmentation.tile_counts.evaluate_tile`) and writes the dataset
scores (:func:`pathpipe.segmentation.tile_counts.summarise`) and a per-tile table.
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation.params import SegmentationParams
from pathpipe.segmentation.segmenter import Segmenter, TileNuclei
from pathpipe.segmentation.tile_counts import TileCounts, evaluate_tile, summarise

if TYPE_CHECKING:
    from pathpipe.segmentation.annotations import AnnotatedTile

__all__ = ["class_lut", "evaluate_segmentation", "score_tile"]


def class_lut(
    predicted: Sequence[str], truth: Sequence[str], class_map: Mapping[str, str] | None = None
) -> tuple[np.ndarray, list[str]]:
    """Ground-truth type (1-based) of each predicted class code.

    Parameters
    ----------
    predicted : sequence of str
        The method's classes, in the order of its codes.
    truth : sequence of str
        The ground truth's classes (type ``k`` is ``truth[k - 1]``).
    class_map : mapping, optional
        Predicted class name -> ground-truth class name; names not mapped keep
        their own name.

    Returns
    -------
    lut : (len(predicted),) uint8 ndarray
        ``lut[code]`` is the ground-truth type of that predicted class. A class
        the ground truth lacks gets a type of its own after the ground truth's,
        so it scores as a wrong type.
    score_classes : list of str
        Names of the types ``1..`` (the ground truth's, then those added).
    """
    mapping = dict(class_map or {})
    score_classes = list(truth)
    lut = np.zeros(len(predicted), dtype=np.uint8)
    for k, name in enumerate(predicted):
        target = mapping.get(name, name)
        if target not in score_classes:
            score_classes.append(target)
        lut[k] = score_classes.index(target) + 1
    return lut, score_classes


def score_tile(
    res: TileNuclei, tile: AnnotatedTile, *, lut: np.ndarray, match_radius_px: float
) -> TileCounts:
    """Counts of one segmented tile against its annotation.

    Parameters
    ----------
    res : TileNuclei
        The tile's segmentation (phenotype codes in ``res.table``).
    tile : AnnotatedTile
    lut : ndarray
        :func:`class_lut` of the method's classes; types are scored only when the
        tile has a ``type_map``.
    match_radius_px : float
        Centroid pairing radius in pixels.
    """
    pred_type = None
    if tile.type_map is not None:
        per_label = np.zeros(int(res.labels.max(initial=0)) + 1, dtype=np.uint8)
        per_label[res.table["label"].to_numpy()] = lut[res.table["phenotype"].to_numpy()]
        pred_type = per_label[res.labels]
    return evaluate_tile(
        tile.inst_map,
        res.labels,
        true_type=tile.type_map,
        pred_type=pred_type,
        match_radius_px=match_radius_px,
    )


def evaluate_segmentation(
    data: str | os.PathLike[str],
    *,
    params: SegmentationParams | None = None,
    class_map: dict[str, str] | None = None,
    match_radius_um: float = 3.0,
    mpp: float | None = None,
    out_path: str | os.PathLike[str] | None = None,
    per_tile_path: str | os.PathLike[str] | None = None,
) -> tuple[dict[str, Any], Any]:
    """Segment an annotated tile folder and score it against its ground truth.

    Parameters
    ----------
    data : path-like
        Annotated tile folder (:mod:`pathpipe.segmentation.annotations`).
    params : SegmentationParams
        Method and settings, as for a slide. Stain vectors are estimated from
        the folder's tiles.
    class_map : dict or None
        Predicted class name -> ground-truth class name, for class lists that
        differ (e.g. ``{"lymphocyte": "non_tumour", "other": "non_tumour"}`` on
        NuCLS). Names not mapped keep their own name; a predicted class absent
        from the ground truth counts as a wrong type.
    match_radius_um : float
        Centroid distance (µm) within which a prediction detects a nucleus.
    mpp : float or None
        µm/px of the tiles when the folder's ``classes.json`` gives none.
    out_path : path-like, optional
        Writes ``scores`` as JSON.
    per_tile_path : path-like, optional
        Writes ``per_tile`` as TSV.

    Returns
    -------
    scores : dict
        :func:`pathpipe.segmentation.tile_counts.summarise` of all tiles, plus the
        method, MPP, class names and stain record.
    per_tile : pandas.DataFrame
        One row per tile: name, nuclei true/predicted, Dice, AJI, PQ, F1.
    """
    import pandas as pd

    from pathpipe.io.storage import atomic_file, write_json
    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.stain import estimate_stain_matrix

    params = params or SegmentationParams()
    ann = read_annotated_dir(data)
    tile_mpp = ann.mpp if ann.mpp is not None else mpp
    if tile_mpp is None:
        raise ConfigError(
            f"{ann.path}/classes.json gives no 'mpp' and none was passed; expected the µm/px "
            "of the annotated tiles"
        )
    gt_classes = ann.classes or tuple(params.classes)
    lut, score_classes = class_lut(params.classes, gt_classes, class_map)
    stain = estimate_stain_matrix(
        [t.rgb for t in ann.tiles],
        method="fixed" if params.stain == "fixed" else "macenko",
        seed=params.seed,
    )
    segmenter = Segmenter(params, mpp=tile_mpp, stain_matrix=stain.matrix)
    counts, rows = [], []
    for tile in ann.tiles:
        (res,) = segmenter.segment(tile.rgb[None])
        c = score_tile(res, tile, lut=lut, match_radius_px=match_radius_um / tile_mpp)
        counts.append(c)
        rows.append({"tile": tile.name, **c.scores()})
    scores = summarise(counts, classes=score_classes)
    scores.update(
        method=params.method,
        data=str(ann.path),
        mpp=tile_mpp,
        match_radius_um=match_radius_um,
        classes=list(gt_classes),
        predicted_classes=list(params.classes),
        class_map=dict(class_map or {}),
        stain={"method": stain.method, "note": stain.note},
    )
    per_tile = pd.DataFrame(rows)
    if out_path is not None:
        write_json(out_path, scores)
    if per_tile_path is not None:
        with atomic_file(per_tile_path) as tmp:
            per_tile.to_csv(tmp, sep="\t", index=False)
    return scores, per_tile
