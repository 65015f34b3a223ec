"""The nuclei table of a synthetic slide and its bucket-grid index for region queries."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd

from pathpipe.errors import ConfigError
from pathpipe.synthetic import nuclei as _n
from pathpipe.synthetic.spec import CLASS_CODES

__all__ = ["NUCLEI_COLUMNS", "NucleusIndex", "index_nuclei", "nucleus_arrays_from_table"]

_HARMONIC_COLS = [c for k in _n.HARMONICS for c in (f"h{k}_amp", f"h{k}_phase")]
NUCLEI_COLUMNS = [
    "nucleus_id",
    "l0_x",
    "l0_y",
    "radius_px",
    "axis_ratio",
    "angle",
    *_HARMONIC_COLS,
    "texture_seed",
    "hematoxylin",
    "chromatin_contrast",
    "chromatin_grain_px",
    "cell_type",
    "nuclear_class",
    "area_px",
]


def _class_codes(cell_type: np.ndarray, nuclear_class: np.ndarray) -> np.ndarray:
    codes = np.array([CLASS_CODES[c] for c in nuclear_class], dtype=np.uint8)
    codes[np.asarray(cell_type) == "lymphocyte"] = CLASS_CODES["lymphocyte"]
    return codes


def nucleus_arrays_from_table(nuclei: pd.DataFrame) -> _n.NucleusArrays:
    missing = [c for c in NUCLEI_COLUMNS if c not in nuclei.columns and c != "area_px"]
    if missing:
        raise ConfigError(f"nuclei table lacks columns {missing}; expected {NUCLEI_COLUMNS}")
    k = _n.HARMONICS
    return _n.nucleus_arrays(
        nucleus_id=nuclei["nucleus_id"].to_numpy(),
        class_code=_class_codes(nuclei["cell_type"].to_numpy(), nuclei["nuclear_class"].to_numpy()),
        l0_x=nuclei["l0_x"].to_numpy(),
        l0_y=nuclei["l0_y"].to_numpy(),
        radius_px=nuclei["radius_px"].to_numpy(),
        axis_ratio=nuclei["axis_ratio"].to_numpy(),
        angle=nuclei["angle"].to_numpy(),
        amps=nuclei[[f"h{i}_amp" for i in k]].to_numpy(),
        phases=nuclei[[f"h{i}_phase" for i in k]].to_numpy(),
        hematoxylin=nuclei["hematoxylin"].to_numpy(),
        chromatin_contrast=nuclei["chromatin_contrast"].to_numpy(),
        chromatin_grain_px=nuclei["chromatin_grain_px"].to_numpy(),
        texture_seed=nuclei["texture_seed"].to_numpy(),
    )


class NucleusIndex:
    """Bucket-grid index of a nuclei table for fast region queries.

    Build once with :func:`index_nuclei` and pass it instead of the table to
    :func:`render_rgb` / :func:`render_labels` when rendering many regions.
    """

    _CELL = 512.0

    def __init__(self, nuclei: pd.DataFrame) -> None:
        nuclei = nuclei.sort_values("nucleus_id", kind="stable")
        self.arrays = (
            _n.nucleus_arrays_empty() if len(nuclei) == 0 else nucleus_arrays_from_table(nuclei)
        )
        a = self.arrays
        self.max_id = int(a.nucleus_id.max()) if len(a) else 0
        self.class_lut = np.zeros(self.max_id + 1, dtype=np.uint8)
        self.class_lut[a.nucleus_id] = a.class_code
        self._max_ext = float(max(a.ext_x.max(), a.ext_y.max())) if len(a) else 0.0
        col = np.floor(a.cx / self._CELL).astype(np.int64)
        row = np.floor(a.cy / self._CELL).astype(np.int64)
        self._ncol = int(col.max()) + 2 if len(a) else 1
        keys = row * self._ncol + np.clip(col, 0, None)
        self._perm = np.argsort(keys, kind="stable")
        self._keys = keys[self._perm]

    def query(self, l0_x0: float, l0_y0: float, l0_x1: float, l0_y1: float) -> _n.NucleusArrays:
        """Nuclei whose bounding box meets ``[x0, x1] x [y0, y1]``, in id order."""
        a = self.arrays
        if len(a) == 0:
            return a
        m, cell = self._max_ext, self._CELL
        c_lo = max(math.floor((l0_x0 - m) / cell), 0)
        c_hi = min(math.floor((l0_x1 + m) / cell), self._ncol - 1)
        r_lo = math.floor((l0_y0 - m) / cell)
        r_hi = math.floor((l0_y1 + m) / cell)
        if c_hi < c_lo or r_hi < r_lo:
            return a.take(np.zeros(0, dtype=np.int64))
        rows = np.arange(r_lo, r_hi + 1) * self._ncol
        lo = np.searchsorted(self._keys, rows + c_lo)
        hi = np.searchsorted(self._keys, rows + c_hi, side="right")
        idx = np.concatenate([self._perm[s:e] for s, e in zip(lo, hi, strict=True)])
        idx.sort()
        hit = (
            (a.cx[idx] + a.ext_x[idx] >= l0_x0)
            & (a.cx[idx] - a.ext_x[idx] <= l0_x1)
            & (a.cy[idx] + a.ext_y[idx] >= l0_y0)
            & (a.cy[idx] - a.ext_y[idx] <= l0_y1)
        )
        return a.take(idx[hit])


def index_nuclei(nuclei: pd.DataFrame | NucleusIndex) -> NucleusIndex:
    """Index a :func:`make_nuclei` table for region queries (no-op on an index)."""
    return nuclei if isinstance(nuclei, NucleusIndex) else NucleusIndex(nuclei)
