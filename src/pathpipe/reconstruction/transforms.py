"""2D rigid transforms of a section, optionally mirrored, in µm.

Frame: a layer's own coordinates are ``(x, y)`` µm from its mask's top-left corner
(x along columns, y along rows, from the slide's MPP); a transform maps them into
the frame of the layer below (ultimately of the bottom layer, the block's frame).
z is the section position times the spacing and is never transformed.

A transform is ``p' = R(θ) · M · p + t`` with ``M = diag(-1, 1)`` when the section
is mirrored (x flipped about the y axis) and the identity otherwise, ``R(θ)`` the
counter-clockwise rotation by ``θ`` (in the x-right, y-down image frame it turns
clockwise on screen), ``t`` the translation in µm. This is the paper's Eq. (1),
``P_fix = R P_mov + T``, restricted to rotations about z, plus the mirror the paper
does not model.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError

__all__ = ["RigidTransform2D", "rotation_error_deg", "wrap_degrees"]


@dataclass(frozen=True)
class RigidTransform2D:
    """A rotation (degrees), translation (µm) and optional mirror of the plane.

    Attributes
    ----------
    rotation_deg : float
        Counter-clockwise rotation in degrees (in x, y), applied after the mirror.
    translation_x_um, translation_y_um : float
        Translation in µm, applied last.
    mirrored : bool
        Whether x is negated first (``M = diag(-1, 1)``).
    """

    rotation_deg: float = 0.0
    translation_x_um: float = 0.0
    translation_y_um: float = 0.0
    mirrored: bool = False

    # ---- matrix form ---------------------------------------------------------------

    @property
    def linear(self) -> np.ndarray:
        """(2, 2) float64: ``R(θ) · M``."""
        c, s = math.cos(math.radians(self.rotation_deg)), math.sin(math.radians(self.rotation_deg))
        rot = np.array([[c, -s], [s, c]])
        if self.mirrored:
            rot = rot @ np.diag([-1.0, 1.0])
        return rot

    @property
    def translation(self) -> np.ndarray:
        """(2,) float64: ``t`` in µm."""
        return np.array([self.translation_x_um, self.translation_y_um])

    def matrix(self) -> np.ndarray:
        """(3, 3) float64 homogeneous matrix ``[[R M, t], [0, 0, 1]]``."""
        out = np.eye(3)
        out[:2, :2] = self.linear
        out[:2, 2] = self.translation
        return out

    @classmethod
    def from_matrix(cls, matrix: np.ndarray, *, tol: float = 1e-6) -> RigidTransform2D:
        """The transform of a (3, 3) homogeneous matrix whose 2×2 block is orthonormal.

        Raises
        ------
        ConfigError
            When the matrix is not (3, 3) or its linear block is not a rotation or
            a rotation of a mirror (within ``tol``).
        """
        m = np.asarray(matrix, dtype=float)
        if m.shape != (3, 3):
            raise ConfigError(f"rigid transform matrix of shape {m.shape}; expected (3, 3)")
        a = m[:2, :2]
        if not np.allclose(a.T @ a, np.eye(2), atol=tol) or not np.allclose(
            m[2], [0.0, 0.0, 1.0], atol=tol
        ):
            raise ConfigError(
                f"rigid transform matrix {m.tolist()}; expected an orthonormal 2×2 block "
                "and a last row (0, 0, 1)"
            )
        mirrored = bool(np.linalg.det(a) < 0)
        if mirrored:
            a = a @ np.diag([-1.0, 1.0])
        angle = math.degrees(math.atan2(a[1, 0], a[0, 0]))
        return cls(angle, float(m[0, 2]), float(m[1, 2]), mirrored)

    # ---- algebra -------------------------------------------------------------------

    def compose(self, first: RigidTransform2D) -> RigidTransform2D:
        """``self ∘ first``: apply ``first``, then ``self``."""
        return RigidTransform2D.from_matrix(self.matrix() @ first.matrix())

    def inverse(self) -> RigidTransform2D:
        """The transform undoing this one."""
        inv = np.eye(3)
        inv[:2, :2] = self.linear.T
        inv[:2, 2] = -self.linear.T @ self.translation
        return RigidTransform2D.from_matrix(inv)

    def apply(self, points: np.ndarray) -> np.ndarray:
        """Map (N, 2) points in µm; returns (N, 2) float64.

        Raises
        ------
        ConfigError
            When ``points`` is not of shape (N, 2).
        """
        p = np.asarray(points, dtype=float)
        if p.ndim != 2 or p.shape[1] != 2:
            raise ConfigError(f"points of shape {p.shape}; expected (N, 2) x, y in µm")
        return p @ self.linear.T + self.translation

    def normalised(self) -> RigidTransform2D:
        """The same transform with the angle in (-180, 180]."""
        angle = wrap_degrees(self.rotation_deg)
        return RigidTransform2D(angle, self.translation_x_um, self.translation_y_um, self.mirrored)

    # ---- JSON ----------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        """A JSON-able mapping (the ``registration.tsv`` column names)."""
        return {
            "rotation_deg": float(self.rotation_deg),
            "translation_x_um": float(self.translation_x_um),
            "translation_y_um": float(self.translation_y_um),
            "mirrored": bool(self.mirrored),
        }

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> RigidTransform2D:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ConfigError
            Naming the missing or extra keys.
        """
        keys = {"rotation_deg", "translation_x_um", "translation_y_um", "mirrored"}
        if set(data) != keys:
            raise ConfigError(f"rigid transform keys {sorted(data)}; expected {sorted(keys)}")
        if not isinstance(data["mirrored"], bool):
            raise ConfigError(f"rigid transform mirrored={data['mirrored']!r}; expected a bool")
        return cls(
            float(data["rotation_deg"]),
            float(data["translation_x_um"]),
            float(data["translation_y_um"]),
            data["mirrored"],
        )


def wrap_degrees(angle: float) -> float:
    """An angle in degrees mapped to (-180, 180]."""
    out = math.fmod(angle, 360.0)
    if out <= -180.0:
        out += 360.0
    elif out > 180.0:
        out -= 360.0
    return out


def rotation_error_deg(a: RigidTransform2D, b: RigidTransform2D) -> float:
    """Absolute difference of two rotations in degrees, in [0, 180]."""
    return abs(wrap_degrees(a.rotation_deg - b.rotation_deg))
