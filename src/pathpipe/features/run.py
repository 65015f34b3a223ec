"""CellFiNet cellular features of a slide (stage ``features``).

Reads ``tiles.zarr`` (tiling) and ``nuclei.zarr`` / ``nuclei.parquet``
(segmentation) and writes, per slide:

* ``nuclear_features.parquet`` — one row per nucleus of ``nuclei.parquet``:
  ``nucleus_id, tile, label, phenotype, touches_border`` and every nuclear
  feature of the six families (:data:`pathpipe.features.registry.FAMILIES`).
* ``tile_features.parquet`` — one row per tile: ``tile, l0_x, l0_y`` and the tile
  features: median and standard deviation of every nuclear feature
  (``<feature>_med``, ``<feature>_std``, also per phenotype for the phenotypes in
  ``FeatureParams.per_phenotype``), counts and densities per phenotype, mean
  nearest-neighbour distances within and between phenotypes, and cell-graph
  statistics (:mod:`pathpipe.features.tile`).
* ``features.png`` — distributions of a few key features per phenotype (report).

Source: "Cellular Features Based Interpretable Network (CellFiNet)", MICCAI 2023
workshops: nuclear features in six families, aggregated per tile by median and
standard deviation, plus spatial and graph features.

Intensity channels (``FeatureParams.channels``):

``h``
    Hematoxylin optical density from colour deconvolution with the stain vectors
    the segmentation stage estimated for the slide, times 100 (unit "0.01 OD"), so
    PyRadiomics-style fixed bin widths are in hundredths of OD.
``grey``
    Luma ``0.299 R + 0.587 G + 0.114 B`` on 0-255.

The feature list with units and definitions is generated from the code into
``docs/features.md`` (``pathpipe features dictionary``,
:mod:`pathpipe.features.dictionary`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import time
from collections.abc import Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.features.params import CHANNELS, FeatureParams
from pathpipe.features.registry import FeatureSpec, NucleusBatch
from pathpipe.io.workers import ordered_map

__all__ = [
    "CHANNELS",
    "FeatureParams",
    "SlideContext",
    "family_modules",
    "feature_specs",
    "features_of_tile",
    "nuclear_features",
    "run_features",
    "tile_features",
]

log = logging.getLogger(__name__)

# Families whose compute() takes discretisation settings.
_BINNED = ("intensity", "texture")


def family_modules() -> dict[str, Any]:
    """The module of every feature family, by name: an explicit table, so imports stay visible.

    Each module has ``FAMILY`` (its name), ``feature_specs(channels)`` and
    ``compute(batch, **settings)`` (:mod:`pathpipe.features.registry`). The
    imports are here, not at the top, so that importing this module compiles no
    kernel.
    """
    from pathpipe.features import boundary, chromatin, geometry, intensity, morphology
    from pathpipe.features.texture import family as texture

    return {
        "geometry": geometry,
        "intensity": intensity,
        "texture": texture,
        "morphology": morphology,
        "chromatin": chromatin,
        "boundary": boundary,
    }


def feature_specs(params: FeatureParams | None = None) -> list[FeatureSpec]:
    """Every nuclear feature the parameters produce, in column order."""
    params = params or FeatureParams()
    modules = family_modules()
    specs: list[FeatureSpec] = []
    for family in params.families:
        specs.extend(modules[family].feature_specs(params.channels))
    return specs


def channel_images(rgb: np.ndarray, stain_matrix: np.ndarray, channels: Sequence[str]) -> dict:
    """The intensity channels of a tile (see the module docstring)."""
    out = {}
    if "h" in channels:
        from pathpipe.stain import hematoxylin_channel

        out["h"] = 100.0 * hematoxylin_channel(rgb, stain_matrix).astype(np.float64)
    if "grey" in channels:
        out["grey"] = rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])
    return out


def nuclear_features(
    rgb: np.ndarray,
    labels: np.ndarray,
    ids: np.ndarray,
    *,
    mpp: float,
    stain_matrix: np.ndarray,
    params: FeatureParams | None = None,
) -> dict[str, np.ndarray]:
    """Nuclear features of the nuclei ``ids`` of one tile.

    Parameters
    ----------
    rgb : (T, T, 3) uint8 ndarray
    labels : (T, T) int ndarray
    ids : (n,) int ndarray
    mpp : float
    stain_matrix : (3, 3) float ndarray
    params : FeatureParams

    Returns
    -------
    dict
        Feature name -> (n,) float64 array, in :func:`feature_specs` order.
    """
    params = params or FeatureParams()
    batch = NucleusBatch(
        labels=np.asarray(labels, dtype=np.int32),
        ids=np.asarray(ids, dtype=np.int64),
        channels=channel_images(rgb, stain_matrix, params.channels),
        mpp=float(mpp),
    )
    out: dict[str, np.ndarray] = {}
    binning = params.binning()
    modules = family_modules()
    for family in params.families:
        kwargs = binning if family in _BINNED else {}
        out.update(modules[family].compute(batch, **kwargs))
    return out


def tile_features(
    nuclear: Any,
    *,
    feature_names: Sequence[str],
    classes: Sequence[str],
    xy_um: np.ndarray,
    tissue_area_mm2: float,
    params: FeatureParams | None = None,
) -> dict[str, float]:
    """Tile-level features from the nuclear features of one tile.

    Parameters
    ----------
    nuclear : pandas.DataFrame
        The tile's rows of ``nuclear_features.parquet`` (``phenotype``,
        ``touches_border`` and the features).
    feature_names : sequence of str
    classes : sequence of str
        All phenotype names of the slide.
    xy_um : (n, 2) float ndarray
        Centroids in µm, in the order of ``nuclear``.
    tissue_area_mm2 : float
    params : FeatureParams

    Returns
    -------
    dict
    """
    from pathpipe.features.tile import (
        aggregate_nuclear,
        cell_graph,
        graph_features,
        spatial_features,
    )

    params = params or FeatureParams()
    ph = nuclear["phenotype"].astype(str).to_numpy()
    agg = nuclear
    if not params.aggregate_border_nuclei:
        agg = nuclear[~nuclear["touches_border"].to_numpy(bool)]
    x = agg[list(feature_names)].to_numpy(np.float64)
    out = aggregate_nuclear(x, feature_names)
    agg_ph = agg["phenotype"].astype(str).to_numpy()
    for c in params.per_phenotype:
        out.update(aggregate_nuclear(x[agg_ph == c], feature_names, suffix=f"_{c}"))
    out.update(spatial_features(xy_um, ph, classes, tissue_area_mm2=tissue_area_mm2))
    g = cell_graph(xy_um, k=params.graph_k, method=params.graph)
    out.update(graph_features(g, ph, classes))
    return out


# ---------------------------------------------------------------------------
# path level
# ---------------------------------------------------------------------------


@dataclass(frozen=True)
class SlideContext:
    """What the features of any tile of a slide need besides the tile itself.

    Attributes
    ----------
    params : FeatureParams
    mpp : float
        µm per pixel of the tiles.
    l0_mpp : float
        µm per level-0 pixel (centroids in ``nuclei.parquet`` are level-0 pixels).
    stain_matrix : (3, 3) float64 ndarray
        The slide's stain vectors (segmentation), for the ``h`` channel.
    names : list of str
        The nuclear feature columns (:func:`feature_specs`).
    classes : list of str
        The phenotypes of the segmentation.
    tile_area_mm2 : float
    """

    params: FeatureParams
    mpp: float
    l0_mpp: float
    stain_matrix: np.ndarray
    names: list[str]
    classes: list[str]
    tile_area_mm2: float


def features_of_tile(
    rgb: np.ndarray,
    labels: np.ndarray,
    rows: Any,
    *,
    tissue_fraction: float,
    context: SlideContext,
) -> tuple[Any, dict[str, float]]:
    """The nuclear features and the tile features of one tile.

    Parameters
    ----------
    rgb : (T, T, 3) uint8 ndarray
    labels : (T, T) int ndarray
    rows : pandas.DataFrame
        The tile's rows of ``nuclei.parquet``.
    tissue_fraction : float
        Tissue fraction of the tile (tiling QC), for the densities.
    context : SlideContext

    Returns
    -------
    nuclear : pandas.DataFrame
        ``nucleus_id, tile, label, phenotype, touches_border`` and the nuclear
        features, one row per row of ``rows``.
    tile : dict
        The tile features (:func:`tile_features`).
    """
    import pandas as pd

    params = context.params
    feats = nuclear_features(
        rgb,
        labels,
        rows["label"].to_numpy(),
        mpp=context.mpp,
        stain_matrix=context.stain_matrix,
        params=params,
    )
    nuclear = pd.DataFrame(feats, index=rows.index)
    nuclear = pd.concat(
        [rows[["nucleus_id", "tile", "label", "phenotype", "touches_border"]], nuclear], axis=1
    )
    xy_um = rows[["l0_x", "l0_y"]].to_numpy(np.float64) * context.l0_mpp
    tile = tile_features(
        nuclear,
        feature_names=context.names,
        classes=context.classes,
        xy_um=xy_um,
        tissue_area_mm2=context.tile_area_mm2 * float(tissue_fraction),
        params=params,
    )
    return nuclear, tile


# ---------------------------------------------------------------------------
# path level
# ---------------------------------------------------------------------------


@dataclass
class _Inputs:
    """The inputs of a slide: the stores' arrays (read tile by tile) and tables."""

    tiles: Any  # (n, T, T, 3) uint8 array of tiles.zarr
    labels: Any  # (n, T, T) int32 array of nuclei.zarr
    nuclei: Any  # nuclei.parquet
    tissue_fraction: np.ndarray  # (n,)
    l0_xy: np.ndarray  # (n, 2) level-0 top-left corner of each tile
    context: SlideContext


