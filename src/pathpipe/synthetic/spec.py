"""Specs and shared types of the synthetic slide generator.

:class:`SyntheticSlideSpec` (what a slide is), :class:`NucleusClassParams` and
the class presets, and :class:`TissueLayout`. Every module of
:mod:`pathpipe.synthetic` may import these; this module imports none of them.
"""

from __future__ import annotations

import itertools
import json
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real

import numpy as np

from pathpipe.errors import ConfigError

__all__ = [
    "CLASS_CODES",
    "CLASS_PRESETS",
    "GENERATOR_VERSION",
    "LYMPHOCYTE_PARAMS",
    "NucleusClassParams",
    "SyntheticSlideSpec",
    "TissueLayout",
]

GENERATOR_VERSION = 1
"""Bumped whenever the same spec would render differently."""


@dataclass(frozen=True, kw_only=True)
class NucleusClassParams:
    """Morphology and staining of one class of nuclei (lengths in µm).

    Attributes
    ----------
    radius_um, radius_sd_um : float
        Mean and standard deviation of the equivalent radius (log-normal).
    density_per_mm2 : float
        Expected nuclei per mm² of tissue.
    irregularity : float
        Scale of the radial-harmonic amplitudes ``a_k`` (k = 2..5, shrinking as
        ``1/sqrt(k-1)``); 0 gives ellipses.
    axis_ratio : tuple of float
        Range (min, max) of minor/major axis ratio, drawn uniformly.
    chromatin_contrast : float
        Relative amplitude of the granular hematoxylin texture.
    chromatin_grain_um : float
        Grain size (value-noise wavelength) of the chromatin texture.
    hematoxylin : float
        Mean hematoxylin concentration (optical density) of the nucleus.
    """

    radius_um: float
    radius_sd_um: float
    density_per_mm2: float
    irregularity: float
    axis_ratio: tuple[float, float]
    chromatin_contrast: float
    chromatin_grain_um: float
    hematoxylin: float


CLASS_PRESETS: dict[str, NucleusClassParams] = {
    "low": NucleusClassParams(
        radius_um=3.4,
        radius_sd_um=0.45,
        density_per_mm2=2000.0,
        irregularity=0.035,
        axis_ratio=(0.70, 0.95),
        chromatin_contrast=0.15,
        chromatin_grain_um=0.8,
        hematoxylin=0.85,
    ),
    "high": NucleusClassParams(
        radius_um=4.8,
        radius_sd_um=0.9,
        density_per_mm2=2800.0,
        irregularity=0.09,
        axis_ratio=(0.55, 0.90),
        chromatin_contrast=0.32,
        chromatin_grain_um=1.3,
        hematoxylin=1.0,
    ),
}
"""Epithelial nuclei of the two slide classes."""

LYMPHOCYTE_PARAMS = NucleusClassParams(
    radius_um=2.6,
    radius_sd_um=0.25,
    density_per_mm2=float("nan"),  # set by SyntheticSlideSpec.lymphocyte_fraction
    irregularity=0.015,
    axis_ratio=(0.85, 1.0),
    chromatin_contrast=0.06,
    chromatin_grain_um=0.6,
    hematoxylin=1.35,
)
"""Small, round, dense lymphocyte-like nuclei, the same in both classes."""

CLASS_CODES: dict[str, int] = {"background": 0, "low": 1, "high": 2, "lymphocyte": 3}
"""Codes of the class map from :func:`render_labels`: epithelial nuclei get
the code of their ``nuclear_class``, lymphocytes 3, everything else 0."""


def _err(name: str, value: object, expected: str) -> ConfigError:
    return ConfigError(f"synthetic slide spec: {name}={value!r}; expected {expected}")


def _default_downsamples(width: int, height: int) -> tuple[int, ...]:
    out = [1]
    while max(width, height) / out[-1] >= 1024:
        out.append(out[-1] * 4)
    return tuple(out)


