"""Pure functions of the tiling stage: the tile grid, tissue fraction, pixel QC, read runs.

Frames: ``t_`` pixels at the tiling MPP; ``m_`` pixels of the tissue mask;
``grid_rc`` ``(row, col)`` of a tile in the grid.
"""

from __future__ import annotations

import math

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.io.storage import SHARD_BYTES as STORAGE_SHARD_BYTES
from pathpipe.io.storage import shard_items

__all__ = [
    "GREY_CHROMA",
    "MAX_RUN",
    "SHARD_BYTES",
    "WHITE_LEVEL",
    "pixel_qc",
    "plan_runs",
    "shard_tiles",
    "tile_grid",
    "tissue_fraction",
]

#: A pixel is "white" (background glass) when every channel is at least this.
WHITE_LEVEL = 220
#: A non-white pixel is "grey" when max - min over its channels is below this.
GREY_CHROMA = 20
#: Longest run of horizontally adjacent tiles read with one region request.
MAX_RUN = 8
#: Uncompressed bytes of tiles per shard file of ``tiles`` (at most).
SHARD_BYTES = STORAGE_SHARD_BYTES


def tile_grid(t_size_wh: tuple[int, int], *, tile_size: int, stride: int) -> np.ndarray:
    """Row-major grid of tile origins covering an image.

    A tile is placed wherever it starts inside the image; tiles crossing the
    right or bottom edge are kept (the reader pads them with white).

    Parameters
    ----------
    t_size_wh : (int, int)
        Image ``(width, height)`` in pixels at the tiling resolution.
    tile_size, stride : int

    Returns
    -------
    grid_rc : (N, 2) int32 ndarray
        ``(row, col)`` of each tile; its origin is ``(col * stride, row * stride)``.
    """
    if stride <= 0 or tile_size <= 0:
        raise ConfigError(f"tile_size and stride must be positive, received {tile_size}, {stride}")
    t_w, t_h = t_size_wh
    n_cols = max(1, math.ceil(max(t_w - tile_size, 0) / stride) + 1) if t_w > 0 else 0
    n_rows = max(1, math.ceil(max(t_h - tile_size, 0) / stride) + 1) if t_h > 0 else 0
    rows, cols = np.mgrid[0:n_rows, 0:n_cols]
    return np.stack([rows.ravel(), cols.ravel()], axis=1).astype(np.int32)


def tissue_fraction(
    mask: np.ndarray,
    *,
    m_scale_xy: tuple[float, float],
    l0_xy: np.ndarray,
    l0_tile_wh: tuple[float, float],
) -> np.ndarray:
    """Fraction of each tile's area covered by the tissue mask.

    Parameters
    ----------
    mask : (M, N) bool ndarray
        Tissue mask covering the whole slide.
    m_scale_xy : (float, float)
        Level-0 pixels per mask pixel along x and y.
    l0_xy : (K, 2) ndarray
        Level-0 ``(x, y)`` of each tile's top-left corner.
    l0_tile_wh : (float, float)
        Level-0 extent of a tile.

    Returns
    -------
    fraction : (K,) float32 ndarray in [0, 1]
        Mask pixels are counted when their centre lies in the tile; area outside
        the slide counts as background. A tile smaller than one mask pixel takes
        the value of the mask pixel under its centre.
    """
    if mask.ndim != 2:
        raise ConfigError(f"tissue mask must be 2-D, received shape {mask.shape}")
    l0_xy = np.asarray(l0_xy, dtype=np.float64).reshape(-1, 2)
    sx, sy = m_scale_xy
    m_h, m_w = mask.shape
    integral = np.zeros((m_h + 1, m_w + 1), dtype=np.int64)
    integral[1:, 1:] = mask.astype(np.int64).cumsum(0).cumsum(1)
    # mask pixel i has centre (i + 0.5) * s; it is inside [a, b) iff a <= (i+.5)s < b
    x0 = np.ceil(l0_xy[:, 0] / sx - 0.5).astype(np.int64)
    x1 = np.ceil((l0_xy[:, 0] + l0_tile_wh[0]) / sx - 0.5).astype(np.int64)
    y0 = np.ceil(l0_xy[:, 1] / sy - 0.5).astype(np.int64)
    y1 = np.ceil((l0_xy[:, 1] + l0_tile_wh[1]) / sy - 0.5).astype(np.int64)
    area = (x1 - x0) * (y1 - y0)
    cx0, cx1 = np.clip(x0, 0, m_w), np.clip(x1, 0, m_w)
    cy0, cy1 = np.clip(y0, 0, m_h), np.clip(y1, 0, m_h)
    inside = integral[cy1, cx1] - integral[cy0, cx1] - integral[cy1, cx0] + integral[cy0, cx0]
    out = np.zeros(len(l0_xy), dtype=np.float32)
    big = area > 0
    out[big] = inside[big] / area[big]
    if (~big).any():
        cx = np.floor((l0_xy[~big, 0] + l0_tile_wh[0] / 2) / sx).astype(np.int64)
        cy = np.floor((l0_xy[~big, 1] + l0_tile_wh[1] / 2) / sy).astype(np.int64)
        ok = (cx >= 0) & (cx < m_w) & (cy >= 0) & (cy < m_h)
        vals = np.zeros(len(cx), dtype=np.float32)
        vals[ok] = mask[cy[ok], cx[ok]]
        out[~big] = vals
    return out


