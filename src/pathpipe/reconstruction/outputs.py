"""Writers of the reconstruction's files: points and mesh PLY, OME-Zarr volume.

Every writer goes through :mod:`pathpipe.io.storage` (a temporary path renamed
on success). Open3D and scikit-image are imported inside the functions.

``volume.zarr`` is an OME-Zarr (NGFF 0.4: Zarr format 2, ``/`` dimension separator) image group:

* ``0``: the image, ``(c, z, y, x)`` uint8: the registered sections' RGB when
  every present section has a slide (white outside a section), else one channel,
  the mask × 255;
* ``labels/mask/0``: the registered mask volume ``(z, y, x)`` uint8 (1 = the
  layer's mask, 0 = background), with ``image-label`` metadata;

each with ``multiscales`` metadata (one scale level) whose ``coordinateTransformations``
are the physical ``scale`` (section spacing, working µm/px, working µm/px) and
the ``translation`` of voxel ``[0, 0, 0]``'s centre in the block frame, µm.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.reconstruction.volume import VolumeGrid

__all__ = ["marching_cubes_mesh", "write_mesh_ply", "write_ome_zarr", "write_points_ply"]

NGFF_VERSION = "0.4"

#: NGFF 0.4 arrays are Zarr v2 with "/" between chunk indices.
_KEYS = {"name": "v2", "separator": "/"}


def write_points_ply(path: str | os.PathLike, xyz: np.ndarray, rgb: np.ndarray) -> None:
    """Write points ``(N, 3)`` µm with colours ``(N, 3)`` uint8 as a PLY (Open3D)."""
    import open3d as o3d

    from pathpipe.io.storage import atomic_file

    cloud = o3d.geometry.PointCloud()
    cloud.points = o3d.utility.Vector3dVector(np.asarray(xyz, dtype=np.float64))
    cloud.colors = o3d.utility.Vector3dVector(np.asarray(rgb, dtype=np.float64) / 255.0)
    with atomic_file(path) as tmp:
        o3d.io.write_point_cloud(str(tmp), cloud, write_ascii=False)


def marching_cubes_mesh(
    planes: np.ndarray, grid: VolumeGrid
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """The surface of a mask stack: marching cubes at 0.5 with the physical spacing.

    The stack is padded with one empty voxel on every side, so the surface is
    closed (it caps the end sections half a spacing beyond their planes).

    Parameters
    ----------
    planes : (Z, Y, X) bool or uint8 ndarray
    grid : VolumeGrid

    Returns
    -------
    vertices : (V, 3) float64 ndarray
        ``(x, y, z)`` µm in the block frame.
    faces : (F, 3) int64 ndarray
    area_mm2 : float
        Surface area (``skimage.measure.mesh_surface_area``).
    volume_mm3 : float
        Enclosed volume (divergence theorem over the triangles).
    """
    from skimage.measure import marching_cubes, mesh_surface_area

    padded = np.pad(planes.astype(np.float32), 1)
    if not padded.any():
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), 0.0, 0.0
    verts, faces, _, _ = marching_cubes(padded, 0.5, spacing=grid.spacing_um)
    verts = verts - np.asarray(grid.spacing_um) + np.asarray(grid.origin_um)  # the pad
    area = float(mesh_surface_area(verts, faces)) / 1e6
    tri = verts[faces]
    volume = abs(float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()))
    xyz = verts[:, ::-1].astype(np.float64)  # (z, y, x) -> (x, y, z)
    return xyz, faces.astype(np.int64)[:, ::-1], area, volume / 6.0 / 1e9


def write_mesh_ply(path: str | os.PathLike, vertices: np.ndarray, faces: np.ndarray) -> None:
    """Write a triangle mesh (vertices ``(x, y, z)`` µm) as a PLY (Open3D)."""
    import open3d as o3d

    from pathpipe.io.storage import atomic_file

    mesh = o3d.geometry.TriangleMesh(
        o3d.utility.Vector3dVector(np.asarray(vertices, dtype=np.float64)),
        o3d.utility.Vector3iVector(np.asarray(faces, dtype=np.int32)),
    )
    mesh.compute_vertex_normals()
    with atomic_file(path) as tmp:
        o3d.io.write_triangle_mesh(str(tmp), mesh, write_ascii=False)


def _multiscales(name: str, axes: list[dict[str, str]], grid: VolumeGrid) -> list[dict]:
    extra = len(axes) - 3  # a channel axis before (z, y, x)
    return [
        {
            "version": NGFF_VERSION,
            "name": name,
            "axes": axes,
            "datasets": [
                {
                    "path": "0",
                    "coordinateTransformations": [
                        {"type": "scale", "scale": [1.0] * extra + list(grid.spacing_um)},
                        {
                            "type": "translation",
                            "translation": [0.0] * extra + list(grid.origin_um),
                        },
                    ],
                }
            ],
            "type": "nearest",
        }
    ]


_ZYX = [
    {"name": "z", "type": "space", "unit": "micrometer"},
    {"name": "y", "type": "space", "unit": "micrometer"},
    {"name": "x", "type": "space", "unit": "micrometer"},
]


def write_ome_zarr(
    path: str | os.PathLike,
    labels: np.ndarray,
    grid: VolumeGrid,
    *,
    image: np.ndarray | None = None,
    attrs: dict[str, Any] | None = None,
) -> None:
    """Write the volume as an OME-Zarr image with its mask as a label image.

    Parameters
    ----------
    path : path-like
        ``volume.zarr`` (replaced atomically).
    labels : (Z, Y, X) uint8 ndarray
    grid : VolumeGrid
    image : (C, Z, Y, X) uint8 ndarray, optional
        The registered RGB; default ``labels × 255`` as one channel.
    attrs : dict, optional
        Extra root attributes (provenance).
    """
    import zarr

    from pathpipe.io.storage import atomic_dir

    if image is None:
        image = (labels[None] > 0).astype(np.uint8) * 255
    chunks_zyx = (1, *(min(n, 512) for n in labels.shape[1:]))
    with atomic_dir(path) as tmp:
        root = zarr.open_group(str(Path(tmp)), mode="w", zarr_format=2)
        channel = {"name": "c", "type": "channel"}
        root.create_array("0", data=image, chunks=(1, *chunks_zyx), chunk_key_encoding=_KEYS)
        root.attrs.update(
            {
                "multiscales": _multiscales("sections", [channel, *_ZYX], grid),
                "omero": {
                    "channels": [
                        {"label": name, "color": colour, "window": {"start": 0, "end": 255}}
                        for name, colour in zip(
                            ("red", "green", "blue") if image.shape[0] == 3 else ("mask",),
                            ("FF0000", "00FF00", "0000FF") if image.shape[0] == 3 else ("FFFFFF",),
                            strict=True,
                        )
                    ]
                },
                **(attrs or {}),
            }
        )
        group = root.create_group("labels")
        group.attrs["labels"] = ["mask"]
        mask = group.create_group("mask")
        mask.create_array("0", data=labels, chunks=chunks_zyx, chunk_key_encoding=_KEYS)
        mask.attrs.update(
            {
                "multiscales": _multiscales("mask", _ZYX, grid),
                "image-label": {
                    "version": NGFF_VERSION,
                    "colors": [{"label-value": 1, "rgba": [255, 80, 80, 255]}],
                    "source": {"image": "../../"},
                },
            }
        )
