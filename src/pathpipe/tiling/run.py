"""Tiling: a grid of tiles at a physical resolution, QC values, chunked Zarr.

:class:`TilingParams` and the path-level :func:`run_tiling`, which streams tiles
from the slide into ``tiles.zarr`` through a bounded pool of reader threads
(the pure functions are in :mod:`pathpipe.tiling.grid`), and
:func:`tiling_summary`.

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
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import StorageError
from pathpipe.io.slide import resize_rgb
from pathpipe.io.workers import ordered_map
from pathpipe.tiling.grid import (
    pixel_qc,
    plan_runs,
    shard_tiles,
    tile_grid,
    tissue_fraction,
)
from pathpipe.tiling.params import COMPRESSORS, TilingParams

log = logging.getLogger("pathpipe")

__all__ = [
    "COMPRESSORS",
    "TilingParams",
    "run_tiling",
    "tiling_summary",
]


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
