"""Registration of a pair of layers and of a block's stack, bottom to top.

:func:`register_pair`: coarse alignment over all rotations and the mirror
(:mod:`~pathpipe.reconstruction.coarse`), a short ICP from the best few
candidates on a subsample, the best by fitness, then the fine ICP on the chosen
subset (:mod:`~pathpipe.reconstruction.icp`).

:func:`register_stack`: the paper's Algorithm 1 loop (lines 5–21): each layer is
registered onto the already-registered layer below, so every transform maps a
layer's own frame into the block's frame (the bottom usable layer's). Beyond the
paper, guard rails: a missing or empty layer, or one whose fitness or inlier
RMSE is implausible, is flagged in its row and the next layer is registered onto
the last good one.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.coarse import coarse_candidates
from pathpipe.reconstruction.fitness import fitness_and_rmse, fixed_tree
from pathpipe.reconstruction.icp import IcpResult, colored_icp_align, icp_align
from pathpipe.reconstruction.intensity import density_scores, refine_by_density
from pathpipe.reconstruction.params import ReconstructionParams
from pathpipe.reconstruction.points import LayerPoints
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = [
    "MIN_POINTS",
    "ROW_COLUMNS",
    "PairResult",
    "iter_register",
    "register_pair",
    "register_stack",
]

#: A layer with fewer points is empty (ICP and the principal axes need a few).
MIN_POINTS = 10

#: Columns of a registration row (``registration.tsv``).
ROW_COLUMNS = (
    "layer",
    "rotation_deg",
    "translation_x_um",
    "translation_y_um",
    "mirrored",
    "fitness",
    "inlier_rmse_um",
    "points_used",
    "seconds",
    "flag",
    "similarity",
)

# candidates refined by a short ICP before choosing, and the size of their subsample
_REFINE_CANDIDATES = 4
_REFINE_POINTS = 4000
# coarse placements the density ranks best, added to the starts of its refinement
_DENSITY_STARTS = 2


@dataclass(frozen=True)
class PairResult:
    """The registration of a moving layer onto a fixed one.

    Attributes
    ----------
    transform : RigidTransform2D
        Moving frame -> fixed frame.
    fitness, inlier_rmse_um : float
        On the whole layers, at ``max_correspondence_um`` (see
        :mod:`~pathpipe.reconstruction.fitness`).
    points_used : int
        Moving points the fine ICP matched.
    seconds : float
        Wall time of the whole pair registration (coarse, refinement, ICP).
    similarity : float
        NCC of the two layers' densities at ``transform`` with ``refine="intensity"``
        (:mod:`~pathpipe.reconstruction.intensity`), else NaN.
    """

    transform: RigidTransform2D
    fitness: float
    inlier_rmse_um: float
    points_used: int
    seconds: float
    similarity: float = math.nan


def _subsample(xy: np.ndarray, n: int, seed: int) -> np.ndarray:
    if len(xy) <= n:
        return xy
    return xy[np.random.default_rng(seed).choice(len(xy), size=n, replace=False)]


def _refine_layer(layer: LayerPoints, n: int, seed: int, *, outline: bool) -> LayerPoints:
    """A layer whose points are its outline, or a seeded subsample of its points."""
    xy = layer.contour if outline else _subsample(layer.xy, n, seed)
    return LayerPoints(xy, None, layer.working_mpp, xy)


def register_pair(
    fixed: LayerPoints,
    moving: LayerPoints,
    params: ReconstructionParams,
    *,
    tree: Any = None,
    also: Sequence[LayerPoints] = (),
) -> PairResult:
    """Register ``moving`` onto ``fixed``: coarse (any angle, mirror), then fine ICP.

    The best few coarse candidates (and the best of the other mirror state) are
    refined by point-to-line ICP on the outlines (on a subsample of the points
    when a layer has no outline), first with a
    correspondence distance that a half-step rotation error allows, then with
    ``max_correspondence_um``; the one with the best outline fitness starts the
    fine ICP on ``params.subset``.

    Parameters
    ----------
    fixed, moving : LayerPoints
        The layers, ``fixed`` already in the frame the result maps into.
    params : ReconstructionParams
        ``angle_step``, ``mirror_search``, ``subset`` and the ICP parameters.
    tree : scipy.spatial.cKDTree, optional
        KD-tree of ``fixed.xy``, when the caller has one.
    also : sequence of LayerPoints
        Registered layers below ``fixed`` (in its frame) that the density
        refinement also scores against (:func:`~pathpipe.reconstruction.intensity.refine_by_density`).

    Returns
    -------
    PairResult

    Raises
    ------
    ConfigError
        When a layer has fewer than :data:`MIN_POINTS` points.
    """
    for name, layer in (("fixed", fixed), ("moving", moving)):
        if len(layer) < MIN_POINTS:
            raise ConfigError(
                f"{name} layer with {len(layer)} points; expected at least {MIN_POINTS}"
            )
    start = time.perf_counter()
    candidates = coarse_candidates(
        fixed.xy, moving.xy, angle_step=params.angle_step, mirror=params.mirror_search
    )
    # the best few, and the best of the other mirror state
    chosen = candidates[:_REFINE_CANDIDATES]
    for mirrored in {c.transform.mirrored for c in candidates} - {
        c.transform.mirrored for c in chosen
    }:
        chosen.append(next(c for c in candidates if c.transform.mirrored == mirrored))
    has_outlines = min(len(fixed.contour), len(moving.contour)) >= MIN_POINTS
    refine_subset = "contour" if has_outlines else "full"
    fixed_ref = _refine_layer(fixed, 4 * _REFINE_POINTS, seed=1, outline=has_outlines)
    moving_ref = _refine_layer(moving, _REFINE_POINTS, seed=2, outline=has_outlines)
    ref_tree = fixed_tree(fixed_ref.xy)
    radius = float(np.sqrt(np.mean(np.sum((fixed.xy - fixed.xy.mean(axis=0)) ** 2, axis=1))))
    capture = max(
        params.max_correspondence_um, 1.5 * radius * math.sin(math.radians(params.angle_step / 2))
    )
    refined = []
    for candidate in chosen:
        current = candidate.transform
        for distance in (capture, params.max_correspondence_um):
            result = icp_align(
                fixed_ref,
                moving_ref,
                current,
                subset=refine_subset,
                max_correspondence_um=distance,
                iterations=params.icp_iterations,
                tree=ref_tree,
            )
            current = result.transform
        refined.append(result)
    best = max(refined, key=lambda r: r.fitness)
    if tree is None:
        tree = fixed_tree(fixed.xy)
    fine = icp_align(
        fixed,
        moving,
        best.transform,
        subset=params.subset,
        band_half_width=params.band_half_width,
        voxel_sizes=params.voxel_sizes,
        max_correspondence_um=params.max_correspondence_um,
        iterations=params.icp_iterations,
        tree=tree,
    )
    transform, similarity = fine.transform, math.nan
    has_images = fixed.density is not None and moving.density is not None
    if params.refine == "intensity" and has_images:
        # starts: the outline optimum, every refined candidate, and the coarse
        # placements the density itself ranks best (an outline can mislead)
        scores = density_scores(fixed, moving, [c.transform for c in candidates], also=also)
        starts = [fine.transform, *(r.transform for r in refined)]
        starts += [candidates[i].transform for i in np.argsort(-scores)[:_DENSITY_STARTS]]
        dense = refine_by_density(fixed, moving, starts, also=also)
        transform, similarity = dense.transform, dense.ncc
    elif params.refine == "colour" and fixed.rgb is not None and moving.rgb is not None:
        transform = colored_icp_align(
            fixed,
            moving,
            fine.transform,
            max_correspondence_um=params.max_correspondence_um,
            iterations=params.icp_iterations,
        )
    if transform is not fine.transform:
        fit, rmse = fitness_and_rmse(tree, transform.apply(moving.xy), params.max_correspondence_um)
        fine = IcpResult(transform, fit, rmse, fine.points_used, fine.seconds)
    return PairResult(
        fine.transform,
        fine.fitness,
        fine.inlier_rmse_um,
        fine.points_used,
        time.perf_counter() - start,
        similarity,
    )


def _row(layer: str, transform: RigidTransform2D | None, **values: Any) -> dict[str, Any]:
    t = (
        transform.to_dict()
        if transform is not None
        else {
            "rotation_deg": math.nan,
            "translation_x_um": math.nan,
            "translation_y_um": math.nan,
            "mirrored": False,
        }
    )
    row = {"layer": layer, **t}
    row.update(
        {
            "fitness": values.get("fitness", math.nan),
            "inlier_rmse_um": values.get("inlier_rmse_um", math.nan),
            "points_used": int(values.get("points_used", 0)),
            "seconds": float(values.get("seconds", 0.0)),
            "flag": values.get("flag", ""),
            "similarity": values.get("similarity", math.nan),
        }
    )
    return row


def _implausible(result: PairResult, params: ReconstructionParams) -> str:
    flags = []
    if not result.fitness >= params.min_fitness:
        flags.append("low_fitness")
    if not result.inlier_rmse_um <= params.max_rmse_um:
        flags.append("high_rmse")
    return ";".join(flags)


def iter_register(
    layers: Iterable[LayerPoints | None],
    params: ReconstructionParams,
    names: Iterable[str],
) -> Iterator[tuple[LayerPoints | None, RigidTransform2D | None, dict[str, Any]]]:
    """:func:`register_stack`'s loop, one layer at a time (bounded memory).

    Takes the layers lazily (a generator that loads each section when asked) and
    holds only the last good layer besides the current one, so a block of any
    number of sections needs the memory of one layer pair.

    Yields
    ------
    layer : LayerPoints or None
        The layer as given (its own frame).
    transform : RigidTransform2D or None
        Its frame -> the frame of the first usable layer; None when missing or empty.
    row : dict
        The columns of :data:`ROW_COLUMNS` (see :func:`register_stack`).
    """
    below: LayerPoints | None = None  # the last good layer, in the block frame
    below2: LayerPoints | None = None  # the good layer before it
    tree = None
    for name, layer in zip(names, layers, strict=True):
        if layer is None:
            yield None, None, _row(name, None, flag="missing")
            continue
        if len(layer) < MIN_POINTS:
            yield layer, None, _row(name, None, points_used=len(layer), flag="empty")
            continue
        if below is None:
            below, tree = layer, fixed_tree(layer.xy)
            yield layer, RigidTransform2D(), _row(name, RigidTransform2D(), points_used=len(layer))
            continue
        also = () if below2 is None else (below2,)
        result = register_pair(below, layer, params, tree=tree, also=also)
        flag = _implausible(result, params)
        row = _row(
            name,
            result.transform,
            fitness=result.fitness,
            inlier_rmse_um=result.inlier_rmse_um,
            points_used=result.points_used,
            seconds=result.seconds,
            flag=flag,
            similarity=result.similarity,
        )
        if not flag:
            below2, below = below, layer.transformed(result.transform)
            tree = fixed_tree(below.xy)
        yield layer, result.transform, row


def register_stack(
    layers: Sequence[LayerPoints | None],
    params: ReconstructionParams,
    *,
    block: str = "block",
    names: Sequence[str] | None = None,
) -> tuple[list[RigidTransform2D | None], list[dict[str, Any]]]:
    """Register a block's layers bottom to top (the paper's Algorithm 1 with guard rails).

    Parameters
    ----------
    layers : sequence of LayerPoints or None
        The sections in order, bottom first; None for a missing section.
    params : ReconstructionParams
        The stage's parameters.
    block : str
        The block's id, for messages.
    names : sequence of str, optional
        One name per layer for the rows (default: the positions ``"0"``, ``"1"``…).

    Returns
    -------
    transforms : list of RigidTransform2D or None
        Per layer, its frame -> the block's frame (the bottom usable layer's);
        None for a missing or empty layer. Flagged layers keep their transform.
    rows : list of dict
        Per layer, the columns of :data:`ROW_COLUMNS`; ``flag`` is ``""`` for a good
        layer, else ``missing``, ``empty``, ``low_fitness`` and/or ``high_rmse``
        (``;``-separated). The reference (bottom usable) layer has the identity
        and NaN fitness.

    Raises
    ------
    ConfigError
        When fewer than two layers have at least :data:`MIN_POINTS` points,
        naming the block, or when ``names`` does not match ``layers``.
    """
    names = [str(i) for i in range(len(layers))] if names is None else [str(n) for n in names]
    if len(names) != len(layers):
        raise ConfigError(f"{len(names)} names for {len(layers)} layers of block {block!r}")
    usable = [i for i, layer in enumerate(layers) if layer is not None and len(layer) >= MIN_POINTS]
    if len(usable) < 2:
        raise ConfigError(
            f"block {block!r} has {len(usable)} usable section(s) of {len(layers)} "
            f"(with at least {MIN_POINTS} mask points); expected at least 2 to reconstruct"
        )
    transforms: list[RigidTransform2D | None] = []
    rows: list[dict[str, Any]] = []
    for _, transform, row in iter_register(layers, params, names):
        transforms.append(transform)
        rows.append(row)
    return transforms, rows
