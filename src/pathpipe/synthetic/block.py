"""The analytic 3D object of a synthetic serial block: tissue, tumour, ducts.

A seeded tissue volume (a smooth irregular blob) with an embedded tumour (a
smaller blob) and a few ducts (tubes running through z, empty lumens), each an
implicit function of block coordinates in µm (positive inside, approximately the
signed distance near the surface), so any section, the truth volume and the
volumes are sampled exactly. Frames: see :mod:`pathpipe.synthetic.serial_spec`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from pathpipe.synthetic.serial_spec import SerialBlockSpec

__all__ = ["LABELS", "Blob", "BlockObject", "Tube", "make_block_object"]

LABELS: dict[str, int] = {"background": 0, "tissue": 1, "tumour": 2}
"""Codes of :meth:`BlockObject.labels` and the truth volume (tumour lies in tissue)."""

_STREAM_OBJECT = 11


@dataclass(frozen=True)
class Blob:
    """A perturbed ellipsoid.

    With ``(u, v, w)`` the point in the ellipsoid's normalised frame (centred,
    turned by ``-angle`` in-plane, divided by the semi-axes ``(a, b, c)``),
    ``rho = |(u, v, w)|``, ``phi = atan2(v, u)`` and ``s = (u^2 + v^2) / rho^2``:

    ``f = sqrt(a b) * (1 - rho / r + sum_j A_j sin(k_j . (u, v, w) + psi_j))``

    with the radial factor ``r = 1 + s * sum_k a_k cos(k phi + phi_k + tau_k w)``
    (lobes that twist with depth and fade towards the z axis). ``f > 0`` inside.

    Attributes
    ----------
    centre : (float, float, float)
        Block µm.
    semi_axes : (float, float, float)
        ``(a, b, c)`` µm.
    angle : float
        In-plane direction of the ``a`` axis (rad, from +x towards +y).
    lobes : tuple of (k, a_k, phi_k, tau_k)
    waves : tuple of (kx, ky, kz, A_j, psi_j)
    """

    centre: tuple[float, float, float]
    semi_axes: tuple[float, float, float]
    angle: float
    lobes: tuple[tuple[float, float, float, float], ...]
    waves: tuple[tuple[float, float, float, float, float], ...]

    def value(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """Implicit value (µm) at broadcastable block coordinates, float64."""
        cx, cy, cz = self.centre
        a, b, c = self.semi_axes
        dx, dy = np.asarray(x, np.float64) - cx, np.asarray(y, np.float64) - cy
        ca, sa = math.cos(self.angle), math.sin(self.angle)
        u = (dx * ca + dy * sa) / a
        v = (-dx * sa + dy * ca) / b
        w = (np.asarray(z, np.float64) - cz) / c
        q = u * u + v * v
        rho2 = q + w * w
        s = q / (rho2 + 1e-12)
        phi = np.arctan2(v, u)
        r = 1.0
        for k, amp, phase, twist in self.lobes:
            r = r + s * amp * np.cos(k * phi + phase + twist * w)
        out = 1.0 - np.sqrt(rho2) / r
        for kx, ky, kz, amp, phase in self.waves:
            out = out + amp * np.sin(kx * u + ky * v + kz * w + phase)
        return math.sqrt(a * b) * out

    @property
    def reach(self) -> float:
        """Upper bound of the in-plane distance of the blob's points from its centre axis."""
        lobes = sum(abs(v[1]) for v in self.lobes)
        waves = sum(abs(v[3]) for v in self.waves)
        return max(self.semi_axes[:2]) * (1 + lobes) * (1 + waves)


