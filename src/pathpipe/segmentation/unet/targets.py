"""Training targets of the segmentation network (HoVer-Net style).

Graham S, Vu QD, Raza SEA, et al. "HoVer-Net: Simultaneous segmentation and
classification of nuclei in multi-tissue histology images." Medical Image
Analysis 58 (2019) 101563, section 3.1: besides the nuclear-pixel map, the
network regresses for every nuclear pixel its horizontal and vertical distance
to the centroid of its nucleus, normalised per nucleus so that it spans
[-1, 0] on one side of the centroid and [0, 1] on the other. Touching nuclei
then meet at a jump from +1 to -1 that the post-processing
(:mod:`pathpipe.segmentation.unet.postprocess`) cuts along.
"""

from __future__ import annotations

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation.annotations import AnnotatedTile

__all__ = ["hv_maps", "make_targets"]


def hv_maps(inst_map: np.ndarray) -> np.ndarray:
    """Horizontal and vertical distance maps of an instance map.

    For nucleus ``i`` with pixels ``(y, x)`` and centroid ``(ȳ_i, x̄_i)``
    rounded to the nearest pixel (as in the reference implementation, so one
    pixel of each nucleus is exactly 0)::

        dx = x - x̄_i,   h = dx / max_i(dx) if dx > 0,  dx / -min_i(dx) if dx < 0
        dy = y - ȳ_i,   v likewise with dy

    where ``max_i`` / ``min_i`` run over the pixels of nucleus ``i``. Left of
    the centroid ``h < 0``, right ``h > 0``; above ``v < 0``, below ``v > 0``
    (rows grow downwards). Background is 0.

    Parameters
    ----------
    inst_map : (H, W) integer ndarray
        0 background, one positive id per nucleus (ids need not be consecutive).

    Returns
    -------
    hv : (2, H, W) float32 ndarray
        ``hv[0]`` horizontal, ``hv[1]`` vertical, each in [-1, 1].
    """
    inst = np.asarray(inst_map)
    if inst.ndim != 2 or not np.issubdtype(inst.dtype, np.integer):
        raise ConfigError(
            f"inst_map has shape {inst.shape} dtype {inst.dtype}; expected (H, W) integers"
        )
    out = np.zeros((2, *inst.shape), np.float32)
    ys, xs = np.nonzero(inst > 0)
    if ys.size == 0:
        return out
    _, lab = np.unique(inst[ys, xs], return_inverse=True)
    lab = lab.ravel()
    n = int(lab.max()) + 1
    count = np.bincount(lab, minlength=n)
    for axis, coord in enumerate((xs, ys)):
        centre = np.floor(np.bincount(lab, weights=coord, minlength=n) / count + 0.5)
        d = coord - centre[lab]
        lo = np.zeros(n)
        hi = np.zeros(n)
        np.minimum.at(lo, lab, d)
        np.maximum.at(hi, lab, d)
        scaled = np.zeros_like(d)
        neg, pos = d < 0, d > 0
        scaled[neg] = d[neg] / -lo[lab[neg]]
        scaled[pos] = d[pos] / hi[lab[pos]]
        out[axis, ys, xs] = scaled
    return out


def make_targets(tile: AnnotatedTile) -> dict[str, np.ndarray | bool]:
    """Targets of one (cropped, augmented) tile.

    Parameters
    ----------
    tile : AnnotatedTile

    Returns
    -------
    dict
        ``fg`` : (H, W) int64 ndarray, 1 on nuclei, 0 elsewhere.
        ``hv`` : (2, H, W) float32 ndarray, :func:`hv_maps`.
        ``type`` : (H, W) int64 ndarray, the type map (0 background), zeros
        when the tile has none.
        ``has_types`` : bool, whether ``type`` is ground truth (the type
        losses skip tiles without it).
    """
    inst = np.asarray(tile.inst_map)
    has_types = tile.type_map is not None
    types = (
        np.asarray(tile.type_map).astype(np.int64) if has_types else np.zeros(inst.shape, np.int64)
    )
    return {
        "fg": (inst > 0).astype(np.int64),
        "hv": hv_maps(inst),
        "type": types,
        "has_types": has_types,
    }
