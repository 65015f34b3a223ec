"""layer_points: a mask (and image) as points in µm at the working resolution, by hand."""

from __future__ import annotations

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.points import layer_points
from pathpipe.reconstruction.transforms import RigidTransform2D


def test_blocks_by_hand() -> None:
    # 4×4 px at 1 µm/px -> 2×2 blocks of 2 µm; a block is a point when >= half of it is mask
    mask = np.array(
        [
            [1, 1, 0, 0],
            [1, 0, 0, 0],
            [0, 0, 1, 1],
            [0, 0, 0, 1],
        ],
        dtype=bool,
    )
    layer = layer_points(mask, 1.0, 2.0)
    # blocks (0,0): 3/4, (0,1): 0, (1,0): 0, (1,1): 3/4 -> centres (1, 1) and (3, 3) µm
    np.testing.assert_allclose(layer.xy, [[1.0, 1.0], [3.0, 3.0]])
    assert layer.working_mpp == 2.0 and layer.rgb is None and len(layer) == 2


def test_anisotropic_pixels_and_mean_colour() -> None:
    # x: 1 µm/px, y: 2 µm/px; working 2 µm: pairs of columns, single rows
    mask = np.array([[1, 1, 1, 0], [0, 0, 1, 1]], dtype=bool)
    rgb = np.zeros((2, 4, 3), np.uint8)
    rgb[0, :2] = [[10, 20, 30], [30, 40, 50]]
    layer = layer_points(mask, (1.0, 2.0), 2.0, rgb=rgb)
    # row 0: block cols 0-1 (2/2) and 2-3 (1/2); row 1: cols 0-1 (0), 2-3 (2/2)
    np.testing.assert_allclose(layer.xy, [[1.0, 1.0], [3.0, 1.0], [3.0, 3.0]])
    np.testing.assert_array_equal(layer.rgb[0], [20, 30, 40])


def test_coarser_mask_is_sampled_at_the_working_grid() -> None:
    # one 4 µm pixel, working 2 µm: four points at the working pixel centres
    layer = layer_points(np.ones((1, 1), bool), 4.0, 2.0)
    np.testing.assert_allclose(sorted(map(tuple, layer.xy)), [(1, 1), (1, 3), (3, 1), (3, 3)])


def test_contour_outlines_the_object_not_the_image_border() -> None:
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True  # a 10 µm square from 5 to 15 µm
    layer = layer_points(mask, 1.0, 1.0)
    assert len(layer) == 100
    # marching squares between pixel centres: the outline lies at 5 and 15 µm (± half a pixel)
    lo, hi = layer.contour.min(axis=0), layer.contour.max(axis=0)
    np.testing.assert_allclose(lo, [5.0, 5.0], atol=0.5)
    np.testing.assert_allclose(hi, [15.0, 15.0], atol=0.5)
    full = layer_points(np.ones((20, 20), bool), 1.0, 1.0)
    assert len(full.contour) == 0  # tissue to every border has no outline


def test_transformed_moves_points_and_contour() -> None:
    mask = np.zeros((10, 10), bool)
    mask[2:5, 3:8] = True
    layer = layer_points(mask, 2.0, 2.0)
    t = RigidTransform2D(30.0, 5.0, -2.0, True)
    moved = layer.transformed(t)
    np.testing.assert_allclose(moved.xy, t.apply(layer.xy))
    np.testing.assert_allclose(moved.contour, t.apply(layer.contour))


def test_empty_mask_gives_an_empty_layer() -> None:
    layer = layer_points(np.zeros((8, 8), bool), 1.0, 2.0)
    assert layer.empty and layer.xy.shape == (0, 2) and len(layer.contour) == 0


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask": np.zeros((4, 4), np.uint8)}, "expected a 2D bool array"),
        ({"mpp": 0.0}, "mpp x=0.0; expected a positive number"),
        ({"working_mpp": -1.0}, "working_mpp=-1.0"),
        ({"rgb": np.zeros((4, 3, 3), np.uint8)}, r"rgb of shape \(4, 3, 3\); expected \(4, 4, 3\)"),
    ],
)
def test_bad_input_names_what_was_expected(kwargs: dict, message: str) -> None:
    args = {"mask": np.zeros((4, 4), bool), "mpp": 1.0, "working_mpp": 2.0} | kwargs
    with pytest.raises(ConfigError, match=message):
        layer_points(args.pop("mask"), args.pop("mpp"), args.pop("working_mpp"), **args)
