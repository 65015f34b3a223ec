"""A block's transforms applied to points: section µm (or pixels) -> block ``(x, y, z)`` µm.

:func:`read_transforms` reads ``transforms.json`` (format in
:mod:`pathpipe.reconstruction.run`); :func:`warp_points` maps points of one
section into the block frame with the same transform the volume used;
:func:`run_warp` (``pathpipe reconstruction warp``) does it for a table of
points (nuclei tables, polygon vertices) in CSV or Parquet;
:func:`warp_geojson` and :func:`run_warp_geojson` (``pathpipe reconstruction
warp --geojson``) do it for QuPath GeoJSON annotations.

GeoJSON out: positions are block ``(x, y)`` µm (2D, so GIS tools and QuPath
read them); the section's plane is each feature's property ``block_z_um``
(and, with ``z=True``, the third coordinate of every position too). Ring
orientation is kept: on a mirrored section the vertex order of every ring is
reversed (see :mod:`pathpipe.reconstruction.geojson`).
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = [
    "BLOCK_COLUMNS",
    "mpp_pair",
    "read_transforms",
    "run_warp",
    "run_warp_geojson",
    "section_transform",
    "warp_geojson",
    "warp_points",
]

#: Columns :func:`run_warp` adds: block-frame µm.
BLOCK_COLUMNS = ("block_x_um", "block_y_um", "block_z_um")


def read_transforms(path: str | os.PathLike) -> dict[str, Any]:
    """Read a block's ``transforms.json``.

    Returns
    -------
    dict
        The file's mapping; each section's ``transform`` a :class:`RigidTransform2D` (or None).

    Raises
    ------
    StorageError
        When the file is missing, not JSON or not of the reconstruction's format.
    """
    from pathpipe.reconstruction.run import TRANSFORMS_FORMAT

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"transforms {str(path)!r} unreadable: {exc}") from exc
    if not isinstance(data, dict) or data.get("format") != TRANSFORMS_FORMAT:
        raise StorageError(
            f"transforms {str(path)!r} is not a {TRANSFORMS_FORMAT!r} file "
            "(expected pathpipe reconstruction run's transforms.json)"
        )
    for section in data["sections"]:
        t = section["transform"]
        section["transform"] = None if t is None else RigidTransform2D.from_dict(t)
    return data


def warp_points(xy_um: np.ndarray, transforms: dict[str, Any], section: int) -> np.ndarray:
    """Points of one section (its slide's µm) in the block frame.

    Parameters
    ----------
    xy_um : (N, 2) float ndarray
        ``(x, y)`` µm from the section slide's top-left corner.
    transforms : dict
        :func:`read_transforms`'s result.
    section : int
        The section the points lie on.

    Returns
    -------
    (N, 3) float64 ndarray
        ``(x, y, z)`` µm in the block frame.

    Raises
    ------
    ConfigError
        When the block has no such section, or the section has no transform
        (missing or empty), naming the sections that have one.
    """
    transform, z_um = section_transform(transforms, section)
    xy = transform.apply(np.asarray(xy_um, dtype=float).reshape(-1, 2))
    return np.column_stack([xy, np.full(len(xy), z_um)])


def section_transform(transforms: dict[str, Any], section: int) -> tuple[RigidTransform2D, float]:
    """A section's transform (slide µm -> block µm) and its plane ``z_um``.

    Raises
    ------
    ConfigError
        When the block has no such section, or the section has no transform,
        naming the sections that have one.
    """
    records = {int(s["section"]): s for s in transforms["sections"]}
    usable = sorted(k for k, s in records.items() if s["transform"] is not None)
    record = records.get(int(section))
    if record is None or record["transform"] is None:
        raise ConfigError(
            f"section {section} of block {transforms.get('block')!r} has no transform; "
            f"expected one of {usable}"
        )
    return record["transform"], float(record["z_um"])


def mpp_pair(mpp: float | tuple[float, float] | None) -> tuple[float, float]:
    """``mpp`` as ``(x, y)`` µm/px (None: the coordinates are µm, so ``(1, 1)``).

    Raises
    ------
    ConfigError
        When a value is not a positive finite number, or a pair is not two values.
    """
    if mpp is None:
        return (1.0, 1.0)
    pair = (mpp, mpp) if np.isscalar(mpp) else tuple(mpp)
    if len(pair) != 2 or not all(np.isfinite(v) and v > 0 for v in map(float, pair)):
        raise ConfigError(
            f"mpp={mpp!r}; expected a positive number of µm per pixel or a pair (x, y)"
        )
    return float(pair[0]), float(pair[1])


def _read_table(path: Path) -> Any:
    import pandas as pd

    try:
        if path.suffix.lower() == ".parquet":
            return pd.read_parquet(path)
        return pd.read_csv(path, sep="\t" if path.suffix.lower() == ".tsv" else ",")
    except (OSError, ValueError) as exc:
        raise StorageError(f"points table {str(path)!r} unreadable: {exc}") from exc


def run_warp(
    transforms_path: str | os.PathLike,
    section: int,
    points_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mpp: float | tuple[float, float] | None = None,
    x: str = "x",
    y: str = "y",
) -> Any:
    """Warp a table of points of one section into the block frame (``pathpipe reconstruction warp``).

    Parameters
    ----------
    transforms_path : path-like
        The block's ``transforms.json``.
    section : int
    points_path : path-like
        ``.parquet``, ``.csv`` or ``.tsv`` with columns ``x`` and ``y``.
    out : path-like
        ``.parquet``, ``.csv`` or ``.tsv``: the table with :data:`BLOCK_COLUMNS` added.
    mpp : float or (float, float), optional
        When given, ``x`` and ``y`` are level-0 pixels and µm = pixels × mpp
        (``(x, y)`` for an anisotropic slide); else they are µm.
    x, y : str
        The coordinate columns.

    Returns
    -------
    pandas.DataFrame
        The table written.
    """
    from pathpipe.io.storage import atomic_file

    scale = np.asarray(mpp_pair(mpp))
    table = _read_table(Path(points_path))
    lacking = [c for c in (x, y) if c not in table.columns]
    if lacking:
        raise ConfigError(
            f"points table {str(points_path)!r} lacks columns {lacking}; has {list(table.columns)}"
        )
    xy = table[[x, y]].to_numpy(dtype=float) * scale
    xyz = warp_points(xy, read_transforms(transforms_path), section)
    for name, values in zip(BLOCK_COLUMNS, xyz.T, strict=True):
        table[name] = values
    out = Path(out)
    with atomic_file(out) as tmp:
        if out.suffix.lower() == ".parquet":
            table.to_parquet(tmp, index=False)
        else:
            table.to_csv(tmp, sep="\t" if out.suffix.lower() == ".tsv" else ",", index=False)
    return table


def warp_geojson(
    collection: dict,
    transforms: dict[str, Any],
    section: int,
    *,
    mpp: float | tuple[float, float] | None = None,
    z: bool = False,
) -> dict:
    """A GeoJSON FeatureCollection of one section in the block frame (µm).

    Parameters
    ----------
    collection : dict
        A FeatureCollection (:func:`~pathpipe.reconstruction.geojson.read_geojson`).
    transforms : dict
        :func:`read_transforms`'s result.
    section : int
    mpp : float or (float, float), optional
        When given, positions are level-0 pixels (QuPath's export) of this µm/px;
        else µm.
    z : bool
        Also write ``z_um`` as every position's third coordinate.

    Returns
    -------
    dict
        A copy with positions in block µm, every feature's ``properties`` kept
        and ``block_z_um``, ``block_section`` added, and a foreign member
        ``pathpipe_frame`` saying so. Rings of a mirrored section are reversed
        (orientation kept).
    """
    from pathpipe.reconstruction.geojson import map_geometry

    transform, z_um = section_transform(transforms, section)
    scale = np.asarray(mpp_pair(mpp))

    def fn(p: np.ndarray) -> np.ndarray:
        xy = transform.apply(p * scale)
        return np.column_stack([xy, np.full(len(xy), z_um)]) if z else xy

    features = []
    for feature in collection.get("features", []):
        out = dict(feature)
        out["geometry"] = map_geometry(feature.get("geometry"), fn, mirrors=transform.mirrored)
        out["properties"] = {
            **(feature.get("properties") or {}),
            "block_z_um": z_um,
            "block_section": int(section),
        }
        features.append(out)
    return {
        **collection,
        "features": features,
        "pathpipe_frame": (
            f"block {transforms.get('block')!r}: x, y µm in the block frame"
            + (", z µm" if z else "; z µm in properties.block_z_um")
        ),
    }


def run_warp_geojson(
    transforms_path: str | os.PathLike,
    section: int,
    geojson_path: str | os.PathLike,
    out: str | os.PathLike,
    *,
    mpp: float | tuple[float, float] | None = None,
    z: bool = False,
) -> dict:
    """Warp a GeoJSON file of one section into the block frame (``warp --geojson``).

    See :func:`warp_geojson`; the output is written atomically.
    """
    from pathpipe.io.storage import atomic_file
    from pathpipe.reconstruction.geojson import read_geojson

    warped = warp_geojson(
        read_geojson(geojson_path), read_transforms(transforms_path), section, mpp=mpp, z=z
    )
    with atomic_file(Path(out)) as tmp:
        Path(tmp).write_text(json.dumps(warped), encoding="utf-8")
    return warped
