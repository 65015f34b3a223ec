"""Attention of a saved AMIL model on one slide: the path-level layer of ``pathpipe mil attention``.

:func:`explain_slide_attention` reads the model folder, the slide's
``tile_features.parquet``, its ``tiles.zarr`` and the slide (for the thumbnail),
computes the tile attention (:func:`~pathpipe.mil.attention_maps.attention_table`)
and writes ``attention.parquet``, the heatmap and the gallery
(:mod:`pathpipe.mil.attention_figures`). The frames and colours are described
in :mod:`pathpipe.mil.attention_maps`.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, SlideReadError, StorageError
from pathpipe.mil.attention_figures import attention_gallery, attention_heatmap_figure
from pathpipe.mil.attention_maps import attention_table
from pathpipe.mil.params import HeatmapParams

__all__ = ["explain_slide_attention"]

log = logging.getLogger(__name__)


class _StoreTiles:
    """Tile images of the bag, read from ``tiles.zarr`` one at a time on access."""

    def __init__(self, array: Any, tile_index: np.ndarray) -> None:
        self._array = array
        self._index = tile_index

    def __len__(self) -> int:
        return len(self._index)

    def __getitem__(self, i: int) -> np.ndarray:
        return np.asarray(self._array[int(self._index[i])])


def _check_store_matches(
    table: Any, store: Any, *, store_path: str, table_path: str
) -> tuple[Any, tuple[float, float]]:
    """The store's ``tiles`` array and level-0 tile size, after checking the table fits it."""
    meta = store.attrs["pathpipe"]
    for name in ("tiles", "l0_xy"):
        if name not in store:
            raise StorageError(f"tiles store {store_path!r} lacks the array {name!r}")
    l0_tile = meta.get("l0_tile_size")
    if not (isinstance(l0_tile, list) and len(l0_tile) == 2):
        raise StorageError(
            f"tiles store {store_path!r} has l0_tile_size={l0_tile!r} in attrs['pathpipe']; "
            "expected [width, height] in level-0 pixels (rerun the tiling stage)"
        )
    store_xy = np.asarray(store["l0_xy"][:], dtype=np.int64)
    n_store = store_xy.shape[0]
    if store["tiles"].shape[0] != n_store:
        raise StorageError(
            f"tiles store {store_path!r} holds {store['tiles'].shape[0]} tiles but "
            f"{n_store} positions; expected one position per tile"
        )
    tile = table["tile"].to_numpy()
    bad = (tile < 0) | (tile >= n_store)
    if bad.any():
        raise StorageError(
            f"tile table {table_path!r} names tile index(es) {tile[bad][:5].tolist()} but the "
            f"tiles store {store_path!r} holds {n_store} tiles (0..{n_store - 1}); expected "
            "tile features computed from this tiles.zarr"
        )
    uniq, counts = np.unique(tile, return_counts=True)
    if (counts > 1).any():
        raise StorageError(
            f"tile table {table_path!r} lists tile index(es) {uniq[counts > 1][:5].tolist()} "
            "more than once; expected one row per tile"
        )
    table_xy = table[["l0_x", "l0_y"]].to_numpy(np.int64)
    differ = np.flatnonzero((store_xy[tile] != table_xy).any(axis=1))
    if differ.size:
        i = differ[0]
        raise StorageError(
            f"tile table {table_path!r} and tiles store {store_path!r} disagree on the level-0 "
            f"position of {differ.size} of {len(tile)} tiles (e.g. tile {tile[i]}: table "
            f"({table_xy[i, 0]}, {table_xy[i, 1]}), store ({store_xy[tile[i], 0]}, "
            f"{store_xy[tile[i], 1]})); expected tile features computed from this tiles.zarr "
            "(same slide and tiling)"
        )
    return store["tiles"], (float(l0_tile[0]), float(l0_tile[1]))


def _save_figure(fig: Any, path: str | os.PathLike[str], *, dpi: int) -> None:
    from pathpipe.io.storage import atomic_file

    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")