def _read_inputs(
    tiles_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    nuclei_path: str | os.PathLike[str],
    params: FeatureParams,
) -> _Inputs:
    import pandas as pd

    from pathpipe.io.storage import open_store

    tiles_root = open_store(tiles_path, stage="tiling")
    labels_root = open_store(labels_path, stage="segmentation")
    tmeta, lmeta = tiles_root.attrs["pathpipe"], labels_root.attrs["pathpipe"]
    tiles, labels = tiles_root["tiles"], labels_root["labels"]
    n_tiles = tiles.shape[0]
    if labels.shape[0] != n_tiles:
        raise ConfigError(
            f"{labels_path} has {labels.shape[0]} label maps but {tiles_path} has {n_tiles} "
            "tiles; expected the segmentation of these tiles (rerun segmentation)"
        )
    nuclei = pd.read_parquet(nuclei_path)
    if n_tiles == 0:
        log.warning(
            "%s holds no tiles (tiling filtered every tile out): writing empty feature tables",
            tiles_path,
        )
    classes = list(lmeta["classes"])
    bad = [c for c in params.per_phenotype if c not in classes]
    if bad:
        raise ConfigError(
            f"features.per_phenotype {bad} are not phenotypes of the segmentation {classes}"
        )
    mpp = float(tmeta["params"]["mpp"])
    context = SlideContext(
        params=params,
        mpp=mpp,
        l0_mpp=mpp / float(lmeta["l0_scale"]),
        stain_matrix=np.asarray(lmeta["stain"]["matrix"], dtype=np.float64),
        names=[s.name for s in feature_specs(params)],
        classes=classes,
        tile_area_mm2=(tiles.shape[1] * mpp / 1000.0) ** 2,
    )
    return _Inputs(
        tiles=tiles,
        labels=labels,
        nuclei=nuclei,
        tissue_fraction=np.asarray(tiles_root["qc"]["tissue_fraction"][...]),
        l0_xy=np.asarray(tiles_root["l0_xy"][...]).reshape(-1, 2),
        context=context,
    )


