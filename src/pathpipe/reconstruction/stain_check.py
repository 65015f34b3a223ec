"""A section stained differently from the rest of its block (flag ``stain``).

Serial sections are often stained alternately (H&E, then an immunostain); the
registration copes (``tests/reconstruction/``: the CIMA and Flagship pairs are
all of different stains), but a user counting cells or comparing colours across
the stack wants to know which sections differ.

A section's stain is its **optical-density direction**: ``OD = -log(RGB / 255)``
per tissue point (Beer–Lambert), points of almost no density (OD summed over the
channels < 0.15, glass) left out, the mean OD vector scaled to unit length. A
stronger or weaker stain of the same kind scales OD and keeps the direction; a
different chromogen turns it. A section is flagged when its direction is more than
:data:`STAIN_ANGLE_DEG` from the block's median direction.

Measured (16 µm/px, tissue by grey level): generated blocks with the log stain
strength varying by 0.15 between sections, every section within 3.0° of the
median (12-section seed-3 block: 0.0–2.5°; the demo block: 0.2–3.0°); different
stains 3.8–14°: CIMA lesion 1 CD31 3.8°, H&E 9.8°, proSPC 5.7°; the Flagship rat
kidney's H&E 14.0° from its Podocin and PanCytokeratin sections (1.1°, 1.5°);
Case001's H&E, Cytokeratin and Ki67 7.6–10.0° (three stains: no majority).
"""

from __future__ import annotations

import numpy as np

__all__ = ["STAIN_ANGLE_DEG", "stain_angles", "stain_direction"]

#: Degrees between a section's OD direction and its block's median beyond which
#: it is flagged ``stain`` (twice the largest seen between sections of one stain).
STAIN_ANGLE_DEG = 6.0

# OD summed over R, G, B below which a point is glass, not stain
_MIN_OD = 0.15


def stain_direction(rgb: np.ndarray) -> np.ndarray | None:
    """Unit mean optical-density vector of (N, 3) RGB values (0–255); None without stain."""
    rgb = np.asarray(rgb, dtype=np.float64).reshape(-1, 3)
    od = -np.log(np.clip(rgb, 1.0, 255.0) / 255.0)
    od = od[od.sum(axis=1) > _MIN_OD]
    if len(od) == 0:
        return None
    v = od.mean(axis=0)
    return v / np.linalg.norm(v)


def stain_angles(directions: dict[int, np.ndarray]) -> dict[int, float]:
    """Degrees between each section's direction and the (renormalised) median of all."""
    if not directions:
        return {}
    median = np.median(np.stack(list(directions.values())), axis=0)
    median /= np.linalg.norm(median)
    return {
        k: float(np.degrees(np.arccos(np.clip(float(v @ median), -1.0, 1.0))))
        for k, v in directions.items()
    }