def explain_slide_attention(
    model_dir: str | os.PathLike[str],
    table_path: str | os.PathLike[str],
    tiles_store: str | os.PathLike[str],
    slide_path: str | os.PathLike[str],
    *,
    heatmap_out: str | os.PathLike[str],
    gallery_out: str | os.PathLike[str],
    table_out: str | os.PathLike[str],
    slide_id: str | None = None,
    backend: str = "auto",
    slide_mpp: float | None = None,
    slide_mpp_source: str = "override",
    params: HeatmapParams | None = None,
    device: str = "cpu",
) -> dict[str, Any]:
    """Attention of a saved AMIL model on one slide: table, heatmap and gallery.

    Parameters
    ----------
    model_dir : path-like
        Model directory written by :func:`pathpipe.mil.outputs.write_mil_outputs`
        (``model.json`` config with two ``classes``).
    table_path : path-like
        The slide's ``tile_features.parquet``.
    tiles_store : path-like
        The ``tiles.zarr`` the table was computed from (tile images for the
        gallery, level-0 tile size for the heatmap).
    slide_path : path-like
        The slide file, for the thumbnail.
    heatmap_out, gallery_out : path-like
        PNGs to write (:func:`attention_heatmap_figure`, :func:`attention_gallery`).
    table_out : path-like
        ``attention.parquet`` to write (:func:`attention_table`), with the
        provenance (stage ``mil``, model directory, probability, predicted
        label) under the key ``pathpipe`` of its metadata.
    slide_id : str, optional
        Default: the name of the table's folder (``results/<slide>/``,
        :func:`pathpipe.io.storage.slide_id_of`).
    backend, slide_mpp, slide_mpp_source :
        Passed to :func:`pathpipe.io.slide.open_slide`.
    params : HeatmapParams, optional
        ``thumbnail_mpp`` (µm per pixel of the thumbnail under the heatmap) and
        ``n_gallery`` (tiles per gallery row).
    device : str
        ``"cpu"``, ``"auto"`` or ``"cuda[:n]"``.

    Returns
    -------
    dict
        ``slide``, ``probability`` (of ``classes[1]``), ``positive_class``,
        ``predicted_label`` (``classes[1]`` when the probability is at least
        0.5), ``n_tiles``, ``thumbnail_shape``.

    Raises
    ------
    ConfigError
        Features that do not fit the model.
    StorageError
        Unreadable inputs; a model without two classes; a table naming tiles the
        store does not hold, or whose ``l0_x``/``l0_y`` differ from the store's
        (features from another tiling); a store made from a slide of other
        dimensions.
    SlideError
        The slide cannot be read.

    Notes
    -----
    Each output is written atomically; they are written only after every check
    has passed. A slide whose table has no tiles (all filtered out by tiling QC)
    is not classified: the heatmap shows its thumbnail under a title saying so,
    the gallery says so, the table is empty, a warning is logged and the
    summary's ``probability`` and ``predicted_label`` are None, so one such
    slide does not fail a cohort run.
    """
    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import (
        open_store,
        provenance,
        slide_id_of,
        source_record,
        write_parquet,
    )
    from pathpipe.mil.bags import read_table
    from pathpipe.mil.io import load_amil

    params = HeatmapParams() if params is None else params
    if not isinstance(params, HeatmapParams):
        raise ConfigError(f"params is a {type(params).__name__}; expected HeatmapParams")
    thumbnail_mpp, n_gallery = params.thumbnail_mpp, params.n_gallery
    sid = slide_id_of(table_path) if slide_id is None else str(slide_id)
    model, config, pre = load_amil(model_dir, device=device)
    classes = config.get("classes")
    if not (isinstance(classes, list) and len(classes) == 2):
        raise StorageError(
            f"model {str(model_dir)!r} has classes {classes!r}; expected two class names "
            "(a model written by the mil stage)"
        )
    frame = read_table(sid, table_path)
    if len(frame) == 0:
        return _no_tiles(
            sid, slide_path, heatmap_out=heatmap_out, gallery_out=gallery_out,
            table_out=table_out, model_dir=model_dir, classes=classes, backend=backend,
            slide_mpp=slide_mpp, slide_mpp_source=slide_mpp_source, thumbnail_mpp=thumbnail_mpp,
        )  # fmt: skip
    table, probability = attention_table(model, pre, frame, slide_id=sid)
    store = open_store(tiles_store, stage="tiling")
    tiles, l0_tile_size = _check_store_matches(
        table, store, store_path=str(tiles_store), table_path=str(table_path)
    )

    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        info = slide.info
        stored = store.attrs["pathpipe"].get("slide", {}).get("dimensions")
        if stored is not None and list(stored) != list(info.dimensions):
            raise StorageError(
                f"tiles store {str(tiles_store)!r} was made from a slide of {stored[0]} × "
                f"{stored[1]} px but {info.path!r} is {info.dimensions[0]} × "
                f"{info.dimensions[1]} px; expected the slide the store was tiled from"
            )
        thumb = slide.thumbnail_at_mpp(thumbnail_mpp)
        expected_wh = slide.size_at_mpp(thumbnail_mpp)
    if (thumb.shape[1], thumb.shape[0]) != expected_wh:
        raise SlideReadError(
            info.path,
            f"thumbnail at {thumbnail_mpp} µm/px is {thumb.shape[1]} × {thumb.shape[0]} px; "
            f"expected {expected_wh[0]} × {expected_wh[1]}",
        )
    # thumbnail_at_mpp samples thumbnail pixel j at level-0 j · thumbnail_mpp / l0_mpp.
    scale_xy = (info.mpp.x / thumbnail_mpp, info.mpp.y / thumbnail_mpp)

    k = len(table)
    positive = classes[1]
    label = positive if probability >= 0.5 else classes[0]
    heat = attention_heatmap_figure(
        thumb,
        scale_xy,
        table[["l0_x", "l0_y"]].to_numpy(),
        l0_tile_size,
        table["attention_norm"].to_numpy(),
        title=f"{sid}: p({positive}) = {probability:.3f}, {k} tile{'s' * (k != 1)}",
    )
    gallery = attention_gallery(
        _StoreTiles(tiles, table["tile"].to_numpy()),
        table["attention"].to_numpy(),
        n=n_gallery,
        tile_ids=table["tile"].to_numpy(),
        title=f"{sid}: tiles of highest and lowest attention (p({positive}) = {probability:.3f})",
    )
    _save_figure(heat, heatmap_out, dpi=110)
    _save_figure(gallery, gallery_out, dpi=100)
    record = provenance(
        stage="mil",
        params={"thumbnail_mpp": thumbnail_mpp, "n_gallery": n_gallery, "device": device},
        step="attention",
        slide_id=sid,
        model=str(Path(model_dir).resolve()),
        classes=classes,
        probability=probability,
        predicted_label=label,
        n_tiles=k,
        source=source_record(table_path),
        tiles_store=str(Path(tiles_store).resolve()),
        slide=info.as_dict(),
        thumbnail_scale_xy=list(scale_xy),
    )
    write_parquet(table, table_out, record)
    return {
        "slide": sid,
        "probability": probability,
        "positive_class": positive,
        "predicted_label": label,
        "n_tiles": k,
        "thumbnail_shape": [int(thumb.shape[0]), int(thumb.shape[1])],
    }


