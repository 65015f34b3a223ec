"""Outputs of the segmentation stage for people: QuPath GeoJSON and the report figure."""

from __future__ import annotations

import json
import math
import os
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["DEFAULT_COLOURS", "GeoJSONWriter", "class_colours", "nucleus_polygons"]

DEFAULT_COLOURS: dict[str, tuple[int, int, int]] = {
    "tumour": (220, 30, 30),
    "lymphocyte": (20, 170, 40),
    "other": (240, 180, 0),
    "non_tumour": (20, 120, 220),
}
"""Outline and QuPath colours of the usual classes; others get tab10 colours."""

# Digits kept in GeoJSON coordinates (level-0 px): 0.01 px is far below a pixel.
_DIGITS = 2


def class_colours(classes: Sequence[str]) -> dict[str, tuple[int, int, int]]:
    """RGB colour of every class name (stable for a given class list)."""
    import matplotlib

    tab = matplotlib.colormaps["tab10"]
    out = {}
    spare = 0
    for name in classes:
        if name in DEFAULT_COLOURS:
            out[name] = DEFAULT_COLOURS[name]
        else:
            r, g, b, _ = tab(spare % 10)
            spare += 1
            out[name] = (int(r * 255), int(g * 255), int(b * 255))
    return out


def nucleus_polygons(labels: np.ndarray, ids: Sequence[int]) -> list[np.ndarray | None]:
    """Outer boundary of each nucleus as a closed polygon in tile pixels.

    Parameters
    ----------
    labels : (H, W) int ndarray
    ids : sequence of int
        Label ids to trace.

    Returns
    -------
    list of ((k, 2) float ndarray or None)
        ``(row, col)`` vertices, first equal to last, through the centres of the
        nucleus's outer boundary pixels (OpenCV's border following, Suzuki & Abe
        1985, with collinear vertices dropped, as HoVer-Net exports contours). A
        nucleus of one or two pixels in a line has no area between its pixel centres,
        so it gets the rectangle of its pixels' edges. None for an id absent from
        ``labels``.
    """
    import cv2
    from scipy import ndimage

    objects = ndimage.find_objects(labels)
    out: list[np.ndarray | None] = []
    for lab in ids:
        sl = objects[lab - 1] if 0 < lab <= len(objects) else None
        if sl is None:
            out.append(None)
            continue
        r0, c0 = sl[0].start, sl[1].start
        crop = (labels[sl] == lab).astype(np.uint8)
        contours, _ = cv2.findContours(crop, cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
        best = max(contours, key=cv2.contourArea).reshape(-1, 2) if contours else None
        if best is None or len(best) < 3 or cv2.contourArea(best) == 0:
            r1, c1 = sl[0].stop - 1, sl[1].stop - 1
            ring = np.array(
                [[r0 - 0.5, c0 - 0.5], [r0 - 0.5, c1 + 0.5], [r1 + 0.5, c1 + 0.5],
                 [r1 + 0.5, c0 - 0.5]]
            )  # fmt: skip
        else:
            ring = best[:, ::-1].astype(np.float64) + np.array([r0, c0], dtype=np.float64)
        out.append(np.vstack([ring, ring[:1]]))
    return out


class GeoJSONWriter:
    """Stream QuPath detections into a GeoJSON FeatureCollection, atomically.

    Each nucleus becomes a ``Feature`` with a ``Polygon`` in level-0 pixel
    coordinates (QuPath's frame: pixel ``i`` spans ``[i, i + 1)``) and properties
    ``objectType: "detection"``, ``classification: {name, color}`` and
    ``measurements`` (area, confidence, tile) — the layout QuPath (0.3 and
    later) reads with *File → Import objects*.
    """

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self._tmp = self.path.with_name(
            f".{self.path.name}.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        )
        self._fh: Any = None
        self._first = True
        self.n_features = 0

    def __enter__(self) -> GeoJSONWriter:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self._tmp, "w", encoding="utf-8")
        self._fh.write('{"type": "FeatureCollection", "features": [\n')
        return self

    def __exit__(self, exc_type: Any, exc: Any, tb: Any) -> None:
        if exc_type is not None:
            self._fh.close()
            self._tmp.unlink(missing_ok=True)
            return
        self._fh.write("\n]}\n")
        self._fh.close()
        os.replace(self._tmp, self.path)

    def write_tile(
        self,
        rings: Sequence[np.ndarray | None],
        table: Any,
        *,
        l0_origin: Sequence[int],
        scale: float,
        classes: Sequence[str],
        colours: dict[str, tuple[int, int, int]],
    ) -> None:
        """Write the nuclei of one tile listed in ``table`` (rows of ``nuclei.parquet``),
        with their :func:`nucleus_polygons` ``rings`` in the same order."""
        x0, y0 = float(l0_origin[0]), float(l0_origin[1])
        codes = table["phenotype"].to_numpy()
        for ring, code, area, conf, tile, nid in zip(
            rings,
            codes,
            table["area_um2"].to_numpy(),
            table["confidence"].to_numpy(),
            table["tile"].to_numpy(),
            table["nucleus_id"].to_numpy(),
            strict=True,
        ):
            if ring is None:
                continue
            xy = np.column_stack([x0 + (ring[:, 1] + 0.5) * scale, y0 + (ring[:, 0] + 0.5) * scale])
            name = classes[int(code)]
            feature = {
                "type": "Feature",
                "id": f"nucleus-{int(nid)}",
                "geometry": {"type": "Polygon", "coordinates": [np.round(xy, _DIGITS).tolist()]},
                "properties": {
                    "objectType": "detection",
                    "classification": {"name": name, "color": list(colours[name])},
                    "measurements": {
                        "area_um2": round(float(area), 3),
                        "confidence": round(float(conf), 4),
                        "tile": int(tile),
                    },
                },
            }
            if not self._first:
                self._fh.write(",\n")
            self._fh.write(json.dumps(feature, separators=(",", ":")))
            self._first = False
            self.n_features += 1


def outline_image(
    rgb: np.ndarray,
    labels: np.ndarray,
    colour_of_label: dict[int, tuple[int, int, int]],
    *,
    default: tuple[int, int, int] = (255, 255, 255),
) -> np.ndarray:
    """``rgb`` with each nucleus's inner boundary drawn in its colour."""
    from skimage.segmentation import find_boundaries

    out = rgb.copy()
    if labels.max(initial=0) == 0:
        return out
    lut = np.tile(np.array(default, dtype=np.uint8), (int(labels.max()) + 1, 1))
    for lab, colour in colour_of_label.items():
        if 0 < lab < len(lut):
            lut[lab] = colour
    edge = find_boundaries(labels, mode="inner")
    out[edge] = lut[labels[edge]]
    return out


def segmentation_figure(
    path: str | os.PathLike[str],
    *,
    tiles_path: str | os.PathLike[str],
    labels_path: str | os.PathLike[str],
    nuclei: Any,
    classes: Sequence[str],
    colours: dict[str, tuple[int, int, int]],
    title: str,
    n_examples: int = 6,
) -> None:
    """Report figure: example tiles with nuclei outlined in their phenotype colour.

    The examples are the tiles with most nuclei, one from each of ``n_examples``
    equal slices of the slide's tile order (so they spread over the slide).
    Nuclei that another, overlapping tile owns are drawn in white.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    from pathpipe.io.storage import atomic_file, open_store

    tiles = open_store(tiles_path, stage="tiling")["tiles"]
    labels = open_store(labels_path, stage="segmentation")["labels"]
    n_tiles = tiles.shape[0]
    per_tile = np.bincount(nuclei["tile"].to_numpy(), minlength=n_tiles) if n_tiles else []
    picks: list[int] = []
    if n_tiles:
        for part in np.array_split(np.arange(n_tiles), min(n_examples, n_tiles)):
            picks.append(int(part[np.argmax(per_tile[part])]))
    codes = nuclei["phenotype"].cat.codes.to_numpy()
    n_cols = 3
    n_rows = max(1, math.ceil(len(picks) / n_cols))
    fig, axes = plt.subplots(
        n_rows, n_cols, figsize=(4 * n_cols, 4.4 * n_rows + 0.6), squeeze=False
    )
    for ax in axes.ravel():
        ax.axis("off")
    for ax, i in zip(axes.ravel(), picks, strict=False):
        rows = np.flatnonzero(nuclei["tile"].to_numpy() == i)
        cmap = {int(nuclei["label"].iat[r]): colours[classes[codes[r]]] for r in rows}
        ax.imshow(outline_image(np.asarray(tiles[i]), np.asarray(labels[i]), cmap))
        ax.set_title(f"tile {i}: {len(rows)} nuclei", fontsize=9)
    counts = {c: int((codes == k).sum()) for k, c in enumerate(classes)}
    handles = [Patch(color=np.array(colours[c]) / 255, label=f"{c} ({counts[c]})") for c in classes]
    handles.append(Patch(color=(1.0, 1.0, 1.0), ec="0.6", label="counted in an overlapping tile"))
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), fontsize=9, frameon=False)
    fig.suptitle(
        f"{title}: {len(nuclei)} nuclei in {n_tiles} tiles" + ("" if n_tiles else " (no tiles)")
    )
    fig.tight_layout(rect=(0, 0.05, 1, 0.97))
    with atomic_file(path) as tmp:
        fig.savefig(tmp, dpi=80, format="png")
    plt.close(fig)
