"""Seeded synthetic H&E whole-slide images with exact nuclei ground truth.

A slide is a pure function of a :class:`SyntheticSlideSpec`: a low-resolution
tissue layout (:func:`make_tissue`), a table of nuclei with analytic shapes
(:func:`make_nuclei`) and a procedural renderer (:func:`render_rgb`,
:func:`render_labels`) that draws any region at any downsample. :func:`write_slide`
streams the pyramid tile by tile into a JPEG-compressed tiled TIFF that
OpenSlide (vendor ``generic-tiff``) and tiffslide read with its MPP, and writes
the ground truth next to it as ``<stem>.nuclei.parquet``.

Two classes of epithelial nuclei (:data:`CLASS_PRESETS`) differ in size,
density, shape irregularity, elongation, chromatin texture and hematoxylin
level. Both classes also carry the same share of small, round, dark
lymphocyte-like nuclei (``cell_type == "lymphocyte"``, :data:`LYMPHOCYTE_PARAMS`).

Colour follows Beer-Lambert: ``RGB = 255 exp(-(c_H H + c_E E + od_glass))`` with
the Ruifrok & Johnston (2001) H and E optical-density vectors, so colour
deconvolution (``skimage.color.rgb2hed``) separates the stains.

Frames
------
``l0_`` level-0 pixels ``(x, y)``; the centre of level-0 pixel ``(col x, row y)``
is the point ``(x, y)``, so nucleus ``n`` lies in pixel
``(round(l0_x), round(l0_y))`` and scikit-image centroids ``(row, col)`` match
``(l0_y, l0_x)``. Arrays are ``(row, col)``.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, fields
from numbers import Integral, Real
from pathlib import Path

import numpy as np
import pandas as pd

from pathpipe import _synthetic_io as _io
from pathpipe import _synthetic_nuclei as _n
from pathpipe import _synthetic_placement as _p
from pathpipe import _synthetic_render as _r
from pathpipe.errors import ConfigError, StorageError

__all__ = [
    "CLASS_CODES",
    "CLASS_PRESETS",
    "GENERATOR_VERSION",
    "LYMPHOCYTE_PARAMS",
    "NUCLEI_COLUMNS",
    "SHEET_COLUMNS",
    "NucleusClassParams",
    "NucleusIndex",
    "SyntheticSlideSpec",
    "TissueLayout",
    "index_nuclei",
    "make_nuclei",
    "make_tissue",
    "read_ground_truth",
    "render_labels",
    "render_rgb",
    "render_tissue",
    "write_cohort",
    "write_slide",
]

GENERATOR_VERSION = 1
"""Bumped whenever the same spec would render differently."""

# Independent random streams per spec seed.
_STREAM_TISSUE, _STREAM_NUCLEI, _STREAM_LOOK = 1, 2, 3


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

    @property
    def level_dimensions(self) -> tuple[tuple[int, int], ...]:
        """``(width, height)`` of each level (ceil of level 0 / downsample)."""
        return tuple((-(-self.width // d), -(-self.height // d)) for d in self.level_downsamples)

    def to_dict(self) -> dict:
        """JSON-able dict (with ``generator_version``); inverse of :meth:`from_dict`."""
        out = asdict(self)
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


def make_tissue(spec: SyntheticSlideSpec) -> TissueLayout:
    """Seeded tissue layout: a union of noisy ellipses on white glass.

    ``n`` ellipses (``spec.tissue_blobs``) are combined as the maximum of
    ``1 - elliptic radius``, perturbed by smoothed Gaussian noise and
    thresholded at the quantile that gives a tissue fraction drawn from
    ``spec.tissue_coverage``; the signed Euclidean distance to that mask is
    smoothed and kept on a grid of about 512 nodes along the long side.

    Returns
    -------
    TissueLayout
    """
    from scipy import ndimage

    rng = np.random.default_rng([spec.seed, _STREAM_TISSUE])
    w, h = spec.width, spec.height
    spacing = max(8.0, max(w, h) / 512.0)
    gw, gh = math.ceil(w / spacing) + 2, math.ceil(h / spacing) + 2
    gx = np.arange(gw) * spacing
    gy = np.arange(gh) * spacing
    field_ = np.full((gh, gw), -np.inf)
    short = min(w, h)
    for _ in range(int(rng.integers(spec.tissue_blobs[0], spec.tissue_blobs[1] + 1))):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        a = rng.uniform(0.2, 0.42) * short
        b = a * rng.uniform(0.45, 1.0)
        t = rng.uniform(0, np.pi)
        dx, dy = gx[None, :] - cx, gy[:, None] - cy
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        field_ = np.maximum(field_, 1.0 - np.hypot(u, v))
    noise = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 0.035 * max(gh, gw))
    field_ += 0.3 * noise / (noise.std() + 1e-12)
    target = rng.uniform(*spec.tissue_coverage)
    inner = field_[1:-1, 1:-1]
    mask = field_ > np.quantile(inner, 1.0 - target)
    sdf = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    sdf = ndimage.gaussian_filter(sdf - 0.5 * np.sign(sdf), 1.0) * spacing
    sdf = sdf.astype(np.float32)
    return TissueLayout(sdf=sdf, spacing=spacing, coverage=float((sdf[1:-1, 1:-1] > 0).mean()))


@functools.lru_cache(maxsize=64)
def _look(spec: SyntheticSlideSpec) -> _r.Look:
    """Per-slide appearance: stain strength varies like a batch or section-thickness
    effect (a common factor in [0.7, 1.4] times stain-specific jitter), enough
    that overall slide colour does not separate the classes."""
    rng = np.random.default_rng([spec.seed, _STREAM_LOOK])
    thickness = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    return _r.Look(
        seed=int(spec.seed),
        mpp=float(spec.mpp),
        h_scale=float(thickness * rng.uniform(0.9, 1.1)),
        e_scale=float(thickness * rng.uniform(0.85, 1.15)),
        od_glass=float(rng.uniform(0.03, 0.05)),
        fibre_angle=float(rng.uniform(0, np.pi)),
    )


# --------------------------------------------------------------------------- nuclei

_HARMONIC_COLS = [c for k in _n.HARMONICS for c in (f"h{k}_amp", f"h{k}_phase")]
NUCLEI_COLUMNS = [
    "nucleus_id",
    "l0_x",
    "l0_y",
    "radius_px",
    "axis_ratio",
    "angle",
    *_HARMONIC_COLS,
    "texture_seed",
    "hematoxylin",
    "chromatin_contrast",
    "chromatin_grain_px",
    "cell_type",
    "nuclear_class",
    "area_px",
]


def _class_codes(cell_type: np.ndarray, nuclear_class: np.ndarray) -> np.ndarray:
    codes = np.array([CLASS_CODES[c] for c in nuclear_class], dtype=np.uint8)
    codes[np.asarray(cell_type) == "lymphocyte"] = CLASS_CODES["lymphocyte"]
    return codes


def _arrays_from_table(nuclei: pd.DataFrame) -> _n.NucleusArrays:
    missing = [c for c in NUCLEI_COLUMNS if c not in nuclei.columns and c != "area_px"]
    if missing:
        raise ConfigError(f"nuclei table lacks columns {missing}; expected {NUCLEI_COLUMNS}")
    k = _n.HARMONICS
    return _n.nucleus_arrays(
        nucleus_id=nuclei["nucleus_id"].to_numpy(),
        class_code=_class_codes(nuclei["cell_type"].to_numpy(), nuclei["nuclear_class"].to_numpy()),
        l0_x=nuclei["l0_x"].to_numpy(),
        l0_y=nuclei["l0_y"].to_numpy(),
        radius_px=nuclei["radius_px"].to_numpy(),
        axis_ratio=nuclei["axis_ratio"].to_numpy(),
        angle=nuclei["angle"].to_numpy(),
        amps=nuclei[[f"h{i}_amp" for i in k]].to_numpy(),
        phases=nuclei[[f"h{i}_phase" for i in k]].to_numpy(),
        hematoxylin=nuclei["hematoxylin"].to_numpy(),
        chromatin_contrast=nuclei["chromatin_contrast"].to_numpy(),
        chromatin_grain_px=nuclei["chromatin_grain_px"].to_numpy(),
        texture_seed=nuclei["texture_seed"].to_numpy(),
    )


def make_nuclei(spec: SyntheticSlideSpec, *, tissue: TissueLayout | None = None) -> pd.DataFrame:
    """Seeded nuclei with analytic shapes: the ground truth of a slide.

    Epithelial nuclei of ``spec.slide_class`` (expected count
    ``density_per_mm2 x tissue area``, clustered in nests) and lymphocytes
    (``spec.lymphocyte_fraction`` of all nuclei, mostly in stroma) are proposed
    uniformly, thinned by tissue and nest weight, and accepted in random order
    unless an accepted centre lies closer than 0.9 x the sum of radii. Each
    nucleus lies fully inside tissue.

    Returns
    -------
    nuclei : pandas.DataFrame
        One row per nucleus, sorted by ``nucleus_id`` (1..N, raster order of
        centres): ``l0_x, l0_y`` (float64 centre, level-0 px), ``radius_px``
        (equivalent radius: the ellipse without harmonics has area
        ``pi radius_px**2``), ``axis_ratio`` (minor/major), ``angle`` (major
        axis, rad, from +x towards +y), ``h{k}_amp, h{k}_phase`` for k = 2..5
        (boundary ``rho = 1 + sum_k a_k cos(k theta + phi_k)`` in the
        normalised ellipse frame), ``texture_seed``, ``hematoxylin``,
        ``chromatin_contrast``, ``chromatin_grain_px`` (render parameters),
        ``cell_type`` ("epithelial" | "lymphocyte"), ``nuclear_class`` (the
        slide class) and ``area_px`` (int64, exact pixel count in
        :func:`render_labels`).
    """
    return _make_nuclei(spec, make_tissue(spec) if tissue is None else tissue, areas=True)


def _make_nuclei(spec: SyntheticSlideSpec, tissue: TissueLayout, *, areas: bool) -> pd.DataFrame:
    look = _look(spec)
    rng = np.random.default_rng([spec.seed, _STREAM_NUCLEI])
    epi = CLASS_PRESETS[spec.slide_class]
    tissue_mm2 = tissue.coverage * spec.width * spec.height * spec.mpp**2 / 1e6
    n_epi = int(rng.poisson(epi.density_per_mm2 * tissue_mm2))
    frac = spec.lymphocyte_fraction
    n_lym = int(rng.poisson(n_epi * frac / (1.0 - frac))) if frac > 0 else 0
    groups = [
        _p.candidates(
            rng, spec, tissue, look, n_wanted=int(n * _p.OVERSAMPLE), params=p, epithelial=e
        )
        for n, p, e in ((n_epi, epi, True), (n_lym, LYMPHOCYTE_PARAMS, False))
    ]
    cand = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
    order = rng.permutation(len(cand["l0_x"]))
    cand = {k: v[order] for k, v in cand.items()}
    ok = _p.greedy_hard_core(cand["l0_x"], cand["l0_y"], cand["radius_px"])
    for is_epi, n_target in ((True, n_epi), (False, n_lym)):  # first n_target in priority order
        sel = np.flatnonzero(ok & (cand["epithelial"] == is_epi))
        ok[sel[n_target:]] = False
    cand = {k: v[ok] for k, v in cand.items()}
    order = np.lexsort((cand["l0_x"], cand["l0_y"]))
    cand = {k: v[order] for k, v in cand.items()}

    n = len(order)
    table = {
        "nucleus_id": np.arange(1, n + 1, dtype=np.int64),
        "l0_x": cand["l0_x"],
        "l0_y": cand["l0_y"],
        "radius_px": cand["radius_px"],
        "axis_ratio": cand["axis_ratio"],
        "angle": cand["angle"],
    }
    for i, k in enumerate(_n.HARMONICS):
        table[f"h{k}_amp"] = cand["amps"][:, i]
        table[f"h{k}_phase"] = cand["phases"][:, i]
    table.update(
        texture_seed=cand["texture_seed"].astype(np.int64),
        hematoxylin=cand["hematoxylin"],
        chromatin_contrast=cand["chromatin_contrast"],
        chromatin_grain_px=cand["chromatin_grain_px"],
        cell_type=np.where(cand["epithelial"], "epithelial", "lymphocyte"),
        nuclear_class=np.full(n, spec.slide_class),
    )
    df = pd.DataFrame(table)
    df["area_px"] = _n.pixel_areas(_arrays_from_table(df)) if areas else -1
    return df[NUCLEI_COLUMNS]


class NucleusIndex:
    """Bucket-grid index of a nuclei table for fast region queries.

    Build once with :func:`index_nuclei` and pass it instead of the table to
    :func:`render_rgb` / :func:`render_labels` when rendering many regions.
    """

    _CELL = 512.0

    def __init__(self, nuclei: pd.DataFrame) -> None:
        nuclei = nuclei.sort_values("nucleus_id", kind="stable")
        self.arrays = _n.nucleus_arrays_empty() if len(nuclei) == 0 else _arrays_from_table(nuclei)
        a = self.arrays
        self.max_id = int(a.nucleus_id.max()) if len(a) else 0
        self.class_lut = np.zeros(self.max_id + 1, dtype=np.uint8)
        self.class_lut[a.nucleus_id] = a.class_code
        self._max_ext = float(max(a.ext_x.max(), a.ext_y.max())) if len(a) else 0.0
        col = np.floor(a.cx / self._CELL).astype(np.int64)
        row = np.floor(a.cy / self._CELL).astype(np.int64)
        self._ncol = int(col.max()) + 2 if len(a) else 1
        keys = row * self._ncol + np.clip(col, 0, None)
        self._perm = np.argsort(keys, kind="stable")
        self._keys = keys[self._perm]

    def query(self, l0_x0: float, l0_y0: float, l0_x1: float, l0_y1: float) -> _n.NucleusArrays:
        """Nuclei whose bounding box meets ``[x0, x1] x [y0, y1]``, in id order."""
        a = self.arrays
        if len(a) == 0:
            return a
        m, cell = self._max_ext, self._CELL
        c_lo = max(math.floor((l0_x0 - m) / cell), 0)
        c_hi = min(math.floor((l0_x1 + m) / cell), self._ncol - 1)
        r_lo = math.floor((l0_y0 - m) / cell)
        r_hi = math.floor((l0_y1 + m) / cell)
        if c_hi < c_lo or r_hi < r_lo:
            return a.take(np.zeros(0, dtype=np.int64))
        rows = np.arange(r_lo, r_hi + 1) * self._ncol
        lo = np.searchsorted(self._keys, rows + c_lo)
        hi = np.searchsorted(self._keys, rows + c_hi, side="right")
        idx = np.concatenate([self._perm[s:e] for s, e in zip(lo, hi, strict=True)])
        idx.sort()
        hit = (
            (a.cx[idx] + a.ext_x[idx] >= l0_x0)
            & (a.cx[idx] - a.ext_x[idx] <= l0_x1)
            & (a.cy[idx] + a.ext_y[idx] >= l0_y0)
            & (a.cy[idx] - a.ext_y[idx] <= l0_y1)
        )
        return a.take(idx[hit])


def index_nuclei(nuclei: pd.DataFrame | NucleusIndex) -> NucleusIndex:
    """Index a :func:`make_nuclei` table for region queries (no-op on an index)."""
    return nuclei if isinstance(nuclei, NucleusIndex) else NucleusIndex(nuclei)


# --------------------------------------------------------------------------- rendering


def _region(l0_xy, size_wh, downsample) -> tuple[int, int, int, int, float]:
    try:
        x0, y0 = (int(v) for v in l0_xy)
        w, h = (int(v) for v in size_wh)
        d = float(downsample)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"region l0_xy={l0_xy!r}, size_wh={size_wh!r}, downsample={downsample!r}; "
            "expected two integers, two integers and a number"
        ) from exc
    if w <= 0 or h <= 0:
        raise ConfigError(f"region size_wh={size_wh!r}; expected positive width and height")
    if not d >= 1.0:
        raise ConfigError(f"downsample={downsample!r}; expected a number >= 1")
    return x0, y0, w, h, d


def render_rgb(
    spec: SyntheticSlideSpec,
    nuclei: pd.DataFrame | NucleusIndex,
    tissue: TissueLayout,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
    downsample: float = 1.0,
) -> np.ndarray:
    """Render a region of the slide, as OpenSlide ``read_region`` would return it.

    Output pixel ``(i, j)`` shows level-0 pixels ``x0 + j*d ... x0 + (j+1)*d - 1``
    (``d = downsample``). Stains are composed by Beer-Lambert from stroma,
    cytoplasm, nuclei and glass fields that are functions of level-0
    coordinates only, so a pixel's value does not depend on how a region is cut.
    At ``d = 1`` nuclei have hard edges exactly where :func:`render_labels` puts
    them; at ``d > 1`` they are box-filtered (``ss x ss`` sub-samples per
    pixel) and texture finer than a pixel fades to its mean.

    Parameters
    ----------
    spec : SyntheticSlideSpec
    nuclei : pandas.DataFrame or NucleusIndex
        :func:`make_nuclei` table (or its :func:`index_nuclei`).
    tissue : TissueLayout
        :func:`make_tissue` of the same spec.
    l0_xy : (int, int)
        Level-0 ``(x, y)`` of the top-left output pixel.
    size_wh : (int, int)
        Output ``(width, height)``.
    downsample : float
        Level-0 pixels per output pixel, >= 1.

    Returns
    -------
    rgb : (h, w, 3) uint8 ndarray
    """
    x0, y0, w, h, d = _region(l0_xy, size_wh, downsample)
    return _r.render_region(_look(spec), index_nuclei(nuclei), tissue, x0, y0, w, h, d)[0]


def render_tissue(
    spec: SyntheticSlideSpec,
    tissue: TissueLayout,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
    downsample: float = 1.0,
) -> np.ndarray:
    """Ground-truth tissue fraction of a region, as :func:`render_rgb` stains it.

    The tissue layout with its soft edge, minus the white stromal clefts, on the
    pixel grid of :func:`render_rgb` (same arguments). Threshold at 0.5 for a
    tissue mask.

    Returns
    -------
    fraction : (h, w) float32 ndarray
        In ``[0, 1]``; 0 on glass and in clefts.
    """
    x0, y0, w, h, d = _region(l0_xy, size_wh, downsample)
    xs = x0 + np.arange(w) * d + (d - 1) / 2
    ys = y0 + np.arange(h) * d + (d - 1) / 2
    return _r.tissue_fraction(_look(spec), tissue.signed_distance, xs, ys, d)


def render_labels(
    spec: SyntheticSlideSpec,
    nuclei: pd.DataFrame | NucleusIndex,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact level-0 ground truth of a region.

    A pixel belongs to the highest-id nucleus whose shape contains its centre;
    ``np.bincount(labels.ravel())`` over the whole slide equals ``area_px``.

    Parameters
    ----------
    spec : SyntheticSlideSpec
    nuclei : pandas.DataFrame or NucleusIndex
    l0_xy : (int, int)
        Level-0 ``(x, y)`` of the top-left pixel.
    size_wh : (int, int)
        ``(width, height)``.

    Returns
    -------
    labels : (h, w) int32 ndarray
        ``nucleus_id``, 0 outside nuclei.
    classes : (h, w) uint8 ndarray
        :data:`CLASS_CODES`: 0 background, 1 "low" and 2 "high" epithelial
        nuclei, 3 lymphocytes.
    """
    del spec  # the table holds every parameter; kept for symmetry with render_rgb
    x0, y0, w, h, _ = _region(l0_xy, size_wh, 1.0)
    index = index_nuclei(nuclei)
    sub = index.query(x0, y0, x0 + w, y0 + h)
    if len(sub) == 0:
        return np.zeros((h, w), np.int32), np.zeros((h, w), np.uint8)
    labels, _ = _n.rasterise_l0(sub, x0, y0, w, h, values=False)
    return labels, index.class_lut[labels]


