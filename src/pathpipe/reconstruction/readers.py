"""Readers of a block's reconstruction files, for the figures and the 3D viewer.

The counterparts of :mod:`pathpipe.reconstruction.outputs`: the points and the
mesh PLY (Open3D) and the OME-Zarr volume (its image, its mask labels and the
grid its ``multiscales`` metadata gives). Heavy libraries are imported inside
the functions.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathpipe.errors import StorageError
from pathpipe.reconstruction.volume import VolumeGrid

__all__ = ["BlockVolume", "read_mesh_ply", "read_points_ply", "read_volume"]


@dataclass(frozen=True)
class BlockVolume:
    """A block's ``volume.zarr`` in memory.

    Attributes
    ----------
    image : (C, Z, Y, X) uint8 ndarray
        The registered sections (RGB, or one channel: the mask × 255).
    labels : (Z, Y, X) uint8 ndarray
        The registered mask (1 inside).
    grid : VolumeGrid
        Voxel centres in the block frame, µm (from the ``multiscales`` metadata).
    """

    image: np.ndarray
    labels: np.ndarray
    grid: VolumeGrid


def _exists(path: str | os.PathLike, what: str) -> Path:
    path = Path(path)
    if not path.exists():
        raise StorageError(
            f"{what} {str(path)!r} is missing; expected `pathpipe reconstruction run`'s"
        )
    return path


def read_points_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``points.ply`` -> points ``(N, 3)`` float64 µm and colours ``(N, 3)`` uint8."""
    import open3d as o3d

    cloud = o3d.io.read_point_cloud(str(_exists(path, "points")))
    xyz = np.asarray(cloud.points, dtype=np.float64)
    rgb = np.asarray(cloud.colors, dtype=np.float64)
    if len(rgb) != len(xyz):
        rgb = np.full((len(xyz), 3), 0.5)
    return xyz, np.clip(np.round(rgb * 255), 0, 255).astype(np.uint8)


def read_mesh_ply(path: str | os.PathLike) -> tuple[np.ndarray, np.ndarray]:
    """``mesh.ply`` -> vertices ``(V, 3)`` float64 µm ``(x, y, z)`` and faces ``(F, 3)`` int64."""
    import open3d as o3d

    mesh = o3d.io.read_triangle_mesh(str(_exists(path, "mesh")))
    return np.asarray(mesh.vertices, dtype=np.float64), np.asarray(mesh.triangles, dtype=np.int64)


def _grid(attrs: dict, shape_zyx: tuple[int, int, int]) -> VolumeGrid:
    transforms = attrs["multiscales"][0]["datasets"][0]["coordinateTransformations"]
    by_type = {t["type"]: t for t in transforms}
    scale = by_type["scale"]["scale"][-3:]
    translation = by_type.get("translation", {"translation": [0.0, 0.0, 0.0]})["translation"][-3:]
    return VolumeGrid(
        tuple(float(v) for v in translation),
        tuple(int(n) for n in shape_zyx),
        tuple(float(v) for v in scale),
    )


def read_volume(path: str | os.PathLike) -> BlockVolume:
    """``volume.zarr`` (OME-NGFF 0.4) -> :class:`BlockVolume`.

    Raises
    ------
    StorageError
        When the store is missing or lacks the image, the mask labels or their metadata.
    """
    import zarr

    path = _exists(path, "volume")
    try:
        root = zarr.open_group(str(path), mode="r")
        image = np.asarray(root["0"][...])
        mask = root["labels"]["mask"]
        labels = np.asarray(mask["0"][...])
        grid = _grid(dict(mask.attrs), labels.shape)
    except (KeyError, IndexError, TypeError, ValueError) as exc:
        raise StorageError(
            f"volume {str(path)!r} is not a reconstruction OME-Zarr (image '0', "
            f"labels/mask/0 with multiscales metadata): {exc!r}"
        ) from exc
    if image.ndim != 4 or image.shape[1:] != labels.shape:
        raise StorageError(
            f"volume {str(path)!r}: image {image.shape} and mask {labels.shape}; "
            "expected (c, z, y, x) and (z, y, x) of the same grid"
        )
    return BlockVolume(image, labels, grid)
