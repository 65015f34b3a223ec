"""Training data: annotated tiles for segmentation, unlabelled tiles for the DDPM.

Everything here is numpy and seeded: a batch stream depends only on its seed,
so training runs repeat exactly on the CPU.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.annotations import AnnotatedDir, AnnotatedTile, read_annotated_dir
from pathpipe.segmentation.unet.targets import make_targets

__all__ = [
    "augment",
    "check_mpp",
    "iter_cohort_tiles",
    "random_crop",
    "resolve_annotated",
    "segmentation_batches",
    "select_fraction",
    "store_mpp",
    "tile_batches",
]

#: Relative MPP difference above which data and model are refused.
MPP_TOLERANCE = 0.10
#: Fill value of RGB padding (white glass).
PAD_RGB = 255


def check_mpp(data_mpp: float | None, model_mpp: float, *, what: str) -> None:
    """Raise when ``data_mpp`` is known and more than 10 % off ``model_mpp``."""
    if data_mpp is None:
        return
    if abs(data_mpp - model_mpp) > MPP_TOLERANCE * model_mpp:
        raise ConfigError(
            f"{what} is at {data_mpp:g} µm/px but the model config has mpp={model_mpp:g}; "
            f"expected within {MPP_TOLERANCE:.0%} (re-tile or set the model mpp)"
        )


def resolve_annotated(
    data: AnnotatedDir | str | os.PathLike | Sequence[AnnotatedTile],
) -> AnnotatedDir:
    """Normalise training data to an :class:`AnnotatedDir`.

    Parameters
    ----------
    data : AnnotatedDir, path-like or sequence of AnnotatedTile
        A folder is read with :func:`pathpipe.segmentation.annotations.read_annotated_dir`;
        a list of tiles has no classes and no MPP of its own.

    Returns
    -------
    AnnotatedDir
    """
    if isinstance(data, AnnotatedDir):
        out = data
    elif isinstance(data, str | os.PathLike):
        out = read_annotated_dir(data)
    else:
        tiles = list(data)
        bad = [type(t).__name__ for t in tiles if not isinstance(t, AnnotatedTile)]
        if bad:
            raise ConfigError(
                f"training data holds {bad[0]}; expected AnnotatedTile items, a folder or "
                "an AnnotatedDir"
            )
        out = AnnotatedDir(Path("."), tiles, (), None)
    if not out.tiles:
        raise ConfigError("training data has no tiles; expected at least one annotated tile")
    return out


def select_fraction(
    tiles: Sequence[AnnotatedTile], fraction: float, *, seed: int
) -> list[AnnotatedTile]:
    """A seeded subset of ``round(fraction · n)`` tiles (at least 1), in input order.

    Parameters
    ----------
    tiles : sequence of AnnotatedTile
    fraction : float
        In (0, 1]; 1 keeps every tile.
    seed : int
    """
    if not (isinstance(fraction, int | float) and 0 < fraction <= 1):
        raise ConfigError(f"fraction={fraction!r}; expected a number in (0, 1]")
    n = len(tiles)
    k = max(1, round(fraction * n))
    if k >= n:
        return list(tiles)
    rng = np.random.default_rng([seed, 0xF4AC])
    keep = np.sort(rng.choice(n, size=k, replace=False))
    return [tiles[i] for i in keep]


def random_crop(
    arrays: Sequence[np.ndarray], size: int, rng: np.random.Generator, *, fill: Sequence[int]
) -> list[np.ndarray]:
    """The same random ``size × size`` window of several aligned arrays.

    Arrays smaller than ``size`` are padded at the bottom/right with ``fill``
    (one value per array) first.

    Parameters
    ----------
    arrays : sequence of (H, W, ...) ndarrays
    size : int
    rng : numpy.random.Generator
    fill : sequence of int
    """
    h, w = arrays[0].shape[:2]
    ph, pw = max(0, size - h), max(0, size - w)
    if ph or pw:
        arrays = [
            np.pad(a, [(0, ph), (0, pw)] + [(0, 0)] * (a.ndim - 2), constant_values=f)
            for a, f in zip(arrays, fill, strict=True)
        ]
        h, w = h + ph, w + pw
    y0 = int(rng.integers(0, h - size + 1))
    x0 = int(rng.integers(0, w - size + 1))
    return [a[y0 : y0 + size, x0 : x0 + size] for a in arrays]


def augment(arrays: Sequence[np.ndarray], rng: np.random.Generator) -> list[np.ndarray]:
    """One random element of the dihedral group (flip, 0–3 quarter turns), same for all arrays."""
    k = int(rng.integers(0, 4))
    flip = bool(rng.integers(0, 2))
    out = []
    for a in arrays:
        if flip:
            a = a[:, ::-1]
        out.append(np.ascontiguousarray(np.rot90(a, k, axes=(0, 1))))
    return out


def segmentation_batches(
    tiles: Sequence[AnnotatedTile], *, crop_size: int, batch_size: int, seed: int
) -> Iterator[dict[str, np.ndarray]]:
    """Endless stream of augmented training batches with HoVer-Net targets.

    Each sample is a uniformly drawn tile, randomly cropped to ``crop_size``
    and transformed by :func:`augment`; the targets are computed on the crop
    (:func:`pathpipe.segmentation.unet.targets.make_targets`), so a nucleus cut by the crop border
    gets the centroid of its visible part, as the network sees it.

    Yields
    ------
    dict
        ``rgb`` (B, S, S, 3) uint8, ``fg`` (B, S, S) int64, ``hv``
        (B, 2, S, S) float32, ``type`` (B, S, S) int64, ``has_types`` (B,) bool.
    """
    rng = np.random.default_rng([seed, 0x5E6])
    while True:
        samples = []
        for i in rng.integers(0, len(tiles), size=batch_size):
            t = tiles[int(i)]
            types = t.type_map if t.type_map is not None else np.zeros(t.inst_map.shape, np.uint8)
            rgb, inst, typ = augment(
                random_crop([t.rgb, t.inst_map, types], crop_size, rng, fill=(PAD_RGB, 0, 0)), rng
            )
            tgt = make_targets(
                AnnotatedTile(t.name, rgb, inst, typ if t.type_map is not None else None)
            )
            samples.append((rgb, tgt))
        yield {
            "rgb": np.stack([s[0] for s in samples]),
            "fg": np.stack([s[1]["fg"] for s in samples]),
            "hv": np.stack([s[1]["hv"] for s in samples]),
            "type": np.stack([s[1]["type"] for s in samples]),
            "has_types": np.array([s[1]["has_types"] for s in samples], bool),
        }


def _check_rgb(tile: np.ndarray, where: str) -> None:
    if tile.ndim != 3 or tile.shape[2] != 3 or tile.dtype != np.uint8:
        raise ConfigError(
            f"{where} has shape {tile.shape} dtype {tile.dtype}; expected (H, W, 3) uint8"
        )


def store_mpp(group: Any) -> float | None:
    """µm per pixel of a ``tiles.zarr`` store (its tiling parameters), if recorded."""
    meta = group.attrs.get("pathpipe", {})
    mpp = meta.get("params", {}).get("mpp") if isinstance(meta, dict) else None
    return None if mpp is None else float(mpp)


def _open_tiles(path: str | os.PathLike) -> Any:
    from pathpipe.io.storage import open_store

    group = open_store(path)
    if "tiles" not in group:
        raise StorageError(f"store {str(path)!r} has no array 'tiles'; expected a tiles.zarr")
    arr = group["tiles"]
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise StorageError(
            f"{str(path)!r}/tiles has shape {arr.shape} dtype {arr.dtype}; "
            "expected (N, T, T, 3) uint8"
        )
    return group


def iter_cohort_tiles(
    paths: Sequence[str | os.PathLike],
    *,
    n: int,
    seed: int,
    crop_size: int | None = None,
) -> Iterator[np.ndarray]:
    """Sample tiles, with replacement, uniformly over every tile of several stores.

    Parameters
    ----------
    paths : sequence of path-like
        ``results/{slide}/tiles.zarr`` stores (opened with
        :func:`pathpipe.io.storage.open_store`).
    n : int
        Number of tiles to yield.
    seed : int
    crop_size : int, optional
        Random ``crop_size`` square crop of each tile (white padding when the
        tile is smaller); whole tiles when None.

    Yields
    ------
    (T, T, 3) or (crop_size, crop_size, 3) uint8 ndarray
    """
    if not paths:
        raise ConfigError("no tiles.zarr stores given; expected at least one")
    arrays = [_open_tiles(p)["tiles"] for p in paths]
    counts = np.array([a.shape[0] for a in arrays], np.int64)
    if counts.sum() == 0:
        raise StorageError(f"the {len(paths)} tiles.zarr stores hold no tiles")
    starts = np.cumsum(counts) - counts
    rng = np.random.default_rng([seed, 0xC0A7])
    for g in rng.integers(0, int(counts.sum()), size=n):
        s = int(np.searchsorted(starts, g, side="right") - 1)
        tile = np.asarray(arrays[s][int(g - starts[s])])
        if crop_size is not None:
            (tile,) = random_crop([tile], crop_size, rng, fill=(PAD_RGB,))
        yield tile


def _is_path_list(tiles: object) -> bool:
    return (
        isinstance(tiles, Sequence)
        and not isinstance(tiles, str | np.ndarray)
        and len(tiles) > 0
        and all(isinstance(p, str | os.PathLike) for p in tiles)
    )


def tile_batches(
    tiles: np.ndarray | Iterable[np.ndarray] | Sequence[str | os.PathLike],
    *,
    crop_size: int,
    batch_size: int,
    n_batches: int,
    seed: int,
) -> tuple[Iterator[np.ndarray], dict[str, Any]]:
    """Augmented random crops of unlabelled tiles, in batches (DDPM pretraining).

    Parameters
    ----------
    tiles : (N, H, W, 3) uint8 ndarray, iterable of (H, W, 3) uint8 ndarrays, or sequence of paths
        In-memory tiles (an iterable is read once into memory), or
        ``tiles.zarr`` stores sampled lazily with :func:`iter_cohort_tiles`.
    crop_size, batch_size, n_batches, seed : int

    Returns
    -------
    batches : iterator of (B, S, S, 3) uint8 ndarrays
    source : dict
        ``{"stores": [paths], "store_mpps": [µm/px or None]}`` for stores,
        ``{"n_tiles": N}`` for in-memory tiles.
    """
    rng = np.random.default_rng([seed, 0xD1F])
    if _is_path_list(tiles):
        from pathpipe.io.storage import open_store

        stores = [str(p) for p in tiles]  # type: ignore[union-attr]
        source: dict[str, Any] = {
            "stores": stores,
            "store_mpps": [store_mpp(open_store(p)) for p in stores],
        }
        stream: Iterator[np.ndarray] = iter_cohort_tiles(
            list(tiles),  # type: ignore[arg-type]
            n=n_batches * batch_size,
            seed=seed,
            crop_size=crop_size,
        )
    else:
        pool = list(tiles) if not isinstance(tiles, np.ndarray) else tiles
        if isinstance(pool, np.ndarray) and pool.ndim != 4:
            raise ConfigError(f"tiles has shape {pool.shape}; expected (N, H, W, 3) uint8")
        if len(pool) == 0:
            raise ConfigError("no tiles given; expected at least one (H, W, 3) uint8 tile")
        source = {"n_tiles": len(pool)}
        for i, t in enumerate(pool[:1] if isinstance(pool, np.ndarray) else pool):
            _check_rgb(np.asarray(t), f"tile {i}")

        def _draw() -> Iterator[np.ndarray]:
            for i in rng.integers(0, len(pool), size=n_batches * batch_size):
                (crop,) = random_crop([np.asarray(pool[int(i)])], crop_size, rng, fill=(PAD_RGB,))
                yield crop

        stream = _draw()

    def _batches() -> Iterator[np.ndarray]:
        for _ in range(n_batches):
            crops = [augment([next(stream)], rng)[0] for _ in range(batch_size)]
            yield np.stack(crops)

    return _batches(), source
