"""icp_align and the paper's band (Algorithm 1), by hand and on a generated pair."""

from __future__ import annotations

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.reconstruction import RigidTransform2D, layer_points
from pathpipe.reconstruction.icp import band_mask, icp_align, outline_normals
from pathpipe.reconstruction.phantom import Phantom, canvas_transform
from pathpipe.reconstruction.transforms import rotation_error_deg

SIZE, W = 4000.0, 16.0


def test_band_rectangle_and_cross_by_hand() -> None:
    # a 7×7 grid of points 0..6: extent 6, centre 3; half-width 1/6 of 6 = 1 -> |u - 3| <= 1
    u, v = np.meshgrid(np.arange(7.0), np.arange(7.0))
    xy = np.column_stack([u.ravel(), v.ravel()])
    rect = band_mask(xy, 1 / 6, cross=False)
    cross = band_mask(xy, 1 / 6, cross=True)
    assert rect.sum() == 3 * 3  # Algorithm 1, line 2: u AND v in range
    assert cross.sum() == 3 * 7 + 7 * 3 - 3 * 3  # the results text: u OR v in range
    assert set(map(tuple, xy[rect])) == {(a, b) for a in (2, 3, 4) for b in (2, 3, 4)}
    assert band_mask(np.zeros((0, 2)), 0.2, cross=True).shape == (0,)


def test_outline_normals_are_perpendicular_to_a_line() -> None:
    xy = np.column_stack([np.linspace(0, 10, 41), np.full(41, 5.0)])
    normals = outline_normals(xy)
    np.testing.assert_allclose(np.abs(normals[:, 1]), 1.0, atol=1e-9)


def _pair(angle: float, shift: tuple[float, float]):
    phantom = Phantom(SIZE, 3)
    truth = canvas_transform(SIZE, angle, shift)
    fixed = layer_points(phantom.mask(W), W, W)
    moving = layer_points(phantom.mask(W, truth), W, W)
    return fixed, moving, truth


def _start_off(truth: RigidTransform2D, moving, degrees: float) -> RigidTransform2D:
    """The truth turned by ``degrees`` about the moving section's centroid."""
    c = moving.xy.mean(axis=0)
    turn = RigidTransform2D(degrees)
    turn = RigidTransform2D(degrees, *(c - turn.apply(c[None])[0]))
    return truth.compose(turn)


def test_outline_icp_converges_where_filled_mask_icp_stalls() -> None:
    """The measurement behind the default subset (see the icp module docstring)."""
    fixed, moving, truth = _pair(37.0, (300.0, -500.0))
    init = _start_off(truth, moving, 5.0)
    contour = icp_align(fixed, moving, init, subset="contour")
    full = icp_align(fixed, moving, init, subset="full", iterations=1000)
    assert rotation_error_deg(contour.transform, truth) < 0.2
    assert rotation_error_deg(full.transform, truth) > 0.5  # however many iterations
    assert contour.points_used == len(moving.contour)
    assert full.points_used == len(moving)
    assert contour.seconds > 0 and contour.fitness > 0.99


@pytest.mark.parametrize("subset", ["full", "band_and", "band_or", "voxel", "contour"])
def test_every_subset_improves_on_a_start_off_by_a_few_degrees(subset: str) -> None:
    fixed, moving, truth = _pair(20.0, (250.0, -150.0))
    init = _start_off(truth, moving, 3.0)
    result = icp_align(fixed, moving, init, subset=subset)
    assert rotation_error_deg(result.transform, truth) < 3.0
    assert result.transform.mirrored is False


def test_a_mirrored_start_is_kept_and_solved() -> None:
    phantom = Phantom(SIZE, 3)
    truth = canvas_transform(SIZE, 135.0, (-700.0, 200.0), mirrored=True)
    fixed = layer_points(phantom.mask(W), W, W)
    moving = layer_points(phantom.mask(W, truth), W, W)
    result = icp_align(fixed, moving, _start_off(truth, moving, 4.0), subset="contour")
    assert result.transform.mirrored
    assert rotation_error_deg(result.transform, truth) < 0.2


def test_bad_subsets_and_empty_layers_are_refused() -> None:
    fixed, moving, _ = _pair(0.0, (0.0, 0.0))
    empty = layer_points(np.zeros((10, 10), bool), W, W)
    with pytest.raises(ConfigError, match=r"subset='band'; expected one of \['full'"):
        icp_align(fixed, moving, RigidTransform2D(), subset="band")
    with pytest.raises(ConfigError, match=r"ICP of layers with .* and 0 points"):
        icp_align(fixed, empty, RigidTransform2D())
    filled = layer_points(np.ones((10, 10), bool), W, W)  # no outline
    with pytest.raises(ConfigError, match="subset 'contour' has 0 moving"):
        icp_align(fixed, filled, RigidTransform2D(), subset="contour")
