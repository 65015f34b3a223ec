"""Nuclei segmentation and phenotyping of a slide's tiles (stage ``segmentation``).

Reads ``tiles.zarr`` (stage ``tiling``) and writes, per slide:

* ``nuclei.zarr`` — ``labels`` (N, T, T) int32 instance labels, one chunk per
  tile (chunks grouped in shard files) and in the same order as the tiles,
  0 background, ids 1..n per tile;
  provenance in ``attrs["pathpipe"]``.
* ``nuclei.parquet`` — one row per nucleus (:data:`NUCLEI_COLUMNS`).
* ``nuclei.geojson`` — polygons in level-0 pixels, QuPath detections.
* ``segmentation.png`` and ``segmentation.json`` — report figure and summary.

Methods (``SegmentationParams.method``):

``classical``
    Colour deconvolution with per-slide Macenko stain vectors (fixed Ruifrok &
    Johnston vectors as fallback), hematoxylin threshold, distance transform and
    marker-controlled watershed, size limits in µm²
    (:func:`pathpipe.segmentation.classical.segment_nuclei`). Phenotypes from a
    :class:`pathpipe.segmentation.phenotype.PhenotypeClassifier` trained on user-labelled
    nuclei when one is given, otherwise from
    :func:`pathpipe.segmentation.phenotype.heuristic_phenotypes`.
``unet``
    A trained :mod:`pathpipe.segmentation.unet` model (instance and phenotype heads), batched
    on CPU or GPU.

Frames
------
``t_`` tile pixels ``(row, col)`` at the tile MPP, pixel centres at integers;
``l0_`` level-0 pixels ``(x, y)``, pixel centres at integers (as in
:mod:`pathpipe.synthetic.generate`). A tile pixel covers ``s`` level-0 pixels per side
(``s = l0_tile_size / tile_size``), so ``l0_x = l0_x0 + (t_col + 0.5) s - 0.5``.
GeoJSON follows QuPath, where pixel ``i`` spans ``[i, i + 1)``:
``x = l0_x0 + (t_col + 0.5) s`` for a contour vertex at tile position ``t_col``.

Overlapping tiles
-----------------
When tiles overlap, a nucleus near a tile edge is segmented in every tile that
sees it. Each nucleus is counted once: the table keeps it only in the tile, among
the slide's tiles that contain its centroid, whose centre is nearest to the
centroid (on a full grid: the tile whose central ``stride x stride`` region
holds it). With an overlap at least one nucleus diameter, the kept copy is
whole. The label maps keep every tile's full segmentation.
"""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.workers import ordered_map
from pathpipe.segmentation.classical import ClassicalParams
from pathpipe.segmentation.phenotype import DEFAULT_CLASSES

__all__ = [
    "DEFAULT_CLASSES",
    "METHODS",
    "NUCLEI_COLUMNS",
    "SegmentationParams",
    "Segmenter",
    "TileNuclei",
    "evaluate_segmentation",
    "keep_owned",
    "run_segmentation",
    "segmentation_summary",
]

log = logging.getLogger(__name__)

METHODS = ("classical", "unet")

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


