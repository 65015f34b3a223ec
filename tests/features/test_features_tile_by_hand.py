"""Tile features of one hand-drawn tile, through run_features, against values
worked out by hand.

The tile is 32 px at 0.5 µm/px (16 µm square, 256 µm²) cut from level-0 pixels of
0.25 µm (2 level-0 px per tile px), with a tissue fraction of 0.5. Its five
nuclei are filled rectangles (tile px: columns, rows; area at 0.25 µm² per px):

=======  ==========  =====  =====  ==========  ==========  ======
nucleus  phenotype   cols   rows   centroid    area (µm²)  border
=======  ==========  =====  =====  ==========  ==========  ======
T1       tumour      2-5    2-5    3.5, 3.5    4
T2       tumour      13-18  1-6    15.5, 3.5   9
T3       tumour      3-4    12-13  3.5, 12.5   1
L1       lymphocyte  15-16  11-14  15.5, 12.5  2
L2       lymphocyte  20-27  24-31  23.5, 27.5  16          yes
=======  ==========  =====  =====  ==========  ==========  ======

Centroid distances in tile px: T1-T2 12, T1-T3 9, T1-L1 15, T2-T3 15, T2-L1 9,
T3-L1 12, L1-L2 17, T3-L2 25, T2-L2 √640 ≈ 25.3, T1-L2 √976 ≈ 31.2; one tile px
is 0.5 µm.
"""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import zarr

from pathpipe.features.run import FeatureParams, run_features
from pathpipe.stain import RUIFROK_HE

CLASSES = ["tumour", "lymphocyte", "other"]
MPP, TILE, L0_SCALE, L0_ORIGIN = 0.5, 32, 2.0, (1000, 2000)
# label, phenotype, columns, rows (end excluded), touches the tile edge; the border
# nucleus is not last, so dropping it shifts the rows after it
NUCLEI = [
    (1, "tumour", (2, 6), (2, 6), False),  # T1
    (2, "lymphocyte", (20, 28), (24, 32), True),  # L2
    (3, "tumour", (13, 19), (1, 7), False),  # T2
    (4, "tumour", (3, 5), (12, 14), False),  # T3
    (5, "lymphocyte", (15, 17), (11, 15), False),  # L1
]


@pytest.fixture(scope="module")
def tile_row(tmp_path_factory: pytest.TempPathFactory) -> pd.Series:
    d = tmp_path_factory.mktemp("by_hand")
    labels = np.zeros((1, TILE, TILE), np.int32)
    rows = []
    for label, phenotype, (c0, c1), (r0, r1), border in NUCLEI:
        labels[0, r0:r1, c0:c1] = label
        t_col, t_row = (c0 + c1 - 1) / 2, (r0 + r1 - 1) / 2
        rows.append(
            {
                "nucleus_id": label - 1,
                "tile": 0,
                "label": label,
                # segmentation's frame: l0 = l0_origin + (t + 0.5) s - 0.5
                "l0_x": L0_ORIGIN[0] + (t_col + 0.5) * L0_SCALE - 0.5,
                "l0_y": L0_ORIGIN[1] + (t_row + 0.5) * L0_SCALE - 0.5,
                "phenotype": phenotype,
                "touches_border": border,
            }
        )
    tiles = zarr.open_group(str(d / "tiles.zarr"), mode="w")
    rgb = np.full((1, TILE, TILE, 3), 230, np.uint8)
    rgb[0][labels[0] > 0] = (90, 60, 140)
    tiles.create_array("tiles", data=rgb)
    tiles.create_array("l0_xy", data=np.array([L0_ORIGIN], np.int64))
    tiles.create_group("qc").create_array("tissue_fraction", data=np.array([0.5], np.float32))
    tiles.attrs["pathpipe"] = {"stage": "tiling", "complete": True, "params": {"mpp": MPP}}
    seg = zarr.open_group(str(d / "nuclei.zarr"), mode="w")
    seg.create_array("labels", data=labels)
    seg.attrs["pathpipe"] = {
        "stage": "segmentation",
        "complete": True,
        "classes": CLASSES,
        "l0_scale": L0_SCALE,
        "stain": {"matrix": RUIFROK_HE.tolist()},
    }
    pd.DataFrame(rows).to_parquet(d / "nuclei.parquet")
    run_features(
        d / "tiles.zarr",
        d / "nuclei.zarr",
        d / "nuclei.parquet",
        nuclear_out=d / "nuclear.parquet",
        tile_out=d / "tile.parquet",
        params=FeatureParams(
            families=("geometry",), channels=("grey",), per_phenotype=("tumour", "lymphocyte")
        ),
    )
    nuclear = pd.read_parquet(d / "nuclear.parquet")
    assert nuclear["area_um2"].tolist() == [4.0, 16.0, 9.0, 1.0, 2.0]  # the drawing is right
    (row,) = pd.read_parquet(d / "tile.parquet").to_dict("records")
    return pd.Series(row)


