"""Annotated tiles with exact ground truth, cut from synthetic slides.

:func:`synthetic_annotated_tiles` yields :class:`~pathpipe.segmentation.annotations.AnnotatedTile`
objects for training and evaluating segmentation; :func:`write_synthetic_tiles`
writes them as an annotated tile folder (``pathpipe synthetic tiles``).
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.segmentation.annotations import AnnotatedTile, write_annotated_dir

__all__ = ["SYNTHETIC_CLASSES", "synthetic_annotated_tiles", "write_synthetic_tiles"]

SYNTHETIC_CLASSES: tuple[str, ...] = ("tumour", "lymphocyte")
"""Type names of :func:`synthetic_annotated_tiles`: epithelial nuclei of either
slide class are ``tumour`` (type 1), lymphocytes ``lymphocyte`` (type 2)."""


def _relabel_sequential(inst: np.ndarray) -> np.ndarray:
    ids, inverse = np.unique(inst, return_inverse=True)
    out = inverse.reshape(inst.shape).astype(np.int32)
    if ids[0] != 0:
        out += 1
    return out


def synthetic_annotated_tiles(
    *,
    n_tiles: int,
    tile_size: int = 256,
    mpp: float = 0.5,
    slide_class: str | None = None,
    seed: int = 0,
    slide_size: int = 8192,
    min_tissue: float = 0.6,
) -> Iterator[AnnotatedTile]:
    """Tiles with exact ground truth cut from seeded synthetic slides.

    Tiles alternate between a "low" and a "high" slide (or use ``slide_class``
    only) and are drawn at seeded positions whose tissue fraction is at least
    ``min_tissue``. Images are rendered at ``mpp`` as the slide reader would
    return them (box-filtered from level 0); label maps take, for each output
    pixel, the level-0 label at its centre (the lower-right one of the centre
    four when the downsample is even), so a nucleus smaller than a pixel may
    vanish. Types follow :data:`SYNTHETIC_CLASSES`.

    Parameters
    ----------
    n_tiles, tile_size : int
    mpp : float
        Output µm per pixel, at least the slides' 0.25.
    slide_class : {"low", "high"} or None
    seed : int
    slide_size : int
        Level-0 side of the generating slides.
    min_tissue : float

    Yields
    ------
    AnnotatedTile
        Named ``synth_{class}_{seed}_{k:04d}``.
    """
    from pathpipe.synthetic.generate import (
        CLASS_CODES,
        SyntheticSlideSpec,
        index_nuclei,
        make_nuclei,
        make_tissue,
        render_labels,
        render_rgb,
        render_tissue,
    )

    base_mpp = 0.25
    if not mpp >= base_mpp:
        raise ConfigError(f"mpp={mpp!r}; expected at least the synthetic slides' {base_mpp}")
    d = mpp / base_mpp
    span = round(tile_size * d)
    classes = ("low", "high") if slide_class is None else (slide_class,)
    type_lut = np.zeros(max(CLASS_CODES.values()) + 1, np.uint8)
    type_lut[CLASS_CODES["low"]] = type_lut[CLASS_CODES["high"]] = 1
    type_lut[CLASS_CODES["lymphocyte"]] = 2
    slides = []
    for k, cls in enumerate(classes):
        spec = SyntheticSlideSpec(
            width=slide_size, height=slide_size, slide_class=cls, seed=seed * 7919 + k
        )
        tissue = make_tissue(spec)
        slides.append((cls, spec, tissue, index_nuclei(make_nuclei(spec, tissue=tissue))))
    rng = np.random.default_rng([seed, 0x7A11])
    offset = int(d // 2)
    for k in range(n_tiles):
        cls, spec, tissue, index = slides[k % len(slides)]
        for _ in range(1000):
            x0, y0 = (int(v) for v in rng.integers(0, slide_size - span, size=2))
            frac = render_tissue(spec, tissue, l0_xy=(x0, y0), size_wh=(8, 8), downsample=span / 8)
            if frac.mean() >= min_tissue:
                break
        else:
            raise ConfigError(f"no tile with tissue fraction >= {min_tissue} found")
        rgb = render_rgb(
            spec, index, tissue, l0_xy=(x0, y0), size_wh=(tile_size, tile_size), downsample=d
        )
        labels, codes = render_labels(spec, index, l0_xy=(x0, y0), size_wh=(span, span))
        idx = (np.arange(tile_size) * d + offset).astype(int).clip(0, span - 1)
        labels, codes = labels[np.ix_(idx, idx)], codes[np.ix_(idx, idx)]
        yield AnnotatedTile(
            f"synth_{cls}_{seed}_{k:04d}", rgb, _relabel_sequential(labels), type_lut[codes]
        )


def write_synthetic_tiles(
    path: str | os.PathLike,
    *,
    n_tiles: int,
    tile_size: int = 256,
    mpp: float = 0.5,
    seed: int = 0,
) -> Path:
    """Write :func:`synthetic_annotated_tiles` as an annotated tile folder (atomically)."""
    if n_tiles < 1:
        raise ConfigError(f"n_tiles={n_tiles!r}; expected an integer >= 1")
    tiles = synthetic_annotated_tiles(n_tiles=n_tiles, tile_size=tile_size, mpp=mpp, seed=seed)
    return write_annotated_dir(path, list(tiles), classes=SYNTHETIC_CLASSES, mpp=mpp)