@dataclass(frozen=True, kw_only=True)
class SegmentationParams:
    """Parameters of the segmentation stage (config block ``segmentation:``).

    Attributes
    ----------
    method : {"classical", "unet"}
    classes : tuple of str
        Phenotype names. ``classical`` without a classifier needs "tumour" and
        "lymphocyte" (and uses "other"); a classifier or model must have been
        trained with the same list.
    classical : ClassicalParams
        Thresholds and sizes of the classical method.
    stain : {"macenko", "fixed"}
        Per-slide stain vectors (Macenko, falling back to the fixed vectors when
        estimation fails) or the fixed Ruifrok & Johnston vectors.
    stain_tiles : int
        Tiles sampled (seeded) for the stain estimate.
    phenotype_model : str or None
        JSON of a :class:`pathpipe.segmentation.phenotype.PhenotypeClassifier` (classical).
    model : str or None
        Directory of a trained :mod:`pathpipe.segmentation.unet` model (unet).
    device : str
        "auto" (GPU when present), "cpu", "cuda" or "cuda:<i>" (unet).
    batch_size : int
        Tiles per model batch (unet) or per worker task (classical).
    amp : bool
        Mixed precision on GPU (unet).
    workers : int or None
        Worker processes of the classical method (default: CPU count).
    seed : int
    """

    method: str = "classical"
    classes: tuple[str, ...] = DEFAULT_CLASSES
    classical: ClassicalParams = field(default_factory=ClassicalParams)
    stain: str = "macenko"
    stain_tiles: int = 32
    phenotype_model: str | None = None
    model: str | None = None
    device: str = "auto"
    batch_size: int = 8
    amp: bool = True
    workers: int | None = None
    seed: int = 0

    def __post_init__(self) -> None:
        object.__setattr__(self, "classes", tuple(str(c) for c in self.classes))
        if self.method not in METHODS:
            raise ConfigError(
                f"segmentation.method must be one of {', '.join(METHODS)}, received {self.method!r}"
            )
        if not self.classes or len(set(self.classes)) != len(self.classes):
            raise ConfigError(
                f"segmentation.classes must be a non-empty list of distinct names, "
                f"received {list(self.classes)!r}"
            )
        if self.stain not in ("macenko", "fixed"):
            raise ConfigError(
                f"segmentation.stain must be 'macenko' or 'fixed', received {self.stain!r}"
            )
        for name in ("stain_tiles", "batch_size"):
            v = getattr(self, name)
            if not (isinstance(v, int) and not isinstance(v, bool) and v >= 1):
                raise ConfigError(f"segmentation.{name} must be a positive integer, received {v!r}")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 1):
            raise ConfigError(
                f"segmentation.workers must be a positive integer or null, received {self.workers!r}"
            )
        if self.method == "unet" and not self.model:
            raise ConfigError(
                "segmentation.method is 'unet' but segmentation.model is not set; expected the "
                "directory of a model trained with 'pathpipe segmentation train'"
            )
        if self.method == "classical" and self.phenotype_model is None:
            missing = {"tumour", "lymphocyte"} - set(self.classes)
            if missing:
                raise ConfigError(
                    f"segmentation.classes {list(self.classes)!r} lacks {sorted(missing)}: the "
                    "built-in phenotype rule knows tumour, lymphocyte and other; for other "
                    "classes train a classifier ('pathpipe segmentation train-phenotypes') "
                    "and set segmentation.phenotype_model"
                )

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["classes"] = list(self.classes)
        return d


# ---------------------------------------------------------------------------
# pure functions
# ---------------------------------------------------------------------------


@dataclass
class TileNuclei:
    """Segmentation of one tile.

    Attributes
    ----------
    labels : (T, T) int32 ndarray
        0 background, ids 1..n.
    table : pandas.DataFrame
        One row per id (sorted): ``label, t_row, t_col, area_um2, phenotype``
        (int code into the classes), ``confidence``, ``touches_border``.
    rings : list
        Outline of each row's nucleus (:func:`nucleus_polygons`), traced where the
        tile was segmented (in a worker process).
    """

    labels: np.ndarray
    table: Any
    rings: list = field(default_factory=list)


