"""Tissue detection on a low-resolution image of the slide.

Classical method, as in CLAM and HistoQC: HSV saturation → median blur →
Otsu (or fixed) threshold → morphological closing → hole filling → removal of
regions smaller than a physical area. Every size is given in µm or µm² and
converted with the image's MPP, so results do not depend on the resolution
the detection runs at.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param

__all__ = ["TissueParams", "detect_tissue", "overlay_mask", "run_tissue", "saturation"]

#: Otsu thresholds below this saturation are raised to it: on a slide with no
#: tissue Otsu would otherwise split the glass noise in two.
MIN_OTSU_SATURATION = 0.05


@dataclass(frozen=True)
class TissueParams:
    """Parameters of :func:`detect_tissue` (config block ``tissue:``).

    Attributes
    ----------
    detection_mpp : float
        µm per pixel of the image detection runs on (default 8).
    threshold : "otsu" or float
        Saturation threshold in [0, 1], or ``"otsu"`` for Otsu's method
        (floored at :data:`MIN_OTSU_SATURATION`).
    median_um : float
        Edge of the median filter window in µm (0 disables).
    closing_um : float
        Radius of the disk used for morphological closing in µm (0 disables).
    min_region_um2 : float
        Connected tissue regions smaller than this area (µm²) are dropped.
    fill_holes : bool
        Fill holes fully enclosed by tissue.
    """

    detection_mpp: float = param(8.0, "µm/px of the image tissue is detected on", gt=0)
    threshold: str | float = param(
        "otsu", "'otsu' or a saturation threshold in [0, 1]", kind="threshold", ge=0, le=1
    )
    median_um: float = param(40.0, "edge of the median filter window, µm (0 disables)", ge=0)
    closing_um: float = param(32.0, "closing disk radius, µm (0 disables)", ge=0)
    min_region_um2: float = param(50_000.0, "smallest tissue region kept, µm²", ge=0)
    fill_holes: bool = param(True, "fill holes enclosed by tissue")

    def __post_init__(self) -> None:
        check_params(self, "tissue")


def saturation(rgb: np.ndarray) -> np.ndarray:
    """HSV saturation of an RGB image.

    Parameters
    ----------
    rgb : (M, N, 3) uint8 ndarray

    Returns
    -------
    s : (M, N) float32 ndarray in [0, 1]; ``(max - min) / max``, 0 where max is 0.
    """
    if rgb.ndim != 3 or rgb.shape[2] != 3:
        raise ConfigError(f"expected an (M, N, 3) RGB image, received shape {rgb.shape}")
    mx = rgb.max(axis=2).astype(np.float32)
    mn = rgb.min(axis=2).astype(np.float32)
    with np.errstate(invalid="ignore", divide="ignore"):
        s = np.where(mx > 0, (mx - mn) / mx, 0.0)
    return s.astype(np.float32)


def detect_tissue(
    rgb: np.ndarray, *, mpp: float, params: TissueParams | None = None
) -> tuple[np.ndarray, dict[str, Any]]:
    """Detect tissue in a low-resolution RGB image.

    Parameters
    ----------
    rgb : (M, N, 3) uint8 ndarray
        The slide at ``mpp`` µm per pixel.
    mpp : float
        Pixel size of ``rgb`` in µm.
    params : TissueParams, optional

    Returns
    -------
    mask : (M, N) bool ndarray
        True on tissue.
    details : dict
        ``threshold`` used (saturation), ``n_regions`` kept, and the pixel sizes
        the physical parameters turned into.
    """
    from scipy import ndimage as ndi
    from skimage import filters, morphology

    params = params or TissueParams()
    sat = saturation(rgb)
    median_px = _odd(params.median_um / mpp)
    if median_px >= 3:
        sat_u8 = np.round(sat * 255).astype(np.uint8)
        sat = ndi.median_filter(sat_u8, size=median_px).astype(np.float32) / 255.0
    if params.threshold == "otsu":
        if float(sat.max()) - float(sat.min()) < 1e-6:
            thr = MIN_OTSU_SATURATION
        else:
            thr = max(float(filters.threshold_otsu(sat)), MIN_OTSU_SATURATION)
    else:
        thr = float(params.threshold)
    mask = sat > thr
    closing_px = round(params.closing_um / mpp)
    if closing_px >= 1:
        # Pad so closing does not erode tissue that touches the image border.
        pad = closing_px + 1
        padded = np.pad(mask, pad, mode="edge")
        padded = ndi.binary_closing(padded, structure=morphology.disk(closing_px))
        mask = padded[pad:-pad, pad:-pad]
    if params.fill_holes:
        mask = ndi.binary_fill_holes(mask)
    min_area_px = params.min_region_um2 / (mpp * mpp)
    labels, n = ndi.label(mask)
    kept = 0
    if n:
        areas = np.bincount(labels.ravel(), minlength=n + 1)
        keep = areas >= min_area_px
        keep[0] = False
        mask = keep[labels]
        kept = int(keep.sum())
    return mask.astype(bool), {
        "threshold": thr,
        "n_regions": kept,
        "median_px": median_px,
        "closing_px": closing_px,
        "min_region_px": min_area_px,
    }


def _odd(x: float) -> int:
    n = round(x)
    if n < 3:
        return 0
    return n if n % 2 else n + 1


def overlay_mask(
    rgb: np.ndarray, mask: np.ndarray, *, color: tuple[int, int, int] = (0, 170, 60)
) -> np.ndarray:
    """Tint tissue on a thumbnail and draw its outline.

    Parameters
    ----------
    rgb : (M, N, 3) uint8 ndarray
    mask : (M, N) bool ndarray

    Returns
    -------
    (M, N, 3) uint8 ndarray
    """
    from scipy import ndimage as ndi

    if mask.shape != rgb.shape[:2]:
        raise ConfigError(f"mask shape {mask.shape} does not match image shape {rgb.shape[:2]}")
    out = rgb.astype(np.float32)
    tint = np.asarray(color, dtype=np.float32)
    out[mask] = 0.7 * out[mask] + 0.3 * tint
    edge = mask & ~ndi.binary_erosion(mask, iterations=max(1, round(min(mask.shape) / 400)))
    out[edge] = tint
    return np.clip(out, 0, 255).astype(np.uint8)


def run_tissue(
    slide_path: str | os.PathLike[str],
    *,
    mask_path: str | os.PathLike[str],
    overlay_path: str | os.PathLike[str],
    qc_path: str | os.PathLike[str],
    backend: str = "auto",
    slide_mpp: float | None = None,
    slide_mpp_source: str = "override",
    params: TissueParams | None = None,
) -> dict[str, Any]:
    """Detect tissue on a slide and write mask, overlay and QC JSON.

    The mask PNG covers the whole slide at ``params.detection_mpp`` (rounded up),
    so its scale to level 0 is ``slide width / mask width``. Outputs are written
    atomically.

    Returns
    -------
    dict
        The QC record written to ``qc_path``.
    """
    from PIL import Image

    from pathpipe.io.slide import open_slide
    from pathpipe.io.storage import atomic_file, provenance, source_record, write_json

    params = params or TissueParams()
    with open_slide(
        slide_path, backend=backend, mpp=slide_mpp, mpp_source=slide_mpp_source
    ) as slide:
        thumb = slide.thumbnail_at_mpp(params.detection_mpp)
        info = slide.info
    l0_w, l0_h = info.dimensions
    mask_mpp_x = l0_w * info.mpp.x / thumb.shape[1]
    mask_mpp_y = l0_h * info.mpp.y / thumb.shape[0]
    mask, details = detect_tissue(thumb, mpp=(mask_mpp_x + mask_mpp_y) / 2, params=params)

    for out in (mask_path, overlay_path):
        Path(out).parent.mkdir(parents=True, exist_ok=True)
    with atomic_file(mask_path) as tmp:
        Image.fromarray((mask * 255).astype(np.uint8), mode="L").save(tmp, format="PNG")
    with atomic_file(overlay_path) as tmp:
        Image.fromarray(overlay_mask(thumb, mask)).save(tmp, format="PNG")

    area_mm2 = float(mask.sum()) * mask_mpp_x * mask_mpp_y / 1e6
    record = {
        "slide": info.path,
        "tissue_area_mm2": area_mm2,
        "tissue_fraction": float(mask.mean()),
        "mask_shape": list(mask.shape),
        "mask_mpp": [mask_mpp_x, mask_mpp_y],
        "slide_info": info.as_dict(),
        "mpp": info.mpp.as_dict(),
        "details": details,
        "provenance": provenance(
            stage="tissue",
            params=asdict(params),
            source=source_record(info.path),
        ),
    }
    write_json(qc_path, record)
    return record


def load_mask(path: str | os.PathLike[str]) -> np.ndarray:
    """Read a tissue mask PNG written by :func:`run_tissue` as a bool array."""
    from PIL import Image, UnidentifiedImageError

    from pathpipe.errors import StorageError

    try:
        with Image.open(path) as img:
            arr = np.asarray(img.convert("L"))
    except (OSError, UnidentifiedImageError) as exc:
        raise StorageError(f"tissue mask {str(path)!r} is not a readable PNG: {exc}") from exc
    return arr > 127
