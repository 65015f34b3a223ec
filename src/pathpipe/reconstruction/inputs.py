"""A block's sections as the reconstruction reads them: masks, their µm/px, slides, the sheet.

:class:`SectionInput` is one section (its mask PNG, the mask's µm/px or the
tissue stage's ``tissue.json``, optionally its slide for colours);
:func:`sections_from_sheet` makes a block's list from the slide sheet
(``block``, ``section``, optionally ``annotations``) and the stages'
``results/{slide_id}/``; :func:`check_sheet_sections` is its validation of the
sheet's blocks; :func:`section_slide_mpp` is a section slide's level-0 µm/px.
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

__all__ = [
    "SectionInput",
    "check_sheet_sections",
    "load_section_mask",
    "mask_mpp",
    "section_slide_mpp",
    "sections_from_sheet",
    "slide_rgb",
]


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
    results_dir : path-like, optional
        The slide's results folder (``results/{slide_id}``: ``nuclei.parquet``,
        ``tiles.zarr`` for the ``phenotype`` mask source); default the mask's folder.
    annotations_path : path-like, optional
        QuPath GeoJSON of the slide's region annotations (``annotation`` mask source).
    slide_mpp : (float, float), optional
        The slide's level-0 µm/px ``(x, y)`` when known (the sheet's ``mpp``);
        see :func:`section_slide_mpp`.
    """

    section: int
    slide_id: str
    mask_path: str | os.PathLike
    mask_mpp: float | tuple[float, float] | str | os.PathLike
    slide_path: str | os.PathLike | None = None
    results_dir: str | os.PathLike | None = None
    annotations_path: str | os.PathLike | None = None
    slide_mpp: tuple[float, float] | None = None

    @property
    def folder(self) -> Path:
        """The slide's results folder: ``results_dir``, else the mask's folder."""
        return (
            Path(self.results_dir) if self.results_dir is not None else Path(self.mask_path).parent
        )


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


def section_slide_mpp(section: SectionInput) -> tuple[float, float]:
    """A section slide's level-0 µm/px ``(x, y)``, as the stages used it.

    In order: the tissue stage's record (``tissue.json``'s ``mpp``, which is
    the slide's metadata or the sheet's override, whichever the stage used),
    ``section.slide_mpp`` (the sheet's ``mpp``), the slide file's metadata.

    Raises
    ------
    ConfigError
        When none of them gives it, naming what was tried.
    """
    record = section.folder / "tissue.json"
    if record.is_file():
        try:
            mpp = json.loads(record.read_text(encoding="utf-8"))["mpp"]
            return float(mpp["x"]), float(mpp["y"])
        except (OSError, ValueError, KeyError, TypeError):
            pass
    if section.slide_mpp is not None:
        return mask_mpp(section.slide_mpp)
    if section.slide_path is not None and Path(section.slide_path).is_file():
        from pathpipe.io.slide import open_slide

        with open_slide(section.slide_path) as slide:
            return float(slide.info.mpp.x), float(slide.info.mpp.y)
    raise ConfigError(
        f"slide {section.slide_id!r} (section {section.section}): level-0 µm/px unknown; "
        f"expected 'mpp' in {str(record)!r}, the sheet's mpp column or a readable slide file"
    )


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, float) and math.isnan(value)) or value == ""


def check_sheet_sections(table: Any, *, sheet: str = "slide sheet") -> None:
    """Fail on a sheet whose blocks are not well formed, naming the slides.

    Rows with ``block`` but no ``section``, with ``section`` but no ``block``,
    and rows sharing a ``(block, section)`` pair are errors (the workflow's
    ``load_slides`` applies the same rules).

    Raises
    ------
    ConfigError
        Naming the slide ids of every offending row.
    """
    if "block" not in table.columns and "section" not in table.columns:
        return
    blocks = list(table["block"]) if "block" in table.columns else [None] * len(table)
    sections = list(table["section"]) if "section" in table.columns else [None] * len(table)
    rows = list(zip(table["slide_id"], blocks, sections, strict=True))
    problems = []
    no_section = [i for i, b, s in rows if not _blank(b) and _blank(s)]
    if no_section:
        problems.append(f"slides {no_section} have a block but no section")
    no_block = [i for i, b, s in rows if _blank(b) and not _blank(s)]
    if no_block:
        problems.append(f"slides {no_block} have a section but no block")
    seen: dict[tuple[str, Any], list[str]] = {}
    for i, b, s in rows:
        if not _blank(b) and not _blank(s):
            number = _section_number(s)
            seen.setdefault((str(b), s if number is None else number), []).append(i)
    duplicates = [f"{v} share block {k[0]!r} section {k[1]}" for k, v in seen.items() if len(v) > 1]
    if duplicates:
        problems.append("; ".join(duplicates))
    if problems:
        raise ConfigError(
            f"{sheet}: {'; '.join(problems)}; expected every slide of a block to have "
            "its own section number (and a section only with a block)"
        )


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
    ``tissue.json``, and its ``path`` as the slide (for colours) when that file
    exists, its ``mpp`` and its ``annotations`` (a GeoJSON path) when given.

    Raises
    ------
    ConfigError
        When the sheet has no ``block``/``section`` columns, no row of ``block``,
        a row with a block but no section (or a section but no block), two rows
        of one ``(block, section)``, or a row of ``block`` without a
        whole-number section, naming the rows.
    """
    import pandas as pd

    try:
        table = pd.read_csv(sheet, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    except (OSError, pd.errors.ParserError) as exc:
        raise ConfigError(f"cannot read slide sheet {str(sheet)!r}: {exc}") from exc
    missing = {"slide_id", "block", "section"} - set(table.columns)
    if missing:
        raise ConfigError(f"slide sheet {str(sheet)!r} lacks columns {sorted(missing)}")
    check_sheet_sections(table, sheet=f"slide sheet {str(sheet)!r}")
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
        annotations = getattr(r, "annotations", None)
        mpp = getattr(r, "mpp", None)
        out.append(
            SectionInput(
                _section_number(r.section),
                r.slide_id,
                folder / "tissue.png",
                folder / "tissue.json",
                slide,
                results_dir=folder,
                annotations_path=None if _blank(annotations) else annotations,
                slide_mpp=None if _blank(mpp) else mask_mpp(float(mpp)),
            )
        )
    return out