@dataclass(frozen=True)
class Tube:
    """A duct or vessel running through z: ``f = radius - |(x, y) - centre(z)|``.

    ``centre(z) = (x0, y0) + slope (z - z0) + wiggle (sin, cos)(2 pi z / period + phase)``
    (in-plane distance: a section sees a disc). ``f > 0`` in the lumen.
    """

    x0: float
    y0: float
    z0: float
    slope_x: float
    slope_y: float
    radius: float
    wiggle: float
    period: float
    phase: float

    def value(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        z = np.asarray(z, np.float64)
        t = 2 * math.pi * z / self.period + self.phase
        px = self.x0 + self.slope_x * (z - self.z0) + self.wiggle * np.sin(t)
        py = self.y0 + self.slope_y * (z - self.z0) + self.wiggle * np.cos(t)
        return self.radius - np.hypot(np.asarray(x, np.float64) - px, np.asarray(y) - py)


@dataclass(frozen=True)
class BlockObject:
    """Tissue blob minus duct lumens; tumour = tumour blob within that tissue."""

    tissue_blob: Blob
    tumour_blob: Blob
    ducts: tuple[Tube, ...]

    def tissue(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``min(blob, -duct_1, ...)``: > 0 in tissue (tumour included)."""
        out = self.tissue_blob.value(x, y, z)
        for tube in self.ducts:
            out = np.minimum(out, -tube.value(x, y, z))
        return out

    def tumour(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """``min(tumour blob, tissue)``: > 0 in tumour."""
        return np.minimum(self.tumour_blob.value(x, y, z), self.tissue(x, y, z))

    def labels(self, x: np.ndarray, y: np.ndarray, z: np.ndarray) -> np.ndarray:
        """:data:`LABELS` codes (uint8) at broadcastable block coordinates."""
        tissue = self.tissue(x, y, z)
        tumour = np.minimum(self.tumour_blob.value(x, y, z), tissue)
        return (tissue > 0).astype(np.uint8) + (tumour > 0).astype(np.uint8)


def _blob(
    rng: np.random.Generator,
    centre: tuple[float, float, float],
    *,
    reach: float,
    ratio: float,
    depth: float,
    lobe_amp: tuple[float, float],
    wave_amp: tuple[float, float],
) -> Blob:
    """A random blob whose in-plane reach (:attr:`Blob.reach`) is ``reach``."""
    lobes = tuple(
        (float(k), float(rng.uniform(*lobe_amp)), float(rng.uniform(0, 2 * math.pi)), float(tw))
        for k, tw in zip((2, 3, 4), rng.uniform(-1.5, 1.5, 3), strict=True)
    )
    waves = []
    for _ in range(3):
        direction = rng.standard_normal(3)
        direction /= np.linalg.norm(direction)
        kvec = direction * rng.uniform(2.0, 4.0)
        waves.append(
            (*(float(v) for v in kvec), float(rng.uniform(*wave_amp)), float(rng.uniform(0, 7)))
        )
    a = reach / ((1 + sum(v[1] for v in lobes)) * (1 + sum(v[3] for v in waves)))
    return Blob(
        centre=tuple(float(v) for v in centre),
        semi_axes=(float(a), float(a * ratio), float(depth)),
        angle=float(rng.uniform(0, math.pi)),
        lobes=lobes,
        waves=tuple(waves),
    )


def make_block_object(spec: SerialBlockSpec) -> BlockObject:
    """The seeded 3D object of a block.

    The tissue blob is centred on the slide centre and mid-depth; its in-plane
    reach is at most ``(0.46 - max_translation) * width`` from the centre, so
    every section stays on its slide after any rotation and shift. Its z extent
    is ``object_depth`` times the sectioned slab ``[0, (sections - 1) spacing]``,
    centred on it (±5 %), so every section holds tissue: with the default 4 the
    end sections cut it at about 0.97 of its full width, with 1.25 at about 0.6. The tumour (reach 0.45-0.6 of the tissue's minor semi-axis, centred
    off-centre by 0.2-0.4 of its major one) spans about the middle 65 % of the
    slab; two to four ducts (radius 8-20 µm) cross it with slight tilts.

    Returns
    -------
    BlockObject
    """
    rng = np.random.default_rng([spec.seed, _STREAM_OBJECT])
    width = spec.width_um
    slab = (spec.sections - 1) * spec.spacing_um
    cx = cy = width / 2
    cz = slab / 2 + rng.uniform(-0.05, 0.05) * slab
    tissue = _blob(
        rng,
        (cx, cy, cz),
        reach=(0.46 - spec.max_translation) * width,
        ratio=rng.uniform(0.65, 0.85),
        depth=max(slab, spec.spacing_um) * spec.object_depth / 2,
        lobe_amp=(0.03, 0.07),
        wave_amp=(0.02, 0.045),
    )
    a, b = tissue.semi_axes[:2]
    off = rng.uniform(0.2, 0.4) * a
    beta = rng.uniform(0, 2 * math.pi)
    tumour = _blob(
        rng,
        (
            cx + off * math.cos(beta),
            cy + off * math.sin(beta),
            slab / 2 + rng.uniform(-0.1, 0.1) * slab,
        ),
        reach=b * rng.uniform(0.45, 0.6),
        ratio=rng.uniform(0.7, 1.0),
        depth=max(0.32 * slab, 0.75 * spec.spacing_um),
        lobe_amp=(0.02, 0.06),
        wave_amp=(0.01, 0.03),
    )

    ducts = []
    for _ in range(int(rng.integers(2, 5))):
        r = 0.55 * b * math.sqrt(rng.uniform(0.1, 1.0))
        gamma = rng.uniform(0, 2 * math.pi)
        ducts.append(
            Tube(
                x0=float(cx + r * math.cos(gamma)),
                y0=float(cy + r * math.sin(gamma)),
                z0=float(slab / 2),
                slope_x=float(rng.uniform(-0.3, 0.3)),
                slope_y=float(rng.uniform(-0.3, 0.3)),
                radius=float(rng.uniform(8.0, 20.0)),
                wiggle=float(rng.uniform(0.0, 12.0)),
                period=float(max(slab, spec.spacing_um) * rng.uniform(1.0, 3.0)),
                phase=float(rng.uniform(0, 2 * math.pi)),
            )
        )
    return BlockObject(tissue_blob=tissue, tumour_blob=tumour, ducts=tuple(ducts))
