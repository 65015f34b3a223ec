"""Per-tile compute of the segmentation stage: segment, phenotype, place on the slide.

:class:`Segmenter` segments and phenotypes a batch of tiles with one method
(classical or unet) and returns each tile's :class:`TileNuclei` (label map, one
row per nucleus, outlines); :func:`owned_nuclei` keeps the nuclei a tile owns
and places them in the slide's level-0 frame. Pure functions of the tiles: the
path-level layer that reads ``tiles.zarr`` and writes the outputs is
:func:`pathpipe.segmentation.run.run_segmentation`.

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

import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation.params import SegmentationParams

__all__ = ["Segmenter", "SlideGrid", "TileNuclei", "keep_owned", "owned_nuclei"]


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
        Outline of each row's nucleus
        (:func:`pathpipe.segmentation.export.nucleus_polygons`), traced where the
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
            from pathpipe.segmentation.classifier import PhenotypeClassifier

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
        from pathpipe.device import resolve_device
        from pathpipe.segmentation.unet.io import load_model

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
        from pathpipe.segmentation.unet.predict import predict_tiles

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


@dataclass(frozen=True)
class SlideGrid:
    """Where a slide's tiles lie: what places a tile's nuclei on the slide.

    Attributes
    ----------
    l0_xy : (N, 2) int64 ndarray
        Level-0 ``(x, y)`` of each tile's top-left pixel.
    grid_rc : (N, 2) int64 ndarray
        Grid ``(row, col)`` of each tile.
    tile_size : int
        Tile edge in tile pixels.
    stride : int
        Grid step in tile pixels (``tile_size`` minus the overlap).
    scale : float
        Level-0 pixels per tile pixel.
    """

    l0_xy: np.ndarray
    grid_rc: np.ndarray
    tile_size: int
    stride: int
    scale: float
    present: dict[tuple[int, int], int] = field(init=False, repr=False, compare=False)

    def __post_init__(self) -> None:
        present = {(int(r), int(c)): i for i, (r, c) in enumerate(self.grid_rc)}
        object.__setattr__(self, "present", present)


def owned_nuclei(res: TileNuclei, tile: int, grid: SlideGrid, *, first_id: int) -> tuple[Any, list]:
    """The nuclei of one tile that it owns (:func:`keep_owned`), in the slide's frame.

    Parameters
    ----------
    res : TileNuclei
        The tile's segmentation.
    tile : int
        Index of the tile in ``tiles.zarr``.
    grid : SlideGrid
    first_id : int
        ``nucleus_id`` of the first kept nucleus (ids run on over the slide).

    Returns
    -------
    table : pandas.DataFrame
        The kept rows of ``res.table`` with ``nucleus_id``, ``tile`` and the
        level-0 centroid ``l0_x``, ``l0_y`` added (``l0 = l0_origin + (t + 0.5) s
        - 0.5``, see Frames above); no row when none is kept.
    rings : list
        Their outlines.
    """
    table = res.table
    if len(table) == 0:
        return table, []
    keep = keep_owned(
        grid.grid_rc,
        tile,
        table[["t_row", "t_col"]].to_numpy(),
        tile_size=grid.tile_size,
        stride=grid.stride,
        present=grid.present,
    )
    table = table[keep].copy()
    if len(table) == 0:
        return table, []
    rings = [r for r, k in zip(res.rings, keep, strict=True) if k]
    table.insert(0, "tile", np.int32(tile))
    table.insert(0, "nucleus_id", np.arange(first_id, first_id + len(table)))
    table["l0_x"] = grid.l0_xy[tile, 0] + (table["t_col"] + 0.5) * grid.scale - 0.5
    table["l0_y"] = grid.l0_xy[tile, 1] + (table["t_row"] + 0.5) * grid.scale - 0.5
    return table, rings