class Segmenter:
    """Segments and phenotypes tiles with one method; picklable for worker processes.

    Parameters
    ----------
    params : SegmentationParams
    mpp : float
        µm per pixel of the tiles.
    stain_matrix : (3, 3) float ndarray
        Rows: hematoxylin, eosin, residual optical-density vectors.
    """

    def __init__(self, params: SegmentationParams, *, mpp: float, stain_matrix: np.ndarray) -> None:
        self.params = params
        self.mpp = float(mpp)
        self.stain_matrix = np.asarray(stain_matrix, dtype=np.float64)
        self.classifier = None
        self._model = None
        self._model_config = None
        if params.phenotype_model is not None:
            from pathpipe.segmentation.phenotype import PhenotypeClassifier

            self.classifier = PhenotypeClassifier.load(params.phenotype_model)
            if tuple(self.classifier.classes) != params.classes:
                raise ConfigError(
                    f"phenotype model {params.phenotype_model} was trained for classes "
                    f"{list(self.classifier.classes)}, segmentation.classes is "
                    f"{list(params.classes)}; expected the same list"
                )

    # -- unet ------------------------------------------------------------------
    def load_model(self) -> None:
        """Load the unet model (once, in the process that runs it)."""
        from pathpipe.segmentation.unet import load_model
        from pathpipe.segmentation.unet.device import resolve_device

        self.device = resolve_device(self.params.device)
        self._model, self._model_config = load_model(self.params.model, device=self.device)
        cfg = self._model_config
        if tuple(cfg.classes) != self.params.classes:
            raise ConfigError(
                f"model {self.params.model} predicts classes {list(cfg.classes)}, "
                f"segmentation.classes is {list(self.params.classes)}; expected the same list"
            )
        if abs(cfg.mpp - self.mpp) > 0.1 * cfg.mpp:
            raise ConfigError(
                f"model {self.params.model} was trained at {cfg.mpp:g} µm/px, the tiles are at "
                f"{self.mpp:g} µm/px; expected within 10 % (retile with tiling.mpp={cfg.mpp:g})"
            )

    @property
    def model_info(self) -> dict[str, Any] | None:
        if self._model_config is None:
            return None
        return {
            "path": str(Path(self.params.model).resolve()),
            "config": self._model_config.to_dict(),
        }

    # -- per tile --------------------------------------------------------------
    def _table(
        self,
        labels: np.ndarray,
        hematoxylin: np.ndarray,
        rgb: np.ndarray,
        codes: np.ndarray | None = None,
        confidence: np.ndarray | None = None,
    ) -> TileNuclei:
        import pandas as pd

        from pathpipe.segmentation.phenotype import heuristic_phenotypes, nucleus_descriptors

        desc = nucleus_descriptors(labels, hematoxylin, mpp=self.mpp, rgb=rgb)
        if codes is None:
            if len(desc) == 0:
                codes, confidence = np.zeros(0, np.int64), np.zeros(0, np.float32)
            elif self.classifier is not None:
                codes, confidence = self.classifier.predict(desc)
            else:
                codes, confidence = heuristic_phenotypes(desc, classes=self.params.classes)
        table = pd.DataFrame(
            {
                "label": desc.index.to_numpy(dtype=np.int32),
                "t_row": desc["centroid_row"].to_numpy(np.float64),
                "t_col": desc["centroid_col"].to_numpy(np.float64),
                "area_um2": desc["area_um2"].to_numpy(np.float64),
                "phenotype": np.asarray(codes, dtype=np.int16),
                "confidence": np.asarray(confidence, dtype=np.float32),
                "touches_border": desc["touches_border"].to_numpy(bool),
            }
        )
        from pathpipe.segmentation.export import nucleus_polygons

        labels = labels.astype(np.int32, copy=False)
        return TileNuclei(labels, table, nucleus_polygons(labels, table["label"].to_numpy()))

    def segment(self, tiles: np.ndarray) -> list[TileNuclei]:
        """Segment a batch of tiles.

        Parameters
        ----------
        tiles : (B, T, T, 3) uint8 ndarray

        Returns
        -------
        list of TileNuclei
        """
        from pathpipe.segmentation.classical import segment_nuclei
        from pathpipe.stain import deconvolve

        out = []
        if self.params.method == "classical":
            for rgb in tiles:
                labels, h = segment_nuclei(
                    rgb,
                    mpp=self.mpp,
                    stain_matrix=self.stain_matrix,
                    params=self.params.classical,
                    return_hematoxylin=True,
                )
                out.append(self._table(labels, h, rgb))
            return out
        from pathpipe.segmentation.unet import predict_tiles

        if self._model is None:
            self.load_model()
        preds = predict_tiles(
            self._model,
            self._model_config,
            tiles,
            device=self.device,
            batch_size=self.params.batch_size,
            amp=self.params.amp,
        )
        for rgb, pred in zip(tiles, preds, strict=True):
            h = deconvolve(rgb, self.stain_matrix)[..., 0]
            out.append(self._table(pred.inst, h, rgb, pred.types, pred.confidence))
        return out


