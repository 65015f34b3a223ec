"""Parallel tile rendering for :func:`pathpipe.synthetic.generate.write_slide` (private)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from pathpipe.io.workers import ordered_map
from pathpipe.synthetic.render import Look, render_region

if TYPE_CHECKING:
    from pathpipe.synthetic.index import NucleusIndex
    from pathpipe.synthetic.spec import SyntheticSlideSpec, TissueLayout

__all__ = ["init_worker", "ordered_map", "render_tile_row"]


# State of a rendering worker process (set by init_worker) or of the serial path.
_WORKER: dict = {}


def init_worker(
    spec: SyntheticSlideSpec, look: Look, index: NucleusIndex, tissue: TissueLayout
) -> None:
    """Set the state :func:`render_tile_row` reads (in a worker or in-process)."""
    _WORKER.update(spec=spec, look=look, index=index, tissue=tissue)


def render_tile_row(task: tuple[int, int, int]) -> tuple[list[bytes], int, np.ndarray]:
    """JPEG tiles of one tile row of one level, and level-0 label pixel counts.

    Returns ``(tiles, first_id, counts)`` with ``counts[i]`` the pixels of
    nucleus ``first_id + i`` in the row (empty above level 0).
    """
    import imagecodecs

    d, ty, n_tx = task
    spec, look, index, tissue = (_WORKER[k] for k in ("spec", "look", "index", "tissue"))
    ts = spec.tile_size
    tiles, ids = [], []
    for tx in range(n_tx):
        rgb, labels = render_region(look, index, tissue, tx * ts * d, ty * ts * d, ts, ts, float(d))
        tiles.append(
            imagecodecs.jpeg_encode(
                rgb,
                level=spec.jpeg_quality,
                colorspace="RGB",
                outcolorspace="YCBCR",
                subsampling=(2, 2),
            )
        )
        if labels is not None:
            ids.append(labels[labels > 0])
    if not ids:
        return tiles, 0, np.zeros(0, dtype=np.int64)
    ids = np.concatenate(ids)
    if len(ids) == 0:
        return tiles, 0, np.zeros(0, dtype=np.int64)
    first = int(ids.min())
    return tiles, first, np.bincount(ids - first)


def mp_context():
    """``fork`` where it is safe (POSIX, no other Python threads), else a clean start.

    ``fork`` shares the nuclei index without pickling and, unlike ``spawn`` and
    ``forkserver``, works from scripts without an ``if __name__ == "__main__"``
    guard.
    """
    import multiprocessing
    import threading

    methods = multiprocessing.get_all_start_methods()
    if "fork" in methods and threading.active_count() == 1:
        return multiprocessing.get_context("fork")
    return multiprocessing.get_context("forkserver" if "forkserver" in methods else "spawn")
