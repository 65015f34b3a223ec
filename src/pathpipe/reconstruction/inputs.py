"""A block's sections as the reconstruction reads them: masks, their µm/px, slides, the sheet.

:class:`SectionInput` is one section (its mask PNG, the mask's µm/px or the
tissue stage's ``tissue.json``, optionally its slide for colours);
:func:`sections_from_sheet` makes a block's list from the slide sheet
(``block``, ``section``) and the tissue stage's ``results/{slide_id}/``.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError, StorageError

__all__ = ["SectionInput", "load_section_mask", "mask_mpp", "sections_from_sheet", "slide_rgb"]


@dataclass(frozen=True)
class SectionInput:
    """One section of a block.

    Attributes
    ----------
    section : int
        Position in the block (``z = section × spacing``).
    slide_id : str
    mask_path : path-like
        The section's mask PNG covering the whole slide (the tissue stage's ``tissue.png``).
    mask_mpp : float, (float, float) or path-like
        µm per pixel of the mask, or the tissue stage's ``tissue.json`` holding it (``mask_mpp``).
    slide_path : path-like, optional
        The slide, for the points' and the volume's colours.
    """

    section: int
    slide_id: str
    mask_path: str | os.PathLike
    mask_mpp: float | tuple[float, float] | str | os.PathLike
    slide_path: str | os.PathLike | None = None


def mask_mpp(value: Any) -> tuple[float, float]:
    """µm/px ``(x, y)`` of a mask: a number, a pair, or a ``tissue.json`` holding ``mask_mpp``."""
    if isinstance(value, (str, os.PathLike)):
        try:
            record = json.loads(Path(value).read_text(encoding="utf-8"))
            value = record["mask_mpp"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise StorageError(
                f"tissue record {str(value)!r} unreadable or without 'mask_mpp': {exc}"
            ) from exc
    mpp = (float(value), float(value)) if np.isscalar(value) else tuple(map(float, value))
    if len(mpp) != 2 or not all(math.isfinite(v) and v > 0 for v in mpp):
        raise ConfigError(f"mask mpp {value!r}; expected a positive number or (x, y)")
    return mpp  # type: ignore[return-value]


def load_section_mask(path: str | os.PathLike) -> np.ndarray:
    """A section's mask PNG as a bool array (:func:`pathpipe.tissue.load_mask`)."""
    from pathpipe.tissue import load_mask

    if not Path(path).is_file():
        raise StorageError(f"mask {str(path)!r} is missing; expected the tissue stage's PNG")
    return load_mask(path)


def slide_rgb(path: str | os.PathLike, shape: tuple[int, int], mpp: tuple[float, float]):
    """The slide at the mask's resolution, cropped or padded (white) to ``shape``."""
    from pathpipe.io.slide import open_slide

    with open_slide(path) as slide:
        thumb = slide.thumbnail_at_mpp(float(np.mean(mpp)))
    out = np.full((*shape, 3), 255, dtype=np.uint8)
    h, w = min(shape[0], thumb.shape[0]), min(shape[1], thumb.shape[1])
    out[:h, :w] = thumb[:h, :w]
    return out


def _section_number(text: Any) -> int | None:
    """A sheet's ``section`` as an int (``"3"`` and ``"3.0"``), None when not a whole number >= 0."""
    try:
        value = float(text)
    except (TypeError, ValueError):
        return None
    return int(value) if math.isfinite(value) and value >= 0 and value.is_integer() else None


def sections_from_sheet(
    sheet: str | os.PathLike, block: str, results: str | os.PathLike
) -> list[SectionInput]:
    """A block's sections from the slide sheet and the tissue stage's results.

    Each sheet row of ``block`` gives ``results/{slide_id}/tissue.png`` and
    ``tissue.json``, and its ``path`` as the slide (for colours) when that file exists.

    Raises
    ------
    ConfigError
        When the sheet has no ``block``/``section`` columns, no row of ``block``,
        or a row of ``block`` without a whole-number section, naming the rows.
    """
    import pandas as pd

    try:
        table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise ConfigError(f"cannot read slide sheet {str(sheet)!r}: {exc}") from exc
    missing = {"slide_id", "block", "section"} - set(table.columns)
    if missing:
        raise ConfigError(f"slide sheet {str(sheet)!r} lacks columns {sorted(missing)}")
    rows = table[table["block"] == block]
    if rows.empty:
        blocks = sorted(set(table["block"].dropna()))
        raise ConfigError(
            f"slide sheet {str(sheet)!r} has no rows of block {block!r}; blocks: {blocks}"
        )
    bad = [r.slide_id for r in rows.itertuples() if _section_number(r.section) is None]
    if bad:
        raise ConfigError(
            f"slides {bad} of block {block!r} have no whole-number section; expected 0, 1, 2…"
        )
    results = Path(results)
    out = []
    for r in rows.itertuples():
        folder = results / r.slide_id
        slide = getattr(r, "path", None)
        slide = slide if isinstance(slide, str) and Path(slide).is_file() else None
        out.append(
            SectionInput(
                _section_number(r.section),
                r.slide_id,
                folder / "tissue.png",
                folder / "tissue.json",
                slide,
            )
        )
    return out