def _no_tiles(
    sid: str,
    slide_path: str | os.PathLike[str],
    *,
    heatmap_out: str | os.PathLike[str],
    gallery_out: str | os.PathLike[str],
    table_out: str | os.PathLike[str],
    model_dir: str | os.PathLike[str],
    classes: list[Any],
    backend: str,
    slide_mpp: float | None,
    slide_mpp_source: str,
    thumbnail_mpp: float,
) -> dict[str, Any]:
    """Outputs of a slide without tiles: thumbnail, a note, an empty table."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import provenance, write_parquet

    message = "no tiles (all filtered out by tiling QC): not classified"
    log.warning("slide %r: %s", sid, message)
    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        info = slide.info
        thumb = slide.thumbnail_at_mpp(thumbnail_mpp)
    fig, ax = plt.subplots(figsize=(6, 6))
    ax.imshow(thumb)
    ax.set_axis_off()
    ax.set_title(f"{sid}: {message}", fontsize=9)
    _save_figure(fig, heatmap_out, dpi=110)
    fig, ax = plt.subplots(figsize=(6, 1.5))
    ax.set_axis_off()
    ax.text(0.5, 0.5, f"{sid}: {message}", ha="center", va="center")
    _save_figure(fig, gallery_out, dpi=100)
    empty = pd.DataFrame(
        {
            "tile": pd.Series([], dtype="int64"),
            "l0_x": pd.Series([], dtype="int64"),
            "l0_y": pd.Series([], dtype="int64"),
            "attention": pd.Series([], dtype="float64"),
            "attention_norm": pd.Series([], dtype="float64"),
            "rank": pd.Series([], dtype="int64"),
        }
    )
    record = provenance(
        stage="mil",
        params={"thumbnail_mpp": thumbnail_mpp},
        step="attention",
        slide_id=sid,
        model=str(Path(model_dir).resolve()),
        classes=classes,
        probability=None,
        predicted_label=None,
        n_tiles=0,
        note=message,
        slide=info.as_dict(),
    )
    write_parquet(empty, table_out, record)
    return {
        "slide": sid,
        "probability": None,
        "positive_class": classes[1],
        "predicted_label": None,
        "n_tiles": 0,
        "thumbnail_shape": [int(thumb.shape[0]), int(thumb.shape[1])],
    }