# --------------------------------------------------------------------------- files

_SPEC_KEY = b"pathpipe.synthetic_spec"


def _nuclei_path(slide_path: Path) -> Path:
    return slide_path.with_name(slide_path.stem + ".nuclei.parquet")


def _description(spec: SyntheticSlideSpec) -> str:
    canonical = json.dumps(spec.to_dict(), sort_keys=True).encode()
    return (
        f"pathpipe synthetic slide class={spec.slide_class} seed={spec.seed} "
        f"mpp={spec.mpp:g} size={spec.width}x{spec.height} version={GENERATOR_VERSION} "
        f"spec_sha1={hashlib.sha1(canonical).hexdigest()[:12]}"
    )


def write_slide(
    path: str | os.PathLike, spec: SyntheticSlideSpec, *, workers: int | None = None
) -> Path:
    """Write the slide as a pyramidal JPEG tiled TIFF plus its ground truth.

    Each level is rendered directly at its downsample, a tile row at a time, by
    ``workers`` processes (rendering is many small numpy operations and does
    not scale with threads); memory stays bounded by a few tile rows per
    worker. Level 0 carries the ImageDescription
    ``pathpipe synthetic slide class=... seed=... mpp=...``; resolution tags
    give ``1e4 / (mpp * downsample)`` pixels per cm, which OpenSlide and
    tiffslide report as the MPP. Tiles are JPEG (quality ``spec.jpeg_quality``,
    YCbCr 4:2:0) and always rendered whole, also past the slide edge.

    ``<stem>.nuclei.parquet`` holds the :func:`make_nuclei` table (``area_px``
    counted while writing level 0) with the spec as JSON in the schema metadata
    key ``pathpipe.synthetic_spec`` (see :func:`read_ground_truth`); the level-0
    description ends with ``spec_sha1=`` (a hash of the same JSON), so a slide
    and its ground truth can be checked against a spec. Both files are written
    to temporary names and renamed, the ground truth first.

    Parameters
    ----------
    path : path-like
        Output ``.tiff``.
    spec : SyntheticSlideSpec
    workers : int or None
        Rendering processes; 1 renders in this process. None uses the CPU
        count for slides of 64 level-0 tiles or more, else 1.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tifffile

    path = Path(path)
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ConfigError(f"workers={workers!r}; expected a positive integer or None")
    ts = spec.tile_size
    n_l0_tiles = -(-spec.width // ts) * -(-spec.height // ts)
    if workers is None:  # a process pool pays off from a few dozen tiles on
        workers = (os.cpu_count() or 1) if n_l0_tiles >= 64 else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    tissue = make_tissue(spec)
    nuclei = _make_nuclei(spec, tissue, areas=False)
    index = index_nuclei(nuclei)

    tasks = [
        (d, ty, -(-lw // ts))
        for d, (lw, lh) in zip(spec.level_downsamples, spec.level_dimensions, strict=True)
        for ty in range(-(-lh // ts))
    ]
    area = np.zeros(len(nuclei) + 1, dtype=np.int64)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    gt_path = _nuclei_path(path)
    gt_tmp = gt_path.with_name(f"{gt_path.name}.tmp{os.getpid()}")
    bigtiff = spec.width * spec.height * 3 > 2**31
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=_io.mp_context(),
            initializer=_io.init_worker,
            initargs=(spec, _look(spec), index, tissue),
        )
    else:
        _io.init_worker(spec, _look(spec), index, tissue)
    try:
        rows = _io.ordered_map(pool, _io.render_tile_row, tasks, ahead=2 * workers)

        def level_tiles(n_rows: int) -> Iterator[bytes]:
            for _ in range(n_rows):
                tiles, first, counts = next(rows)
                area[first : first + len(counts)] += counts
                yield from tiles

        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for level, (d, (lw, lh)) in enumerate(
                zip(spec.level_downsamples, spec.level_dimensions, strict=True)
            ):
                res = 1e4 / (spec.mpp * d)
                tw.write(
                    level_tiles(-(-lh // ts)),
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(ts, ts),
                    compression="jpeg",
                    compressionargs={"level": spec.jpeg_quality},
                    subsampling=(2, 2),
                    photometric="rgb",
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if level == 0 else 1,
                    description=_description(spec) if level == 0 else None,
                    metadata=None,
                    software="pathpipe",
                )
        nuclei["area_px"] = area[1:]
        table = pa.Table.from_pandas(nuclei, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_SPEC_KEY] = json.dumps(spec.to_dict()).encode()
        pq.write_table(table.replace_schema_metadata(meta), gt_tmp)
        os.replace(gt_tmp, gt_path)
        os.replace(tmp, path)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        else:
            _io._WORKER.clear()
        for p in (tmp, gt_tmp):
            if p.exists():
                p.unlink()
    return path


def read_ground_truth(slide_path: str | os.PathLike) -> tuple[pd.DataFrame, SyntheticSlideSpec]:
    """Read ``<stem>.nuclei.parquet`` next to a written slide.

    Returns
    -------
    nuclei : pandas.DataFrame
        The :func:`make_nuclei` table.
    spec : SyntheticSlideSpec
        The spec the slide was written from.
    """
    import pyarrow.parquet as pq

    gt_path = _nuclei_path(Path(slide_path))
    if not gt_path.is_file():
        raise StorageError(f"ground truth {str(gt_path)!r} is missing; expected write_slide output")
    table = pq.read_table(gt_path)
    raw = (table.schema.metadata or {}).get(_SPEC_KEY)
    if raw is None:
        raise StorageError(f"ground truth {str(gt_path)!r} has no {_SPEC_KEY.decode()} metadata")
    return table.to_pandas(), SyntheticSlideSpec.from_dict(json.loads(raw))


def _is_written(slide_path: Path, spec: SyntheticSlideSpec) -> bool:
    """Whether ``slide_path`` (complete) and its ground truth were written from ``spec``."""
    import pyarrow.parquet as pq
    import tifffile

    gt_path = _nuclei_path(slide_path)
    if not (slide_path.is_file() and gt_path.is_file()):
        return False
    try:
        with tifffile.TiffFile(slide_path) as tif:
            description = tif.pages[0].description
            size = slide_path.stat().st_size
            for page in tif.pages:  # not truncated
                ends = np.add(page.dataoffsets, page.databytecounts)
                if len(ends) and int(ends.max()) > size:
                    return False
        raw = (pq.read_schema(gt_path).metadata or {}).get(_SPEC_KEY)
        stored = None if raw is None else json.loads(raw)
    except (OSError, ValueError, tifffile.TiffFileError):
        return False
    return description == _description(spec) and stored == spec.to_dict()


SHEET_COLUMNS = ["slide_id", "path", "label", "patient", "split", "mpp", "block", "section"]


def write_cohort(
    out_dir: str | os.PathLike,
    *,
    n_per_class: int,
    size: int | tuple[int, int],
    mpp: float = 0.25,
    seed: int = 0,
    workers: int | None = None,
) -> pd.DataFrame:
    """Write ``n_per_class`` slides of each class and return their sheet rows.

    Slides are ``synth_{class}_{i:02d}.tiff`` (``i`` from 1, classes "low" then
    "high"), each with its own seed derived from ``seed``, its class and ``i``,
    and one patient per slide (``patient == slide_id``). A slide whose file
    and ground truth already exist with the same spec is not rewritten, so
    rerunning is cheap and a killed run resumes.

    Parameters
    ----------
    out_dir : path-like
    n_per_class : int
    size : int or (int, int)
        Level-0 ``width`` (= height) or ``(width, height)``.
    mpp : float
    seed : int
    workers : int or None
        Passed to :func:`write_slide`.

    Returns
    -------
    sheet : pandas.DataFrame
        Columns ``slide_id, path, label, patient, split, mpp, block, section``
        (the slide sheet's): ``label`` is the class name, ``mpp`` the slides'
        level-0 MPP (also in their metadata); ``split``, ``block`` and
        ``section`` are empty (NaN).
    """
    if not isinstance(n_per_class, int) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ConfigError(f"n_per_class={n_per_class!r}; expected a positive integer")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r}; expected a non-negative integer")
    try:
        w, h = (size, size) if isinstance(size, int | np.integer) else (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"size={size!r}; expected an integer or (width, height)") from exc
    out_dir = Path(out_dir)
    rows = []
    for class_index, cls in enumerate(("low", "high")):
        for i in range(1, n_per_class + 1):
            state = np.random.SeedSequence([seed, class_index, i]).generate_state(1)[0]
            spec = SyntheticSlideSpec(
                width=w, height=h, mpp=mpp, slide_class=cls, seed=int(state >> 1)
            )
            slide_id = f"synth_{cls}_{i:02d}"
            path = out_dir / f"{slide_id}.tiff"
            if not _is_written(path, spec):
                write_slide(path, spec, workers=workers)
            rows.append(
                {
                    "slide_id": slide_id,
                    "path": str(path),
                    "label": cls,
                    "patient": slide_id,
                    "split": np.nan,
                    "mpp": float(mpp),
                    "block": np.nan,
                    "section": np.nan,
                }
            )
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)
