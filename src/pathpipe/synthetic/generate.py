"""Seeded synthetic H&E whole-slide images with exact nuclei ground truth.

A slide is a pure function of a :class:`SyntheticSlideSpec`: a low-resolution
tissue layout (:func:`make_tissue`), a table of nuclei with analytic shapes
(:func:`make_nuclei`) and a procedural renderer (:func:`render_rgb`,
:func:`render_labels`) that draws any region at any downsample. :func:`write_slide`
streams the pyramid tile by tile into a JPEG-compressed tiled TIFF that
OpenSlide (vendor ``generic-tiff``) and tiffslide read with its MPP, and writes
the ground truth next to it as ``<stem>.nuclei.parquet``.

Two classes of epithelial nuclei (:data:`CLASS_PRESETS`) differ in size,
density, shape irregularity, elongation, chromatin texture and hematoxylin
level. Both classes also carry the same share of small, round, dark
lymphocyte-like nuclei (``cell_type == "lymphocyte"``, :data:`LYMPHOCYTE_PARAMS`).

Colour follows Beer-Lambert: ``RGB = 255 exp(-(c_H H + c_E E + od_glass))`` with
the Ruifrok & Johnston (2001) H and E optical-density vectors, so colour
deconvolution (``skimage.color.rgb2hed``) separates the stains.

Frames
------
``l0_`` level-0 pixels ``(x, y)``; the centre of level-0 pixel ``(col x, row y)``
is the point ``(x, y)``, so nucleus ``n`` lies in pixel
``(round(l0_x), round(l0_y))`` and scikit-image centroids ``(row, col)`` match
``(l0_y, l0_x)``. Arrays are ``(row, col)``.
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from pathpipe.errors import ConfigError, StorageError
from pathpipe.synthetic import nuclei as _n
from pathpipe.synthetic import placement as _p
from pathpipe.synthetic import render as _r
from pathpipe.synthetic import writer as _io
from pathpipe.synthetic.index import (
    NUCLEI_COLUMNS,
    NucleusIndex,
    index_nuclei,
    nucleus_arrays_from_table,
)
from pathpipe.synthetic.spec import (
    CLASS_CODES,
    CLASS_PRESETS,
    GENERATOR_VERSION,
    LYMPHOCYTE_PARAMS,
    NucleusClassParams,
    SyntheticSlideSpec,
    TissueLayout,
)

__all__ = [
    "CLASS_CODES",
    "CLASS_PRESETS",
    "GENERATOR_VERSION",
    "LYMPHOCYTE_PARAMS",
    "NUCLEI_COLUMNS",
    "SHEET_COLUMNS",
    "NucleusClassParams",
    "NucleusIndex",
    "SyntheticSlideSpec",
    "TissueLayout",
    "index_nuclei",
    "is_written",
    "make_nuclei",
    "make_tissue",
    "read_ground_truth",
    "render_labels",
    "render_rgb",
    "render_tissue",
    "write_cohort",
    "write_layout",
    "write_slide",
]

# Independent random streams per spec seed.
_STREAM_TISSUE, _STREAM_NUCLEI, _STREAM_LOOK = 1, 2, 3


def make_tissue(spec: SyntheticSlideSpec) -> TissueLayout:
    """Seeded tissue layout: a union of noisy ellipses on white glass.

    ``n`` ellipses (``spec.tissue_blobs``) are combined as the maximum of
    ``1 - elliptic radius``, perturbed by smoothed Gaussian noise and
    thresholded at the quantile that gives a tissue fraction drawn from
    ``spec.tissue_coverage``; the signed Euclidean distance to that mask is
    smoothed and kept on a grid of about 512 nodes along the long side.

    Returns
    -------
    TissueLayout
    """
    from scipy import ndimage

    rng = np.random.default_rng([spec.seed, _STREAM_TISSUE])
    w, h = spec.width, spec.height
    spacing = max(8.0, max(w, h) / 512.0)
    gw, gh = math.ceil(w / spacing) + 2, math.ceil(h / spacing) + 2
    gx = np.arange(gw) * spacing
    gy = np.arange(gh) * spacing
    field_ = np.full((gh, gw), -np.inf)
    short = min(w, h)
    for _ in range(int(rng.integers(spec.tissue_blobs[0], spec.tissue_blobs[1] + 1))):
        cx, cy = rng.uniform(0.2, 0.8) * w, rng.uniform(0.2, 0.8) * h
        a = rng.uniform(0.2, 0.42) * short
        b = a * rng.uniform(0.45, 1.0)
        t = rng.uniform(0, np.pi)
        dx, dy = gx[None, :] - cx, gy[:, None] - cy
        u = (dx * np.cos(t) + dy * np.sin(t)) / a
        v = (-dx * np.sin(t) + dy * np.cos(t)) / b
        field_ = np.maximum(field_, 1.0 - np.hypot(u, v))
    noise = ndimage.gaussian_filter(rng.standard_normal((gh, gw)), 0.035 * max(gh, gw))
    field_ += 0.3 * noise / (noise.std() + 1e-12)
    target = rng.uniform(*spec.tissue_coverage)
    inner = field_[1:-1, 1:-1]
    mask = field_ > np.quantile(inner, 1.0 - target)
    sdf = ndimage.distance_transform_edt(mask) - ndimage.distance_transform_edt(~mask)
    sdf = ndimage.gaussian_filter(sdf - 0.5 * np.sign(sdf), 1.0) * spacing
    sdf = sdf.astype(np.float32)
    return TissueLayout(sdf=sdf, spacing=spacing, coverage=float((sdf[1:-1, 1:-1] > 0).mean()))


@functools.lru_cache(maxsize=64)
def _look(spec: SyntheticSlideSpec) -> _r.Look:
    """Per-slide appearance: stain strength varies like a batch or section-thickness
    effect (a common factor in [0.7, 1.4] times stain-specific jitter), enough
    that overall slide colour does not separate the classes; ``spec.stain_strength``
    replaces the drawn strength."""
    rng = np.random.default_rng([spec.seed, _STREAM_LOOK])
    thickness = math.exp(rng.uniform(math.log(0.7), math.log(1.4)))
    h_scale = float(thickness * rng.uniform(0.9, 1.1))
    e_scale = float(thickness * rng.uniform(0.85, 1.15))
    if spec.stain_strength is not None:  # drawn all the same: the later draws stay put
        h_scale, e_scale = spec.stain_strength
    return _r.Look(
        seed=int(spec.seed),
        mpp=float(spec.mpp),
        h_scale=h_scale,
        e_scale=e_scale,
        od_glass=float(rng.uniform(0.03, 0.05)),
        fibre_angle=float(rng.uniform(0, np.pi)),
    )


# --------------------------------------------------------------------------- nuclei


def make_nuclei(spec: SyntheticSlideSpec, *, tissue: TissueLayout | None = None) -> pd.DataFrame:
    """Seeded nuclei with analytic shapes: the ground truth of a slide.

    Epithelial nuclei of ``spec.slide_class`` (expected count
    ``density_per_mm2 x tissue area``, clustered in nests) and lymphocytes
    (``spec.lymphocyte_fraction`` of all nuclei, mostly in stroma) are proposed
    uniformly, thinned by tissue and nest weight, and accepted in random order
    unless an accepted centre lies closer than 0.9 x the sum of radii. Each
    nucleus lies fully inside tissue.

    Returns
    -------
    nuclei : pandas.DataFrame
        One row per nucleus, sorted by ``nucleus_id`` (1..N, raster order of
        centres): ``l0_x, l0_y`` (float64 centre, level-0 px), ``radius_px``
        (equivalent radius: the ellipse without harmonics has area
        ``pi radius_px**2``), ``axis_ratio`` (minor/major), ``angle`` (major
        axis, rad, from +x towards +y), ``h{k}_amp, h{k}_phase`` for k = 2..5
        (boundary ``rho = 1 + sum_k a_k cos(k theta + phi_k)`` in the
        normalised ellipse frame), ``texture_seed``, ``hematoxylin``,
        ``chromatin_contrast``, ``chromatin_grain_px`` (render parameters),
        ``cell_type`` ("epithelial" | "lymphocyte"), ``nuclear_class`` (the
        slide class) and ``area_px`` (int64, exact pixel count in
        :func:`render_labels`).
    """
    return _make_nuclei(spec, make_tissue(spec) if tissue is None else tissue, areas=True)


def _make_nuclei(spec: SyntheticSlideSpec, tissue: TissueLayout, *, areas: bool) -> pd.DataFrame:
    look = _look(spec)
    rng = np.random.default_rng([spec.seed, _STREAM_NUCLEI])
    epi = CLASS_PRESETS[spec.slide_class]
    tissue_mm2 = tissue.coverage * spec.width * spec.height * spec.mpp**2 / 1e6
    n_epi = int(rng.poisson(epi.density_per_mm2 * tissue_mm2))
    frac = spec.lymphocyte_fraction
    n_lym = int(rng.poisson(n_epi * frac / (1.0 - frac))) if frac > 0 else 0
    groups = [
        _p.candidates(
            rng, spec, tissue, look, n_wanted=int(n * _p.OVERSAMPLE), params=p, epithelial=e
        )
        for n, p, e in ((n_epi, epi, True), (n_lym, LYMPHOCYTE_PARAMS, False))
    ]
    cand = {k: np.concatenate([g[k] for g in groups]) for k in groups[0]}
    order = rng.permutation(len(cand["l0_x"]))
    cand = {k: v[order] for k, v in cand.items()}
    ok = _p.greedy_hard_core(cand["l0_x"], cand["l0_y"], cand["radius_px"])
    for is_epi, n_target in ((True, n_epi), (False, n_lym)):  # first n_target in priority order
        sel = np.flatnonzero(ok & (cand["epithelial"] == is_epi))
        ok[sel[n_target:]] = False
    cand = {k: v[ok] for k, v in cand.items()}
    order = np.lexsort((cand["l0_x"], cand["l0_y"]))
    cand = {k: v[order] for k, v in cand.items()}

    n = len(order)
    table = {
        "nucleus_id": np.arange(1, n + 1, dtype=np.int64),
        "l0_x": cand["l0_x"],
        "l0_y": cand["l0_y"],
        "radius_px": cand["radius_px"],
        "axis_ratio": cand["axis_ratio"],
        "angle": cand["angle"],
    }
    for i, k in enumerate(_n.HARMONICS):
        table[f"h{k}_amp"] = cand["amps"][:, i]
        table[f"h{k}_phase"] = cand["phases"][:, i]
    table.update(
        texture_seed=cand["texture_seed"].astype(np.int64),
        hematoxylin=cand["hematoxylin"],
        chromatin_contrast=cand["chromatin_contrast"],
        chromatin_grain_px=cand["chromatin_grain_px"],
        cell_type=np.where(cand["epithelial"], "epithelial", "lymphocyte"),
        nuclear_class=np.full(n, spec.slide_class),
    )
    df = pd.DataFrame(table)
    df["area_px"] = _n.pixel_areas(nucleus_arrays_from_table(df)) if areas else -1
    return df[NUCLEI_COLUMNS]


# --------------------------------------------------------------------------- rendering


def _region(l0_xy, size_wh, downsample) -> tuple[int, int, int, int, float]:
    try:
        x0, y0 = (int(v) for v in l0_xy)
        w, h = (int(v) for v in size_wh)
        d = float(downsample)
    except (TypeError, ValueError) as exc:
        raise ConfigError(
            f"region l0_xy={l0_xy!r}, size_wh={size_wh!r}, downsample={downsample!r}; "
            "expected two integers, two integers and a number"
        ) from exc
    if w <= 0 or h <= 0:
        raise ConfigError(f"region size_wh={size_wh!r}; expected positive width and height")
    if not d >= 1.0:
        raise ConfigError(f"downsample={downsample!r}; expected a number >= 1")
    return x0, y0, w, h, d


def render_rgb(
    spec: SyntheticSlideSpec,
    nuclei: pd.DataFrame | NucleusIndex,
    tissue: TissueLayout,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
    downsample: float = 1.0,
) -> np.ndarray:
    """Render a region of the slide, as OpenSlide ``read_region`` would return it.

    Output pixel ``(i, j)`` shows level-0 pixels ``x0 + j*d ... x0 + (j+1)*d - 1``
    (``d = downsample``). Stains are composed by Beer-Lambert from stroma,
    cytoplasm, nuclei and glass fields that are functions of level-0
    coordinates only, so a pixel's value does not depend on how a region is cut.
    At ``d = 1`` nuclei have hard edges exactly where :func:`render_labels` puts
    them; at ``d > 1`` they are box-filtered (``ss x ss`` sub-samples per
    pixel) and texture finer than a pixel fades to its mean.

    Parameters
    ----------
    spec : SyntheticSlideSpec
    nuclei : pandas.DataFrame or NucleusIndex
        :func:`make_nuclei` table (or its :func:`index_nuclei`).
    tissue : TissueLayout
        :func:`make_tissue` of the same spec.
    l0_xy : (int, int)
        Level-0 ``(x, y)`` of the top-left output pixel.
    size_wh : (int, int)
        Output ``(width, height)``.
    downsample : float
        Level-0 pixels per output pixel, >= 1.

    Returns
    -------
    rgb : (h, w, 3) uint8 ndarray
    """
    x0, y0, w, h, d = _region(l0_xy, size_wh, downsample)
    return _r.render_region(_look(spec), index_nuclei(nuclei), tissue, x0, y0, w, h, d)[0]


def render_tissue(
    spec: SyntheticSlideSpec,
    tissue: TissueLayout,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
    downsample: float = 1.0,
) -> np.ndarray:
    """Ground-truth tissue fraction of a region, as :func:`render_rgb` stains it.

    The tissue layout with its soft edge, minus the white stromal clefts, on the
    pixel grid of :func:`render_rgb` (same arguments). Threshold at 0.5 for a
    tissue mask.

    Returns
    -------
    fraction : (h, w) float32 ndarray
        In ``[0, 1]``; 0 on glass and in clefts.
    """
    x0, y0, w, h, d = _region(l0_xy, size_wh, downsample)
    xs = x0 + np.arange(w) * d + (d - 1) / 2
    ys = y0 + np.arange(h) * d + (d - 1) / 2
    return _r.tissue_fraction(_look(spec), tissue.signed_distance, xs, ys, d)


def render_labels(
    spec: SyntheticSlideSpec,
    nuclei: pd.DataFrame | NucleusIndex,
    *,
    l0_xy: tuple[int, int],
    size_wh: tuple[int, int],
) -> tuple[np.ndarray, np.ndarray]:
    """Exact level-0 ground truth of a region.

    A pixel belongs to the highest-id nucleus whose shape contains its centre;
    ``np.bincount(labels.ravel())`` over the whole slide equals ``area_px``.

    Parameters
    ----------
    spec : SyntheticSlideSpec
    nuclei : pandas.DataFrame or NucleusIndex
    l0_xy : (int, int)
        Level-0 ``(x, y)`` of the top-left pixel.
    size_wh : (int, int)
        ``(width, height)``.

    Returns
    -------
    labels : (h, w) int32 ndarray
        ``nucleus_id``, 0 outside nuclei.
    classes : (h, w) uint8 ndarray
        :data:`CLASS_CODES`: 0 background, 1 "low" and 2 "high" epithelial
        nuclei, 3 lymphocytes.
    """
    del spec  # the table holds every parameter; kept for symmetry with render_rgb
    x0, y0, w, h, _ = _region(l0_xy, size_wh, 1.0)
    index = index_nuclei(nuclei)
    sub = index.query(x0, y0, x0 + w, y0 + h)
    if len(sub) == 0:
        return np.zeros((h, w), np.int32), np.zeros((h, w), np.uint8)
    labels, _ = _n.rasterise_l0(sub, x0, y0, w, h, values=False)
    return labels, index.class_lut[labels]


# --------------------------------------------------------------------------- files

_SPEC_KEY = b"pathpipe.synthetic_spec"


def _nuclei_path(slide_path: Path) -> Path:
    return slide_path.with_name(slide_path.stem + ".nuclei.parquet")


def _description(spec: SyntheticSlideSpec) -> str:
    canonical = json.dumps(spec.to_dict(), sort_keys=True).encode()
    return (
        f"pathpipe synthetic slide class={spec.slide_class} seed={spec.seed} "
        f"mpp={spec.mpp:g} size={spec.width}x{spec.height} version={GENERATOR_VERSION} "
        f"spec_sha1={hashlib.sha1(canonical).hexdigest()[:12]}"
    )


def write_slide(
    path: str | os.PathLike, spec: SyntheticSlideSpec, *, workers: int | None = None
) -> Path:
    """Write the slide as a pyramidal JPEG tiled TIFF plus its ground truth.

    Each level is rendered directly at its downsample, a tile row at a time, by
    ``workers`` processes (rendering is many small numpy operations and does
    not scale with threads); memory stays bounded by a few tile rows per
    worker. Level 0 carries the ImageDescription
    ``pathpipe synthetic slide class=... seed=... mpp=...``; resolution tags
    give ``1e4 / (mpp * downsample)`` pixels per cm, which OpenSlide and
    tiffslide report as the MPP. Tiles are JPEG (quality ``spec.jpeg_quality``,
    YCbCr 4:2:0) and always rendered whole, also past the slide edge.

    ``<stem>.nuclei.parquet`` holds the :func:`make_nuclei` table (``area_px``
    counted while writing level 0) with the spec as JSON in the schema metadata
    key ``pathpipe.synthetic_spec`` (see :func:`read_ground_truth`); the level-0
    description ends with ``spec_sha1=`` (a hash of the same JSON), so a slide
    and its ground truth can be checked against a spec. Both files are written
    to temporary names and renamed, the ground truth first.

    Parameters
    ----------
    path : path-like
        Output ``.tiff``.
    spec : SyntheticSlideSpec
    workers : int or None
        Rendering processes; 1 renders in this process. None uses the CPU
        count for slides of 64 level-0 tiles or more, else 1.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    _check_workers(workers)
    tissue = make_tissue(spec)
    nuclei = _make_nuclei(spec, tissue, areas=False)
    return write_layout(path, spec, tissue, nuclei, description=_description(spec), workers=workers)