_worker_state: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _worker_state.clear()
    _worker_state.update(state)


def _tile_job(job: tuple[int, np.ndarray, np.ndarray, Any]) -> tuple[Any, dict[str, float]]:
    i, rgb, labels, rows = job
    s = _worker_state
    nuclear, tile = features_of_tile(
        rgb, labels, rows, tissue_fraction=s["tissue_fraction"][i], context=s["context"]
    )
    return nuclear, {
        "tile": i,
        "l0_x": int(s["l0_xy"][i, 0]),
        "l0_y": int(s["l0_xy"][i, 1]),
        **tile,
    }


@contextlib.contextmanager
def _tile_results(inputs: _Inputs, workers: int) -> Iterator[Iterator[tuple[Any, dict]]]:
    """``(nuclear rows, tile row)`` of every tile, in tile order.

    Tiles stream through a bounded pool of worker processes (at most a few tiles
    per worker in flight) when there are more than two; each worker returns the
    features of one tile.
    """
    n_tiles = inputs.tiles.shape[0]
    by_tile = {int(k): g for k, g in inputs.nuclei.groupby("tile", sort=True)}
    empty_rows = inputs.nuclei.iloc[0:0]

    def jobs() -> Iterator[tuple[int, np.ndarray, np.ndarray, Any]]:
        for i in range(n_tiles):
            rows = by_tile.get(i, empty_rows)
            yield i, np.asarray(inputs.tiles[i]), np.asarray(inputs.labels[i]), rows

    state = {
        "context": inputs.context,
        "tissue_fraction": inputs.tissue_fraction,
        "l0_xy": inputs.l0_xy,
    }
    if workers > 1 and n_tiles > 2:
        pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(state,))
        try:
            yield ordered_map(pool, _tile_job, jobs(), ahead=2 * workers)
        finally:
            pool.shutdown(cancel_futures=True)
    else:
        _init_worker(state)
        yield map(_tile_job, jobs())


