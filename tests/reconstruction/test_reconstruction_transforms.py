"""RigidTransform2D: matrix form, composition, inverse, points and JSON, checked by hand."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.transforms import RigidTransform2D, rotation_error_deg, wrap_degrees


def test_quarter_turn_by_hand() -> None:
    t = RigidTransform2D(90.0, 10.0, -5.0)
    # (1, 0) -> (0, 1) -> + (10, -5); (0, 2) -> (-2, 0) -> + (10, -5)
    np.testing.assert_allclose(
        t.apply(np.array([[1.0, 0.0], [0.0, 2.0]])), [[10, -4], [8, -5]], atol=1e-12
    )
    np.testing.assert_allclose(t.matrix(), [[0, -1, 10], [1, 0, -5], [0, 0, 1]], atol=1e-12)


def test_mirror_negates_x_before_rotating() -> None:
    t = RigidTransform2D(0.0, 0.0, 0.0, mirrored=True)
    np.testing.assert_allclose(t.apply(np.array([[3.0, 4.0]])), [[-3.0, 4.0]])
    t = RigidTransform2D(90.0, 1.0, 0.0, mirrored=True)
    # (3, 4) -> (-3, 4) -> rotate 90: (-4, -3) -> + (1, 0)
    np.testing.assert_allclose(t.apply(np.array([[3.0, 4.0]])), [[-3.0, -3.0]], atol=1e-12)
    assert np.linalg.det(t.matrix()[:2, :2]) == pytest.approx(-1.0)


def test_compose_applies_the_argument_first() -> None:
    a = RigidTransform2D(90.0, 1.0, 0.0)
    b = RigidTransform2D(0.0, 0.0, 2.0, mirrored=True)
    p = np.array([[1.0, 1.0], [-2.0, 0.5]])
    np.testing.assert_allclose(a.compose(b).apply(p), a.apply(b.apply(p)), atol=1e-12)
    # by hand: b maps (1, 1) -> (-1, 3); a maps (-1, 3) -> (-3, -1) + (1, 0) = (-2, -1)
    np.testing.assert_allclose(a.compose(b).apply(p[:1]), [[-2.0, -1.0]], atol=1e-12)
    assert a.compose(b).mirrored and not a.compose(a).mirrored
    assert b.compose(b).mirrored is False  # two mirrors cancel


@pytest.mark.parametrize("mirrored", [False, True])
def test_inverse_undoes_and_composes_to_identity(mirrored: bool) -> None:
    t = RigidTransform2D(-37.5, 120.0, -44.0, mirrored)
    p = np.random.default_rng(0).uniform(-500, 500, (20, 2))
    np.testing.assert_allclose(t.inverse().apply(t.apply(p)), p, atol=1e-9)
    np.testing.assert_allclose(t.compose(t.inverse()).matrix(), np.eye(3), atol=1e-12)
    assert t.inverse().mirrored is mirrored


def test_matrix_round_trip_and_angle_range() -> None:
    t = RigidTransform2D(250.0, 3.0, 4.0, True)
    back = RigidTransform2D.from_matrix(t.matrix())
    assert back.rotation_deg == pytest.approx(-110.0) and back.mirrored
    assert (back.translation_x_um, back.translation_y_um) == pytest.approx((3.0, 4.0))
    assert t.normalised().rotation_deg == pytest.approx(-110.0)
    assert wrap_degrees(180.0) == 180.0 and wrap_degrees(-180.0) == 180.0
    assert wrap_degrees(725.0) == pytest.approx(5.0)
    assert rotation_error_deg(RigidTransform2D(359.0), RigidTransform2D(1.0)) == pytest.approx(2.0)


def test_json_round_trip() -> None:
    t = RigidTransform2D(12.5, -3.25, 7.0, True)
    data = json.loads(json.dumps(t.to_dict()))
    assert data == {
        "rotation_deg": 12.5,
        "translation_x_um": -3.25,
        "translation_y_um": 7.0,
        "mirrored": True,
    }
    assert RigidTransform2D.from_dict(data) == t


def test_bad_input_names_what_was_expected() -> None:
    with pytest.raises(ConfigError, match=r"points of shape \(3,\); expected \(N, 2\)"):
        RigidTransform2D().apply(np.zeros(3))
    with pytest.raises(ConfigError, match="expected an orthonormal"):
        RigidTransform2D.from_matrix(np.diag([2.0, 1.0, 1.0]))
    with pytest.raises(ConfigError, match=r"keys \['rotation_deg'\]"):
        RigidTransform2D.from_dict({"rotation_deg": 1.0})
    with pytest.raises(ConfigError, match="mirrored='yes'"):
        RigidTransform2D.from_dict(
            {"rotation_deg": 0, "translation_x_um": 0, "translation_y_um": 0, "mirrored": "yes"}
        )
    assert math.isclose(RigidTransform2D(30.0).linear[1, 0], 0.5)
