"""Folders of annotated tiles: RGB images with instance and type maps.

The format training (``pathpipe segmentation train``) and evaluation
(``pathpipe segmentation evaluate``) read, and the one NuCLS-style exports
already use::

    <dir>/images/<name>.png      RGB (an alpha channel is composited on white)
    <dir>/labels/<name>.npz      inst_map (H, W) integer, 0 = background, one id per nucleus
                                 type_map (H, W) uint8, 0 = background, k = classes[k - 1]
    <dir>/classes.json           {"classes": ["tumour", "lymphocyte"], "mpp": 0.5}

``type_map`` may be absent (segmentation only). ``mpp`` is the µm per pixel of
the images; it sets every size in µm² and is checked against the MPP a model
was trained at.

:func:`pathpipe.synthetic.tiles.synthetic_annotated_tiles` cuts such tiles, with
exact ground truth, from seeded synthetic slides at any MPP.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pathpipe.errors import StorageError

__all__ = [
    "AnnotatedDir",
    "AnnotatedTile",
    "read_annotated_dir",
    "write_annotated_dir",
]


@dataclass(frozen=True)
class AnnotatedTile:
    """One annotated tile.

    Attributes
    ----------
    name : str
    rgb : (H, W, 3) uint8 ndarray
    inst_map : (H, W) int32 ndarray
        0 background, one positive id per nucleus.
    type_map : (H, W) uint8 ndarray or None
        0 background, ``k`` for class ``classes[k - 1]``.
    """

    name: str
    rgb: np.ndarray
    inst_map: np.ndarray
    type_map: np.ndarray | None = None


@dataclass(frozen=True)
class AnnotatedDir:
    """An annotated tile folder as read by :func:`read_annotated_dir`."""

    path: Path
    tiles: list[AnnotatedTile]
    classes: tuple[str, ...]
    mpp: float | None


def _check_tile(tile: AnnotatedTile, n_classes: int | None, where: str) -> None:
    if tile.rgb.ndim != 3 or tile.rgb.shape[2] != 3 or tile.rgb.dtype != np.uint8:
        raise StorageError(
            f"{where}: image has shape {tile.rgb.shape} dtype {tile.rgb.dtype}; "
            "expected (H, W, 3) uint8"
        )
    if tile.inst_map.shape != tile.rgb.shape[:2]:
        raise StorageError(
            f"{where}: inst_map shape {tile.inst_map.shape} differs from image {tile.rgb.shape[:2]}"
        )
    if tile.inst_map.size and tile.inst_map.min() < 0:
        raise StorageError(f"{where}: inst_map has negative ids; expected 0 and positive ids")
    if tile.type_map is not None:
        if tile.type_map.shape != tile.inst_map.shape:
            raise StorageError(
                f"{where}: type_map shape {tile.type_map.shape} differs from inst_map "
                f"{tile.inst_map.shape}"
            )
        top = int(tile.type_map.max(initial=0))
        if n_classes is not None and top > n_classes:
            raise StorageError(
                f"{where}: type_map has type {top} but classes.json names {n_classes} classes"
            )


def _read_rgb(path: Path) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(path) as im:
            if im.mode in ("RGBA", "LA", "P"):
                im = im.convert("RGBA")
                white = Image.new("RGBA", im.size, (255, 255, 255, 255))
                im = Image.alpha_composite(white, im)
            return np.asarray(im.convert("RGB"))
    except OSError as exc:
        raise StorageError(f"cannot read image {path}: {exc}") from exc


def read_annotated_dir(path: str | os.PathLike, *, require_types: bool = False) -> AnnotatedDir:
    """Read an annotated tile folder (format in the module docstring).

    Parameters
    ----------
    path : path-like
    require_types : bool
        Raise when a tile has no ``type_map``.

    Returns
    -------
    AnnotatedDir
        Tiles sorted by name.

    Raises
    ------
    StorageError
        Missing folders, an image without labels, or maps that do not fit.
    """
    root = Path(path)
    images, labels = root / "images", root / "labels"
    if not images.is_dir() or not labels.is_dir():
        raise StorageError(
            f"annotated tile folder {root}: expected subfolders images/ and labels/ "
            "(images/<name>.png, labels/<name>.npz)"
        )
    classes: tuple[str, ...] = ()
    mpp = None
    meta_path = root / "classes.json"
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise StorageError(f"cannot read {meta_path}: {exc}") from exc
        classes = tuple(str(c) for c in meta.get("classes", ()))
        mpp = None if meta.get("mpp") is None else float(meta["mpp"])
    names = sorted(p.stem for p in images.glob("*.png"))
    if not names:
        raise StorageError(f"annotated tile folder {root}: no images/*.png")
    tiles = []
    for name in names:
        label_path = labels / f"{name}.npz"
        if not label_path.exists():
            raise StorageError(f"{images / (name + '.png')} has no labels file {label_path}")
        try:
            with np.load(label_path, allow_pickle=False) as z:
                inst = np.asarray(z["inst_map"]).astype(np.int32)
                types = np.asarray(z["type_map"]).astype(np.uint8) if "type_map" in z else None
        except (OSError, KeyError, ValueError) as exc:
            raise StorageError(
                f"cannot read {label_path}: {exc}; expected arrays inst_map (and type_map)"
            ) from exc
        if require_types and types is None:
            raise StorageError(f"{label_path} has no type_map; phenotype training needs one")
        tile = AnnotatedTile(name, _read_rgb(images / f"{name}.png"), inst, types)
        _check_tile(tile, len(classes) if classes else None, str(label_path))
        tiles.append(tile)
    return AnnotatedDir(root, tiles, classes, mpp)


def write_annotated_dir(
    path: str | os.PathLike,
    tiles: Sequence[AnnotatedTile],
    *,
    classes: Sequence[str],
    mpp: float | None,
) -> Path:
    """Write tiles as an annotated tile folder (atomically).

    Returns
    -------
    path : pathlib.Path
    """
    from PIL import Image

    from pathpipe.io.storage import atomic_dir

    root = Path(path)
    with atomic_dir(root) as tmp:
        (tmp / "images").mkdir()
        (tmp / "labels").mkdir()
        for tile in tiles:
            _check_tile(tile, len(classes), tile.name)
            Image.fromarray(tile.rgb).save(tmp / "images" / f"{tile.name}.png")
            arrays = {"inst_map": tile.inst_map.astype(np.int32)}
            if tile.type_map is not None:
                arrays["type_map"] = tile.type_map.astype(np.uint8)
            np.savez_compressed(tmp / "labels" / f"{tile.name}.npz", **arrays)
        (tmp / "classes.json").write_text(
            json.dumps({"classes": list(classes), "mpp": mpp}, indent=2) + "\n"
        )
    return root