def run_features(
    tiles_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    nuclei_path: str | os.PathLike[str],
    *,
    nuclear_out: str | os.PathLike[str],
    tile_out: str | os.PathLike[str],
    figure_path: str | os.PathLike[str] | None = None,
    params: FeatureParams | None = None,
) -> dict[str, Any]:
    """Compute and write the nuclear and tile features of one slide.

    Reads the stores and ``nuclei.parquet``, computes each tile's features
    (:func:`features_of_tile`, in worker processes) and writes
    ``nuclear_features.parquet`` (streamed, a row group at a time),
    ``tile_features.parquet`` and the figure.

    Returns
    -------
    dict
        Provenance/summary record, also stored in both Parquet files' metadata.
    """
    import pandas as pd

    from pathpipe.features.figure import pick_features
    from pathpipe.io.storage import provenance, write_parquet

    params = params or FeatureParams()
    t0 = time.perf_counter()
    inputs = _read_inputs(tiles_path, labels_path, nuclei_path, params)
    names = inputs.context.names
    shown = pick_features(names)
    tile_rows: list[dict[str, float]] = []
    figure_parts: list[Any] = []
    n_nuclei = 0
    # Nuclear features stream into the Parquet file a row group at a time, so memory
    # holds a few tiles' rows (plus the figure's few columns), not the slide's.
    with _NuclearWriter(nuclear_out, names) as writer:
        with _tile_results(inputs, params.workers or os.cpu_count() or 1) as results:
            for nuc, row in results:
                writer.write(nuc)
                n_nuclei += len(nuc)
                tile_rows.append(row)
                figure_parts.append(nuc[["phenotype", *shown]])
        tile_df = pd.DataFrame(tile_rows)
        record = provenance(
            stage="features",
            params=_params_dict(params),
            source={
                "tiles": str(Path(tiles_path).resolve()),
                "nuclei": str(Path(nuclei_path).resolve()),
                "labels": str(Path(labels_path).resolve()),
            },
            mpp=inputs.context.mpp,
            classes=inputs.context.classes,
            n_tiles=inputs.tiles.shape[0],
            n_nuclei=n_nuclei,
            n_nuclear_features=len(names),
            n_tile_features=max(0, tile_df.shape[1] - 3),
            seconds=round(time.perf_counter() - t0, 3),
        )
        writer.record = record
        write_parquet(tile_df, tile_out, record)
    if figure_path is not None:
        _write_figure(figure_path, figure_parts, shown, inputs.context, tiles_path)
    log.info(
        "features: %d nuclei x %d nuclear features, %d tiles x %d tile features in %.1f s",
        n_nuclei,
        len(names),
        record["n_tiles"],
        record["n_tile_features"],
        record["seconds"],
    )
    return record


