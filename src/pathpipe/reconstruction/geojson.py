"""GeoJSON geometries (QuPath's exports) as the reconstruction reads and warps them.

Pure functions on the parsed JSON (dicts and lists): :func:`map_geometry` maps
every coordinate of a geometry through a function of ``(N, 2)`` arrays,
reversing rings when the map mirrors the plane; :func:`class_polygons` lists
the polygons of one classification; :func:`read_geojson` reads a file.

Coordinates are whatever the file holds (QuPath: level-0 pixels ``(x, y)``
from the slide's top-left corner, y down). Ring orientation: RFC 7946 §3.1.6
asks for exterior rings counter-clockwise and holes clockwise (in a y-up
frame; QuPath neither writes nor needs it). A mirror reverses every ring's
turning direction, so :func:`map_geometry` reverses the vertex order of each
ring when the map's determinant is negative: every ring keeps the orientation
it had in the input.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError

__all__ = [
    "GEOMETRY_TYPES",
    "class_names",
    "class_polygons",
    "map_geometry",
    "read_geojson",
    "ring_area",
]

#: Geometry types :func:`map_geometry` maps, with the nesting depth of their
#: coordinate arrays above a position (0: a position, 1: a list of positions…).
GEOMETRY_TYPES = {
    "Point": 0,
    "MultiPoint": 1,
    "LineString": 1,
    "MultiLineString": 2,
    "Polygon": 2,
    "MultiPolygon": 3,
}


def ring_area(ring: Any) -> float:
    """Signed area (shoelace) of a ring ``[[x, y], ...]``: > 0 when counter-clockwise in x-right, y-up."""
    p = np.asarray(ring, dtype=float)[:, :2]
    x, y = p[:, 0], p[:, 1]
    return 0.5 * float(np.sum(x * np.roll(y, -1) - np.roll(x, -1) * y))


def _map_coords(coords: Any, depth: int, fn: Callable, reverse_rings: bool, rings: bool) -> Any:
    if depth == 0:
        return fn(np.asarray([coords], dtype=float)[:, :2])[0].tolist()
    if depth == 1:
        if len(coords) == 0:
            return []
        out = fn(np.asarray(coords, dtype=float)[:, :2]).tolist()
        return out[::-1] if rings and reverse_rings else out
    return [_map_coords(c, depth - 1, fn, reverse_rings, rings) for c in coords]


def map_geometry(geometry: dict | None, fn: Callable, *, mirrors: bool = False) -> dict | None:
    """A copy of ``geometry`` with every position ``(x, y)`` mapped by ``fn``.

    Parameters
    ----------
    geometry : dict or None
        A GeoJSON geometry (:data:`GEOMETRY_TYPES` or a ``GeometryCollection``
        of them); None (a feature without geometry) stays None.
    fn : callable
        ``(N, 2) float ndarray -> (N, k) array``; the output's columns become
        the positions (``k = 3`` writes 3D positions).
    mirrors : bool
        Whether ``fn`` reverses orientation (its linear part has a negative
        determinant); then each polygon ring's vertex order is reversed, so it
        keeps its input orientation.

    Raises
    ------
    ConfigError
        For a geometry type not in :data:`GEOMETRY_TYPES` nor ``GeometryCollection``.
    """
    if geometry is None:
        return None
    kind = geometry.get("type")
    if kind == "GeometryCollection":
        out = dict(geometry)
        out["geometries"] = [map_geometry(g, fn, mirrors=mirrors) for g in geometry["geometries"]]
        return out
    if kind not in GEOMETRY_TYPES:
        raise ConfigError(
            f"GeoJSON geometry type {kind!r}; expected one of "
            f"{[*GEOMETRY_TYPES, 'GeometryCollection']}"
        )
    out = dict(geometry)
    rings = kind in ("Polygon", "MultiPolygon")
    out["coordinates"] = _map_coords(
        geometry["coordinates"], GEOMETRY_TYPES[kind], fn, mirrors, rings
    )
    return out


def read_geojson(path: str | os.PathLike) -> dict:
    """A GeoJSON file as a FeatureCollection (a bare Feature or list of features is wrapped).

    Raises
    ------
    StorageError
        When the file is missing, not JSON, or holds no feature(s).
    """
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise StorageError(f"GeoJSON {str(path)!r} unreadable: {exc}") from exc
    if isinstance(data, list):
        data = {"type": "FeatureCollection", "features": data}
    elif isinstance(data, dict) and data.get("type") == "Feature":
        data = {"type": "FeatureCollection", "features": [data]}
    if not isinstance(data, dict) or data.get("type") != "FeatureCollection":
        kind = data.get("type") if isinstance(data, dict) else type(data).__name__
        raise StorageError(
            f"GeoJSON {str(path)!r} is a {kind!r}; expected a FeatureCollection, "
            "a Feature or a list of features (QuPath's export)"
        )
    return data


def _class_name(feature: dict) -> str | None:
    """QuPath's ``properties.classification.name`` (or a plain ``classification`` string)."""
    props = feature.get("properties") or {}
    c = props.get("classification")
    if isinstance(c, dict):
        return c.get("name")
    return c if isinstance(c, str) else None


def class_polygons(collection: dict, name: str) -> list[list[np.ndarray]]:
    """The polygons of features classified ``name``: each a list of rings, exterior first.

    Returns
    -------
    list of list of (N, 2) float64 ndarray
        One entry per polygon (a MultiPolygon gives several); the first ring
        is the exterior, the others are holes. Other geometry types are ignored.
    """
    out = []
    for feature in collection.get("features", []):
        geometry = feature.get("geometry") or {}
        if _class_name(feature) != name:
            continue
        kind = geometry.get("type")
        if kind == "Polygon":
            polys = [geometry["coordinates"]]
        elif kind == "MultiPolygon":
            polys = geometry["coordinates"]
        else:
            continue
        for poly in polys:
            rings = [np.asarray(r, dtype=float)[:, :2] for r in poly if len(r) >= 3]
            if rings:
                out.append(rings)
    return out


def class_names(collection: dict) -> list[str]:
    """The classification names the features of ``collection`` carry, sorted."""
    return sorted({n for f in collection.get("features", []) if (n := _class_name(f))})
