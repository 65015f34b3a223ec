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
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.reconstruction.volume import VolumeGrid

__all__ = [
    "marching_cubes_mesh",
    "marching_cubes_slabs",
    "ome_zarr_volume",
    "write_mesh_ply",
    "write_ome_zarr",
    "write_points_ply",
    "write_points_ply_chunks",
]

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


def write_points_ply_chunks(
    path: str | os.PathLike, chunks: Iterable[tuple[np.ndarray, np.ndarray]], count: int
) -> None:
    """Write ``count`` points given in chunks as a binary PLY, one chunk in memory at a time.

    The file is what :func:`write_points_ply` writes (``x, y, z`` double, ``red,
    green, blue`` uchar, little-endian), so Open3D and other PLY readers open it.

    Parameters
    ----------
    path : path-like
    chunks : iterable of ((n, 3) float ndarray, (n, 3) uint8 ndarray)
        Points ``(x, y, z)`` µm and their colours.
    count : int
        The total number of points the chunks hold.

    Raises
    ------
    StorageError
        When the chunks hold another number of points than ``count``.
    """
    from pathpipe.errors import StorageError
    from pathpipe.io.storage import atomic_file

    dtype = np.dtype(
        [("x", "<f8"), ("y", "<f8"), ("z", "<f8"), ("red", "u1"), ("green", "u1"), ("blue", "u1")]
    )
    header = (
        "ply\nformat binary_little_endian 1.0\n"
        f"element vertex {int(count)}\n"
        "property double x\nproperty double y\nproperty double z\n"
        "property uchar red\nproperty uchar green\nproperty uchar blue\nend_header\n"
    )
    written = 0
    with atomic_file(path) as tmp, open(tmp, "wb") as fh:
        fh.write(header.encode("ascii"))
        for xyz, rgb in chunks:
            record = np.empty(len(xyz), dtype=dtype)
            for i, name in enumerate("xyz"):
                record[name] = xyz[:, i]
            for i, name in enumerate(("red", "green", "blue")):
                record[name] = rgb[:, i]
            fh.write(record.tobytes())
            written += len(xyz)
        if written != count:
            raise StorageError(f"{written} points written to {str(path)!r}; expected {count}")


def marching_cubes_slabs(
    plane: Callable[[int], np.ndarray], grid: VolumeGrid
) -> tuple[np.ndarray, np.ndarray, float, float]:
    """:func:`marching_cubes_mesh` computed two planes at a time (bounded memory).

    Marching cubes decides each cube from its eight corners, so the surface of
    the stack is the union of the surfaces of its slabs ``[k, k + 1]`` (with
    empty planes beyond both ends, as :func:`marching_cubes_mesh` pads); the
    vertices the slabs share on a plane are merged.

    Parameters
    ----------
    plane : callable
        ``plane(k)`` -> the ``(Y, X)`` mask plane ``k`` (``0 <= k < Z``).
    grid : VolumeGrid

    Returns
    -------
    The same as :func:`marching_cubes_mesh`.
    """
    from skimage.measure import marching_cubes

    nz = grid.shape[0]
    spacing = np.asarray(grid.spacing_um)
    empty = np.zeros(tuple(n + 2 for n in grid.shape[1:]), dtype=np.float32)
    verts_all, faces_all, offset = [], [], 0
    below = empty
    for k in range(nz + 1):
        above = np.pad(plane(k).astype(np.float32), 1) if k < nz else empty
        slab = np.stack([below, above])
        if slab.min() < 0.5 < slab.max():
            verts, faces, _, _ = marching_cubes(slab, 0.5, spacing=grid.spacing_um)
            # slab z 0 is plane k - 1; y, x lose the pad
            verts = verts + np.asarray(grid.origin_um) + (k - 1) * spacing * [1, 0, 0]
            verts = verts - spacing * [0, 1, 1]
            verts_all.append(verts)
            faces_all.append(faces + offset)
            offset += len(verts)
        below = above
    if not verts_all:
        return np.zeros((0, 3)), np.zeros((0, 3), np.int64), 0.0, 0.0
    verts = np.concatenate(verts_all)
    faces = np.concatenate(faces_all)
    # merge the vertices two slabs share (same position up to rounding)
    key = np.round(verts / spacing * 64).astype(np.int64)
    _, first, inverse = np.unique(key, axis=0, return_index=True, return_inverse=True)
    verts, faces = verts[first], inverse.reshape(-1)[faces]
    tri = verts[faces]
    cross = np.cross(tri[:, 1] - tri[:, 0], tri[:, 2] - tri[:, 0])
    area = float(np.linalg.norm(cross, axis=1).sum() / 2.0) / 1e6
    volume = abs(float(np.einsum("ij,ij->i", tri[:, 0], np.cross(tri[:, 1], tri[:, 2])).sum()))
    xyz = verts[:, ::-1].astype(np.float64)  # (z, y, x) -> (x, y, z)
    return xyz, faces.astype(np.int64)[:, ::-1], area, volume / 6.0 / 1e9


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


@contextmanager
def ome_zarr_volume(
    path: str | os.PathLike,
    grid: VolumeGrid,
    *,
    channels: int = 3,
    attrs: dict[str, Any] | None = None,
) -> Iterator[tuple[Any, Any]]:
    """An OME-Zarr volume (the layout of :func:`write_ome_zarr`) to fill plane by plane.

    Yields the image array ``(C, Z, Y, X)`` uint8 (``channels`` 3: RGB, filled
    white; 1: the mask × 255, filled 0) and the label array ``(Z, Y, X)`` uint8
    (filled 0), chunked by plane, so writing plane ``k`` touches only its chunks;
    the directory appears at ``path`` when the block exits without an error.
    """
    import zarr

    from pathpipe.io.storage import atomic_dir

    chunks_zyx = (1, *(min(n, 512) for n in grid.shape[1:]))
    with atomic_dir(path) as tmp:
        root = zarr.open_group(str(Path(tmp)), mode="w", zarr_format=2)
        channel = {"name": "c", "type": "channel"}
        image = root.create_array(
            "0",
            shape=(channels, *grid.shape),
            dtype=np.uint8,
            chunks=(1, *chunks_zyx),
            fill_value=255 if channels == 3 else 0,
            chunk_key_encoding=_KEYS,
        )
        root.attrs.update(
            {
                "multiscales": _multiscales("sections", [channel, *_ZYX], grid),
                "omero": {
                    "channels": [
                        {"label": name, "color": colour, "window": {"start": 0, "end": 255}}
                        for name, colour in zip(
                            ("red", "green", "blue") if channels == 3 else ("mask",),
                            ("FF0000", "00FF00", "0000FF") if channels == 3 else ("FFFFFF",),
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
        labels = mask.create_array(
            "0",
            shape=grid.shape,
            dtype=np.uint8,
            chunks=chunks_zyx,
            fill_value=0,
            chunk_key_encoding=_KEYS,
        )
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
        yield image, labels


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
    if image is None:
        image = (labels[None] > 0).astype(np.uint8) * 255
    with ome_zarr_volume(path, grid, channels=image.shape[0], attrs=attrs) as (out, out_labels):
        out[:] = image
        out_labels[:] = labels
