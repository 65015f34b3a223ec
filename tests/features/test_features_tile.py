"""Tile-level features (aggregates, spatial, cell graph)."""

from __future__ import annotations

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.features.tile import (
    aggregate_nuclear,
    cell_graph,
    graph_features,
    spatial_features,
)

CLASSES = ("tumour", "lymphocyte")


def test_aggregates_are_median_and_std_with_the_nan_policy() -> None:
    x = np.array([[1.0, 5.0], [2.0, np.nan], [9.0, np.nan]])
    out = aggregate_nuclear(x, ["a", "b"])
    assert out["a_med"] == 2.0 and out["a_std"] == pytest.approx(np.std([1, 2, 9]))
    assert out["b_med"] == 5.0 and out["b_std"] == 0.0  # one valid value
    empty = aggregate_nuclear(np.zeros((0, 2)), ["a", "b"], suffix="_lymphocyte")
    assert set(empty) == {
        "a_lymphocyte_med",
        "a_lymphocyte_std",
        "b_lymphocyte_med",
        "b_lymphocyte_std",
    }
    assert all(np.isnan(v) for v in empty.values())


def test_spatial_features_by_hand() -> None:
    # tumour at (0,0), (3,0); lymphocyte at (0,4): distances 3 (t-t), 4 (t0-l), 5 (t1-l)
    xy = np.array([[0.0, 0.0], [3.0, 0.0], [0.0, 4.0]])
    ph = np.array(["tumour", "tumour", "lymphocyte"])
    out = spatial_features(xy, ph, CLASSES, tissue_area_mm2=0.5)
    assert out["n_nuclei"] == 3 and out["density_per_mm2"] == 6.0
    assert out["n_tumour"] == 2 and out["density_lymphocyte_per_mm2"] == 2.0
    assert out["fraction_lymphocyte"] == pytest.approx(1 / 3)
    assert out["nn_dist_um_mean"] == pytest.approx((3 + 3 + 4) / 3)
    assert out["nn_dist_tumour_to_tumour_um_mean"] == 3.0
    assert out["nn_dist_tumour_to_lymphocyte_um_mean"] == pytest.approx((4 + 5) / 2)
    assert out["nn_dist_lymphocyte_to_tumour_um_mean"] == 4.0
    assert np.isnan(out["nn_dist_lymphocyte_to_lymphocyte_um_mean"])  # only one lymphocyte


def test_spatial_features_of_an_empty_tile_are_defined() -> None:
    out = spatial_features(np.zeros((0, 2)), np.array([]), CLASSES, tissue_area_mm2=0.1)
    assert out["n_nuclei"] == 0 and out["density_per_mm2"] == 0
    assert np.isnan(out["fraction_tumour"]) and np.isnan(out["nn_dist_um_mean"])


def test_knn_graph_and_measures_on_a_path() -> None:
    # four cells on a line, 1 µm apart; k=1 joins each to its nearest -> path 0-1-2-3
    xy = np.array([[0.0, 0.0], [1.0, 0.0], [2.0, 0.0], [3.0, 0.0]])
    g = cell_graph(xy, k=1)
    assert sorted(tuple(e.tuple) for e in g.es) == [(0, 1), (1, 2), (2, 3)]
    ph = np.array(["tumour", "tumour", "lymphocyte", "lymphocyte"])
    out = graph_features(g, ph, CLASSES)
    assert out["graph_degree_mean"] == 1.5 and out["graph_degree_max"] == 2
    # betweenness on a path of 4: inner nodes lie on 2 of the 3 pairs' shortest paths
    assert out["graph_betweenness_max"] == pytest.approx(2 / 3)
    assert out["graph_clustering_mean"] == 0.0
    # closeness of node 0: 1 / mean(1, 2, 3) = 0.5; inner nodes 1 / mean(1, 1, 2) = 0.75
    assert out["graph_closeness_max"] == pytest.approx(0.75)
    assert out["graph_closeness_tumour_mean"] == pytest.approx((0.5 + 0.75) / 2)


def test_delaunay_triangle_has_clustering_one_and_degenerate_graphs_are_nan() -> None:
    g = cell_graph(np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0]]), method="delaunay")
    out = graph_features(g, np.array(["tumour"] * 3), CLASSES)
    assert out["graph_clustering_mean"] == 1.0 and out["graph_degree_mean"] == 2
    assert np.isnan(out["graph_degree_lymphocyte_mean"])
    one = graph_features(cell_graph(np.array([[0.0, 0.0]])), np.array(["tumour"]), CLASSES)
    assert all(np.isnan(v) for v in one.values())
    line = cell_graph(np.array([[0.0, 0.0], [1.0, 1.0], [2.0, 2.0]]), method="delaunay")
    assert line.ecount() == 2  # collinear: a chain
    with pytest.raises(ConfigError, match="knn"):
        cell_graph(np.zeros((3, 2)), method="gabriel")