def test_medians_leave_the_border_nucleus_out(tile_row) -> None:
    # T1, T2, T3, L1: 4, 9, 1, 2 µm² (with L2's 16 the median would be 4)
    assert tile_row["area_um2_med"] == 3.0
    # deviations from the mean 4: 0, 5, -3, -2
    assert tile_row["area_um2_std"] == pytest.approx(math.sqrt(38 / 4))


def test_per_phenotype_medians_use_that_phenotype_only(tile_row) -> None:
    # tumour: 4, 9, 1 (mean 14/3, squared deviations (121 + 4 + 169) / 9)
    assert tile_row["area_um2_tumour_med"] == 4.0
    assert tile_row["area_um2_tumour_std"] == pytest.approx(math.sqrt(294 / 27))
    # lymphocyte: L1 alone (L2 touches the edge; with it the median would be 9)
    assert tile_row["area_um2_lymphocyte_med"] == 2.0
    assert tile_row["area_um2_lymphocyte_std"] == 0.0
    assert "area_um2_other_med" not in tile_row


def test_counts_and_densities_per_tissue_area(tile_row) -> None:
    # counts keep the border nucleus; tissue area = (32 × 0.5 µm)² × 0.5 = 128 µm²
    # = 1.28e-4 mm²
    assert tile_row["n_nuclei"] == 5
    assert tile_row["n_tumour"] == 3 and tile_row["n_lymphocyte"] == 2
    assert tile_row["n_other"] == 0
    assert tile_row["density_per_mm2"] == pytest.approx(5 / 1.28e-4)  # 39062.5
    assert tile_row["density_tumour_per_mm2"] == pytest.approx(3 / 1.28e-4)
    assert tile_row["density_lymphocyte_per_mm2"] == pytest.approx(2 / 1.28e-4)
    assert tile_row["density_other_per_mm2"] == 0.0
    assert tile_row["fraction_tumour"] == pytest.approx(0.6)


def test_nearest_neighbour_distances_are_in_um(tile_row) -> None:
    # nearest of each (tile px): T1 9, T2 9, T3 9, L1 9, L2 17 -> 53 / 5 = 10.6 px
    assert tile_row["nn_dist_um_mean"] == pytest.approx(5.3)
    # tumour to tumour: T1 9, T2 12, T3 9 -> 10 px
    assert tile_row["nn_dist_tumour_to_tumour_um_mean"] == pytest.approx(5.0)
    # tumour to lymphocyte: T1 15, T2 9, T3 12 -> 12 px
    assert tile_row["nn_dist_tumour_to_lymphocyte_um_mean"] == pytest.approx(6.0)
    # lymphocyte to tumour: L1 9, L2 25 -> 17 px
    assert tile_row["nn_dist_lymphocyte_to_tumour_um_mean"] == pytest.approx(8.5)
    # lymphocyte to lymphocyte: L1-L2 17 px both ways
    assert tile_row["nn_dist_lymphocyte_to_lymphocyte_um_mean"] == pytest.approx(8.5)
    assert np.isnan(tile_row["nn_dist_tumour_to_other_um_mean"])
