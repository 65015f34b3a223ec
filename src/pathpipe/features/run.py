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
``docs/features.md`` (``pathpipe features dictionary``).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.features.registry import FAMILIES, FeatureSpec, NucleusBatch
from pathpipe.io.workers import ordered_map

__all__ = [
    "CHANNELS",
    "FeatureParams",
    "feature_dictionary",
    "feature_specs",
    "nuclear_features",
    "run_features",
    "tile_features",
]

log = logging.getLogger(__name__)

CHANNELS = ("h", "grey")
# Families whose compute() takes discretisation settings.
_BINNED = ("intensity", "texture")


@dataclass(frozen=True, kw_only=True)
class FeatureParams:
    """Parameters of the features stage (config block ``features:``).

    Attributes
    ----------
    families : tuple of str
        Nuclear feature families to compute (default: all six).
    channels : tuple of str
        Intensity channels of the intensity, texture and chromatin families.
    bin_width : dict
        PyRadiomics fixed bin width per channel (``binWidth``), in the channel's
        unit; channels listed in ``bin_count`` use that instead.
    bin_count : dict
        PyRadiomics fixed bin count per channel (``binCount``).
    per_phenotype : tuple of str
        Phenotypes whose nuclei also get their own ``_med`` / ``_std`` columns.
    aggregate_border_nuclei : bool
        Include nuclei touching the tile edge (cut, so their shape is unreliable) in
        the ``_med`` / ``_std`` aggregates; counts, densities and graphs always
        include them.
    graph : {"knn", "delaunay"}
    graph_k : int
        Neighbours of the kNN cell graph.
    workers : int or None
        Worker processes (default: CPU count).
    """

    families: tuple[str, ...] = FAMILIES
    channels: tuple[str, ...] = CHANNELS
    bin_width: dict[str, float] = field(default_factory=lambda: {"h": 10.0, "grey": 8.0})
    bin_count: dict[str, int] = field(default_factory=dict)
    per_phenotype: tuple[str, ...] = ()
    aggregate_border_nuclei: bool = False
    graph: str = "knn"
    graph_k: int = 5
    workers: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "families", tuple(self.families))
        object.__setattr__(self, "channels", tuple(self.channels))
        object.__setattr__(self, "per_phenotype", tuple(self.per_phenotype))
        bad = [f for f in self.families if f not in FAMILIES]
        if bad or not self.families:
            raise ConfigError(
                f"features.families {list(self.families)!r}; expected a non-empty subset of "
                f"{list(FAMILIES)}"
            )
        bad = [c for c in self.channels if c not in CHANNELS]
        if bad or not self.channels:
            raise ConfigError(
                f"features.channels {list(self.channels)!r}; expected a non-empty subset of "
                f"{list(CHANNELS)}"
            )
        for c in self.channels:
            if c in self.bin_count:
                if not (isinstance(self.bin_count[c], int) and self.bin_count[c] >= 1):
                    raise ConfigError(
                        f"features.bin_count.{c}={self.bin_count[c]!r}; expected an integer >= 1"
                    )
            elif not self.bin_width.get(c, 0) > 0:
                raise ConfigError(
                    f"features.bin_width.{c}={self.bin_width.get(c)!r}; expected a number > 0 "
                    f"(or set features.bin_count.{c})"
                )
        if self.graph not in ("knn", "delaunay"):
            raise ConfigError(f"features.graph={self.graph!r}; expected 'knn' or 'delaunay'")
        if not (isinstance(self.graph_k, int) and self.graph_k >= 1):
            raise ConfigError(f"features.graph_k={self.graph_k!r}; expected an integer >= 1")
        if self.workers is not None and not (isinstance(self.workers, int) and self.workers >= 1):
            raise ConfigError(
                f"features.workers={self.workers!r}; expected a positive integer or null"
            )

    def binning(self) -> dict[str, dict]:
        bc = {c: self.bin_count[c] for c in self.channels if c in self.bin_count}
        bw = {c: float(self.bin_width[c]) for c in self.channels if c not in bc}
        return {"bin_width": bw or None, "bin_count": bc or None}


def _module(family: str) -> Any:
    """The module of a feature family: an explicit table, so imports stay visible."""
    from pathpipe.features import boundary, chromatin, geometry, intensity, morphology, texture

    modules = {
        "geometry": geometry,
        "intensity": intensity,
        "texture": texture,
        "morphology": morphology,
        "chromatin": chromatin,
        "boundary": boundary,
    }
    return modules[family]


def feature_specs(params: FeatureParams | None = None) -> list[FeatureSpec]:
    """Every nuclear feature the parameters produce, in column order."""
    params = params or FeatureParams()
    specs: list[FeatureSpec] = []
    for family in params.families:
        specs.extend(_module(family).feature_specs(params.channels))
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
    for family in params.families:
        kwargs = binning if family in _BINNED else {}
        out.update(_module(family).compute(batch, **kwargs))
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

_worker_state: dict[str, Any] = {}


def _init_worker(state: dict[str, Any]) -> None:
    _worker_state.clear()
    _worker_state.update(state)