def _check_workers(workers: object) -> None:
    if workers is not None and (
        not isinstance(workers, int) or isinstance(workers, bool) or workers < 1
    ):
        raise ConfigError(f"workers={workers!r}; expected a positive integer or None")


def write_layout(
    path: str | os.PathLike,
    spec: SyntheticSlideSpec,
    tissue: TissueLayout,
    nuclei: pd.DataFrame,
    *,
    description: str,
    workers: int | None = None,
) -> Path:
    """Write a slide from a tissue layout and nuclei table made elsewhere.

    What :func:`write_slide` does with ``make_tissue(spec)`` and
    ``make_nuclei(spec)``, for content the spec alone does not determine
    (serial sections of a 3D object, :mod:`pathpipe.synthetic.serial`). The
    spec gives size, MPP, pyramid, tiles and appearance; ``area_px`` is
    counted while writing and stored in the ground truth.

    Parameters
    ----------
    path : path-like
        Output ``.tiff``.
    spec : SyntheticSlideSpec
    tissue : TissueLayout
    nuclei : pandas.DataFrame
        :data:`NUCLEI_COLUMNS` (``area_px`` is overwritten), ``nucleus_id``
        ``1..N`` in order.
    description : str
        Level-0 ImageDescription (:func:`write_slide`'s names the spec).
    workers : int or None
        As in :func:`write_slide`.

    Returns
    -------
    pathlib.Path
        ``path``.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq
    import tifffile

    path = Path(path)
    _check_workers(workers)
    ids = nuclei["nucleus_id"].to_numpy() if "nucleus_id" in nuclei else None
    if ids is None or not np.array_equal(ids, np.arange(1, len(nuclei) + 1)):
        raise ConfigError("nuclei table: nucleus_id must be 1..N in order; renumber it")
    nuclei = nuclei.copy()
    ts = spec.tile_size
    n_l0_tiles = -(-spec.width // ts) * -(-spec.height // ts)
    if workers is None:  # a process pool pays off from a few dozen tiles on
        workers = (os.cpu_count() or 1) if n_l0_tiles >= 64 else 1
    path.parent.mkdir(parents=True, exist_ok=True)
    index = index_nuclei(nuclei)

    tasks = [
        (d, ty, -(-lw // ts))
        for d, (lw, lh) in zip(spec.level_downsamples, spec.level_dimensions, strict=True)
        for ty in range(-(-lh // ts))
    ]
    area = np.zeros(len(nuclei) + 1, dtype=np.int64)
    tmp = path.with_name(f"{path.name}.tmp{os.getpid()}")
    gt_path = _nuclei_path(path)
    gt_tmp = gt_path.with_name(f"{gt_path.name}.tmp{os.getpid()}")
    bigtiff = spec.width * spec.height * 3 > 2**31
    pool = None
    if workers > 1:
        pool = ProcessPoolExecutor(
            workers,
            mp_context=_io.mp_context(),
            initializer=_io.init_worker,
            initargs=(spec, _look(spec), index, tissue),
        )
    else:
        _io.init_worker(spec, _look(spec), index, tissue)
    try:
        rows = _io.ordered_map(pool, _io.render_tile_row, tasks, ahead=2 * workers)

        def level_tiles(n_rows: int) -> Iterator[bytes]:
            for _ in range(n_rows):
                tiles, first, counts = next(rows)
                area[first : first + len(counts)] += counts
                yield from tiles

        with tifffile.TiffWriter(tmp, bigtiff=bigtiff) as tw:
            for level, (d, (lw, lh)) in enumerate(
                zip(spec.level_downsamples, spec.level_dimensions, strict=True)
            ):
                res = 1e4 / (spec.mpp * d)
                tw.write(
                    level_tiles(-(-lh // ts)),
                    shape=(lh, lw, 3),
                    dtype=np.uint8,
                    tile=(ts, ts),
                    compression="jpeg",
                    compressionargs={"level": spec.jpeg_quality},
                    subsampling=(2, 2),
                    photometric="rgb",
                    resolution=(res, res),
                    resolutionunit="CENTIMETER",
                    subfiletype=0 if level == 0 else 1,
                    description=description if level == 0 else None,
                    metadata=None,
                    software="pathpipe",
                )
        nuclei["area_px"] = area[1:]
        table = pa.Table.from_pandas(nuclei, preserve_index=False)
        meta = dict(table.schema.metadata or {})
        meta[_SPEC_KEY] = json.dumps(spec.to_dict()).encode()
        pq.write_table(table.replace_schema_metadata(meta), gt_tmp)
        os.replace(gt_tmp, gt_path)
        os.replace(tmp, path)
    finally:
        if pool is not None:
            pool.shutdown(cancel_futures=True)
        else:
            _io._WORKER.clear()
        for p in (tmp, gt_tmp):
            if p.exists():
                p.unlink()
    return path


def read_ground_truth(slide_path: str | os.PathLike) -> tuple[pd.DataFrame, SyntheticSlideSpec]:
    """Read ``<stem>.nuclei.parquet`` next to a written slide.

    Returns
    -------
    nuclei : pandas.DataFrame
        The :func:`make_nuclei` table.
    spec : SyntheticSlideSpec
        The spec the slide was written from.
    """
    import pyarrow.parquet as pq

    gt_path = _nuclei_path(Path(slide_path))
    if not gt_path.is_file():
        raise StorageError(f"ground truth {str(gt_path)!r} is missing; expected write_slide output")
    table = pq.read_table(gt_path)
    raw = (table.schema.metadata or {}).get(_SPEC_KEY)
    if raw is None:
        raise StorageError(f"ground truth {str(gt_path)!r} has no {_SPEC_KEY.decode()} metadata")
    return table.to_pandas(), SyntheticSlideSpec.from_dict(json.loads(raw))


def is_written(slide_path: Path, spec: SyntheticSlideSpec, description: str | None = None) -> bool:
    """Whether ``slide_path`` (complete) and its ground truth were written from ``spec``.

    ``description`` is the level-0 description to expect (default: :func:`write_slide`'s).
    """
    import pyarrow.parquet as pq
    import tifffile

    gt_path = _nuclei_path(slide_path)
    if not (slide_path.is_file() and gt_path.is_file()):
        return False
    try:
        with tifffile.TiffFile(slide_path) as tif:
            stored_description = tif.pages[0].description
            size = slide_path.stat().st_size
            for page in tif.pages:  # not truncated
                ends = np.add(page.dataoffsets, page.databytecounts)
                if len(ends) and int(ends.max()) > size:
                    return False
        raw = (pq.read_schema(gt_path).metadata or {}).get(_SPEC_KEY)
        stored = None if raw is None else json.loads(raw)
    except (OSError, ValueError, tifffile.TiffFileError):
        return False
    expected = _description(spec) if description is None else description
    return stored_description == expected and stored == spec.to_dict()


SHEET_COLUMNS = ["slide_id", "path", "label", "patient", "split", "mpp", "block", "section"]


def write_cohort(
    out_dir: str | os.PathLike,
    *,
    n_per_class: int,
    size: int | tuple[int, int],
    mpp: float = 0.25,
    seed: int = 0,
    workers: int | None = None,
) -> pd.DataFrame:
    """Write ``n_per_class`` slides of each class and return their sheet rows.

    Slides are ``synth_{class}_{i:02d}.tiff`` (``i`` from 1, classes "low" then
    "high"), each with its own seed derived from ``seed``, its class and ``i``,
    and one patient per slide (``patient == slide_id``). A slide whose file
    and ground truth already exist with the same spec is not rewritten, so
    rerunning is cheap and a killed run resumes.

    Parameters
    ----------
    out_dir : path-like
    n_per_class : int
    size : int or (int, int)
        Level-0 ``width`` (= height) or ``(width, height)``.
    mpp : float
    seed : int
    workers : int or None
        Passed to :func:`write_slide`.

    Returns
    -------
    sheet : pandas.DataFrame
        Columns ``slide_id, path, label, patient, split, mpp, block, section``
        (the slide sheet's): ``label`` is the class name, ``mpp`` the slides'
        level-0 MPP (also in their metadata); ``split``, ``block`` and
        ``section`` are empty (NaN).
    """
    if not isinstance(n_per_class, int) or isinstance(n_per_class, bool) or n_per_class < 1:
        raise ConfigError(f"n_per_class={n_per_class!r}; expected a positive integer")
    if not isinstance(seed, int) or isinstance(seed, bool) or seed < 0:
        raise ConfigError(f"seed={seed!r}; expected a non-negative integer")
    try:
        w, h = (size, size) if isinstance(size, int | np.integer) else (int(v) for v in size)
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"size={size!r}; expected an integer or (width, height)") from exc
    out_dir = Path(out_dir)
    rows = []
    for class_index, cls in enumerate(("low", "high")):
        for i in range(1, n_per_class + 1):
            state = np.random.SeedSequence([seed, class_index, i]).generate_state(1)[0]
            spec = SyntheticSlideSpec(
                width=w, height=h, mpp=mpp, slide_class=cls, seed=int(state >> 1)
            )
            slide_id = f"synth_{cls}_{i:02d}"
            path = out_dir / f"{slide_id}.tiff"
            if not is_written(path, spec):
                write_slide(path, spec, workers=workers)
            rows.append(
                {
                    "slide_id": slide_id,
                    "path": str(path),
                    "label": cls,
                    "patient": slide_id,
                    "split": np.nan,
                    "mpp": float(mpp),
                    "block": np.nan,
                    "section": np.nan,
                }
            )
    return pd.DataFrame(rows, columns=SHEET_COLUMNS)
