"""Tile-level features: aggregates of nuclear features, counts, densities,
nearest-neighbour distances and cell-graph statistics (private; used by
:mod:`pathpipe.features.run`).

CellFiNet aggregates each nuclear feature over a tile's nuclei by its median and
standard deviation (``<feature>_med``, ``<feature>_std``) and adds spatial and graph
features. Graph features use a k-nearest-neighbour cell graph (optionally the
Delaunay triangulation) built with igraph; per-phenotype statistics are taken over
the nodes of that phenotype in the graph of all cells.

NaN policy: a statistic over no values is NaN (a tile without nuclei, a phenotype
absent from a tile); a standard deviation over one value is 0; graph measures of a
graph with fewer than 2 nodes are NaN. Counts and densities are always defined.
"""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

__all__ = [
    "GRAPH_MEASURES",
    "aggregate_nuclear",
    "cell_graph",
    "graph_features",
    "spatial_features",
]

GRAPH_MEASURES = ("degree", "betweenness", "closeness", "clustering")
"""Node measures of the cell graph: degree; betweenness centrality normalised by
``(n - 1)(n - 2) / 2``; closeness centrality (igraph: inverse mean distance to the
reachable nodes, edge length in µm); local clustering coefficient (transitivity;
0 for nodes of degree < 2)."""


def _stat(values: np.ndarray, how: str) -> float:
    if values.size == 0:
        return float("nan")
    if how == "med":
        return float(np.median(values))
    if how == "mean":
        return float(np.mean(values))
    if how == "max":
        return float(np.max(values))
    if how == "std":
        return float(np.std(values)) if values.size > 1 else 0.0
    raise ValueError(how)


def aggregate_nuclear(
    features: np.ndarray, names: Sequence[str], *, suffix: str = ""
) -> dict[str, float]:
    """Median and standard deviation of each nuclear feature over a tile's nuclei.

    Parameters
    ----------
    features : (n, F) float ndarray
        One row per nucleus (NaN where a feature is undefined; NaNs are ignored).
    names : sequence of str
        The F feature names.
    suffix : str
        Inserted before ``_med`` / ``_std`` (e.g. ``"_lymphocyte"``).

    Returns
    -------
    dict
        ``<name><suffix>_med`` and ``<name><suffix>_std`` for every feature; NaN
        without nuclei (or when every value is NaN), std 0 for one value.
    """
    out: dict[str, float] = {}
    x = np.asarray(features, dtype=np.float64).reshape(-1, len(names))
    n_valid = np.sum(~np.isnan(x), axis=0)
    with warnings.catch_warnings():  # all-NaN columns: NaN, as documented
        warnings.simplefilter("ignore", RuntimeWarning)
        med = np.nanmedian(x, axis=0) if len(x) else np.full(len(names), np.nan)
        std = np.nanstd(x, axis=0) if len(x) else np.full(len(names), np.nan)
    std = np.where(n_valid == 1, 0.0, std)
    std = np.where(n_valid == 0, np.nan, std)
    for k, name in enumerate(names):
        out[f"{name}{suffix}_med"] = float(med[k])
        out[f"{name}{suffix}_std"] = float(std[k])
    return out


def spatial_features(
    xy_um: np.ndarray,
    phenotypes: np.ndarray,
    classes: Sequence[str],
    *,
    tissue_area_mm2: float,
) -> dict[str, float]:
    """Counts, densities and nearest-neighbour distances of a tile's nuclei.

    Parameters
    ----------
    xy_um : (n, 2) float ndarray
        Centroids in µm (any common origin).
    phenotypes : (n,) ndarray of str
    classes : sequence of str
    tissue_area_mm2 : float
        Tissue area of the tile (tile area x tissue fraction).

    Returns
    -------
    dict
        ``n_nuclei``, ``density_per_mm2``; per class ``n_<c>``, ``density_<c>_per_mm2``,
        ``fraction_<c>``; ``nn_dist_um_mean`` (all nuclei); per ordered pair of classes
        ``nn_dist_<a>_to_<b>_um_mean``: mean over nuclei of class a of the distance to
        the nearest other nucleus of class b (within a class when a == b).
    """
    xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
    ph = np.asarray(phenotypes).astype(str)
    n = len(xy)
    area = float(tissue_area_mm2)
    out: dict[str, float] = {
        "n_nuclei": float(n),
        "density_per_mm2": n / area if area > 0 else float("nan"),
    }
    for c in classes:
        k = int(np.sum(ph == c))
        out[f"n_{c}"] = float(k)
        out[f"density_{c}_per_mm2"] = k / area if area > 0 else float("nan")
        out[f"fraction_{c}"] = k / n if n else float("nan")
    out["nn_dist_um_mean"] = _nn_mean(xy, xy, same=True)
    for a in classes:
        for b in classes:
            src, dst = xy[ph == a], xy[ph == b]
            out[f"nn_dist_{a}_to_{b}_um_mean"] = _nn_mean(src, dst, same=a == b)
    return out


