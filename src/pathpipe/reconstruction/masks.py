"""The mask a section's layer is made of: tissue, one nucleus class's density, or annotations.

:func:`section_mask` is the one entry the stage calls (``reconstruction.mask``):

``tissue``
    The tissue stage's ``tissue.png`` at its ``tissue.json`` µm/px.
``phenotype:<class>``
    Where nuclei of ``<class>`` are dense (:func:`phenotype_mask`): the
    segmentation stage's ``nuclei.parquet`` counted per tile of the tiling
    grid (``tiles.zarr``: the tiles' level-0 corners, their level-0 size and
    stride), as nuclei per mm² of the tile's step cell; the density map is
    upsampled bilinearly by ``upsample`` and thresholded: a pixel is in the
    mask when its density is at least ``threshold`` × the 95th percentile of
    the density of the tiles holding any nucleus of the class (the percentile,
    not the maximum, so one crowded tile does not empty the mask). The mask
    has ``upsample`` pixels per tile step.
``annotation:<class>``
    The polygons of the sheet's QuPath GeoJSON (``annotations`` column) whose
    classification is ``<class>`` (:func:`annotation_mask`), rasterised on
    the tissue mask's grid (same shape and µm/px, so the same frame);
    holes are cut out.

Every mask covers the slide from its top-left corner: pixel ``(row, col)``
is the rectangle ``[col × mpp_x, (col + 1) × mpp_x) × [row × mpp_y, ...)`` µm,
as :func:`~pathpipe.reconstruction.points.layer_points` and the volume read it.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.reconstruction.inputs import (
    SectionInput,
    load_section_mask,
    mask_mpp,
    section_slide_mpp,
)
from pathpipe.reconstruction.params import mask_source

__all__ = [
    "DENSITY_PERCENTILE",
    "annotation_mask",
    "grey_tissue_mask",
    "phenotype_mask",
    "rasterise_polygons",
    "read_tile_grid",
    "section_mask",
]

log = logging.getLogger(__name__)

#: Percentile of the class's tile densities the phenotype threshold is relative to.
DENSITY_PERCENTILE = 95.0


def grey_tissue_mask(rgb: np.ndarray, mpp: float, *, sigma_um: float = 8.0) -> np.ndarray:
    """Tissue of an image on a bright background, by its grey level.

    The grey level (mean of R, G, B), Gaussian-smoothed by ``sigma_um``, below
    its Otsu threshold; opened by two pixels, holes filled, and regions under 2 %
    of the largest dropped. Unlike the tissue stage's saturation threshold it
    keeps pale immunostains (a haematoxylin counterstain with little DAB: the
    Flagship Podocin and Ki67 sections, whose saturation barely rises above the
    glass), so sections of different stains get comparable outlines.

    Parameters
    ----------
    rgb : (H, W, 3) uint8 ndarray
    mpp : float
        µm per pixel of ``rgb``.
    sigma_um : float
        Smoothing before the threshold, µm.

    Returns
    -------
    (H, W) bool ndarray
    """
    from scipy import ndimage
    from skimage.filters import threshold_otsu

    grey = ndimage.gaussian_filter(np.asarray(rgb, dtype=np.float64).mean(axis=-1), sigma_um / mpp)
    mask = grey < threshold_otsu(grey)
    mask = ndimage.binary_fill_holes(ndimage.binary_opening(mask, iterations=2))
    labels, n = ndimage.label(mask)
    if n == 0:
        return mask
    sizes = ndimage.sum(mask, labels, range(1, n + 1))
    return np.isin(labels, 1 + np.flatnonzero(sizes >= 0.02 * sizes.max()))


def rasterise_polygons(
    polygons: list[list[np.ndarray]], shape: tuple[int, int], mpp: tuple[float, float]
) -> np.ndarray:
    """Polygons in µm as a bool mask of ``shape`` at ``mpp`` (x, y) µm/px.

    A pixel is inside when its centre ``((col + 0.5) mpp_x, (row + 0.5) mpp_y)``
    is inside a polygon's exterior ring and outside its holes (even-odd per
    polygon; polygons are united).

    Parameters
    ----------
    polygons : list of list of (N, 2) float ndarray
        Each polygon's rings in µm, exterior first.
    shape : (int, int)
    mpp : (float, float)

    Returns
    -------
    (H, W) bool ndarray
    """
    from skimage.draw import polygon as fill

    out = np.zeros(shape, dtype=bool)
    for rings in polygons:
        poly = np.zeros(shape, dtype=bool)
        for k, ring in enumerate(rings):
            cols = ring[:, 0] / mpp[0] - 0.5
            rows = ring[:, 1] / mpp[1] - 0.5
            rr, cc = fill(rows, cols, shape=shape)
            if k == 0:
                poly[rr, cc] = True
            else:
                poly[rr, cc] = False
        out |= poly
    return out


def annotation_mask(
    section: SectionInput, name: str, *, mpp: tuple[float, float] | None = None
) -> tuple[np.ndarray, tuple[float, float]]:
    """The section's annotations of class ``name`` on its tissue mask's grid.

    Parameters
    ----------
    section : SectionInput
        With ``annotations_path`` (QuPath GeoJSON, level-0 pixels).
    name : str
        The classification name.
    mpp : (float, float), optional
        Level-0 µm/px of the slide (default :func:`section_slide_mpp`).

    Raises
    ------
    ConfigError
        When the section has no annotations file. A file without a polygon of
        class ``name`` gives an empty mask (logged, naming the classes it has).
    """
    from PIL import Image

    from pathpipe.reconstruction.geojson import class_names, class_polygons, read_geojson

    if section.annotations_path is None:
        raise ConfigError(
            f"reconstruction.mask='annotation:{name}' but slide {section.slide_id!r} has no "
            "annotations; expected the sheet's 'annotations' column (a QuPath GeoJSON path)"
        )
    collection = read_geojson(section.annotations_path)
    polygons = class_polygons(collection, name)
    if not polygons:  # e.g. a section beyond the annotated object's end: an empty layer
        log.warning(
            "annotations %r of slide %r have no polygon of class %r (classes: %s): empty mask",
            str(section.annotations_path),
            section.slide_id,
            name,
            class_names(collection),
        )
    l0 = mask_mpp(mpp) if mpp is not None else section_slide_mpp(section)
    grid_mpp = mask_mpp(section.mask_mpp)
    if not Path(section.mask_path).is_file():
        raise StorageError(
            f"mask {str(section.mask_path)!r} is missing; expected the tissue stage's PNG "
            "(its grid is the annotation mask's)"
        )
    with Image.open(section.mask_path) as img:
        width, height = img.size
    um = [[ring * np.asarray(l0) for ring in rings] for rings in polygons]
    return rasterise_polygons(um, (height, width), grid_mpp), grid_mpp


def read_tile_grid(path: str | os.PathLike) -> dict[str, Any]:
    """The tiling grid of ``tiles.zarr``: tiles' level-0 corners, step, size, slide µm/px.

    Returns
    -------
    dict
        ``l0_xy`` (N, 2) int64, ``l0_step`` and ``l0_size`` (x, y) level-0 px
        (step = size × (tile_size - overlap) / tile_size), ``mpp`` (x, y) slide µm/px.

    Raises
    ------
    StorageError
        When the store is missing or lacks the tiling stage's arrays or attributes.
    """
    import zarr

    if not Path(path).exists():
        raise StorageError(
            f"tiles {str(path)!r} missing; expected the tiling stage's tiles.zarr "
            "(the phenotype mask's tile grid)"
        )
    try:
        root = zarr.open_group(str(path), mode="r")
        meta = root.attrs["pathpipe"]
        l0_xy = np.asarray(root["l0_xy"][...], dtype=np.int64).reshape(-1, 2)
        size = np.asarray(meta["l0_tile_size"], dtype=float)
        tile = float(meta["params"]["tile_size"])
        overlap = float(meta["params"].get("overlap", 0))
        mpp = (float(meta["mpp"]["x"]), float(meta["mpp"]["y"]))
    except (KeyError, TypeError, ValueError, OSError) as exc:
        raise StorageError(
            f"tiles {str(path)!r} lacks the tiling stage's l0_xy or attributes "
            f"(pathpipe.l0_tile_size, params.tile_size, mpp): {exc!r}"
        ) from exc
    return {"l0_xy": l0_xy, "l0_step": size * (tile - overlap) / tile, "l0_size": size, "mpp": mpp}


def phenotype_mask(
    l0_xy: np.ndarray,
    tiles_l0_xy: np.ndarray,
    l0_step: tuple[float, float],
    slide_mpp: tuple[float, float],
    *,
    threshold: float = 0.5,
    upsample: int = 4,
) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """Where nuclei of one class are dense: a mask from their per-tile density.

    Parameters
    ----------
    l0_xy : (N, 2) float ndarray
        The class's nuclei centroids, level-0 px.
    tiles_l0_xy : (K, 2) int ndarray
        Level-0 top-left corners of the tiles (tiles.zarr ``l0_xy``).
    l0_step : (float, float)
        Tile step (stride) in level-0 px; tile ``(gr, gc)`` is the cell
        ``[gc × step_x, (gc + 1) × step_x) × [gr × step_y, ...)``.
    slide_mpp : (float, float)
        Level-0 µm/px.
    threshold : float
        Fraction of the :data:`DENSITY_PERCENTILE`-th percentile density of the
        class's tiles (those holding any of its nuclei) a pixel needs, in (0, 1].
    upsample : int
        Mask pixels per tile step, ≥ 1 (bilinear upsampling of the density map).

    Returns
    -------
    mask : (H, W) bool ndarray
        ``H = upsample × (last tile row + 1)``, likewise ``W``.
    mpp : (float, float)
        µm/px of the mask: ``step × slide_mpp / upsample``.
    density : (rows, cols) float64 ndarray
        Nuclei of the class per mm² of each tile's cell (0 where no tile).
    """
    from scipy.ndimage import zoom

    if not 0.0 < threshold <= 1.0:
        raise ConfigError(f"threshold={threshold!r}; expected a fraction in (0, 1]")
    if int(upsample) != upsample or upsample < 1:
        raise ConfigError(f"upsample={upsample!r}; expected a whole number >= 1")
    step = np.asarray(l0_step, dtype=float)
    tiles = np.asarray(tiles_l0_xy, dtype=float).reshape(-1, 2)
    if len(tiles) == 0:
        raise ConfigError("no tiles; expected the tiling grid of a slide with tissue")
    cell = np.floor(tiles / step + 0.5).astype(np.int64)  # corners lie on multiples of step
    shape = (int(cell[:, 1].max()) + 1, int(cell[:, 0].max()) + 1)
    is_tile = np.zeros(shape, dtype=bool)
    is_tile[cell[:, 1], cell[:, 0]] = True
    counts = np.zeros(shape, dtype=float)
    p = np.asarray(l0_xy, dtype=float).reshape(-1, 2)
    if len(p):
        c = np.floor(p / step).astype(np.int64)
        ok = (c[:, 0] >= 0) & (c[:, 0] < shape[1]) & (c[:, 1] >= 0) & (c[:, 1] < shape[0])
        np.add.at(counts, (c[ok, 1], c[ok, 0]), 1.0)
    cell_mm2 = float(step[0] * slide_mpp[0] * step[1] * slide_mpp[1]) / 1e6
    density = np.where(is_tile, counts / cell_mm2, 0.0)
    mpp = (float(step[0] * slide_mpp[0] / upsample), float(step[1] * slide_mpp[1] / upsample))
    occupied = density[density > 0]
    if occupied.size == 0:
        return np.zeros((shape[0] * upsample, shape[1] * upsample), dtype=bool), mpp, density
    level = threshold * float(np.percentile(occupied, DENSITY_PERCENTILE))
    fine = zoom(density, int(upsample), order=1, mode="grid-constant", cval=0.0, grid_mode=True)
    return fine >= level - 1e-9, mpp, density


def section_mask(
    section: SectionInput,
    source: str,
    results_dir: str | os.PathLike | None = None,
    *,
    threshold: float = 0.5,
    upsample: int = 4,
) -> tuple[np.ndarray, tuple[float, float]]:
    """A section's layer mask from ``source`` (``reconstruction.mask``) and its µm/px.

    Parameters
    ----------
    section : SectionInput
    source : str
        ``tissue``, ``phenotype:<class>`` or ``annotation:<class>`` (see the module docstring).
    results_dir : path-like, optional
        The results root (the slide's files in ``results_dir/{slide_id}``);
        default ``section.folder``.
    threshold, upsample
        Of the ``phenotype`` source (:func:`phenotype_mask`).

    Returns
    -------
    mask : (H, W) bool ndarray
        Covering the slide from its top-left corner.
    mpp : (float, float)
        µm/px ``(x, y)`` of the mask.

    Raises
    ------
    ConfigError
        For an unknown source, or ``annotation`` on a section without annotations.
    StorageError
        When a file the source needs is missing or unreadable.
    """
    kind, name = mask_source(source)
    if kind == "tissue":
        return load_section_mask(section.mask_path), mask_mpp(section.mask_mpp)
    if kind == "annotation":
        return annotation_mask(section, str(name))
    import pandas as pd

    folder = section.folder if results_dir is None else Path(results_dir) / section.slide_id
    table_path = folder / "nuclei.parquet"
    try:
        nuclei = pd.read_parquet(table_path, columns=["l0_x", "l0_y", "phenotype"])
    except (OSError, ValueError, KeyError) as exc:
        raise StorageError(
            f"nuclei table {str(table_path)!r} unreadable or without l0_x, l0_y, phenotype; "
            f"expected the segmentation stage's nuclei.parquet: {exc}"
        ) from exc
    classes = sorted(map(str, pd.unique(nuclei["phenotype"].astype(str))))
    if name not in classes:  # an empty layer; the stage flags it
        log.warning(
            "slide %r has no nucleus of class %r (classes: %s): empty mask",
            section.slide_id,
            name,
            classes,
        )
    grid = read_tile_grid(folder / "tiles.zarr")
    chosen = nuclei[nuclei["phenotype"].astype(str) == name]
    mask, mpp, _ = phenotype_mask(
        chosen[["l0_x", "l0_y"]].to_numpy(dtype=float),
        grid["l0_xy"],
        tuple(grid["l0_step"]),
        grid["mpp"],
        threshold=threshold,
        upsample=upsample,
    )
    return mask, mpp
