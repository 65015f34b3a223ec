"""A layer's point cloud: the pixels of a section's mask, in µm, at the working resolution.

The paper's "layered point cloud" (Wu et al., Sect. 3 "Point Clouds"): every
positive pixel of the (down-sampled) mask becomes a point whose ``x, y`` come from
the pixel position; here in µm from the mask's own µm/px, so sections scanned at
different resolutions meet in one frame, and ``z`` (section position × spacing) is
added by the caller, never stored here.

Down-sampling to the working resolution is an area average: the mask is cut into
blocks of ``working_mpp`` µm (per axis, from the mask's µm/px), a block is a point
when at least ``min_fraction`` of it is mask, at the block centre; the optional
RGB of a point is the mean colour of its block. A mask coarser than the working
resolution is sampled at its nearest pixel instead.

Beyond the paper, a layer also keeps its **contour**: the iso-line
``fraction = min_fraction`` of the block fractions (marching squares,
``skimage.measure.find_contours``), so sub-pixel where the mask is finer than
the working resolution. Outlines of the object and of its holes carry all the
information a rigid fit of two filled masks has (interior points of two
overlapping masks match themselves wherever the layers lie), and ICP on them
converges where ICP on filled masks stalls (see :mod:`~pathpipe.reconstruction.icp`).
The image border is not an outline: contours end where the mask meets it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["CONTOUR_STEP", "DENSITY_MARGIN", "LayerPoints", "density_image", "layer_points"]

#: Spacing of the outline points, in working pixels. Dense, so that matching a
#: point to its nearest outline point approximates its distance to the outline
#: (point-to-point ICP on sparse outlines resists sliding along them).
CONTOUR_STEP = 0.25

#: Working pixels of background kept around the mask's bounding box in a layer's density.
DENSITY_MARGIN = 8


@dataclass(frozen=True, eq=False)
class LayerPoints:
    """One section as points.

    Attributes
    ----------
    xy : (N, 2) float64 ndarray
        Point positions ``(x, y)`` in µm in the layer's own frame (x along
        columns, y along rows, from the mask's top-left corner).
    rgb : (N, 3) uint8 ndarray or None
        Mean colour of each point's block, when an image was given.
    working_mpp : float
        µm between neighbouring points (the working resolution).
    contour : (M, 2) float64 ndarray
        Points of the mask's outlines (object and holes) in µm,
        :data:`CONTOUR_STEP` working pixels apart; empty when the mask has no outline.
    density : (h, w) float32 ndarray or None
        The section's normalised optical density per working pixel (see
        :func:`density_image`), cropped to the mask's bounding box and a margin
        of :data:`DENSITY_MARGIN` pixels; None without an image.
    density_frame : RigidTransform2D
        Maps density pixel ``(row r, column c)`` at ``(c × working_mpp, r × working_mpp)``
        to the layer's frame (µm; moves with :meth:`transformed`).
    """

    xy: np.ndarray
    rgb: np.ndarray | None
    working_mpp: float
    contour: np.ndarray = field(default_factory=lambda: np.zeros((0, 2)))
    density: np.ndarray | None = None
    density_frame: RigidTransform2D = field(default_factory=RigidTransform2D)

    def __len__(self) -> int:
        return int(self.xy.shape[0])

    def transformed(self, transform: RigidTransform2D) -> LayerPoints:
        """The layer with its points and contour mapped by ``transform`` (colours kept)."""
        contour = transform.apply(self.contour) if len(self.contour) else self.contour
        return LayerPoints(
            transform.apply(self.xy),
            self.rgb,
            self.working_mpp,
            contour,
            self.density,
            transform.compose(self.density_frame),
        )

    def __repr__(self) -> str:
        colour = ", rgb" if self.rgb is not None else ""
        return (
            f"LayerPoints({len(self)} points, {len(self.contour)} outline points, "
            f"{self.working_mpp:g} µm/px{colour})"
        )

    @property
    def empty(self) -> bool:
        return self.xy.shape[0] == 0


def _blocks(n_px: int, mpp: float, working_mpp: float) -> tuple[np.ndarray, np.ndarray]:
    """Along one axis: the first source pixel of each working block, and its centre in µm.

    Down-sampling (``working_mpp >= mpp``): blocks of ``working_mpp / mpp`` source
    pixels (the last one takes the remainder), centred on the pixels they cover.
    Up-sampling: one block per working pixel, sampling the source pixel under its
    centre.
    """
    n_out = max(1, int(np.floor(n_px * mpp / working_mpp + 1e-9)))
    index = np.arange(n_out)
    if working_mpp >= mpp:
        starts = np.floor(index * working_mpp / mpp + 1e-9).astype(np.int64)
        ends = np.append(starts[1:], n_px)
        centres = (starts + ends) * 0.5 * mpp
    else:
        centres = (index + 0.5) * working_mpp
        starts = np.floor(centres / mpp).astype(np.int64)
    return np.minimum(starts, n_px - 1), centres


def _block_mean(values: np.ndarray, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
    """Mean of ``values`` (H, W[, C]) over the blocks starting at ``rows`` × ``cols``.

    ``np.add.reduceat`` gives the block sums; where a block is empty (a coarser
    source, so starts repeat) it returns the start pixel, whose count is set to 1.
    """
    if len(rows) == values.shape[0] and len(cols) == values.shape[1]:
        return values  # one source pixel per block
    sums = np.add.reduceat(np.add.reduceat(values, rows, axis=0), cols, axis=1)
    n_r = np.maximum(np.diff(np.append(rows, values.shape[0])), 1)
    n_c = np.maximum(np.diff(np.append(cols, values.shape[1])), 1)
    counts = np.outer(n_r, n_c)
    if values.ndim == 3:
        counts = counts[:, :, None]
    return sums / counts


def layer_points(
    mask: np.ndarray,
    mpp: float | tuple[float, float],
    working_mpp: float,
    *,
    rgb: np.ndarray | None = None,
    min_fraction: float = 0.5,
    outline: bool = True,
) -> LayerPoints:
    """The point cloud of a section's mask at the working resolution.

    Parameters
    ----------
    mask : (H, W) bool ndarray
        The section's mask (tissue, a phenotype's density or an annotation).
    mpp : float or (float, float)
        µm per pixel of ``mask``, one value or ``(x, y)`` (columns, rows).
    working_mpp : float
        µm between the points (the working resolution).
    rgb : (H, W, 3) uint8 ndarray, optional
        The section's image on the same grid as ``mask``; each point gets the
        mean colour of its block.
    min_fraction : float
        A block is a point when at least this fraction of it is mask.
    outline : bool
        Whether to compute the outline (:attr:`LayerPoints.contour`), which the
        ``contour`` subset and the candidate refinement use.

    Returns
    -------
    LayerPoints
        ``xy`` in µm (block centres), row-major order; empty when the mask is.

    Raises
    ------
    ConfigError
        When the mask is not 2D boolean, a resolution is not positive, or the
        image does not match the mask.
    """
    m = np.asarray(mask)
    if m.ndim != 2 or m.dtype != bool:
        raise ConfigError(f"mask of shape {m.shape} and dtype {m.dtype}; expected a 2D bool array")
    mpp_x, mpp_y = (mpp, mpp) if np.isscalar(mpp) else tuple(mpp)  # type: ignore[misc]
    for name, value in (("mpp x", mpp_x), ("mpp y", mpp_y), ("working_mpp", working_mpp)):
        if not (np.isfinite(value) and value > 0):
            raise ConfigError(f"{name}={value!r}; expected a positive number of µm per pixel")
    if not 0.0 < min_fraction <= 1.0:
        raise ConfigError(f"min_fraction={min_fraction!r}; expected a number in (0, 1]")
    if rgb is not None:
        rgb = np.asarray(rgb)
        if rgb.shape != (*m.shape, 3):
            raise ConfigError(f"rgb of shape {rgb.shape}; expected {(*m.shape, 3)} like the mask")
    if m.size == 0:
        no_rgb = None if rgb is None else np.zeros((0, 3), np.uint8)
        return LayerPoints(np.zeros((0, 2)), no_rgb, float(working_mpp))

    rows, y_um = _blocks(m.shape[0], mpp_y, working_mpp)
    cols, x_um = _blocks(m.shape[1], mpp_x, working_mpp)
    fraction = _block_mean(m.astype(np.float32), rows, cols)
    r, c = np.nonzero(fraction >= min_fraction - 1e-6)
    x, y = x_um[c], y_um[r]
    colours, density, frame = None, None, RigidTransform2D()
    if rgb is not None:
        mean = _block_mean(rgb.astype(np.float32), rows, cols)
        colours = np.clip(np.rint(mean[r, c]), 0, 255).astype(np.uint8)
        if len(r):
            od = _block_mean(_optical_density(rgb), rows, cols)
            inside = fraction >= min_fraction - 1e-6
            r0, r1 = max(r.min() - DENSITY_MARGIN, 0), min(r.max() + DENSITY_MARGIN + 1, len(y_um))
            c0, c1 = max(c.min() - DENSITY_MARGIN, 0), min(c.max() + DENSITY_MARGIN + 1, len(x_um))
            density = density_image(od, inside)[r0:r1, c0:c1]
            # pixel centres are working_mpp apart from the crop's first block centre
            frame = RigidTransform2D(0.0, float(x_um[c0]), float(y_um[r0]))
    xy = np.column_stack([x, y]).astype(np.float64)
    contour = _contour(fraction, x_um, y_um, min_fraction) if outline else np.zeros((0, 2))
    return LayerPoints(xy, colours, float(working_mpp), contour, density, frame)


def _optical_density(rgb: np.ndarray) -> np.ndarray:
    """``Σ_c -log(I_c / 255)`` per pixel (Beer–Lambert, summed over R, G, B), float32."""
    od = -np.log(np.clip(rgb.astype(np.float32), 1.0, 255.0) / 255.0)
    return od.sum(axis=-1)


def density_image(od: np.ndarray, inside: np.ndarray) -> np.ndarray:
    """Stain-normalised optical density: ``(OD - OD_bg) / median_mask(OD - OD_bg)``, ≥ 0.

    Parameters
    ----------
    od : (h, w) float ndarray
        Optical density per working pixel.
    inside : (h, w) bool ndarray
        The section's mask at the same resolution.

    Returns
    -------
    (h, w) float32 ndarray
        0 on the slide's background (``OD_bg``: the median outside the mask, 0
        when the mask covers everything), about 1 in typical tissue; a stain
        stronger by a factor scales ``OD - OD_bg`` by it, which the median divides out.
    """
    background = float(np.median(od[~inside])) if (~inside).any() else 0.0
    excess = np.maximum(od - background, 0.0)
    scale = float(np.median(excess[inside])) if inside.any() else 0.0
    return (excess / scale if scale > 0 else excess).astype(np.float32)


def _resample(line: np.ndarray, step: float) -> np.ndarray:
    """Points every ``step`` along a polyline (its vertices' own positions are not kept)."""
    seg = np.hypot(*np.diff(line, axis=0).T)
    arc = np.concatenate([[0.0], np.cumsum(seg)])
    at = np.arange(0.0, arc[-1] + 1e-9, step) if arc[-1] > 0 else np.zeros(1)
    return np.column_stack([np.interp(at, arc, line[:, 0]), np.interp(at, arc, line[:, 1])])


def _contour(fraction: np.ndarray, x_um: np.ndarray, y_um: np.ndarray, level: float) -> np.ndarray:
    """Outline points (µm) of the iso-line ``fraction = level``, block centres -> µm."""
    from scipy.ndimage import gaussian_filter
    from skimage.measure import find_contours

    if fraction.shape[0] < 2 or fraction.shape[1] < 2:
        return np.zeros((0, 2))
    # only the bounding box of the mask (and the smoothing's reach) can hold an outline
    rows, cols = np.nonzero(fraction.any(axis=1))[0], np.nonzero(fraction.any(axis=0))[0]
    if len(rows) == 0:
        return np.zeros((0, 2))
    r0, r1 = max(rows[0] - 4, 0), min(rows[-1] + 5, fraction.shape[0])
    c0, c1 = max(cols[0] - 4, 0), min(cols[-1] + 5, fraction.shape[1])
    # smoothing by a working pixel lifts the outline off the pixel lattice: on two
    # binary masks at 0°/90°/180° to each other, lattice-bound outlines match exactly
    # at the wrong place and ICP stops there
    smooth = gaussian_filter(fraction[r0:r1, c0:c1], 1.0, mode="nearest")
    lines = find_contours(smooth, level - 1e-6)
    if not lines:
        return np.zeros((0, 2))
    rc = np.concatenate([_resample(line, CONTOUR_STEP) for line in lines]) + np.array([r0, c0])
    x = np.interp(rc[:, 1], np.arange(len(x_um)), x_um)
    y = np.interp(rc[:, 0], np.arange(len(y_um)), y_um)
    return np.column_stack([x, y])
