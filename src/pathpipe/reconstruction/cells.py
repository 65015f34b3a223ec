"""A block's 3D cell map: every nucleus of its sections in block coordinates.

:func:`block_cells` (pure) maps one section's nuclei table into the block frame;
:func:`run_cells` (``pathpipe reconstruction cells``) does it for every section of
a block that has both a transform (``transforms.json``) and the segmentation
stage's ``results/{slide_id}/nuclei.parquet`` (a transform flagged
``low_fitness`` or ``high_rmse`` is not used, as in the volume), and writes ``cells.parquet``
(atomically) with one row per nucleus, columns :data:`CELL_COLUMNS` (and
``area_um2``, ``confidence`` when the nuclei table has them):

``block``, ``slide_id``, ``section``
    Where the nucleus comes from.
``nucleus_id``
    Its id in the slide's ``nuclei.parquet``.
``phenotype``
    Its class name.
``l0_x``, ``l0_y``
    Its centroid in the slide's level-0 pixels (as in ``nuclei.parquet``).
``x_um``, ``y_um``, ``z_um``
    The centroid in the block frame, µm: ``(x, y) = T_k(l0_x · mpp_x, l0_y · mpp_y)``
    with ``T_k`` the section's transform and ``(mpp_x, mpp_y)`` the slide's
    level-0 µm/px (:func:`~pathpipe.reconstruction.inputs.section_slide_mpp`:
    anisotropic slides keep their two values); ``z = section × spacing``.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import StorageError
from pathpipe.reconstruction.inputs import section_slide_mpp, sections_from_sheet
from pathpipe.reconstruction.warp import read_transforms, section_transform

__all__ = ["CELL_COLUMNS", "OPTIONAL_COLUMNS", "REJECTED", "block_cells", "run_cells"]

log = logging.getLogger(__name__)

#: Columns of ``cells.parquet``, in order.
CELL_COLUMNS = (
    "block",
    "slide_id",
    "section",
    "nucleus_id",
    "phenotype",
    "l0_x",
    "l0_y",
    "x_um",
    "y_um",
    "z_um",
)
#: Flags of ``transforms.json`` whose transform the volume, and so the cell map, rejects.
REJECTED = ("low_fitness", "high_rmse")

#: Columns of the nuclei table carried over when present.
OPTIONAL_COLUMNS = ("area_um2", "confidence")


def block_cells(
    nuclei: Any,
    transforms: dict[str, Any],
    section: int,
    mpp: tuple[float, float],
    *,
    slide_id: str,
) -> Any:
    """One section's nuclei in the block frame (rows of ``cells.parquet``).

    Parameters
    ----------
    nuclei : pandas.DataFrame
        ``nuclei.parquet``'s rows: ``l0_x``, ``l0_y`` (level-0 px), ``phenotype``,
        optionally ``nucleus_id`` (default the row number), ``area_um2``, ``confidence``.
    transforms : dict
        :func:`~pathpipe.reconstruction.warp.read_transforms`'s result.
    section : int
    mpp : (float, float)
        The slide's level-0 µm/px ``(x, y)``.
    slide_id : str

    Returns
    -------
    pandas.DataFrame
        Columns :data:`CELL_COLUMNS`, then those of :data:`OPTIONAL_COLUMNS` present.
    """
    import pandas as pd

    transform, z_um = section_transform(transforms, section)
    l0 = nuclei[["l0_x", "l0_y"]].to_numpy(dtype=float)
    xy = transform.apply(l0 * np.asarray(mpp, dtype=float))
    n = len(nuclei)
    ids = nuclei["nucleus_id"].to_numpy() if "nucleus_id" in nuclei else np.arange(n)
    out = pd.DataFrame(
        {
            "block": str(transforms.get("block")),
            "slide_id": slide_id,
            "section": np.full(n, int(section), dtype=np.int32),
            "nucleus_id": np.asarray(ids, dtype=np.int64),
            "phenotype": nuclei["phenotype"].astype(str).to_numpy(),
            "l0_x": l0[:, 0],
            "l0_y": l0[:, 1],
            "x_um": xy[:, 0],
            "y_um": xy[:, 1],
            "z_um": np.full(n, z_um),
        }
    )
    for name in OPTIONAL_COLUMNS:
        if name in nuclei:
            out[name] = nuclei[name].to_numpy()
    return out


def run_cells(
    transforms_path: str | os.PathLike,
    sheet: str | os.PathLike,
    block: str,
    results: str | os.PathLike,
    out: str | os.PathLike,
) -> Any:
    """Write a block's ``cells.parquet`` (``pathpipe reconstruction cells``).

    Parameters
    ----------
    transforms_path : path-like
        The block's ``transforms.json`` (``pathpipe reconstruction run``).
    sheet : path-like
        The slide sheet (``block``, ``section``, ``mpp``).
    block : str
    results : path-like
        Results root: ``{slide_id}/nuclei.parquet`` (segmentation) and
        ``{slide_id}/tissue.json`` (tissue; its slide µm/px).
    out : path-like
        ``cells.parquet``, written atomically.

    Returns
    -------
    pandas.DataFrame
        The table written (possibly empty; the sections skipped, for want of a
        transform or of a nuclei table, are logged).

    Raises
    ------
    ConfigError
        When the sheet has no such block or the transforms are of another block.
    StorageError
        When a nuclei table exists but is unreadable or lacks its columns.
    """
    import pandas as pd

    from pathpipe.errors import ConfigError
    from pathpipe.io.storage import atomic_file

    transforms = read_transforms(transforms_path)
    if transforms.get("block") != block:
        raise ConfigError(
            f"transforms {str(transforms_path)!r} are of block {transforms.get('block')!r}; "
            f"expected block {block!r}"
        )
    with_transform = {
        int(s["section"])
        for s in transforms["sections"]
        if s["transform"] is not None and not any(f in s.get("flag", "") for f in REJECTED)
    }
    tables, no_transform, no_nuclei = [], [], []
    for s in sorted(sections_from_sheet(sheet, block, results), key=lambda s: s.section):
        if int(s.section) not in with_transform:
            no_transform.append(s.slide_id)
            continue
        path = Path(s.folder) / "nuclei.parquet"
        if not path.is_file():
            no_nuclei.append(s.slide_id)
            continue
        try:
            nuclei = pd.read_parquet(path)
        except (OSError, ValueError) as exc:
            raise StorageError(f"nuclei table {str(path)!r} unreadable: {exc}") from exc
        lacking = [c for c in ("l0_x", "l0_y", "phenotype") if c not in nuclei.columns]
        if lacking:
            raise StorageError(
                f"nuclei table {str(path)!r} lacks columns {lacking}; has "
                f"{list(nuclei.columns)} (expected the segmentation stage's nuclei.parquet)"
            )
        tables.append(
            block_cells(nuclei, transforms, s.section, section_slide_mpp(s), slide_id=s.slide_id)
        )
    if no_transform or no_nuclei:
        log.warning(
            "reconstruction cells: block %s: skipped sections without a usable transform %s, "
            "without nuclei.parquet %s",
            block,
            no_transform,
            no_nuclei,
        )
    if tables:
        cells = pd.concat(tables, ignore_index=True)
    else:
        cells = pd.DataFrame({name: [] for name in CELL_COLUMNS})
    out = Path(out)
    with atomic_file(out) as tmp:
        cells.to_parquet(tmp, index=False)
    log.info(
        "reconstruction cells: block %s: %d nuclei of %d sections -> %s",
        block,
        len(cells),
        len(tables),
        out,
    )
    return cells