@dataclass(frozen=True, kw_only=True)
class SyntheticSlideSpec:
    """Everything that determines a synthetic slide.

    Attributes
    ----------
    width, height : int
        Level-0 size in pixels.
    slide_class : {"low", "high"}
        Key of :data:`CLASS_PRESETS` for the epithelial nuclei.
    seed : int
        Seed of every random choice (layout, nuclei, stain strength).
    mpp : float
        Level-0 µm per pixel.
    tile_size : int
        TIFF tile edge (multiple of 16, for JPEG with 2x2 chroma subsampling).
    jpeg_quality : int
        JPEG quality, 1-100.
    level_downsamples : tuple of int or None
        Pyramid downsamples starting at 1; None gives powers of 4 until the
        smallest level's long side is below 1024 px.
    tissue_coverage : tuple of float
        Range from which the tissue fraction of the slide is drawn.
    tissue_blobs : tuple of int
        Range of the number of elliptic tissue pieces.
    lymphocyte_fraction : float
        Lymphocytes as a fraction of all nuclei, in ``[0, 0.9]``.
    stain_strength : (float, float) or None
        Hematoxylin and eosin strength factors ``(h_scale, e_scale)``, each in
        ``[0.2, 5]``; None draws them from the seed (a common section-thickness
        factor in ``[0.7, 1.4]`` times stain-specific jitter). Set by serial
        sections, whose stain varies about a block's own; :meth:`to_dict`
        leaves it out when None, so specs without it keep their hash.
    """

    width: int
    height: int
    slide_class: str
    seed: int = 0
    mpp: float = 0.25
    tile_size: int = 256
    jpeg_quality: int = 90
    level_downsamples: tuple[int, ...] | None = None
    tissue_coverage: tuple[float, float] = (0.4, 0.7)
    tissue_blobs: tuple[int, int] = (2, 4)
    lymphocyte_fraction: float = 0.1
    stain_strength: tuple[float, float] | None = None

    def __post_init__(self) -> None:
        def integer(name: str, lo: int, hi: int | None, expected: str) -> None:
            v = getattr(self, name)
            ok = isinstance(v, Integral) and not isinstance(v, bool)
            if not ok or v < lo or (hi is not None and v > hi):
                raise _err(name, v, expected)
            object.__setattr__(self, name, int(v))

        def pair(name: str, kind: type, check, expected: str) -> None:
            v = getattr(self, name)
            try:
                lo, hi = (kind(x) for x in v)
            except (TypeError, ValueError):
                raise _err(name, v, expected) from None
            if not check(lo, hi):
                raise _err(name, v, expected)
            object.__setattr__(self, name, (lo, hi))

        integer("width", 64, None, "an integer >= 64")
        integer("height", 64, None, "an integer >= 64")
        if self.slide_class not in CLASS_PRESETS:
            raise _err("slide_class", self.slide_class, f"one of {sorted(CLASS_PRESETS)}")
        integer("seed", 0, None, "a non-negative integer")
        if not (isinstance(self.mpp, Real) and 0.05 <= self.mpp <= 20):
            raise _err("mpp", self.mpp, "a number in [0.05, 20] µm/px")
        object.__setattr__(self, "mpp", float(self.mpp))
        integer("tile_size", 16, 4096, "a multiple of 16 in [16, 4096]")
        if self.tile_size % 16:
            raise _err("tile_size", self.tile_size, "a multiple of 16 in [16, 4096]")
        integer("jpeg_quality", 1, 100, "an integer in [1, 100]")
        ds = self.level_downsamples
        if ds is None:
            ds = _default_downsamples(self.width, self.height)
        try:
            ok = (
                len(ds) > 0
                and all(isinstance(d, Integral) and not isinstance(d, bool) for d in ds)
                and ds[0] == 1
                and all(b > a for a, b in itertools.pairwise(ds))
            )
        except TypeError:
            ok = False
        if not ok:
            raise _err(
                "level_downsamples", self.level_downsamples, "increasing integers starting at 1"
            )
        object.__setattr__(self, "level_downsamples", tuple(int(d) for d in ds))
        pair(
            "tissue_coverage",
            float,
            lambda lo, hi: 0.05 <= lo <= hi <= 0.95,
            "(lo, hi) with 0.05 <= lo <= hi <= 0.95",
        )
        pair(
            "tissue_blobs",
            int,
            lambda lo, hi: 1 <= lo <= hi <= 12,
            "(lo, hi) with 1 <= lo <= hi <= 12",
        )
        v = self.lymphocyte_fraction
        if not (isinstance(v, Real) and 0.0 <= v <= 0.9):
            raise _err("lymphocyte_fraction", v, "a number in [0, 0.9]")
        object.__setattr__(self, "lymphocyte_fraction", float(v))
        if self.stain_strength is not None:
            pair(
                "stain_strength",
                float,
                lambda h, e: 0.2 <= h <= 5.0 and 0.2 <= e <= 5.0,
                "None or (h_scale, e_scale), each in [0.2, 5]",
            )

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level (ceil of level 0 / downsample)."""
        return tuple((-(-self.width // d), -(-self.height // d)) for d in self.level_downsamples)

    def to_dict(self) -> dict:
        """JSON-able dict (with ``generator_version``); inverse of :meth:`from_dict`."""
        out = asdict(self)
        if out["stain_strength"] is None:  # absent before the field existed
            del out["stain_strength"]
        out["generator_version"] = GENERATOR_VERSION
        return json.loads(json.dumps(out))

    @classmethod
    def from_dict(cls, data: dict) -> SyntheticSlideSpec:
        names = {f.name for f in fields(cls)}
        kw = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items() if k in names}
        return cls(**kw)


# --------------------------------------------------------------------------- tissue


@dataclass(frozen=True)
class TissueLayout:
    """Low-resolution signed distance to the tissue edge.

    Attributes
    ----------
    sdf : (gh, gw) float32 ndarray
        Signed distance in level-0 px, positive inside tissue. Node ``(r, c)``
        sits at level-0 ``(c * spacing, r * spacing)``.
    spacing : float
        Level-0 px between grid nodes.
    coverage : float
        Fraction of the slide area inside tissue.
    """

    sdf: np.ndarray
    spacing: float
    coverage: float

    def signed_distance(self, l0_x: np.ndarray, l0_y: np.ndarray) -> np.ndarray:
        """Bilinear signed distance on the grid ``l0_y x l0_x``, ``(h, w)`` float32."""
        gh, gw = self.sdf.shape
        cx, wx = _lin(np.asarray(l0_x, dtype=np.float64) / self.spacing, gw)
        cy, wy = _lin(np.asarray(l0_y, dtype=np.float64) / self.spacing, gh)
        a = self.sdf[:, cx]
        rows = a + (self.sdf[:, cx + 1] - a) * wx
        top = rows[cy]
        return top + (rows[cy + 1] - top) * wy[:, None]

    def signed_distance_at(self, l0_x: np.ndarray, l0_y: np.ndarray) -> np.ndarray:
        """Bilinear signed distance at scattered points, ``(n,)`` float32."""
        gh, gw = self.sdf.shape
        cx, wx = _lin(np.asarray(l0_x, dtype=np.float64) / self.spacing, gw)
        cy, wy = _lin(np.asarray(l0_y, dtype=np.float64) / self.spacing, gh)
        s = self.sdf
        top = s[cy, cx] + (s[cy, cx + 1] - s[cy, cx]) * wx
        bot = s[cy + 1, cx] + (s[cy + 1, cx + 1] - s[cy + 1, cx]) * wx
        return top + (bot - top) * wy


def _lin(g: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    g = np.clip(g, 0.0, n - 1.0)
    c = np.minimum(np.floor(g).astype(np.int64), n - 2)
    return c, (g - c).astype(np.float32)
