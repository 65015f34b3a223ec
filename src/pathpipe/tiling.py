"""Tiling: a grid of tiles at a physical resolution, QC values, chunked Zarr.

Pure functions (grid, per-tile tissue fraction, pixel QC) come first; the
path-level :func:`run_tiling` streams tiles from the slide into
``tiles.zarr`` through a bounded pool of reader threads.

Frames: ``l0_`` level-0 pixels ``(x, y)``; ``t_`` pixels at the tiling MPP;
``m_`` pixels of the tissue mask; ``grid_rc`` ``(row, col)`` of a tile in the grid.

Store layout (``tiles.zarr``, Zarr v3 group)::

    tiles      (N, T, T, 3) uint8   one tile per chunk, Blosc lz4 (or zstd, or none),
                                    chunks grouped in shard files (:func:`shard_tiles`)
    l0_xy      (N, 2) int64         level-0 (x, y) of each tile's top-left corner
    grid_rc    (N, 2) int32         (row, col) in the tiling grid
    qc/tissue_fraction (N,) float32 fraction of the tile covered by the tissue mask
    qc/white_fraction  (N,) float32 fraction of pixels with every channel >= 220
    qc/grey_fraction   (N,) float32 low-chroma (max-min < 20) non-white pixels
    qc/blur            (N,) float32 variance of the Laplacian of luma (0-255)
    attrs["pathpipe"]               provenance, parameters, MPP and its source

Tiles are in row-major grid order.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.slide import resize_rgb
from pathpipe.io.storage import SHARD_BYTES as _STORAGE_SHARD_BYTES
from pathpipe.io.storage import shard_items
from pathpipe.io.workers import ordered_map
from pathpipe.params import check_params, param

log = logging.getLogger("pathpipe")

__all__ = [
    "WHITE_LEVEL",
    "TilingParams",
    "pixel_qc",
    "plan_runs",
    "run_tiling",
    "shard_tiles",
    "tile_grid",
    "tiling_summary",
    "tissue_fraction",
]

#: A pixel is "white" (glass, empty) when every channel is at least this.
WHITE_LEVEL = 220
#: A non-white pixel is "grey" when max - min over its channels is below this.
GREY_CHROMA = 20
#: Tile codecs: Blosc (cname, clevel) or None for uncompressed chunks; ``source``
#: keeps the slide's own JPEG tiles where the tiles are exactly those (else lz4).
COMPRESSORS: dict[str, tuple[str, int] | None] = {
    "lz4": ("lz4", 1),
    "zstd": ("zstd", 1),
    "none": None,
    "source": ("lz4", 1),
}
#: Longest run of horizontally adjacent tiles read with one region request.
MAX_RUN = 8
#: Uncompressed bytes of tiles per shard file of ``tiles`` (at most).
SHARD_BYTES = _STORAGE_SHARD_BYTES


@dataclass(frozen=True)
class TilingParams:
    """Parameters of the tiling stage (config block ``tiling:``).

    Attributes
    ----------
    mpp : float
        µm per pixel of the tiles (default 0.5, i.e. about 20×).
    tile_size : int
        Tile edge in pixels at ``mpp``.
    overlap : int
        Pixels shared by neighbouring tiles; the stride is ``tile_size - overlap``.
    min_tissue_fraction : float
        Keep tiles whose area is at least this fraction tissue (from the mask).
    max_white_fraction : float
        Drop tiles with a larger fraction of white pixels (1.0 keeps all).
    min_blur : float
        Drop tiles whose variance of Laplacian is lower (0 keeps all).
    max_tiles : int or None
        Keep at most this many tiles per slide, sampled with ``seed`` among those
        passing the filters (CellFiNet: 30 tiles of 1024 px at 0.25 µm/px).
    seed : int
        Seed of the tile sampling.
    compression : {"lz4", "zstd", "none", "source"}
        Codec of the tile chunks: Blosc lz4 at level 1, Blosc zstd at level 1,
        none, or ``source``: the slide's own JPEG tile bytes, not re-encoded
        (the same pixels, about ten times smaller than lz4), when every tile
        is exactly one stored JPEG tile of the level read (tile size and MPP
        of that level, no overlap); otherwise lz4, with the reason recorded.
    workers : int or None
        Reader threads (default: CPU count).
    """

    mpp: float = param(0.5, "µm/px of the tiles", gt=0)
    tile_size: int = param(256, "tile edge in px at mpp", ge=16)
    overlap: int = param(0, "px shared by neighbouring tiles (< tile_size)", ge=0)
    min_tissue_fraction: float = param(0.5, "keep tiles at least this fraction tissue", ge=0, le=1)
    max_white_fraction: float = param(
        1.0, "drop tiles with a larger fraction of white pixels (1 keeps all)", ge=0, le=1
    )
    min_blur: float = param(
        0.0, "drop tiles with a lower variance of Laplacian (0 keeps all)", ge=0
    )
    max_tiles: int | None = param(
        None, "keep at most this many tiles per slide (seeded)", kind="int", ge=1
    )
    seed: int = param(0, "seed of the tile sampling (config: the top-level seed)", ge=0)
    compression: str = param(
        "lz4",
        "codec of the tile chunks; source keeps the slide's JPEG tiles where possible",
        choices=tuple(COMPRESSORS),
    )
    workers: int | None = param(None, "reader threads (none: CPU count)", kind="int", ge=1)

    def __post_init__(self) -> None:
        check_params(self, "tiling")
        if self.overlap >= self.tile_size:
            raise ConfigError(
                f"tiling.overlap={self.overlap!r}; expected an integer in [0, tile_size={self.tile_size})"
            )

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def pixel_filters(self) -> bool:
        """Whether any filter needs the tile pixels (white fraction, blur)."""
        return self.max_white_fraction < 1.0 or self.min_blur > 0.0


# ---------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------


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


class _TileReader:
    """Reads runs of tiles at the tiling MPP from one slide."""

    def __init__(self, slide: Any, params: TilingParams) -> None:
        self.slide = slide
        self.params = params
        self.l0_step_x = params.stride * params.mpp / slide.info.mpp.x
        self.l0_step_y = params.stride * params.mpp / slide.info.mpp.y

    def l0_origin(self, grid_rc: np.ndarray) -> np.ndarray:
        """Level-0 (x, y) origin of tiles, rounded to whole pixels."""
        x = np.round(grid_rc[:, 1] * self.l0_step_x)
        y = np.round(grid_rc[:, 0] * self.l0_step_y)
        return np.stack([x, y], axis=1).astype(np.int64)

    def iter_run(self, grid_rc: np.ndarray) -> Iterator[tuple[np.ndarray, bytes | None]]:
        """Tiles of one run (same row, consecutive columns), one (T, T, 3) uint8
        array at a time (an array may be reused for the next tile), each with
        the stored bytes it was decoded from when it is one stored tile.

        The run is read from the slide as one strip of the pyramid level; each
        tile is then cut from the strip at the level pixels
        :meth:`~pathpipe.io.slide.Slide.read_region_at_mpp` would read for it alone
        and resized on its own, so a tile's pixels do not depend on which
        neighbours were read with it. Tiles that are exactly the level's stored
        tiles (same size, on its tile grid, no resizing) are decoded one by one
        straight into a buffer that stays in the CPU cache while the caller
        checks and encodes it.
        """
        p = self.params
        slide = self.slide
        n = len(grid_rc)
        l0_xy = self.l0_origin(grid_rc)
        level, (lv_w, lv_h) = slide.plan_read((p.tile_size, p.tile_size), p.mpp)
        sx, sy = slide.info.level_scale(level)
        lv_x = np.floor(l0_xy[:, 0] / sx).astype(np.int64)
        lv_y = math.floor(int(l0_xy[0, 1]) / sy)
        if (
            slide.stored_tile_size(level) == (lv_w, lv_h) == (p.tile_size, p.tile_size)
            and lv_y % lv_h == 0
            and not (lv_x % lv_w).any()
        ):
            # A tile crossing the slide edge is read (and padded) on its own.
            full_w, full_h = slide.info.level_dimensions[level]
            buf = np.empty((lv_h, lv_w, 3), dtype=np.uint8)
            for i in range(n):
                if lv_x[i] + lv_w <= full_w and lv_y + lv_h <= full_h:
                    tile_xy = (int(lv_x[i]) // lv_w, lv_y // lv_h)
                    yield buf, slide.read_stored_tile(level, tile_xy, buf)
                else:
                    xy = (int(l0_xy[i, 0]), int(l0_xy[i, 1]))
                    yield slide.read_region(xy, level, (lv_w, lv_h)), None
            return
        strip_w = int(lv_x[-1] - lv_x[0]) + lv_w
        strip = slide.read_region((int(l0_xy[0, 0]), int(l0_xy[0, 1])), level, (strip_w, lv_h))
        for i in range(n):
            x = int(lv_x[i] - lv_x[0])
            yield resize_rgb(strip[:, x : x + lv_w], (p.tile_size, p.tile_size)), None

    def source_jpeg(self, grid_rc: np.ndarray) -> tuple[dict[str, Any] | None, str]:
        """Whether tiles ``grid_rc`` can be kept as the slide's JPEG bytes.

        Returns the level's JPEG tables and colour spaces (see
        :meth:`~pathpipe.io.slide.Slide.stored_jpeg`) and ``""``, or None and the
        reason they cannot.
        """
        p = self.params
        slide = self.slide
        level, (lv_w, lv_h) = slide.plan_read((p.tile_size, p.tile_size), p.mpp)
        stored = slide.stored_tile_size(level)
        if stored != (lv_w, lv_h) or (lv_w, lv_h) != (p.tile_size, p.tile_size):
            return None, (
                f"tiles of {p.tile_size} px at {p.mpp:g} µm/px are {lv_w}x{lv_h} px of level "
                f"{level}, whose stored tiles are "
                + (f"{stored[0]}x{stored[1]} px" if stored else "not decoded by pathpipe")
            )
        jpeg = slide.stored_jpeg(level)
        if jpeg is None:
            return None, f"the stored tiles of level {level} are not decodable as standalone JPEG"
        sx, sy = slide.info.level_scale(level)
        l0_xy = self.l0_origin(grid_rc)
        lv_x = np.floor(l0_xy[:, 0] / sx).astype(np.int64)
        lv_y = np.floor(l0_xy[:, 1] / sy).astype(np.int64)
        if (lv_x % lv_w).any() or (lv_y % lv_h).any():
            return None, "the tiling grid is not the stored tile grid (overlap or rounding)"
        full_w, full_h = slide.info.level_dimensions[level]
        if (lv_x + lv_w > full_w).any() or (lv_y + lv_h > full_h).any():
            return None, "some tiles cross the slide edge and need white padding"
        tiles_xy = np.stack([lv_x // lv_w, lv_y // lv_h], axis=1)
        if slide.stored_tiles_missing(level, tiles_xy):
            return None, "some stored tiles are missing from the file"
        return jpeg, ""


def run_tiling(
    slide_path: str | os.PathLike[str],
    *,
    mask_path: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    params: TilingParams | None = None,
    backend: str = "auto",
    slide_mpp: float | None = None,
    slide_mpp_source: str = "override",
    checksum: bool = True,
) -> dict[str, Any]:
    """Tile a slide into ``tiles.zarr``.

    Parameters
    ----------
    slide_path : path-like
    mask_path : path-like
        Tissue mask PNG covering the whole slide (from :func:`pathpipe.tissue.run_tissue`).
    out_path : path-like
        The ``tiles.zarr`` directory to write (atomically replaced).
    params : TilingParams
    backend, slide_mpp, slide_mpp_source
        Passed to :func:`pathpipe.io.slide.open_slide`.
    checksum : bool
        Record the SHA-256 of the slide file in the provenance.

    Returns
    -------
    dict
        The provenance/summary record stored in ``attrs["pathpipe"]``.
    """
    import zarr

    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import ShardWriter, atomic_dir, provenance, source_record
    from pathpipe.tissue import load_mask

    params = params or TilingParams()
    workers = params.workers or os.cpu_count() or 1
    mask = load_mask(mask_path)

    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        info = slide.info
        l0_w, l0_h = info.dimensions
        m_scale = (l0_w / mask.shape[1], l0_h / mask.shape[0])
        t_size = slide.size_at_mpp(params.mpp)
        grid = tile_grid(t_size, tile_size=params.tile_size, stride=params.stride)
        reader = _TileReader(slide, params)
        l0_tile_wh = slide.l0_extent((params.tile_size, params.tile_size), params.mpp)
        l0_all = reader.l0_origin(grid)
        tf_all = tissue_fraction(mask, m_scale_xy=m_scale, l0_xy=l0_all, l0_tile_wh=l0_tile_wh)
        cand = np.flatnonzero(tf_all >= params.min_tissue_fraction)
        n_grid, n_candidates = len(grid), len(cand)

        def read_and_qc(
            run: np.ndarray, encode: Callable[[np.ndarray, bytes | None], bytes] | None = None
        ) -> tuple[list[bytes], np.ndarray, np.ndarray]:
            """QC rows of a run's tiles, which pass the pixel filters and, with
            ``encode(tile, stored_bytes)``, the encoded tiles that pass (each
            tile is checked and encoded right after it is read, while it is in
            the CPU cache)."""
            qc = np.empty((len(run), 3), dtype=np.float32)
            keep = np.empty(len(run), dtype=bool)
            chunks = []
            for i, (tile, raw) in enumerate(reader.iter_run(grid[run])):
                qc[i] = pixel_qc(tile)
                keep[i] = _passes(qc[i], params)
                if encode is not None and keep[i]:
                    chunks.append(encode(tile, raw))
            return chunks, qc, keep

        with ThreadPoolExecutor(max_workers=workers) as pool:
            if params.max_tiles is not None and params.max_tiles < n_candidates:
                cand = _sample_candidates(
                    cand,
                    params=params,
                    pool=pool,
                    check=read_and_qc if params.pixel_filters else None,
                )
            runs = [cand[r] for r in plan_runs(grid[cand])]

            level, _ = slide.plan_read((params.tile_size, params.tile_size), params.mpp)
            jpeg, why_not = None, ""
            if params.compression == "source":
                jpeg, why_not = reader.source_jpeg(grid[cand])
                if jpeg is None:
                    log.warning(
                        "tiling %s: compression 'source' not possible (%s); using lz4",
                        info.path,
                        why_not,
                    )
            record = provenance(
                stage="tiling",
                params=asdict(params),
                source=source_record(info.path, checksum=checksum),
                slide=info.as_dict(),
                mpp=info.mpp.as_dict(),
                backend=info.backend,
                decoder=slide.decoder,
                level_read=level,
                level_mpp=list(info.level_mpp(level)),
                l0_tile_size=list(l0_tile_wh),
                tissue_mask=str(Path(mask_path).resolve()),
                n_grid=n_grid,
                n_candidates=n_candidates,
                compression="source" if jpeg is not None else _codec_name(params.compression),
                **({"source_fallback": why_not} if why_not else {}),
            )

            # The workers get their own pool inside atomic_dir, so on a failure every
            # in-flight worker has stopped before the temporary store is removed.
            with atomic_dir(out_path) as tmp, ThreadPoolExecutor(max_workers=workers) as wpool:
                root = zarr.open_group(str(tmp), mode="w")
                T = params.tile_size
                per_shard = shard_tiles(T)
                codec: dict[str, Any] = {"compressors": _compressors(params.compression)}
                if jpeg is not None:
                    from pathpipe.io.jpeg_codec import SourceJpegCodec, register
                    from pathpipe.io.tiffdirect import jpeg_stream

                    register()
                    codec = {
                        "serializer": SourceJpegCodec(
                            colorspace=jpeg["colorspace"], outcolorspace=jpeg["outcolorspace"]
                        ),
                        "compressors": None,
                    }
                tiles_arr = root.create_array(
                    "tiles",
                    shape=(len(cand), T, T, 3),
                    chunks=(1, T, T, 3),
                    shards=(per_shard, T, T, 3),
                    dtype="uint8",
                    chunk_key_encoding={"name": "default", "separator": "."},
                    dimension_names=("tile", "row", "col", "channel"),
                    **codec,
                )
                writer = ShardWriter(tiles_arr, tmp / "tiles")

                def encode(tile: np.ndarray, raw: bytes | None) -> bytes:
                    if jpeg is None:
                        return writer.encode(tile[None])
                    if raw is None:  # source_jpeg() checked every tile; keep it that way
                        raise StorageError(f"tiling {info.path}: a tile has no stored JPEG bytes")
                    return jpeg_stream(jpeg["tables"], raw)

                def work(run: np.ndarray) -> tuple[list[bytes], np.ndarray, np.ndarray]:
                    """Encoded kept tiles of a run, their QC rows and grid indices."""
                    chunks, qc, keep = read_and_qc(run, encode)
                    return chunks, qc[keep], run[keep]

                # Workers read, check and encode; this thread writes the kept tiles
                # in grid order into whole shards (file writes release the GIL).
                n = n_shards = 0
                pending: list[bytes] = []
                kept_idx: list[np.ndarray] = []
                qc_rows: list[np.ndarray] = []
                for chunks, qc, idx in ordered_map(wpool, work, runs, ahead=3 * workers):
                    pending.extend(chunks)
                    while len(pending) >= per_shard:
                        writer.write(n_shards, pending[:per_shard])
                        del pending[:per_shard]
                        n_shards += 1
                    n += len(chunks)
                    kept_idx.append(idx)
                    qc_rows.append(qc)
                if pending:
                    writer.write(n_shards, pending)
                if n != len(cand):
                    tiles_arr.resize((n, T, T, 3))
                idx_all = _concat_or_empty(kept_idx, (0,), np.int64)
                qc_all = _concat_or_empty(qc_rows, (0, 3), np.float32)
                root.create_array(
                    "l0_xy", data=np.ascontiguousarray(l0_all[idx_all], dtype=np.int64)
                )
                root.create_array(
                    "grid_rc", data=np.ascontiguousarray(grid[idx_all], dtype=np.int32)
                )
                qcg = root.create_group("qc")
                qcg.create_array("tissue_fraction", data=np.ascontiguousarray(tf_all[idx_all]))
                qcg.create_array("white_fraction", data=np.ascontiguousarray(qc_all[:, 0]))
                qcg.create_array("grey_fraction", data=np.ascontiguousarray(qc_all[:, 1]))
                qcg.create_array("blur", data=np.ascontiguousarray(qc_all[:, 2]))
                record.update(n_tiles=n, complete=True)
                root.attrs["pathpipe"] = record
    return record


def _passes(qc_row: np.ndarray, params: TilingParams) -> bool:
    """Whether a tile with QC values ``(white, grey, blur)`` passes the pixel filters."""
    if params.max_white_fraction < 1.0 and qc_row[0] > params.max_white_fraction:
        return False
    return not (params.min_blur > 0.0 and qc_row[2] < params.min_blur)


def _codec_name(name: str) -> str:
    """The codec ``tiling.compression: name`` writes with ("source" falls back to lz4)."""
    return "lz4" if name == "source" else name


def _compressors(name: str) -> Any:
    from zarr.codecs import BloscCodec

    codec = COMPRESSORS[name]
    if codec is None:
        return None
    return BloscCodec(cname=codec[0], clevel=codec[1], shuffle="noshuffle")


def _concat_or_empty(
    parts: list[np.ndarray], empty_shape: tuple[int, ...], dtype: Any
) -> np.ndarray:
    if not parts:
        return np.zeros(empty_shape, dtype=dtype)
    return np.ascontiguousarray(np.concatenate(parts).astype(dtype, copy=False))


def _sample_candidates(
    cand: np.ndarray,
    *,
    params: TilingParams,
    pool: ThreadPoolExecutor,
    check: Callable[[np.ndarray], tuple[list[bytes], np.ndarray, np.ndarray]] | None,
) -> np.ndarray:
    """Seeded choice of ``params.max_tiles`` candidates, returned in grid order.

    Candidates are visited in a seeded random order; when pixel filters are on,
    each visited tile is read and checked (its pixels are discarded) until
    enough pass, so the cap is met whenever enough tiles pass.
    """
    rng = np.random.default_rng(params.seed)
    order = cand[rng.permutation(len(cand))]
    k = int(params.max_tiles)  # type: ignore[arg-type]
    if check is None:
        return np.sort(order[:k])
    chosen: list[int] = []
    singles = (order[i : i + 1] for i in range(len(order)))
    for tile_index, (_, _, keep) in zip(
        order, ordered_map(pool, check, singles, ahead=8), strict=False
    ):
        if keep[0]:
            chosen.append(int(tile_index))
            if len(chosen) == k:
                break
    return np.sort(np.asarray(chosen, dtype=np.int64))


def tiling_summary(stores: Iterable[str | os.PathLike[str]]) -> Any:
    """One row per ``tiles.zarr``: counts, MPP and its source, tile codec, QC means.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    from pathpipe.io.storage import open_store, slide_id_of

    rows = []
    for path in stores:
        root = open_store(path, stage="tiling")
        meta = root.attrs["pathpipe"]
        p = meta["params"]
        qc = {k: np.asarray(root["qc"][k]) for k in ("tissue_fraction", "white_fraction", "blur")}
        n = int(meta["n_tiles"])
        rows.append(
            {
                "slide": slide_id_of(path),
                "source": Path(meta["source"]["path"]).name,
                "backend": meta["backend"],
                "slide_mpp": round(meta["mpp"]["x"], 4),
                "mpp_source": meta["mpp"]["source"],
                "tile_mpp": p["mpp"],
                "tile_size": p["tile_size"],
                "compression": meta.get("compression", p["compression"]),
                "level_read": meta["level_read"],
                "grid_tiles": meta["n_grid"],
                "tissue_tiles": meta["n_candidates"],
                "tiles": n,
                "mean_tissue_fraction": round(float(qc["tissue_fraction"].mean()), 3)
                if n
                else None,
                "mean_white_fraction": round(float(qc["white_fraction"].mean()), 3) if n else None,
                "median_blur": round(float(np.median(qc["blur"])), 1) if n else None,
            }
        )
    if not rows:
        raise StorageError("tiling summary: no tiles.zarr stores were given")
    return pd.DataFrame(rows)
