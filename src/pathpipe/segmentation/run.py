"""Nuclei segmentation and phenotyping of a slide's tiles (stage ``segmentation``).

The path-level layer: :func:`run_segmentation` reads ``tiles.zarr`` (stage
``tiling``), runs the per-tile compute of :mod:`pathpipe.segmentation.segmenter`
and writes, per slide:

* ``nuclei.zarr`` — ``labels`` (N, T, T) int32 instance labels, one chunk per
  tile (chunks grouped in shard files) and in the same order as the tiles,
  0 background, ids 1..n per tile;
  provenance in ``attrs["pathpipe"]``.
* ``nuclei.parquet`` — one row per nucleus (:data:`NUCLEI_COLUMNS`).
* ``nuclei.geojson`` — polygons in level-0 pixels, QuPath detections.
* ``segmentation.png`` and ``segmentation.json`` — report figure and summary.

:func:`segmentation_summary` tabulates the ``nuclei.zarr`` stores of a cohort.

Methods (:attr:`pathpipe.segmentation.params.SegmentationParams.method`):

``classical``
    Colour deconvolution with per-slide Macenko stain vectors (fixed Ruifrok &
    Johnston vectors as fallback), hematoxylin threshold, distance transform and
    marker-controlled watershed, size limits in µm²
    (:func:`pathpipe.segmentation.classical.segment_nuclei`). Phenotypes from a
    :class:`pathpipe.segmentation.classifier.PhenotypeClassifier` trained on user-labelled
    nuclei when one is given, otherwise from
    :func:`pathpipe.segmentation.phenotype.heuristic_phenotypes`.
``unet``
    A trained :mod:`pathpipe.segmentation.unet` model (instance and phenotype heads), batched
    on CPU or GPU.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import StorageError
from pathpipe.io.workers import ordered_map
from pathpipe.segmentation.params import SegmentationParams
from pathpipe.segmentation.segmenter import Segmenter, SlideGrid, TileNuclei, owned_nuclei

__all__ = ["NUCLEI_COLUMNS", "run_segmentation", "segmentation_summary"]

log = logging.getLogger(__name__)

NUCLEI_COLUMNS = [
    "nucleus_id",
    "tile",
    "label",
    "l0_x",
    "l0_y",
    "t_row",
    "t_col",
    "area_um2",
    "phenotype",
    "confidence",
    "touches_border",
]
"""Columns of ``nuclei.parquet``: ``nucleus_id`` (0..n-1 over the slide),
``tile`` (index into ``tiles.zarr``), ``label`` (id in that tile's label map),
``l0_x, l0_y`` (centroid, level-0 px), ``t_row, t_col`` (centroid, tile px),
``area_um2``, ``phenotype`` (class name, categorical), ``confidence`` (in
[0, 1]), ``touches_border`` (the nucleus touches the tile edge, so it may be
cut)."""


def run_segmentation(
    tiles_path: str | os.PathLike[str],
    *,
    labels_path: str | os.PathLike[str],
    table_path: str | os.PathLike[str],
    geojson_path: str | os.PathLike[str],
    figure_path: str | os.PathLike[str] | None = None,
    summary_path: str | os.PathLike[str] | None = None,
    params: SegmentationParams | None = None,
    slide_name: str | None = None,
) -> dict[str, Any]:
    """Segment every tile of ``tiles.zarr``; write labels, table, GeoJSON, figure.

    Read (the store's tiles and grid, a seeded sample for the stain vectors) ->
    per-tile compute (:meth:`Segmenter.segment`, :func:`owned_nuclei`) -> write.
    Memory is bounded: tiles stream through ``batch_size``-tile tasks, at most
    a few per worker in flight, and labels go to disk chunk by chunk. Polygons
    stream into the GeoJSON file; only the nuclei table (one row per nucleus)
    is held until the end.

    Parameters
    ----------
    tiles_path : path-like
        ``tiles.zarr`` from the tiling stage.
    labels_path, table_path, geojson_path : path-like
        ``nuclei.zarr``, ``nuclei.parquet``, ``nuclei.geojson`` (each written
        atomically).
    figure_path, summary_path : path-like or None
        Report figure PNG and summary JSON.
    params : SegmentationParams
    slide_name : str or None
        Title of the figure (default: the slide id, the folder of ``tiles_path``).

    Returns
    -------
    dict
        The provenance/summary record stored in ``nuclei.zarr``.
    """
    from pathpipe.io.storage import (
        atomic_dir,
        open_store,
        provenance,
        slide_id_of,
        write_json,
        write_parquet,
    )
    from pathpipe.segmentation import export

    params = params or SegmentationParams()
    t0 = time.perf_counter()

    # Read: the tiles (lazily), where they lie, their MPP.
    src = open_store(tiles_path, stage="tiling")
    meta = src.attrs["pathpipe"]
    tiles_arr = src["tiles"]
    n_tiles, tile_size = int(tiles_arr.shape[0]), int(tiles_arr.shape[1])
    grid = SlideGrid(
        l0_xy=np.asarray(src["l0_xy"][...], dtype=np.int64).reshape(-1, 2),
        grid_rc=np.asarray(src["grid_rc"][...], dtype=np.int64).reshape(-1, 2),
        tile_size=tile_size,
        stride=tile_size - int(meta["params"].get("overlap", 0)),
        scale=float(meta["l0_tile_size"][0]) / tile_size,
    )
    mpp = float(meta["params"]["mpp"])
    if n_tiles == 0:
        log.warning(
            "%s holds no tiles (tiling filtered every tile out): writing empty outputs",
            tiles_path,
        )
    stain = _estimate_stain(tiles_arr, params)
    if stain.note:
        log.warning("stain vectors: %s", stain.note)
    segmenter = Segmenter(params, mpp=mpp, stain_matrix=stain.matrix)
    if params.method == "unet":
        segmenter.load_model()
    classes = params.classes
    colours = export.class_colours(classes)

    # Per tile: segment (in worker processes), keep the owned nuclei; write as they come.
    tables: list[Any] = []
    n_nuclei = 0
    with (
        _segmented_tiles(tiles_arr, segmenter, params) as results,
        atomic_dir(labels_path) as tmp,
        export.GeoJSONWriter(geojson_path) as geo,
    ):
        labels_out = _LabelsWriter(tmp, n_tiles=n_tiles, tile_size=tile_size)
        for i, res in enumerate(results):
            labels_out.add(res.labels)
            table, rings = owned_nuclei(res, i, grid, first_id=n_nuclei)
            if len(table) == 0:
                continue
            n_nuclei += len(table)
            geo.write_tile(
                rings,
                table,
                l0_origin=grid.l0_xy[i],
                scale=grid.scale,
                classes=classes,
                colours=colours,
            )
            tables.append(table)
        labels_out.flush()

        nuclei = _finish_table(tables, classes)
        counts = {c: int((nuclei["phenotype"] == c).sum()) for c in classes}
        elapsed = time.perf_counter() - t0
        record = provenance(
            stage="segmentation",
            params=params.as_dict(),
            source={
                "tiles": str(Path(tiles_path).resolve()),
                "slide": meta.get("source"),
                "tiling_created": meta.get("created"),
            },
            mpp=mpp,
            l0_scale=grid.scale,
            tile_size=tile_size,
            stride=grid.stride,
            stain={
                "matrix": np.asarray(stain.matrix).tolist(),
                "method": stain.method,
                "note": stain.note,
            },
            model=segmenter.model_info,
            classes=list(classes),
            n_tiles=n_tiles,
            n_nuclei=len(nuclei),
            counts=counts,
            seconds=round(elapsed, 3),
            tiles_per_second=round(n_tiles / elapsed, 2) if elapsed > 0 else None,
        )
        write_parquet(nuclei, table_path, record)
        record["complete"] = True
        labels_out.root.attrs["pathpipe"] = record

    if figure_path is not None:
        export.segmentation_figure(
            figure_path,
            tiles_path=tiles_path,
            labels_path=labels_path,
            nuclei=nuclei,
            classes=classes,
            colours=colours,
            title=slide_name or slide_id_of(tiles_path),
        )
    if summary_path is not None:
        write_json(summary_path, {k: v for k, v in record.items() if k != "complete"})
    log.info(
        "segmentation: %d nuclei in %d tiles (%s) in %.1f s",
        len(nuclei),
        n_tiles,
        ", ".join(f"{c} {counts[c]}" for c in classes),
        time.perf_counter() - t0,
    )
    return record


# ---------------------------------------------------------------------------
# helpers of run_segmentation
# ---------------------------------------------------------------------------


def _estimate_stain(tiles_arr: Any, params: SegmentationParams) -> Any:
    from pathpipe.stain import estimate_stain_matrix

    n = tiles_arr.shape[0]
    if n == 0 or params.stain == "fixed":
        return estimate_stain_matrix(np.zeros((0, 1, 1, 3), np.uint8), method="fixed")
    rng = np.random.default_rng([params.seed, 0x57A1])
    pick = np.sort(rng.choice(n, size=min(n, params.stain_tiles), replace=False))
    sample = np.stack([tiles_arr[int(i)] for i in pick])
    return estimate_stain_matrix(sample, method="macenko", seed=params.seed)


_worker_segmenter: Segmenter | None = None


def _init_worker(segmenter: Segmenter) -> None:
    global _worker_segmenter
    _worker_segmenter = segmenter


def _segment_in_worker(tiles: np.ndarray) -> list[TileNuclei]:
    if _worker_segmenter is None:  # pragma: no cover - initializer always runs first
        raise RuntimeError("segmentation worker was not initialised")
    return _worker_segmenter.segment(tiles)


@contextmanager
def _segmented_tiles(
    tiles_arr: Any, segmenter: Segmenter, params: SegmentationParams
) -> Iterator[Iterator[TileNuclei]]:
    """Every tile's :class:`TileNuclei`, in tile order.

    Tiles are read in ``batch_size`` batches; the classical method spreads the
    batches over ``workers`` processes (at most two per worker in flight), the
    unet method runs them here. The pool is shut down on leaving the context.
    """
    n_tiles = int(tiles_arr.shape[0])
    workers = params.workers or os.cpu_count() or 1
    use_pool = params.method == "classical" and workers > 1 and n_tiles > params.batch_size
    starts = range(0, n_tiles, params.batch_size)
    inputs = (np.asarray(tiles_arr[i : min(i + params.batch_size, n_tiles)]) for i in starts)
    pool = (
        ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(segmenter,))
        if use_pool
        else None
    )
    fn = _segment_in_worker if pool is not None else segmenter.segment
    try:
        yield (res for batch in ordered_map(pool, fn, inputs, ahead=2 * workers) for res in batch)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)


class _LabelsWriter:
    """``labels`` of ``nuclei.zarr``: one chunk per tile, written a shard at a time."""

    def __init__(self, root_dir: Path, *, n_tiles: int, tile_size: int) -> None:
        import zarr

        from pathpipe.io.storage import ShardWriter, shard_items

        self.root = zarr.open_group(str(root_dir), mode="w")
        self.per_shard = shard_items(tile_size * tile_size * 4)
        labels = self.root.create_array(
            "labels",
            shape=(n_tiles, tile_size, tile_size),
            chunks=(1, tile_size, tile_size),
            shards=(self.per_shard, tile_size, tile_size),
            dtype="int32",
            compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
            chunk_key_encoding={"name": "default", "separator": "."},
            dimension_names=("tile", "row", "col"),
        )
        self._writer = ShardWriter(labels, Path(root_dir) / "labels")
        self._pending: list[bytes] = []  # encoded labels of the shard being filled
        self._n = 0

    def add(self, labels: np.ndarray) -> None:
        """Append the next tile's label map."""
        self._pending.append(self._writer.encode(labels[None]))
        self._n += 1
        if len(self._pending) == self.per_shard:
            self.flush()

    def flush(self) -> None:
        """Write the shard being filled (the last one may be partial)."""
        if self._pending:
            self._writer.write((self._n - 1) // self.per_shard, self._pending)
            self._pending = []


def _finish_table(tables: list[Any], classes: Sequence[str]) -> Any:
    import pandas as pd

    if tables:
        df = pd.concat(tables, ignore_index=True)
    else:
        df = pd.DataFrame(
            {
                "nucleus_id": np.zeros(0, np.int64),
                "tile": np.zeros(0, np.int32),
                "label": np.zeros(0, np.int32),
                "l0_x": np.zeros(0),
                "l0_y": np.zeros(0),
                "t_row": np.zeros(0),
                "t_col": np.zeros(0),
                "area_um2": np.zeros(0),
                "phenotype": np.zeros(0, np.int16),
                "confidence": np.zeros(0, np.float32),
                "touches_border": np.zeros(0, bool),
            }
        )
    df["phenotype"] = pd.Categorical.from_codes(
        df["phenotype"].to_numpy(np.int16), categories=list(classes)
    )
    df["nucleus_id"] = df["nucleus_id"].astype(np.int64)
    df["tile"] = df["tile"].astype(np.int32)
    return df[NUCLEI_COLUMNS].reset_index(drop=True)


def segmentation_summary(stores: Sequence[str | os.PathLike[str]]) -> Any:
    """One row per ``nuclei.zarr``: method, nuclei, counts per class, tiles/s.

    Returns
    -------
    pandas.DataFrame
    """
    import pandas as pd

    from pathpipe.io.storage import open_store, slide_id_of

    rows = []
    for path in stores:
        meta = open_store(path, stage="segmentation").attrs["pathpipe"]
        n_tiles = int(meta["n_tiles"])
        row = {
            "slide": slide_id_of(path),
            "method": meta["params"]["method"],
            "stain": meta["stain"]["method"],
            "tiles": n_tiles,
            "nuclei": int(meta["n_nuclei"]),
            "nuclei_per_tile": round(meta["n_nuclei"] / n_tiles, 1) if n_tiles else None,
        }
        for c, k in meta["counts"].items():
            row[f"n_{c}"] = int(k)
        row["tiles_per_s"] = meta.get("tiles_per_second")
        rows.append(row)
    if not rows:
        raise StorageError("segmentation summary: no nuclei.zarr stores were given")
    return pd.DataFrame(rows)
