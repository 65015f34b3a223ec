"""Metadata of an opened slide: level geometry and the level-0 MPP with its source.

:func:`slide_info` reads a backend handle's properties into a :class:`SlideInfo`,
taking the MPP from the file's metadata when plausible, else from the value the
sheet or config gives, else failing with :class:`~pathpipe.errors.MissingMPPError`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Literal

from pathpipe.errors import ConfigError, MissingMPPError, SlideOpenError

__all__ = ["MPP", "MPP_PLAUSIBLE_RANGE", "SlideInfo", "check_positive", "slide_info"]

#: MPP values outside this range (µm per pixel) are treated as missing metadata.
#: Generic TIFFs often carry the 72-dpi default (352.8 µm/px), which is not a
#: microscope resolution.
MPP_PLAUSIBLE_RANGE: tuple[float, float] = (0.01, 100.0)

#: Relative tolerance under which a level's MPP counts as equal to the target.
_MPP_RTOL = 1e-3

MPPSource = Literal["metadata", "sheet", "config", "override"]


@dataclass(frozen=True)
class MPP:
    """Physical pixel size of level 0 in µm, and where the value came from."""

    x: float
    y: float
    source: str

    def as_dict(self) -> dict[str, Any]:
        return {"x": self.x, "y": self.y, "source": self.source}


@dataclass(frozen=True)
class SlideInfo:
    """Metadata of an opened slide.

    Attributes
    ----------
    path : str
        Absolute path of the slide file.
    backend : {"openslide", "tiffslide"}
        Backend actually used (``auto`` is resolved).
    vendor : str or None
        Format reported by the backend (``aperio``, ``generic-tiff`` ...).
    dimensions : (int, int)
        Level-0 ``(width, height)``.
    level_dimensions : tuple of (int, int)
        ``(width, height)`` of each pyramid level.
    level_downsamples : tuple of float
        Downsample of each level relative to level 0, as the backend reports it.
    mpp : MPP
        Level-0 pixel size and its source.
    objective_power : float or None
        Scanner objective magnification, if recorded.
    """

    path: str
    backend: str
    vendor: str | None
    dimensions: tuple[int, int]
    level_dimensions: tuple[tuple[int, int], ...]
    level_downsamples: tuple[float, ...]
    mpp: MPP
    objective_power: float | None

    @property
    def level_count(self) -> int:
        return len(self.level_dimensions)

    def level_scale(self, level: int) -> tuple[float, float]:
        """Exact per-axis downsample ``(sx, sy)`` of ``level`` from its dimensions."""
        l0_w, l0_h = self.dimensions
        lv_w, lv_h = self.level_dimensions[level]
        return l0_w / lv_w, l0_h / lv_h

    def level_mpp(self, level: int) -> tuple[float, float]:
        """Pixel size ``(x, y)`` in µm of ``level``."""
        sx, sy = self.level_scale(level)
        return self.mpp.x * sx, self.mpp.y * sy

    def best_level_for_mpp(self, mpp: float) -> int:
        """The coarsest level whose pixels are at least as fine as ``mpp``.

        Reading that level and downsampling keeps full detail at the target
        resolution for the least decoding work. If every level is coarser than
        ``mpp`` (upsampling), level 0 is returned.
        """
        check_positive("mpp", mpp)
        best = 0
        for level in range(self.level_count):
            lv_mpp = max(self.level_mpp(level))
            if lv_mpp <= mpp * (1 + _MPP_RTOL):
                best = level
        return best

    def as_dict(self) -> dict[str, Any]:
        return {
            "path": self.path,
            "backend": self.backend,
            "vendor": self.vendor,
            "dimensions": list(self.dimensions),
            "level_dimensions": [list(d) for d in self.level_dimensions],
            "level_downsamples": list(self.level_downsamples),
            "mpp": self.mpp.as_dict(),
            "objective_power": self.objective_power,
        }


def check_positive(name: str, value: float) -> None:
    """ConfigError unless ``value`` is a finite number > 0."""
    if not (isinstance(value, int | float) and math.isfinite(value) and value > 0):
        raise ConfigError(f"{name} must be a positive number, received {value!r}")


def slide_info(
    handle: Any, backend: str, path: str, *, mpp: float | None, mpp_source: str
) -> SlideInfo:
    """The :class:`SlideInfo` of an open openslide/tiffslide ``handle`` of ``path``."""
    try:
        props = dict(handle.properties)
        dims = tuple(int(v) for v in handle.dimensions)
        level_dims = tuple(tuple(int(v) for v in d) for d in handle.level_dimensions)
        downs = tuple(float(d) for d in handle.level_downsamples)
    except Exception as exc:  # lazy metadata parsing of a corrupt file
        raise SlideOpenError(
            path, f"{backend} cannot read the slide structure: {type(exc).__name__}: {exc}"
        ) from exc
    prefix = "openslide" if backend == "openslide" else "tiffslide"
    vendor = props.get(f"{prefix}.vendor")
    meta_x = _float_or_none(props.get(f"{prefix}.mpp-x"))
    meta_y = _float_or_none(props.get(f"{prefix}.mpp-y"))
    lo, hi = MPP_PLAUSIBLE_RANGE
    if meta_x is not None and meta_y is None:
        meta_y = meta_x
    if meta_y is not None and meta_x is None:
        meta_x = meta_y
    plausible = meta_x is not None and lo <= meta_x <= hi and lo <= meta_y <= hi
    if plausible:
        slide_mpp = MPP(meta_x, meta_y, "metadata")
    elif mpp is not None:
        slide_mpp = MPP(float(mpp), float(mpp), mpp_source)
    else:
        found = (
            "no MPP metadata"
            if meta_x is None
            else f"implausible MPP metadata {meta_x:g}×{meta_y:g} µm/px (expected {lo}–{hi})"
        )
        raise MissingMPPError(
            path,
            f"{found}; give the level-0 µm per pixel in the slide sheet's 'mpp' column "
            "or as slide.mpp in the config",
        )
    if dims[0] <= 0 or dims[1] <= 0:
        raise SlideOpenError(path, f"empty level 0 of size {dims}")
    return SlideInfo(
        path=path,
        backend=backend,
        vendor=vendor,
        dimensions=dims,  # type: ignore[arg-type]
        level_dimensions=level_dims,  # type: ignore[arg-type]
        level_downsamples=downs,
        mpp=slide_mpp,
        objective_power=_float_or_none(props.get(f"{prefix}.objective-power")),
    )


def _float_or_none(value: Any) -> float | None:
    if value in (None, ""):
        return None
    try:
        out = float(value)
    except (TypeError, ValueError):
        return None
    return out if math.isfinite(out) and out > 0 else None