def _nn_mean(src: np.ndarray, dst: np.ndarray, *, same: bool) -> float:
    from scipy.spatial import cKDTree

    need = 2 if same else 1
    if len(src) == 0 or len(dst) < need:
        return float("nan")
    d, _ = cKDTree(dst).query(src, k=need)
    d = d[:, -1] if same else d
    return float(np.mean(d))


def cell_graph(xy_um: np.ndarray, *, k: int = 5, method: str = "knn") -> Any:
    """Undirected cell graph of a tile's nuclei (igraph), edge attribute ``length`` in µm.

    Parameters
    ----------
    xy_um : (n, 2) float ndarray
    k : int
        Neighbours per nucleus of the kNN graph (an edge joins i and j when either is
        among the other's k nearest).
    method : {"knn", "delaunay"}

    Returns
    -------
    igraph.Graph
    """
    import igraph as ig

    xy = np.asarray(xy_um, dtype=np.float64).reshape(-1, 2)
    n = len(xy)
    edges: set[tuple[int, int]] = set()
    if n >= 2 and method == "knn":
        from scipy.spatial import cKDTree

        kk = min(k, n - 1)
        _, idx = cKDTree(xy).query(xy, k=kk + 1)
        for i in range(n):
            for j in np.atleast_1d(idx[i])[1:]:
                edges.add((min(i, int(j)), max(i, int(j))))
    elif n >= 3 and method == "delaunay":
        from scipy.spatial import Delaunay, QhullError

        try:
            tri = Delaunay(xy)
        except QhullError:  # collinear points: no triangulation, fall back to a chain
            order = np.lexsort(xy.T[::-1])
            edges = {(min(a, b), max(a, b)) for a, b in itertools.pairwise(order)}
        else:
            for s in tri.simplices:
                for a, b in ((s[0], s[1]), (s[1], s[2]), (s[0], s[2])):
                    edges.add((int(min(a, b)), int(max(a, b))))
    elif n == 2 and method == "delaunay":
        edges.add((0, 1))
    elif method not in ("knn", "delaunay"):
        from pathpipe.errors import ConfigError

        raise ConfigError(f"graph method {method!r}; expected 'knn' or 'delaunay'")
    e = sorted(edges)
    g = ig.Graph(n=n, edges=e)
    if e:
        a, b = np.array(e).T
        g.es["length"] = np.hypot(*(xy[a] - xy[b]).T).tolist()
    return g


def graph_features(
    graph: Any, phenotypes: np.ndarray, classes: Sequence[str], *, prefix: str = "graph"
) -> dict[str, float]:
    """Mean, std and max of each :data:`GRAPH_MEASURES` node measure, for all cells
    and per phenotype (over the nodes of that phenotype in the whole graph).

    Returns
    -------
    dict
        ``<prefix>_<measure>_<mean|std|max>`` and ``<prefix>_<measure>_<c>_<stat>``.
    """
    n = graph.vcount()
    ph = np.asarray(phenotypes).astype(str)
    if n >= 2:
        weights = graph.es["length"] if graph.ecount() else None
        measures = {
            "degree": np.asarray(graph.degree(), dtype=np.float64),
            "betweenness": np.asarray(graph.betweenness(weights=weights), dtype=np.float64)
            / max(1.0, (n - 1) * (n - 2) / 2.0),
            "closeness": np.nan_to_num(
                np.asarray(graph.closeness(weights=weights), dtype=np.float64), nan=0.0
            ),
            "clustering": np.asarray(
                graph.transitivity_local_undirected(mode="zero"), dtype=np.float64
            ),
        }
    else:
        measures = {m: np.zeros(0) for m in GRAPH_MEASURES}
    out: dict[str, float] = {}
    for m in GRAPH_MEASURES:
        v = measures[m]
        for how in ("mean", "std", "max"):
            out[f"{prefix}_{m}_{how}"] = _stat(v, how)
        for c in classes:
            vc = v[ph == c] if len(v) else v
            for how in ("mean", "std", "max"):
                out[f"{prefix}_{m}_{c}_{how}"] = _stat(vc, how)
    return out
