"""Specs and shared types of synthetic serial sections.

:class:`SerialBlockSpec` (what a block of serial sections is), :class:`SectionTransform`
(how a section lies on its slide) and :class:`SectionPlan` (one section's draws).
Every serial module of :mod:`pathpipe.synthetic` may import these; this module
imports none of them.

Frames
------
``block``: the tissue block, in µm. ``x`` to the right and ``y`` down as on an
untransformed slide (origin at its top-left corner), ``z`` the cutting depth:
section ``k`` lies in the plane ``z = k * spacing_um``.
``slide``: one section's slide, in µm from its top-left corner (level-0 pixel
``(col x, row y)`` has its centre at ``(x * mpp, y * mpp)``).
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import asdict, dataclass, fields

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param

__all__ = ["BLOCK_ID", "SectionPlan", "SectionTransform", "SerialBlockSpec"]

BLOCK_ID = re.compile(r"^[A-Za-z0-9_-]+$")
"""Block ids follow the slide-id pattern of the slide sheet."""


@dataclass(frozen=True, kw_only=True)
class SerialBlockSpec:
    """Everything that determines a synthetic block of serial sections.

    The fields are :func:`~pathpipe.params.param` fields: the command line
    ``pathpipe synthetic serial`` offers one ``--field-name`` option each.

    Attributes
    ----------
    block : str
        Block id (slide-id pattern); slides are ``{block}_s{k:02d}``.
    sections : int
        Number of sections cut, ``k = 0 .. sections - 1``.
    spacing_um : float
        Distance between consecutive sections (µm).
    size : int
        Level-0 width = height of every slide (px).
    mpp : float
        Level-0 µm per pixel.
    seed : int
        Seed of every random choice (object, transforms, faults, stains, nuclei).
    max_rotation_deg : float
        Section rotations are uniform in ``[-max_rotation_deg, max_rotation_deg)``.
    max_translation : float
        Section shifts are uniform in a disc of radius ``max_translation * size * mpp``.
    mirror_probability : float
        Chance that a section is mounted mirrored; when it is above 0 and
        ``sections >= 4``, at least one written section is.
    missing_sections : int
        Sections lost in cutting: listed in the truth, no slide written; never
        the first or the last.
    torn_sections : int
        Written sections with a piece of tissue torn off one edge.
    torn_fraction : float
        Share of a torn section's tissue that is missing.
    stain_variation : float
        Standard deviation of the log stain strength between sections, about
        the block's own strength (0: every section stained alike).
    truth_um : float
        xy voxel size of the truth mask volume (µm).
    object_depth : float
        The tissue object's extent in z as a multiple of the sectioned slab
        ``(sections - 1) * spacing_um``. The default 4 cuts the middle quarter of
        the object, as serial sections usually come from within a block's tissue:
        every section is near the object's full width and changes little from its
        neighbours. 1.25 cuts it nearly tip to tip: the end sections are about 0.6
        of the full width and change shape fast (a stress test; see the README).
    """

    block: str = param("synth_block", "block id (letters, digits, _ and -); slide ids add _sNN")
    sections: int = param(8, "number of serial sections cut", ge=2, le=500)
    spacing_um: float = param(25.0, "distance between consecutive sections (µm)", gt=0, le=1000)
    size: int = param(2048, "level-0 width = height of each slide (px)", ge=256, le=32768)
    mpp: float = param(0.5, "level-0 µm per pixel", ge=0.05, le=20)
    seed: int = param(0, "seed of the object, transforms, faults and stains", ge=0)
    max_rotation_deg: float = param(
        180.0, "rotations are uniform in +- this (degrees)", ge=0, le=180
    )
    max_translation: float = param(
        0.2, "largest section shift, as a fraction of the slide width", ge=0, le=0.3
    )
    mirror_probability: float = param(
        0.25, "chance that a section is mounted mirrored (>= 1 when sections >= 4)", ge=0, le=1
    )
    missing_sections: int = param(1, "sections lost: listed, no slide (never first or last)", ge=0)
    torn_sections: int = param(1, "sections with a piece of tissue torn off", ge=0)
    torn_fraction: float = param(0.2, "share of a torn section's tissue missing", gt=0, le=0.5)
    stain_variation: float = param(
        0.15, "sd of the log stain strength between sections", ge=0, le=1
    )
    truth_um: float = param(4.0, "xy voxel size of the truth mask volume (µm)", gt=0, le=100)
    object_depth: float = param(
        4.0,
        "object's z extent / the sectioned slab's (>= 1.1: every section holds tissue)",
        ge=1.1,
        le=100,
    )

    def __post_init__(self) -> None:
        check_params(self, "serial")
        if not BLOCK_ID.match(self.block) or self.block in ("cohort", "blocks"):
            raise ConfigError(
                f"serial.block={self.block!r}; expected letters, digits, '_' and '-' "
                "(not 'cohort' or 'blocks')"
            )
        if self.missing_sections > self.sections - 2:
            raise ConfigError(
                f"serial.missing_sections={self.missing_sections}; expected at most "
                f"sections - 2 = {self.sections - 2} (the first and last are never missing)"
            )
        present = self.sections - self.missing_sections
        if self.torn_sections > present:
            raise ConfigError(
                f"serial.torn_sections={self.torn_sections}; expected at most the "
                f"{present} sections written"
            )

    @property
    def width_um(self) -> float:
        """Slide width (= height) in µm."""
        return self.size * self.mpp

    def slide_id(self, section: int) -> str:
        """``{block}_s{section:02d}``."""
        return f"{self.block}_s{section:02d}"

    def to_dict(self) -> dict:
        """JSON-able dict; inverse of :meth:`from_dict`."""
        return json.loads(json.dumps(asdict(self)))

    @classmethod
    def from_dict(cls, data: dict) -> SerialBlockSpec:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SectionTransform:
    """Rigid placement of a section on its slide, as the map slide -> block.

    A point ``p_slide`` (µm, slide frame) of section ``k`` lies at

    ``p_block = R(theta) F (p_slide - c) + c + t``

    in the block frame (plane ``z = k * spacing_um``), where ``c`` is the slide
    centre ``(centre_x_um, centre_y_um)``, ``F = diag(-1, 1)`` when ``mirrored``
    (the section was mounted face down: x flipped about the centre) else the
    identity, ``R(theta) = [[cos, -sin], [sin, cos]]`` with
    ``theta = rotation_deg`` in radians acting on column vectors ``(x, y)`` (with
    y pointing down, positive angles turn clockwise as displayed), and
    ``t = (translation_x_um, translation_y_um)``. The section was thus placed
    on its slide by the inverse, ``p_slide = F R(-theta) (p_block - c - t) + c``.

    Attributes
    ----------
    rotation_deg, translation_x_um, translation_y_um : float
    mirrored : bool
    centre_x_um, centre_y_um : float
    """

    rotation_deg: float
    translation_x_um: float
    translation_y_um: float
    mirrored: bool
    centre_x_um: float
    centre_y_um: float

    def matrix(self) -> np.ndarray:
        """``(3, 3)`` float64 homogeneous matrix of slide µm -> block µm."""
        th = math.radians(self.rotation_deg)
        rot = np.array([[math.cos(th), -math.sin(th)], [math.sin(th), math.cos(th)]])
        lin = rot @ np.diag([-1.0 if self.mirrored else 1.0, 1.0])
        c = np.array([self.centre_x_um, self.centre_y_um])
        t = np.array([self.translation_x_um, self.translation_y_um])
        out = np.eye(3)
        out[:2, :2] = lin
        out[:2, 2] = c + t - lin @ c
        return out

    def to_block(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Slide µm -> block µm, elementwise on broadcastable arrays."""
        m = self.matrix()
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    def to_slide(self, x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Block µm -> slide µm (the inverse of :meth:`to_block`)."""
        m = np.linalg.inv(self.matrix())
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        return m[0, 0] * x + m[0, 1] * y + m[0, 2], m[1, 0] * x + m[1, 1] * y + m[1, 2]

    def to_dict(self) -> dict:
        out = asdict(self)
        out["matrix"] = self.matrix().round(9).tolist()
        return out

    @classmethod
    def from_dict(cls, data: dict) -> SectionTransform:
        names = {f.name for f in fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})


@dataclass(frozen=True)
class SectionPlan:
    """The seeded draws of one section (see :func:`pathpipe.synthetic.serial.plan_sections`).

    Attributes
    ----------
    section : int
    z_um : float
        ``section * spacing_um``.
    transform : SectionTransform
    missing : bool
        Lost: no slide is written.
    torn : bool
        A piece of its tissue is torn off (:attr:`tear_angle`).
    tear_angle : float
        Direction (rad, block frame) from the section's tissue towards the torn edge.
    tear_waves : tuple of (float, float, float)
        ``(wavelength_um, amplitude_um, phase)`` of the ragged tear line.
    stain_strength : (float, float)
        ``(h_scale, e_scale)`` of the slide's look.
    seed : int
        Seed of the slide spec (nuclei, texture).
    """

    section: int
    z_um: float
    transform: SectionTransform
    missing: bool
    torn: bool
    tear_angle: float
    tear_waves: tuple[tuple[float, float, float], ...]
    stain_strength: tuple[float, float]
    seed: int
