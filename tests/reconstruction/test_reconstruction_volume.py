"""The volume helpers (pathpipe.reconstruction.volume, outputs) on tiny hand-made arrays."""

from __future__ import annotations

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.outputs import marching_cubes_mesh
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import (
    VolumeGrid,
    interpolate_plane,
    plane_from_image,
    volume_between_ends_mm3,
)

IMAGE = np.array([[1, 2, 3], [4, 5, 6]], dtype=np.uint8)  # 2 rows, 3 columns, 1 µm/px


def _grid(transform: RigidTransform2D) -> VolumeGrid:
    centres = np.array([[0.5, 0.5], [2.5, 0.5], [0.5, 1.5], [2.5, 1.5]])
    moved = transform.apply(centres)
    return VolumeGrid.around(
        moved.min(axis=0),
        moved.max(axis=0),
        first_section=0,
        planes=1,
        spacing_um=10.0,
        working_mpp=1.0,
        margin_px=0,
    )


def test_identity_resamples_the_image_unchanged() -> None:
    grid = _grid(RigidTransform2D())
    assert grid.origin_um == (0.0, 0.5, 0.5) and grid.shape == (1, 2, 3)
    np.testing.assert_array_equal(
        plane_from_image(IMAGE, (1.0, 1.0), RigidTransform2D(), grid), IMAGE
    )


def test_a_quarter_turn_moves_each_pixel_where_the_transform_says() -> None:
    # (x, y) -> (-y, x): pixel (row r, column c) lands at x = -(r + 0.5), y = c + 0.5
    turn = RigidTransform2D(90.0)
    grid = _grid(turn)
    assert grid.shape == (1, 3, 2)
    plane = plane_from_image(IMAGE, (1.0, 1.0), turn, grid)
    for r in range(2):
        for c in range(3):
            col = round(-(r + 0.5) - grid.origin_um[2])
            row = round(c + 0.5 - grid.origin_um[1])
            assert plane[row, col] == IMAGE[r, c]


def test_outside_the_image_is_the_fill_value() -> None:
    shift = RigidTransform2D(0.0, 10.0, 0.0)
    plane = plane_from_image(IMAGE, (1.0, 1.0), shift, _grid(RigidTransform2D()), fill=255)
    assert (plane == 255).all()


def test_volume_between_the_end_planes_and_the_mesh_of_a_box() -> None:
    planes = np.zeros((3, 6, 7), dtype=bool)
    planes[:, 1:5, 1:6] = True  # 4 × 5 voxels of 2 × 2 µm in 3 planes 10 µm apart
    grid = VolumeGrid((0.0, 0.0, 0.0), planes.shape, (10.0, 2.0, 2.0))
    # trapezoid: 2 spacings × 80 µm² = 1600 µm³
    assert volume_between_ends_mm3(planes, grid.spacing_um) == pytest.approx(1600e-9)
    verts, _faces, area, volume = marching_cubes_mesh(planes, grid)
    # the surface lies half a voxel outside: a 10 × 8 × 30 µm box, corners chamfered
    assert 0.7 * 2400e-9 < volume < 2400e-9
    assert 0.7 * 1240e-6 < area < 1240e-6
    assert verts[:, 2].min() == pytest.approx(-5.0) and verts[:, 2].max() == pytest.approx(25.0)
    assert verts[:, 0].min() == pytest.approx(1.0) and verts[:, 0].max() == pytest.approx(11.0)


def test_interpolation_rejects_a_position_outside_the_gap() -> None:
    with pytest.raises(ConfigError, match=r"t=1\.5"):
        interpolate_plane(np.ones((3, 3), bool), np.ones((3, 3), bool), 1.5)
