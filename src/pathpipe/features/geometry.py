"""Geometry family: region properties and PyRadiomics 2D shape of every nucleus.

Two groups of features, computed for all nuclei of a tile at once (compiled
kernels over the pixels grouped by nucleus, no per-nucleus Python):

* region properties with the definitions of ``skimage.measure.regionprops``
  called with ``spacing=(mpp, mpp)`` (area, perimeter, convex area, moment
  ellipse, Hu moments, maximum Feret diameter ...), plus circularity, elongation
  and the Crofton perimeter;
* ``shape2d_*``: the PyRadiomics ``shape2D`` features (van Griethuysen et al.,
  "Computational radiomics system to decode the radiographic phenotype",
  Cancer Res 77(21):e104-e107, 2017), whose perimeter and surface come from a
  marching-squares mesh through the midpoints of the pixel edges between the
  nucleus and its outside.

Coordinate frames: ``r, c`` are pixel row and column in the tile; kernels work in
*doubled* integer coordinates ``Y = 2 r, X = 2 c`` so that pixel-edge midpoints
and the half-pixel diamond of scikit-image's convex hull stay exact integers
(:mod:`pathpipe.features.hull`).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numba
import numpy as np

from pathpipe.features.hull import convex_image, hull_max_dist2
from pathpipe.features.pixels import Nuclei, prepare, row_runs
from pathpipe.features.registry import FeatureSpec, NucleusBatch, evaluate, feature, specs_of
from pathpipe.shape import CROFTON_4

__all__ = ["compute", "feature_specs"]

FAMILY = "geometry"


# --------------------------------------------------------------------------- kernels


@numba.njit(cache=True, nogil=True)
def _moments_kernel(
    rows: np.ndarray, cols: np.ndarray, starts: np.ndarray, rmin: np.ndarray, cmin: np.ndarray
) -> np.ndarray:
    """Central moments of every nucleus, ``(7, n)``.

    Rows: ``N mu20, N mu02, N mu11`` from exact integer sums in bounding-box
    coordinates (``N Σr² - (Σr)²``...), so that ties such as ``mu20 = mu02`` are
    exact; then ``mu30, mu03, mu21, mu12`` from centred coordinates.
    """
    n = len(starts) - 1
    out = np.zeros((7, n))
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        if a == b:
            continue
        sr = sc = srr = scc = src = 0
        for j in range(a, b):
            r, c = rows[j] - rmin[i], cols[j] - cmin[i]
            sr += r
            sc += c
            srr += r * r
            scc += c * c
            src += r * c
        k = b - a
        out[0, i] = float(k * srr - sr * sr)
        out[1, i] = float(k * scc - sc * sc)
        out[2, i] = float(k * src - sr * sc)
        r0, c0 = sr / k, sc / k
        for j in range(a, b):
            dr = rows[j] - rmin[i] - r0
            dc = cols[j] - cmin[i] - c0
            out[3, i] += dr * dr * dr
            out[4, i] += dc * dc * dc
            out[5, i] += dr * dr * dc
            out[6, i] += dr * dc * dc
    return out


# PyRadiomics 2D marching squares (radiomics/src/cshape.c, calculate_coefficients2D):
# corner bits p0 top-left 1, p1 top-right 2, p2 bottom-right 4, p3 bottom-left 8; the
# vertices are the midpoints of the square's sides; both saddles (5, 10) are cut into
# two corners. Per configuration: enclosed area (in sy * sx), and the number of mesh
# lines of each kind: diagonal (length sqrt(sy² + sx²) / 2), horizontal (sx), vertical (sy).
_MESH_AREA = np.array([0, 1, 1, 4, 1, 2, 4, 7, 1, 4, 2, 7, 4, 7, 7, 8], np.float64) / 8.0
_MESH_DIAG = np.array([0, 1, 1, 0, 1, 2, 0, 1, 1, 0, 2, 1, 0, 1, 1, 0], np.float64)
_MESH_HORIZ = np.array([0, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0, 1, 0, 0, 0], np.float64)
_MESH_VERT = np.array([0, 0, 0, 0, 0, 0, 1, 0, 0, 1, 0, 0, 0, 0, 0, 0], np.float64)


@numba.njit(cache=True, nogil=True)
def _mesh_kernel(
    compact: np.ndarray,
    rows: np.ndarray,
    cols: np.ndarray,
    starts: np.ndarray,
    cmin: np.ndarray,
    cmax: np.ndarray,
    table: np.ndarray,
) -> tuple[np.ndarray, np.ndarray]:
    """Per-nucleus sums of ``table[:, config]`` over the 2x2 windows, and mesh diameter².

    ``table`` rows: area fraction, diagonal, horizontal and vertical line counts,
    Crofton weight, per configuration (PyRadiomics corner bits). The diameter is PyRadiomics'
    ``calculate_meshDiameter2D``: the largest distance between mesh vertices
    (midpoints of the pixel edges between the nucleus and its outside); per
    row and half-row only the extreme vertices matter. Returned in doubled
    units² (``/ 4`` for px²), for isotropic spacing.
    """
    h, w = compact.shape
    n = len(starts) - 1
    sums = np.zeros((table.shape[0], n))
    diam2 = np.full(n, np.nan)
    for i in range(n):
        a, b = starts[i], starts[i + 1]
        if a == b:
            continue
        lab = i + 1
        r0, r1 = rows[a], rows[b - 1]
        for r in range(r0 - 1, r1 + 1):
            for c in range(cmin[i] - 1, cmax[i] + 1):
                cfg = 0
                if r >= 0 and c >= 0 and compact[r, c] == lab:
                    cfg |= 1
                if r >= 0 and c + 1 < w and compact[r, c + 1] == lab:
                    cfg |= 2
                if r + 1 < h and c + 1 < w and compact[r + 1, c + 1] == lab:
                    cfg |= 4
                if r + 1 < h and c >= 0 and compact[r + 1, c] == lab:
                    cfg |= 8
                if cfg != 0:
                    for t in range(table.shape[0]):
                        sums[t, i] += table[t, cfg]
        ny = 2 * (r1 - r0) + 3  # Y from 2 r0 - 1 to 2 r1 + 1
        lo = np.full(ny, 1 << 40, np.int64)
        hi = np.full(ny, -(1 << 40), np.int64)
        for j in range(a, b):
            r, c = rows[j], cols[j]
            base = 2 * (r - r0) + 1  # index of Y = 2 r
            if c == 0 or compact[r, c - 1] != lab:
                lo[base] = min(lo[base], 2 * c - 1)
                hi[base] = max(hi[base], 2 * c - 1)
            if c + 1 == w or compact[r, c + 1] != lab:
                lo[base] = min(lo[base], 2 * c + 1)
                hi[base] = max(hi[base], 2 * c + 1)
            if r == 0 or compact[r - 1, c] != lab:
                lo[base - 1] = min(lo[base - 1], 2 * c)
                hi[base - 1] = max(hi[base - 1], 2 * c)
            if r + 1 == h or compact[r + 1, c] != lab:
                lo[base + 1] = min(lo[base + 1], 2 * c)
                hi[base + 1] = max(hi[base + 1], 2 * c)
        cy = np.empty(2 * ny, np.int64)
        cx = np.empty(2 * ny, np.int64)
        q = 0
        for t in range(ny):
            if lo[t] <= hi[t]:
                cy[q], cx[q] = 2 * r0 - 1 + t, lo[t]
                q += 1
                if hi[t] != lo[t]:
                    cy[q], cx[q] = 2 * r0 - 1 + t, hi[t]
                    q += 1
        diam2[i] = hull_max_dist2(cy, cx, q)
    return sums, diam2


# skimage.measure.perimeter(image, 4) weights of the codes
# 1 + 2 * (4-neighbours on the border) + 10 * (diagonal neighbours on the border)
# (Benkrid & Crookes, "Design and FPGA implementation of a perimeter estimator").
_SKIMAGE_PERIMETER_WEIGHTS = np.zeros(50)
_SKIMAGE_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_SKIMAGE_PERIMETER_WEIGHTS[[21, 33]] = math.sqrt(2.0)
_SKIMAGE_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + math.sqrt(2.0)) / 2.0


@numba.njit(cache=True, nogil=True)
def _is_border(compact: np.ndarray, r: int, c: int, lab: int) -> bool:
    """Pixel ``(r, c)`` belongs to ``lab`` and has a 4-neighbour outside it."""
    h, w = compact.shape
    if r < 0 or c < 0 or r >= h or c >= w or compact[r, c] != lab:
        return False
    return (
        r == 0
        or c == 0
        or r == h - 1
        or c == w - 1
        or compact[r - 1, c] != lab
        or compact[r + 1, c] != lab
        or compact[r, c - 1] != lab
        or compact[r, c + 1] != lab
    )


@numba.njit(cache=True, nogil=True)
def _perimeter_kernel(
    compact: np.ndarray, rows: np.ndarray, cols: np.ndarray, starts: np.ndarray, weights: np.ndarray
) -> np.ndarray:
    """``skimage.measure.perimeter(region, 4)`` of every nucleus, px.

    Each border pixel (a 4-neighbour outside the nucleus) adds ``weights[code]``,
    ``code = 1 + 2 (border 4-neighbours) + 10 (border diagonal neighbours)``,
    counting border pixels of the same nucleus only.
    """
    n = len(starts) - 1
    out = np.zeros(n)
    for i in range(n):
        lab = i + 1
        for j in range(starts[i], starts[i + 1]):
            r, c = rows[j], cols[j]
            if not _is_border(compact, r, c, lab):
                continue
            code = 1
            for dr in range(-1, 2):
                for dc in range(-1, 2):
                    if (dr != 0 or dc != 0) and _is_border(compact, r + dr, c + dc, lab):
                        code += 2 if dr == 0 or dc == 0 else 10
            out[i] += weights[code]
    return out


def _crofton_table() -> np.ndarray:
    """``pathpipe.shape.CROFTON_4`` re-indexed by PyRadiomics corner bits.

    phenotype bits: bottom-right 1, top-right 2, bottom-left 4, top-left 8;
    PyRadiomics bits: top-left 1, top-right 2, bottom-right 4, bottom-left 8.
    """
    cfg = np.arange(16)
    theirs = (cfg & 1) * 8 + (cfg & 2) + ((cfg >> 2) & 1) + ((cfg >> 3) & 1) * 4
    return CROFTON_4[theirs]


# --------------------------------------------------------------------------- features


class Geometry:
    """Geometry features of the nuclei of one batch (one method per feature).

    Notation: ``N`` pixel count, ``s`` = mpp (µm per pixel), ``(r, c)`` pixel
    centres, ``mu_pq = sum (r - r̄)^p (c - c̄)^q``, ``λ1 >= λ2`` the eigenvalues of
    the inertia tensor ``[[mu02, -mu11], [-mu11, mu20]] / N`` (px²).
    """

    family = FAMILY

    def __init__(self, nuc: Nuclei) -> None:
        self.nuc = nuc
        s = nuc.mpp
        self.s = s
        k = nuc.count
        self.h = (nuc.rmax - nuc.rmin + 1).astype(np.float64)
        self.w = (nuc.cmax - nuc.cmin + 1).astype(np.float64)
        m = _moments_kernel(nuc.rows, nuc.cols, nuc.starts, nuc.rmin, nuc.cmin)
        self.num_rr, self.num_cc, self.num_rc = m[0], m[1], m[2]  # N mu20 etc., exact
        with np.errstate(divide="ignore", invalid="ignore"):
            self.mu20, self.mu02, self.mu11 = self.num_rr / k, self.num_cc / k, self.num_rc / k
            t_a, t_c, t_b = self.mu02 / k, self.mu20 / k, -self.mu11 / k
        half, root = (t_a + t_c) / 2.0, np.hypot((t_a - t_c) / 2.0, t_b)
        self.l1 = np.maximum(half + root, 0.0)
        self.l2 = np.maximum(half - root, 0.0)
        self.t_a, self.t_b, self.t_c = t_a, t_b, t_c
        self.mu30, self.mu03, self.mu21, self.mu12 = m[3], m[4], m[5], m[6]
        runs = row_runs(nuc)
        hull_count, feret2 = convex_image(*runs)
        self.hull_count = hull_count
        self.feret_px = np.sqrt(feret2) / 2.0
        self.perimeter_px = _perimeter_kernel(
            nuc.compact, nuc.rows, nuc.cols, nuc.starts, _SKIMAGE_PERIMETER_WEIGHTS
        )
        table = np.stack([_MESH_AREA, _MESH_DIAG, _MESH_HORIZ, _MESH_VERT, _crofton_table()])
        sums, diam2 = _mesh_kernel(
            nuc.compact, nuc.rows, nuc.cols, nuc.starts, nuc.cmin, nuc.cmax, table
        )
        self.mesh_area_px = sums[0]
        diag = math.sqrt(2.0) / 2.0
        self.mesh_perimeter_px = sums[1] * diag + sums[2] + sums[3]
        self.mesh_diameter_px = np.sqrt(diam2) / 2.0
        self.crofton_px = sums[4]

    # -- region properties (skimage.measure.regionprops, spacing (s, s)) -----------

    @feature("µm²", pyradiomics="original_shape2D_PixelSurface")
    def area_um2(self) -> np.ndarray:
        """A = N s² (regionprops ``area``)."""
        return self.nuc.count * self.s**2

    @feature("µm")
    def perimeter_um(self) -> np.ndarray:
        """P = s × sum over border pixels (4-neighbour definition) of the weight of
        their border-neighbour configuration: 1 for straight runs, √2 for diagonal,
        (1 + √2)/2 for corners (regionprops ``perimeter``; Benkrid & Crookes)."""
        return self.perimeter_px * self.s

    @feature("µm")
    def perimeter_crofton_um(self) -> np.ndarray:
        """P_C = s × Crofton perimeter, 4 directions: a weight per 2x2 configuration
        (regionprops ``perimeter_crofton``; Rivollier 2010, after Crofton's formula)."""
        return self.crofton_px * self.s

    @feature("µm²")
    def convex_area_um2(self) -> np.ndarray:
        """A_hull = s² × pixels of the convex image: pixel centres inside or on the hull
        of the pixels' half-pixel diamonds (regionprops ``area_convex``)."""
        return self.hull_count * self.s**2

    @feature("µm²")
    def bbox_area_um2(self) -> np.ndarray:
        """A_bbox = s² × rows × columns of the bounding box (regionprops ``area_bbox``)."""
        return self.h * self.w * self.s**2

    @feature("1")
    def eccentricity(self) -> np.ndarray:
        """e = sqrt(1 - λ2 / λ1); 0 when λ1 = 0 (regionprops ``eccentricity``)."""
        return np.where(self.l1 > 0, np.sqrt(1.0 - self.l2 / self.l1), 0.0)

    @feature("1")
    def solidity(self) -> np.ndarray:
        """A / A_hull (regionprops ``solidity``)."""
        return self.nuc.count / self.hull_count

    @feature("1")
    def extent(self) -> np.ndarray:
        """A / A_bbox (regionprops ``extent``)."""
        return self.nuc.count / (self.h * self.w)

    @feature("µm", pyradiomics="original_shape2D_MajorAxisLength")
    def major_axis_length_um(self) -> np.ndarray:
        """L_major = 4 s sqrt(λ1) (regionprops ``axis_major_length``)."""
        return 4.0 * np.sqrt(self.l1) * self.s

    @feature("µm", pyradiomics="original_shape2D_MinorAxisLength")
    def minor_axis_length_um(self) -> np.ndarray:
        """L_minor = 4 s sqrt(λ2) (regionprops ``axis_minor_length``)."""
        return 4.0 * np.sqrt(self.l2) * self.s

    @feature("rad")
    def orientation(self) -> np.ndarray:
        """θ = ½ atan2(2 mu11, mu20 - mu02), angle in (-π/2, π/2] between the row axis
        and the major axis; ±π/4 when mu20 = mu02 (regionprops ``orientation``)."""
        tie = self.num_rr == self.num_cc  # exact integers
        theta = 0.5 * np.arctan2(-2.0 * self.t_b, self.t_c - self.t_a)
        return np.where(tie, np.where(self.t_b < 0, np.pi / 4, -np.pi / 4), theta)

    @feature("1")
    def circularity(self) -> np.ndarray:
        """4π A / P_C² with the Crofton perimeter P_C (1 for a disc; not clipped)."""
        return 4.0 * np.pi * self.nuc.count / self.crofton_px**2

    @feature("1")
    def elongation(self) -> np.ndarray:
        """1 - L_minor / L_major: 0 for a disc, 1 for a one-pixel-wide line."""
        return 1.0 - np.sqrt(self.l2 / self.l1)

    @feature("µm")
    def equivalent_diameter_um(self) -> np.ndarray:
        """d_eq = sqrt(4 A / π) (regionprops ``equivalent_diameter_area``)."""
        return np.sqrt(4.0 * self.nuc.count / np.pi) * self.s

    @feature("µm")
    def feret_diameter_max_um(self) -> np.ndarray:
        """Largest distance between the marching-squares contour points of the convex
        image (regionprops ``feret_diameter_max``)."""
        return self.feret_px * self.s

    def _eta(self) -> tuple[np.ndarray, ...]:
        k = self.nuc.count
        e2, e3 = k**2.0, k**2.5
        return (
            self.mu20 / e2,
            self.mu02 / e2,
            self.mu11 / e2,
            self.mu30 / e3,
            self.mu03 / e3,
            self.mu21 / e3,
            self.mu12 / e3,
        )

    @feature("1")
    def hu_moment_1(self) -> np.ndarray:
        """h1 = η20 + η02, with η_pq = mu_pq / N^((p+q)/2 + 1), p the row power
        (Hu, IRE Trans. Inf. Theory 8:179-187, 1962; regionprops ``moments_hu[0]``)."""
        n20, n02, *_ = self._eta()
        return n20 + n02

    @feature("1")
    def hu_moment_2(self) -> np.ndarray:
        """h2 = (η20 - η02)² + 4 η11² (Hu 1962; regionprops ``moments_hu[1]``)."""
        n20, n02, n11, *_ = self._eta()
        return (n20 - n02) ** 2 + 4.0 * n11**2

    @feature("1")
    def hu_moment_3(self) -> np.ndarray:
        """h3 = (η30 - 3 η12)² + (3 η21 - η03)² (Hu 1962; regionprops ``moments_hu[2]``)."""
        _, _, _, n30, n03, n21, n12 = self._eta()
        return (n30 - 3 * n12) ** 2 + (3 * n21 - n03) ** 2

    @feature("1")
    def hu_moment_4(self) -> np.ndarray:
        """h4 = (η30 + η12)² + (η21 + η03)² (Hu 1962; regionprops ``moments_hu[3]``)."""
        _, _, _, n30, n03, n21, n12 = self._eta()
        return (n30 + n12) ** 2 + (n21 + n03) ** 2

    @feature("1")
    def hu_moment_5(self) -> np.ndarray:
        """h5 = (η30 - 3η12)(η30 + η12)[(η30 + η12)² - 3(η21 + η03)²] + (3η21 - η03)(η21 +
        η03)[3(η30 + η12)² - (η21 + η03)²] (Hu 1962; regionprops ``moments_hu[4]``)."""
        _, _, _, n30, n03, n21, n12 = self._eta()
        a, b = n30 + n12, n21 + n03
        return (n30 - 3 * n12) * a * (a**2 - 3 * b**2) + (3 * n21 - n03) * b * (3 * a**2 - b**2)

    @feature("1")
    def hu_moment_6(self) -> np.ndarray:
        """h6 = (η20 - η02)[(η30 + η12)² - (η21 + η03)²] + 4η11(η30 + η12)(η21 + η03)
        (Hu 1962; regionprops ``moments_hu[5]``)."""
        n20, n02, n11, n30, n03, n21, n12 = self._eta()
        a, b = n30 + n12, n21 + n03
        return (n20 - n02) * (a**2 - b**2) + 4 * n11 * a * b

    @feature("1")
    def hu_moment_7(self) -> np.ndarray:
        """h7 = (3η21 - η03)(η30 + η12)[(η30 + η12)² - 3(η21 + η03)²] - (η30 - 3η12)(η21 +
        η03)[3(η30 + η12)² - (η21 + η03)²] (Hu 1962; regionprops ``moments_hu[6]``)."""
        _, _, _, n30, n03, n21, n12 = self._eta()
        a, b = n30 + n12, n21 + n03
        return (3 * n21 - n03) * a * (a**2 - 3 * b**2) - (n30 - 3 * n12) * b * (3 * a**2 - b**2)

    # -- PyRadiomics shape2D ------------------------------------------------------

    @feature("µm²", pyradiomics="original_shape2D_MeshSurface")
    def shape2d_mesh_surface(self) -> np.ndarray:
        """A_mesh = area enclosed by the marching-squares mesh through the midpoints of the
        pixel edges between nucleus and outside: per 2x2 window 1/8 for one inside corner,
        1/4 for two diagonal, 1/2 for two adjacent, 7/8 for three, 1 for four, times s²
        (PyRadiomics shape2D MeshSurface)."""
        return self.mesh_area_px * self.s**2

    @feature("µm²", pyradiomics="original_shape2D_PixelSurface")
    def shape2d_pixel_surface(self) -> np.ndarray:
        """A_pixel = N s² (PyRadiomics shape2D PixelSurface)."""
        return self.nuc.count * self.s**2

    @feature("µm", pyradiomics="original_shape2D_Perimeter")
    def shape2d_perimeter(self) -> np.ndarray:
        """P_mesh = total length of the mesh lines: per 2x2 window s √2/2 per cut
        corner, s per line across the window (PyRadiomics shape2D Perimeter)."""
        return self.mesh_perimeter_px * self.s

    @feature("1/µm", pyradiomics="original_shape2D_PerimeterSurfaceRatio")
    def shape2d_perimeter_surface_ratio(self) -> np.ndarray:
        """P_mesh / A_mesh (PyRadiomics shape2D PerimeterSurfaceRatio)."""
        return self.mesh_perimeter_px / (self.mesh_area_px * self.s)

    @feature("1", pyradiomics="original_shape2D_Sphericity")
    def shape2d_sphericity(self) -> np.ndarray:
        """2 sqrt(π A_mesh) / P_mesh (PyRadiomics shape2D Sphericity)."""
        return 2.0 * np.sqrt(np.pi * self.mesh_area_px) / self.mesh_perimeter_px

    @feature("1", pyradiomics="original_shape2D_SphericalDisproportion")
    def shape2d_spherical_disproportion(self) -> np.ndarray:
        """P_mesh / (2 sqrt(π A_mesh)) (PyRadiomics shape2D SphericalDisproportion)."""
        return self.mesh_perimeter_px / (2.0 * np.sqrt(np.pi * self.mesh_area_px))

    @feature("µm", pyradiomics="original_shape2D_MaximumDiameter")
    def shape2d_maximum_diameter(self) -> np.ndarray:
        """Largest distance between two mesh vertices (PyRadiomics shape2D MaximumDiameter)."""
        return self.mesh_diameter_px * self.s

    @feature("µm", pyradiomics="original_shape2D_MajorAxisLength")
    def shape2d_major_axis_length(self) -> np.ndarray:
        """4 sqrt(λ_major) of the covariance of the physical pixel-centre coordinates
        (PyRadiomics shape2D MajorAxisLength; equals ``major_axis_length_um``)."""
        return 4.0 * np.sqrt(self.l1) * self.s

    @feature("µm", pyradiomics="original_shape2D_MinorAxisLength")
    def shape2d_minor_axis_length(self) -> np.ndarray:
        """4 sqrt(λ_minor) (PyRadiomics shape2D MinorAxisLength; equals
        ``minor_axis_length_um``)."""
        return 4.0 * np.sqrt(self.l2) * self.s

    @feature("1", pyradiomics="original_shape2D_Elongation")
    def shape2d_elongation(self) -> np.ndarray:
        """sqrt(λ_minor / λ_major); NaN when λ_major = 0 (PyRadiomics shape2D Elongation)."""
        return np.sqrt(self.l2 / self.l1)


def feature_specs(channels: Sequence[str] = ()) -> list[FeatureSpec]:
    """The geometry features, in column order (independent of ``channels``).

    Parameters
    ----------
    channels : sequence of str
        Unused: geometry features take no intensity channel.

    Returns
    -------
    list of FeatureSpec
    """
    return specs_of(Geometry)


def compute(batch: NucleusBatch) -> dict[str, np.ndarray]:
    """Geometry features of the nuclei ``batch.ids``.

    Parameters
    ----------
    batch : NucleusBatch

    Returns
    -------
    dict of str to (n,) float64 ndarray
        One entry per :func:`feature_specs` name, in that order. Ids absent from
        ``batch.labels`` are NaN throughout.
    """
    return evaluate(Geometry(prepare(batch)))
