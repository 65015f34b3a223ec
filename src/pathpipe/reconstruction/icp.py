"""Fine alignment: Open3D point-to-point ICP on a subset of the moving layer.

Point-to-point ICP (Arun et al. 1987; the paper's Eqs. 1–6): match each moving
point to its nearest fixed point within ``d_max``, solve
``R*, T* = argmin 1/N Σ ||P_fix - R P_mov - T||²`` by SVD (Eqs. 4–6), apply,
repeat. Points are embedded at z = 0; the result is projected back to a rotation
about z and an x, y translation (for coplanar points the 3D solution is already
one, up to rounding).

The moving subset (``subset``):

``full``
    every point.
``band_and``
    the paper's Algorithm 1, line 2: ``Ψ = {u_min < u < u_max & v_min < v < v_max}``,
    a rectangle centred on the layer's bounding box, ``band_half_width`` of its
    extent on each side of the centre along each axis.
``band_or``
    the paper's results text ("x from 2,250 to 2,750, or y from 6,750 to 7,250"):
    the cross of the two bands.
``voxel``
    both layers down-sampled to voxel centroids (Open3D ``voxel_down_sample``),
    ICP at each of ``voxel_sizes`` coarse to fine, each starting where the
    previous stopped, with ``d_max`` at least twice the voxel edge.
``contour`` (not in the paper)
    the outlines of both layers (:attr:`LayerPoints.contour`), ICP at ``d_max``,
    point-to-line: Open3D's point-to-plane estimation with the fixed outline's
    normals in the plane (Chen & Medioni 1991), since point-to-point matching
    along two sampled outlines resists sliding along them and stops short.

The band and full subsets are matched against the whole fixed layer.

Why outlines: two filled masks overlap almost everywhere, and an interior moving
point always has a fixed point within half a pixel, so it pulls towards "stay";
only points near the outline pull towards the true position. ICP on filled
masks therefore stalls a degree or more from the truth however many iterations
it runs (``tests/reconstruction/test_reconstruction_icp.py``; from 8.5° off it
stays 8° off in 50 iterations, ``benchmarks/bench_reconstruction.py``), while ICP
on the outlines converges to a few hundredths of a degree, on far fewer points.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.fitness import fitness_and_rmse, fixed_tree
from pathpipe.reconstruction.params import SUBSETS
from pathpipe.reconstruction.points import LayerPoints
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["IcpResult", "band_mask", "colored_icp_align", "icp_align", "outline_normals"]


@dataclass(frozen=True)
class IcpResult:
    """The outcome of :func:`icp_align`.

    Attributes
    ----------
    transform : RigidTransform2D
        Moving layer frame -> fixed layer frame.
    fitness : float
        Fraction of all moving points within ``max_correspondence_um`` of a fixed
        point after the transform (evaluated on the whole layers).
    inlier_rmse_um : float
        RMS distance of those points, µm.
    points_used : int
        Moving points ICP matched (at the finest scale for ``voxel``).
    seconds : float
        Wall time of the subset selection and ICP (not of the evaluation).
    """

    transform: RigidTransform2D
    fitness: float
    inlier_rmse_um: float
    points_used: int
    seconds: float


def band_mask(xy: np.ndarray, half_width: float, *, cross: bool) -> np.ndarray:
    """Points in the paper's band Ψ (Algorithm 1, line 2), as a bool mask.

    Parameters
    ----------
    xy : (N, 2) float ndarray
        The moving layer in its own frame.
    half_width : float
        Half-width of each band as a fraction of the layer's extent along its axis.
    cross : bool
        False: rectangle, ``u`` AND ``v`` in range (Algorithm 1);
        True: cross, ``u`` OR ``v`` in range (the paper's results text).

    Returns
    -------
    (N,) bool ndarray
    """
    if len(xy) == 0:
        return np.zeros(0, dtype=bool)
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    centre, half = (lo + hi) / 2, (hi - lo) * half_width
    inside = np.abs(xy - centre) <= half
    return inside[:, 0] | inside[:, 1] if cross else inside[:, 0] & inside[:, 1]


def _vectors(array: np.ndarray) -> Any:
    import open3d as o3d

    return o3d.utility.Vector3dVector(np.ascontiguousarray(array, dtype=np.float64))


def _cloud(xy: np.ndarray) -> Any:
    import open3d as o3d

    return o3d.geometry.PointCloud(_vectors(np.column_stack([xy, np.zeros(len(xy))])))


def _to_4x4(t: RigidTransform2D) -> np.ndarray:
    out = np.eye(4)
    out[:2, :2] = t.linear
    out[:2, 3] = t.translation
    return out


def _from_4x4(m: np.ndarray) -> RigidTransform2D:
    """The rotation about z and x, y translation nearest a 4×4 rigid transform."""
    a = m[:2, :2]
    angle = math.degrees(math.atan2(a[1, 0] - a[0, 1], a[0, 0] + a[1, 1]))
    return RigidTransform2D(angle, float(m[0, 3]), float(m[1, 3]))


def outline_normals(xy: np.ndarray, k: int = 9) -> np.ndarray:
    """Unit normals (N, 2) of outline points: the minor axis of each point's k neighbours."""
    from scipy.spatial import cKDTree

    k = min(k, len(xy))
    _, idx = cKDTree(xy).query(xy, k=k)
    nb = xy[idx] - xy[idx].mean(axis=1, keepdims=True)
    _, vectors = np.linalg.eigh(np.einsum("nki,nkj->nij", nb, nb))
    return vectors[:, :, 0]


def _icp(
    fixed: Any,
    moving: Any,
    init: RigidTransform2D,
    d_max: float,
    iterations: int,
    *,
    to_line: bool = False,
) -> RigidTransform2D:
    """Open3D ICP of two z = 0 clouds, projected back to the plane.

    Point-to-point (Arun et al.), or with ``to_line`` point-to-plane on a fixed
    cloud whose normals lie in the plane (in 2D: point-to-line, Chen & Medioni
    1991); the out-of-plane parameters then have no Jacobian and stay unchanged.
    """
    import open3d as o3d

    reg = o3d.pipelines.registration
    estimation = (
        reg.TransformationEstimationPointToPlane()
        if to_line
        else reg.TransformationEstimationPointToPoint(False)
    )
    result = reg.registration_icp(
        moving,
        fixed,
        d_max,
        _to_4x4(init),
        estimation,
        reg.ICPConvergenceCriteria(
            relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=iterations
        ),
    )
    return _from_4x4(np.asarray(result.transformation))


def icp_align(
    fixed: LayerPoints,
    moving: LayerPoints,
    init: RigidTransform2D,
    *,
    subset: str = "contour",
    band_half_width: float = 1 / 6,
    voxel_sizes: tuple[float, ...] = (128.0, 64.0),
    max_correspondence_um: float = 64.0,
    iterations: int = 50,
    tree: Any = None,
) -> IcpResult:
    """Refine ``init`` (moving -> fixed) by point-to-point ICP on a subset of the moving layer.

    Parameters
    ----------
    fixed, moving : LayerPoints
        The layers, each in its own frame (µm).
    init : RigidTransform2D
        Starting transform (from :mod:`~pathpipe.reconstruction.coarse`); its
        mirror is kept, ICP changes only the rotation and translation.
    subset : {"full", "band_and", "band_or", "voxel", "contour"}
        Which points ICP matches (module docstring).
    band_half_width : float
        Band half-width, fraction of the layer extent (``band_*``).
    voxel_sizes : tuple of float
        Voxel edges in µm, coarse to fine (``voxel``).
    max_correspondence_um : float
        ``d_max`` of the finest scale, and the distance of the fitness.
    iterations : int
        Most ICP iterations (per scale).
    tree : scipy.spatial.cKDTree, optional
        KD-tree of ``fixed.xy`` for the evaluation, when the caller has one.

    Returns
    -------
    IcpResult
        Fitness and inlier RMSE evaluated on all points of both layers.

    Raises
    ------
    ConfigError
        On an unknown subset, or an empty layer or subset.
    """
    if subset not in SUBSETS:
        raise ConfigError(f"reconstruction.subset={subset!r}; expected one of {list(SUBSETS)}")
    if fixed.empty or moving.empty:
        raise ConfigError(
            f"ICP of layers with {len(fixed)} and {len(moving)} points; expected points in both"
        )
    start = time.perf_counter()
    # ICP estimates proper rotations: the mirror is applied to the points up front
    flip = np.array([-1.0, 1.0]) if init.mirrored else np.ones(2)
    current = RigidTransform2D(init.rotation_deg, init.translation_x_um, init.translation_y_um)
    if subset == "voxel":
        moving_cloud, fixed_cloud = _cloud(moving.xy * flip), _cloud(fixed.xy)
        used = 0
        for size in voxel_sizes:
            moving_down = moving_cloud.voxel_down_sample(size)
            fixed_down = fixed_cloud.voxel_down_sample(size)
            d_max = max(max_correspondence_um, 2.0 * size)
            current = _icp(fixed_down, moving_down, current, d_max, iterations)
            used = len(moving_down.points)
    else:
        if subset == "contour":
            fixed_xy, moving_xy = fixed.contour, moving.contour
        elif subset == "full":
            fixed_xy, moving_xy = fixed.xy, moving.xy
        else:
            keep = band_mask(moving.xy, band_half_width, cross=subset == "band_or")
            fixed_xy, moving_xy = fixed.xy, moving.xy[keep]
        used = len(moving_xy)
        if used == 0 or len(fixed_xy) == 0:
            raise ConfigError(
                f"ICP subset {subset!r} has {used} moving and {len(fixed_xy)} fixed points; "
                "expected points in both"
            )
        fixed_cloud = _cloud(fixed_xy)
        if subset == "contour":
            normals = outline_normals(fixed_xy)
            fixed_cloud.normals = _vectors(np.column_stack([normals, np.zeros(len(normals))]))
        current = _icp(
            fixed_cloud,
            _cloud(moving_xy * flip),
            current,
            max_correspondence_um,
            iterations,
            to_line=subset == "contour",
        )
    seconds = time.perf_counter() - start
    transform = RigidTransform2D(
        current.rotation_deg, current.translation_x_um, current.translation_y_um, init.mirrored
    ).normalised()
    if tree is None:
        tree = fixed_tree(fixed.xy)
    fit, rmse = fitness_and_rmse(tree, transform.apply(moving.xy), max_correspondence_um)
    return IcpResult(transform, fit, rmse, used, seconds)


def colored_icp_align(
    fixed: LayerPoints,
    moving: LayerPoints,
    init: RigidTransform2D,
    *,
    max_correspondence_um: float = 64.0,
    iterations: int = 50,
) -> RigidTransform2D:
    """Refine ``init`` by Open3D's coloured ICP on the layers' points and RGB.

    Park, Zhou & Koltun (ICCV 2017): the objective mixes the geometric
    point-to-plane term with a photometric term on the colour gradient in each
    point's tangent plane (``lambda_geometric`` 0.968, Open3D's default). On a
    plane (normals along z) the geometric term is blind to in-plane motion, so the
    photometric term drives the refinement; the result is projected back to a
    rotation about z and an x, y translation.

    Parameters
    ----------
    fixed, moving : LayerPoints
        Layers with ``rgb`` (each in its own frame, µm).
    init : RigidTransform2D
        Starting placement (moving -> fixed); its mirror is kept.
    max_correspondence_um : float
        Largest point-pair distance.
    iterations : int
        Most iterations.

    Returns
    -------
    RigidTransform2D

    Raises
    ------
    ConfigError
        When a layer has no colours.
    """
    import open3d as o3d

    if fixed.rgb is None or moving.rgb is None:
        raise ConfigError("coloured ICP of layers without rgb; expected layers made with rgb=")
    flip = np.array([-1.0, 1.0]) if init.mirrored else np.ones(2)
    clouds = []
    for xy, rgb in ((fixed.xy, fixed.rgb), (moving.xy * flip, moving.rgb)):
        cloud = _cloud(xy)
        cloud.colors = _vectors(np.asarray(rgb, dtype=np.float64) / 255.0)
        cloud.normals = _vectors(np.tile([0.0, 0.0, 1.0], (len(xy), 1)))
        clouds.append(cloud)
    reg = o3d.pipelines.registration
    start = RigidTransform2D(init.rotation_deg, init.translation_x_um, init.translation_y_um)
    result = reg.registration_colored_icp(
        clouds[1],
        clouds[0],
        max_correspondence_um,
        _to_4x4(start),
        reg.TransformationEstimationForColoredICP(),
        reg.ICPConvergenceCriteria(
            relative_fitness=1e-7, relative_rmse=1e-7, max_iteration=iterations
        ),
    )
    current = _from_4x4(np.asarray(result.transformation))
    return RigidTransform2D(
        current.rotation_deg, current.translation_x_um, current.translation_y_um, init.mirrored
    ).normalised()