def _tile_job(job: tuple[int, np.ndarray, np.ndarray, Any]) -> tuple[Any, dict[str, float]]:
    import pandas as pd

    i, rgb, labels, rows = job
    s = _worker_state
    params: FeatureParams = s["params"]
    feats = nuclear_features(
        rgb,
        labels,
        rows["label"].to_numpy(),
        mpp=s["mpp"],
        stain_matrix=s["stain_matrix"],
        params=params,
    )
    nuclear = pd.DataFrame(feats, index=rows.index)
    nuclear = pd.concat(
        [rows[["nucleus_id", "tile", "label", "phenotype", "touches_border"]], nuclear], axis=1
    )
    xy_um = rows[["l0_x", "l0_y"]].to_numpy(np.float64) * s["l0_mpp"]
    tile = tile_features(
        nuclear,
        feature_names=s["names"],
        classes=s["classes"],
        xy_um=xy_um,
        tissue_area_mm2=s["tile_area_mm2"] * float(s["tissue_fraction"][i]),
        params=params,
    )
    return nuclear, {
        "tile": i,
        "l0_x": int(s["l0_xy"][i, 0]),
        "l0_y": int(s["l0_xy"][i, 1]),
        **tile,
    }


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

    Tiles stream through a bounded pool of worker processes (at most a few
    tiles per worker in flight); each worker returns the features of one tile.

    Returns
    -------
    dict
        Provenance/summary record, also stored in both Parquet files' metadata.
    """
    import pandas as pd

    from pathpipe.io.storage import open_store, provenance, write_parquet

    params = params or FeatureParams()
    t0 = time.perf_counter()
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
    scale = float(lmeta["l0_scale"])
    specs = feature_specs(params)
    names = [s.name for s in specs]
    tile_size = tiles.shape[1]
    state = {
        "params": params,
        "mpp": mpp,
        "l0_mpp": mpp / scale,
        "stain_matrix": np.asarray(lmeta["stain"]["matrix"], dtype=np.float64),
        "names": names,
        "classes": classes,
        "tile_area_mm2": (tile_size * mpp / 1000.0) ** 2,
        "tissue_fraction": np.asarray(tiles_root["qc"]["tissue_fraction"][...]),
        "l0_xy": np.asarray(tiles_root["l0_xy"][...]).reshape(-1, 2),
    }
    by_tile = {int(k): g for k, g in nuclei.groupby("tile", sort=True)}
    empty_rows = nuclei.iloc[0:0]

    def jobs():
        for i in range(n_tiles):
            yield i, np.asarray(tiles[i]), np.asarray(labels[i]), by_tile.get(i, empty_rows)

    workers = params.workers or os.cpu_count() or 1
    from pathpipe.features.figure import pick_features

    shown = pick_features(names)
    tile_rows: list[dict[str, float]] = []
    figure_parts: list[Any] = []
    n_nuclei = 0
    # Nuclear features stream into the Parquet file a row group at a time, so memory
    # holds a few tiles' rows (plus the figure's few columns), not the slide's.
    with _NuclearWriter(nuclear_out, names) as writer:
        if workers > 1 and n_tiles > 2:
            pool = ProcessPoolExecutor(workers, initializer=_init_worker, initargs=(state,))
            results = ordered_map(pool, _tile_job, jobs(), ahead=2 * workers)
        else:
            pool = None
            _init_worker(state)
            results = map(_tile_job, jobs())
        try:
            for nuc, row in results:
                writer.write(nuc)
                n_nuclei += len(nuc)
                tile_rows.append(row)
                figure_parts.append(nuc[["phenotype", *shown]])
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
        tile_df = pd.DataFrame(tile_rows)
        record = provenance(
            stage="features",
            params=_params_dict(params),
            source={
                "tiles": str(Path(tiles_path).resolve()),
                "nuclei": str(Path(nuclei_path).resolve()),
                "labels": str(Path(labels_path).resolve()),
            },
            mpp=mpp,
            classes=classes,
            n_tiles=n_tiles,
            n_nuclei=n_nuclei,
            n_nuclear_features=len(names),
            n_tile_features=max(0, tile_df.shape[1] - 3),
            seconds=round(time.perf_counter() - t0, 3),
        )
        writer.record = record
        write_parquet(tile_df, tile_out, record)
    if figure_path is not None:
        from pathpipe.features.figure import features_figure

        shown_df = (
            pd.concat(figure_parts, ignore_index=True)
            if figure_parts
            else pd.DataFrame(columns=["phenotype", *shown])
        )
        features_figure(
            figure_path,
            shown_df,
            classes=classes,
            n_features=len(names),
            title=Path(tiles_path).resolve().parent.name,
        )
    log.info(
        "features: %d nuclei x %d nuclear features, %d tiles x %d tile features in %.1f s",
        n_nuclei,
        len(names),
        n_tiles,
        record["n_tile_features"],
        record["seconds"],
    )
    return record


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


# ---------------------------------------------------------------------------
# feature dictionary
# ---------------------------------------------------------------------------


def feature_dictionary(params: FeatureParams | None = None) -> str:
    """Markdown table of every nuclear feature: name, family, unit, definition,
    PyRadiomics equivalent; generated from the code (``docs/features.md``)."""
    params = params or FeatureParams()
    specs = feature_specs(params)
    lines = [
        "# Nuclear features",
        "",
        "Generated by `pathpipe features dictionary` from the code; do not edit.",
        f"{len(specs)} features per nucleus with channels {', '.join(params.channels)} "
        "(`h`: hematoxylin optical density × 100; `grey`: luma 0–255). Tile features are",
        "the median (`_med`) and standard deviation (`_std`) of each over a tile's nuclei,",
        "plus counts, densities, nearest-neighbour distances and cell-graph statistics",
        "(see `pathpipe.features.tile`).",
        "",
    ]
    for family in params.families:
        fam = [s for s in specs if s.family == family]
        lines += [f"## {family} ({len(fam)})", ""]
        lines += ["| name | unit | definition | PyRadiomics |", "|---|---|---|---|"]
        for s in fam:
            definition = " ".join(s.definition.split()).replace("|", "\\|")
            lines.append(f"| `{s.name}` | {s.unit} | {definition} | {s.pyradiomics or ''} |")
        lines.append("")
    return "\n".join(lines)