def keep_owned(
    grid_rc: np.ndarray,
    tile: int,
    t_rowcol: np.ndarray,
    *,
    tile_size: int,
    stride: int,
    present: dict[tuple[int, int], int],
) -> np.ndarray:
    """Which of a tile's nuclei it owns (see "Overlapping tiles" above).

    Parameters
    ----------
    grid_rc : (N, 2) int ndarray
        Grid ``(row, col)`` of every tile of the slide.
    tile : int
        Index of this tile.
    t_rowcol : (n, 2) float ndarray
        Centroids in this tile's pixels.
    tile_size, stride : int
    present : dict
        ``(grid_row, grid_col) -> tile index`` of every tile of the slide.

    Returns
    -------
    keep : (n,) bool ndarray
    """
    n = len(t_rowcol)
    if n == 0 or stride >= tile_size:
        return np.ones(n, dtype=bool)
    g = np.asarray(grid_rc[tile], dtype=np.int64)
    # Centroid in the slide's tile-pixel frame (tile (r, c) starts at r*stride, c*stride).
    p = g[None, :] * stride + np.asarray(t_rowcol, dtype=np.float64)
    centre = (tile_size - 1) / 2.0
    best = np.full(n, np.inf)
    owner = np.full(n, tile, dtype=np.int64)
    reach = math.ceil(tile_size / stride)
    for dr in range(-reach, reach + 1):
        for dc in range(-reach, reach + 1):
            key = (int(g[0] + dr), int(g[1] + dc))
            other = present.get(key)
            if other is None:
                continue
            o = np.array(key, dtype=np.float64) * stride
            local = p - o
            inside = np.all((local >= -0.5) & (local < tile_size - 0.5), axis=1)
            d = np.hypot(*(local - centre).T)
            # Ties go to the lower tile index so exactly one tile keeps each nucleus.
            better = inside & ((d < best - 1e-9) | ((np.abs(d - best) <= 1e-9) & (other < owner)))
            best = np.where(better, d, best)
            owner = np.where(better, other, owner)
    return owner == tile


# ---------------------------------------------------------------------------
# path level
# ---------------------------------------------------------------------------

_worker_segmenter: Segmenter | None = None


def _init_worker(segmenter: Segmenter) -> None:
    global _worker_segmenter
    _worker_segmenter = segmenter


def _segment_in_worker(tiles: np.ndarray) -> list[TileNuclei]:
    if _worker_segmenter is None:  # pragma: no cover - initializer always runs first
        raise RuntimeError("segmentation worker was not initialised")
    return _worker_segmenter.segment(tiles)


