"""register_pair and register_stack on generated sections with known transforms.

The phantom (:mod:`pathpipe.reconstruction.phantom`) is an irregular object with
lobes and holes (no symmetry), 4 mm wide canvas at the default working resolution
(16 µm/px, 250 px). Errors: rotation in degrees; translation as the largest
displacement error over the section's points, in working pixels.
"""

from __future__ import annotations

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.reconstruction import ReconstructionParams, layer_points
from pathpipe.reconstruction.phantom import Phantom, canvas_transform
from pathpipe.reconstruction.register import ROW_COLUMNS, register_pair, register_stack
from pathpipe.reconstruction.transforms import RigidTransform2D, rotation_error_deg

SIZE = 4000.0
PARAMS = ReconstructionParams()
W = PARAMS.working_mpp


def _layer(phantom: Phantom, truth: RigidTransform2D | None = None):
    return layer_points(phantom.mask(W, truth), W, W)


def _errors(result_t: RigidTransform2D, truth: RigidTransform2D, xy: np.ndarray):
    shift = np.abs(result_t.apply(xy) - truth.apply(xy)).max() / W
    return rotation_error_deg(result_t, truth), float(shift)


CASES = [
    (0.0, (0.0, 0.0), False),
    (37.0, (300.0, -500.0), False),
    (135.0, (-800.0, 200.0), False),
    (250.0, (800.0, 800.0), False),
    (0.0, (150.0, 0.0), True),
    (37.0, (-400.0, 700.0), True),
    (135.0, (-700.0, 200.0), True),
    (250.0, (100.0, -800.0), True),
]


@pytest.mark.parametrize("seed", [3, 11])
@pytest.mark.parametrize(("angle", "shift", "mirrored"), CASES)
def test_any_angle_shift_and_mirror_is_recovered(seed, angle, shift, mirrored) -> None:
    phantom = Phantom(SIZE, seed)
    truth = canvas_transform(SIZE, angle, shift, mirrored=mirrored)
    moving = _layer(phantom, truth)
    result = register_pair(_layer(phantom), moving, PARAMS)
    rot_err, shift_err = _errors(result.transform, truth, moving.xy)
    assert result.transform.mirrored is mirrored
    assert rot_err <= 0.5
    assert shift_err <= 1.0
    assert result.fitness > 0.99


@pytest.mark.parametrize("subset", ["full", "band_and", "band_or", "voxel", "contour"])
def test_every_subset_recovers_a_moderate_transform(subset: str) -> None:
    phantom = Phantom(SIZE, 5)
    truth = canvas_transform(SIZE, 20.0, (250.0, -150.0))
    moving = _layer(phantom, truth)
    params = ReconstructionParams(subset=subset)
    result = register_pair(_layer(phantom), moving, params)
    rot_err, shift_err = _errors(result.transform, truth, moving.xy)
    assert rot_err <= 0.5
    assert shift_err <= 1.0
    if subset == "band_and":
        # the rectangle holds about (2 * 1/6)² of the bounding box
        assert result.points_used < 0.25 * len(moving)
    if subset == "contour":
        assert result.points_used < 0.3 * len(moving)  # 4 outline points per edge pixel


def _stack(n: int, seed: int = 3):
    """n sections of one phantom, each at its own known transform (the bottom one too)."""
    phantom = Phantom(SIZE, seed)
    rng = np.random.default_rng(seed)
    truths = [
        canvas_transform(
            SIZE, float(rng.uniform(0, 360)), tuple(rng.uniform(-400, 400, 2)),
            mirrored=bool(i % 3 == 2),
        )
        for i in range(n)
    ]  # fmt: skip
    return phantom, truths, [_layer(phantom, t) for t in truths]


def _relative_errors(transforms, truths, layers, ref: int):
    """Errors of each layer's transform against the truth relative to the reference layer."""
    out = []
    for t, truth, layer in zip(transforms, truths, layers, strict=True):
        if t is None:
            out.append(None)
            continue
        expected = truths[ref].inverse().compose(truth)  # layer -> object -> reference frame
        out.append(_errors(t, expected, layer.xy))
    return out


def test_stack_registers_bottom_to_top_into_the_bottom_frame() -> None:
    _, truths, layers = _stack(4)
    transforms, rows = register_stack(layers, PARAMS, block="B1", names=["s1", "s2", "s3", "s4"])
    assert [r["layer"] for r in rows] == ["s1", "s2", "s3", "s4"]
    assert all(tuple(r) == ROW_COLUMNS for r in rows)
    assert all(r["flag"] == "" for r in rows)
    assert transforms[0] == RigidTransform2D()
    for rot_err, shift_err in _relative_errors(transforms, truths, layers, ref=0):
        assert rot_err <= 0.5 and shift_err <= 1.0
    assert [r["mirrored"] for r in rows] == [
        truths[0].inverse().compose(t).mirrored for t in truths
    ]


def test_missing_and_empty_layers_are_flagged_and_the_stack_continues() -> None:
    _, truths, layers = _stack(3)
    empty = layer_points(np.zeros((250, 250), bool), W, W)
    stack = [None, layers[0], empty, layers[1], layers[2]]
    transforms, rows = register_stack(stack, PARAMS, block="B2")
    assert [r["flag"] for r in rows] == ["missing", "", "empty", "", ""]
    assert transforms[0] is None and transforms[2] is None
    assert transforms[1] == RigidTransform2D()  # the bottom usable layer is the reference
    errors = _relative_errors([transforms[1], transforms[3], transforms[4]], truths, layers, ref=0)
    for rot_err, shift_err in errors:
        assert rot_err <= 0.5 and shift_err <= 1.0


def test_an_implausible_layer_is_flagged_and_skipped_as_reference() -> None:
    _, truths, layers = _stack(3)
    # a section of something else: a filled square four times the object's area
    square = np.zeros((250, 250), bool)
    square[20:230, 20:230] = True
    other = layer_points(square, W, W)
    transforms, rows = register_stack([layers[0], other, layers[1], layers[2]], PARAMS, block="B3")
    assert rows[1]["flag"] == "low_fitness" and rows[1]["fitness"] < PARAMS.min_fitness
    assert transforms[1] is not None  # flagged layers keep their (best) transform
    assert [r["flag"] for r in (rows[0], rows[2], rows[3])] == ["", "", ""]
    # layer 2 was registered onto layer 0, the last good one
    errors = _relative_errors([transforms[0], transforms[2], transforms[3]], truths, layers, ref=0)
    for rot_err, shift_err in errors:
        assert rot_err <= 0.5 and shift_err <= 1.0


def test_an_rmse_above_the_threshold_is_flagged() -> None:
    _, _, layers = _stack(2)
    strict = ReconstructionParams(max_rmse_um=1.0)  # below the half-pixel rasterisation misfit
    _, rows = register_stack(layers, strict, block="B4")
    assert rows[1]["flag"] == "high_rmse" and rows[1]["inlier_rmse_um"] > 1.0


def test_fewer_than_two_usable_layers_names_the_block() -> None:
    _, _, layers = _stack(1)
    empty = layer_points(np.zeros((50, 50), bool), W, W)
    with pytest.raises(ConfigError, match=r"block 'lung-07' has 1 usable section\(s\) of 3"):
        register_stack([layers[0], None, empty], PARAMS, block="lung-07")
    with pytest.raises(ConfigError, match="block 'lung-08' has 0 usable"):
        register_stack([], PARAMS, block="lung-08")
    with pytest.raises(ConfigError, match="2 names for 3 layers of block 'b'"):
        register_stack([layers[0]] * 3, PARAMS, block="b", names=["a", "b"])