def _write_figure(
    path: str | os.PathLike[str],
    parts: list[Any],
    shown: list[str],
    context: SlideContext,
    tiles_path: str | os.PathLike[str],
) -> None:
    import pandas as pd

    from pathpipe.features.figure import features_figure
    from pathpipe.io.storage import slide_id_of

    shown_df = (
        pd.concat(parts, ignore_index=True)
        if parts
        else pd.DataFrame(columns=["phenotype", *shown])
    )
    features_figure(
        path,
        shown_df,
        classes=context.classes,
        n_features=len(context.names),
        title=slide_id_of(tiles_path),
    )


class _NuclearWriter:
    """``nuclear_features.parquet`` written in row groups, atomically, with the
    provenance record (set ``record`` before the block ends) in its metadata."""

    _ROWS = 50_000

    def __init__(self, path: str | os.PathLike[str], names: Sequence[str]) -> None:
        import pyarrow as pa

        self.path = Path(path)
        self.schema = pa.schema(
            [
                ("nucleus_id", pa.int64()),
                ("tile", pa.int32()),
                ("label", pa.int32()),
                ("phenotype", pa.string()),
                ("touches_border", pa.bool_()),
                *[(n, pa.float64()) for n in names],
            ]
        )
        self.record: dict[str, Any] | None = None
        self._buffer: list[Any] = []
        self._rows = 0

    def __enter__(self) -> _NuclearWriter:
        import pyarrow.parquet as pq

        from pathpipe.io.storage import atomic_file

        self._atomic = atomic_file(self.path)
        self._tmp = self._atomic.__enter__()
        self._writer = pq.ParquetWriter(self._tmp, self.schema)
        return self

    def write(self, df: Any) -> None:
        if len(df):
            df = df.assign(phenotype=df["phenotype"].astype(str))
            self._buffer.append(df)
            self._rows += len(df)
        if self._rows >= self._ROWS:
            self._flush()

    def _flush(self) -> None:
        import pandas as pd
        import pyarrow as pa

        if self._buffer:
            df = pd.concat(self._buffer, ignore_index=True)
            table = pa.Table.from_pandas(df, schema=self.schema, preserve_index=False)
            self._writer.write_table(table)
        self._buffer, self._rows = [], 0

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        from pathpipe.io.storage import provenance_json

        try:
            if exc_type is None:
                self._flush()
                if self.record is not None:
                    self._writer.add_key_value_metadata({"pathpipe": provenance_json(self.record)})
        finally:
            self._writer.close()
            self._atomic.__exit__(exc_type, exc, tb)


def _params_dict(params: FeatureParams) -> dict[str, Any]:
    d = asdict(params)
    for k in ("families", "channels", "per_phenotype"):
        d[k] = list(d[k])
    return d