def _estimate_stain(tiles_arr: Any, params: SegmentationParams) -> Any:
    from pathpipe.stain import estimate_stain_matrix

    n = tiles_arr.shape[0]
    if n == 0 or params.stain == "fixed":
        return estimate_stain_matrix(np.zeros((0, 1, 1, 3), np.uint8), method="fixed")
    rng = np.random.default_rng([params.seed, 0x57A1])
    pick = np.sort(rng.choice(n, size=min(n, params.stain_tiles), replace=False))
    sample = np.stack([tiles_arr[int(i)] for i in pick])
    return estimate_stain_matrix(sample, method="macenko", seed=params.seed)


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
        Title of the figure (default: the folder of ``tiles_path``).

    Returns
    -------
    dict
        The provenance/summary record stored in ``nuclei.zarr``.
    """
    import pandas as pd
    import zarr

    from pathpipe.io.storage import (
        ShardWriter,
        atomic_dir,
        open_store,
        provenance,
        shard_items,
        write_json,
        write_parquet,
    )
    from pathpipe.segmentation import export

    params = params or SegmentationParams()
    t0 = time.perf_counter()
    src = open_store(tiles_path, stage="tiling")
    meta = src.attrs["pathpipe"]
    tiles_arr = src["tiles"]
    n_tiles, tile_size = int(tiles_arr.shape[0]), int(tiles_arr.shape[1])
    l0_xy = np.asarray(src["l0_xy"][...], dtype=np.int64).reshape(-1, 2)
    grid_rc = np.asarray(src["grid_rc"][...], dtype=np.int64).reshape(-1, 2)
    mpp = float(meta["params"]["mpp"])
    stride = tile_size - int(meta["params"].get("overlap", 0))
    scale = float(meta["l0_tile_size"][0]) / tile_size
    present = {(int(r), int(c)): i for i, (r, c) in enumerate(grid_rc)}
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
    workers = params.workers or os.cpu_count() or 1
    use_pool = params.method == "classical" and workers > 1 and n_tiles > params.batch_size
    batches = [
        (i, min(i + params.batch_size, n_tiles)) for i in range(0, n_tiles, params.batch_size)
    ]
    classes = params.classes
    colours = export.class_colours(classes)

    tables: list[pd.DataFrame] = []
    n_nuclei = 0
    pool = (
        ProcessPoolExecutor(max_workers=workers, initializer=_init_worker, initargs=(segmenter,))
        if use_pool
        else None
    )
    try:
        with (
            atomic_dir(labels_path) as tmp,
            export.GeoJSONWriter(geojson_path) as geo,
        ):
            root = zarr.open_group(str(tmp), mode="w")
            per_shard = shard_items(tile_size * tile_size * 4)
            labels_arr = root.create_array(
                "labels",
                shape=(n_tiles, tile_size, tile_size),
                chunks=(1, tile_size, tile_size),
                shards=(per_shard, tile_size, tile_size),
                dtype="int32",
                compressors=zarr.codecs.BloscCodec(cname="zstd", clevel=1, shuffle="shuffle"),
                chunk_key_encoding={"name": "default", "separator": "."},
                dimension_names=("tile", "row", "col"),
            )
            writer = ShardWriter(labels_arr, tmp / "labels")
            pending: list[bytes] = []  # encoded labels of the shard being filled

            def read(batch: tuple[int, int]) -> np.ndarray:
                return np.asarray(tiles_arr[batch[0] : batch[1]])

            fn = _segment_in_worker if pool is not None else segmenter.segment
            inputs = (read(b) for b in batches)
            for (start, _), results in zip(
                batches, ordered_map(pool, fn, inputs, ahead=2 * workers), strict=True
            ):
                for k, res in enumerate(results):
                    i = start + k
                    pending.append(writer.encode(res.labels[None]))
                    if len(pending) == per_shard:
                        writer.write(i // per_shard, pending)
                        pending = []
                    table = res.table
                    if len(table) == 0:
                        continue
                    keep = keep_owned(
                        grid_rc,
                        i,
                        table[["t_row", "t_col"]].to_numpy(),
                        tile_size=tile_size,
                        stride=stride,
                        present=present,
                    )
                    table = table[keep].copy()
                    if len(table) == 0:
                        continue
                    rings = [r for r, k in zip(res.rings, keep, strict=True) if k]
                    table.insert(0, "tile", np.int32(i))
                    table.insert(0, "nucleus_id", np.arange(n_nuclei, n_nuclei + len(table)))
                    table["l0_x"] = l0_xy[i, 0] + (table["t_col"] + 0.5) * scale - 0.5
                    table["l0_y"] = l0_xy[i, 1] + (table["t_row"] + 0.5) * scale - 0.5
                    n_nuclei += len(table)
                    geo.write_tile(
                        rings,
                        table,
                        l0_origin=l0_xy[i],
                        scale=scale,
                        classes=classes,
                        colours=colours,
                    )
                    tables.append(table)

            if pending:
                writer.write(n_tiles // per_shard, pending)
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
                l0_scale=scale,
                tile_size=tile_size,
                stride=stride,
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
            root.attrs["pathpipe"] = record
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)

    if figure_path is not None:
        export.segmentation_figure(
            figure_path,
            tiles_path=tiles_path,
            labels_path=labels_path,
            nuclei=nuclei,
            classes=classes,
            colours=colours,
            title=slide_name or Path(tiles_path).resolve().parent.name,
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

    from pathpipe.io.storage import open_store

    rows = []
    for path in stores:
        meta = open_store(path, stage="segmentation").attrs["pathpipe"]
        n_tiles = int(meta["n_tiles"])
        row = {
            "slide": Path(path).parent.name,
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


# ---------------------------------------------------------------------------
# evaluation on annotated tiles
# ---------------------------------------------------------------------------


def evaluate_segmentation(
    data: str | os.PathLike[str],
    *,
    params: SegmentationParams | None = None,
    class_map: dict[str, str] | None = None,
    match_radius_um: float = 3.0,
    mpp: float | None = None,
) -> tuple[dict[str, Any], Any]:
    """Segment an annotated tile folder and score it against its ground truth.

    Parameters
    ----------
    data : path-like
        Annotated tile folder (:mod:`pathpipe.segmentation.annotations`).
    params : SegmentationParams
        Method and settings, as for a slide. Stain vectors are estimated from
        the folder's tiles.
    class_map : dict or None
        Predicted class name -> ground-truth class name, for class lists that
        differ (e.g. ``{"lymphocyte": "non_tumour", "other": "non_tumour"}`` on
        NuCLS). Names not mapped keep their own name; a predicted class absent
        from the ground truth counts as a wrong type.
    match_radius_um : float
        Centroid distance (µm) within which a prediction detects a nucleus.
    mpp : float or None
        µm/px of the tiles when the folder's ``classes.json`` gives none.

    Returns
    -------
    scores : dict
        :func:`pathpipe.segmentation.metrics.summarise` of all tiles, plus the method, MPP,
        class names and stain record.
    per_tile : pandas.DataFrame
        One row per tile: name, nuclei true/predicted, Dice, AJI, PQ, F1.
    """
    import pandas as pd

    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.segmentation.metrics import evaluate_tile, summarise
    from pathpipe.stain import estimate_stain_matrix

    params = params or SegmentationParams()
    ann = read_annotated_dir(data)
    tile_mpp = ann.mpp if ann.mpp is not None else mpp
    if tile_mpp is None:
        raise ConfigError(
            f"{ann.path}/classes.json gives no 'mpp' and none was passed; expected the µm/px "
            "of the annotated tiles"
        )
    gt_classes = ann.classes or tuple(params.classes)
    mapping = dict(class_map or {})
    # Predicted code -> ground-truth type (1-based). A predicted class the ground truth
    # lacks gets a type of its own after the ground truth's, so it scores as a wrong type.
    score_classes = list(gt_classes)
    lut = np.zeros(len(params.classes), dtype=np.uint8)
    for k, name in enumerate(params.classes):
        target = mapping.get(name, name)
        if target not in score_classes:
            score_classes.append(target)
        lut[k] = score_classes.index(target) + 1
    stain = estimate_stain_matrix(
        [t.rgb for t in ann.tiles],
        method="fixed" if params.stain == "fixed" else "macenko",
        seed=params.seed,
    )
    segmenter = Segmenter(params, mpp=tile_mpp, stain_matrix=stain.matrix)
    counts, rows = [], []
    for tile in ann.tiles:
        (res,) = segmenter.segment(tile.rgb[None])
        pred_type = None
        if tile.type_map is not None:
            per_label = np.zeros(int(res.labels.max(initial=0)) + 1, dtype=np.uint8)
            per_label[res.table["label"].to_numpy()] = lut[res.table["phenotype"].to_numpy()]
            pred_type = per_label[res.labels]
        c = evaluate_tile(
            tile.inst_map,
            res.labels,
            true_type=tile.type_map,
            pred_type=pred_type,
            match_radius_px=match_radius_um / tile_mpp,
        )
        counts.append(c)
        rows.append({"tile": tile.name, **c.scores()})
    scores = summarise(counts, classes=score_classes)
    scores.update(
        method=params.method,
        data=str(ann.path),
        mpp=tile_mpp,
        match_radius_um=match_radius_um,
        classes=list(gt_classes),
        predicted_classes=list(params.classes),
        class_map=mapping,
        stain={"method": stain.method, "note": stain.note},
    )
    return scores, pd.DataFrame(rows)