def pixel_qc(tile: np.ndarray) -> tuple[float, float, float]:
    """QC values of one tile.

    Parameters
    ----------
    tile : (T, T, 3) uint8 ndarray

    Returns
    -------
    white_fraction : float
        Fraction of pixels whose every channel is >= :data:`WHITE_LEVEL`.
    grey_fraction : float
        Fraction of non-white pixels with chroma ``max - min`` < :data:`GREY_CHROMA`
        (pen-free grey: dust, folds, out-of-focus debris).
    blur : float
        Variance of the 4-neighbour Laplacian of 8-bit luma (ITU-R BT.601
        weights, as OpenCV's ``COLOR_RGB2GRAY`` rounds them) over the tile's
        interior pixels; low values mean a blurred or empty tile
        (Pech-Pacheco et al., 2000).
    """
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
        raise ConfigError(
            f"pixel_qc expects an (M, N, 3) uint8 tile, received {tile.shape} {tile.dtype}"
        )
    import cv2

    tile = np.ascontiguousarray(tile)
    n = tile.shape[0] * tile.shape[1]
    # OpenCV releases the GIL in each call, so reader threads run QC in parallel
    # (NumPy's many small operations hold it between them and get slower with
    # two threads); :func:`_pixel_qc_numpy` is the reference it is tested against.
    r, g, b = cv2.split(tile)
    mn = cv2.min(cv2.min(r, g), b)
    mx = cv2.max(cv2.max(r, g), b)
    non_white = cv2.compare(mn, WHITE_LEVEL, cv2.CMP_LT)
    low_chroma = cv2.compare(cv2.subtract(mx, mn), GREY_CHROMA, cv2.CMP_LT)
    n_white = n - cv2.countNonZero(non_white)
    n_grey = cv2.countNonZero(cv2.bitwise_and(low_chroma, non_white))
    blur = 0.0
    if tile.shape[0] > 2 and tile.shape[1] > 2:
        luma = cv2.cvtColor(tile, cv2.COLOR_RGB2GRAY)
        lap = cv2.Laplacian(luma, cv2.CV_16S, ksize=1)[1:-1, 1:-1]
        m = lap.size
        # exact: float64 sums of these integers stay below 2**53
        s1 = cv2.sumElems(lap)[0]
        s2 = cv2.norm(lap, cv2.NORM_L2SQR)
        blur = s2 / m - (s1 / m) ** 2
    return n_white / n, n_grey / n, float(blur)


def _pixel_qc_numpy(tile: np.ndarray) -> tuple[float, float, float]:
    """NumPy reference of :func:`pixel_qc` (the tests check the kernel against it)."""
    r, g, b = np.ascontiguousarray(tile.transpose(2, 0, 1))  # planar is ~10x faster here
    mn = np.minimum(np.minimum(r, g), b)
    mx = np.maximum(np.maximum(r, g), b)
    white = mn >= WHITE_LEVEL
    n_white = int(np.count_nonzero(white))
    n_grey = int(np.count_nonzero(((mx - mn) < GREY_CHROMA) & ~white))
    n = mn.size
    import cv2

    # 8-bit BT.601 luma: OpenCV's fixed-point rounding is the definition
    luma = cv2.cvtColor(np.ascontiguousarray(tile), cv2.COLOR_RGB2GRAY).astype(np.int16)
    lap = luma[:-2, 1:-1] + luma[2:, 1:-1] + luma[1:-1, :-2] + luma[1:-1, 2:] - 4 * luma[1:-1, 1:-1]
    if lap.size:
        # float64 sums of these integers are exact (< 2**53)
        f = lap.astype(np.float64).ravel()
        mean = f.sum() / f.size
        blur = float(np.dot(f, f)) / f.size - mean * mean
    else:
        blur = 0.0
    return n_white / n, n_grey / n, blur


def shard_tiles(tile_size: int) -> int:
    """Tiles per shard file: the largest power of two, 1 to 256, whose tiles
    hold at most :data:`SHARD_BYTES` uncompressed (64 tiles of 256 px)."""
    return shard_items(tile_size * tile_size * 3, target=SHARD_BYTES)


def plan_runs(grid_rc: np.ndarray, *, max_run: int = MAX_RUN) -> list[np.ndarray]:
    """Group tiles into runs of horizontally adjacent tiles in one row.

    Parameters
    ----------
    grid_rc : (K, 2) int ndarray
        Tiles in row-major order.

    Returns
    -------
    list of (n,) int ndarray
        Indices into ``grid_rc``; each run has at most ``max_run`` tiles of one
        row with consecutive columns, and runs follow the input order.
    """
    runs: list[np.ndarray] = []
    if len(grid_rc) == 0:
        return runs
    rows, cols = grid_rc[:, 0], grid_rc[:, 1]
    brk = np.flatnonzero((np.diff(rows) != 0) | (np.diff(cols) != 1)) + 1
    for seg in np.split(np.arange(len(grid_rc)), brk):
        for start in range(0, len(seg), max_run):
            runs.append(seg[start : start + max_run])
    return runs


# ---------------------------------------------------------------------------
# path-level
# ---------------------------------------------------------------------------
