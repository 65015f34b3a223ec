"""Stains and Beer-Lambert composition for :mod:`pathpipe.synthetic.generate` (private).

Tissue fields (stroma, epithelial nests, clefts, fibres, glass) as functions of
level-0 coordinates, and the optical-density to RGB conversion.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pathpipe.synthetic import nuclei as _n
from pathpipe.synthetic.noise import (
    F32,
    _smoothstep,
    coarse_grid,
    key_of,
    octave_weight,
    upsample,
    value_noise_batch,
    value_noise_points,
    white_noise_grid,
)

__all__: list[str] = []

# Stain optical-density vectors of Ruifrok & Johnston (2001), "Quantification of
# histochemical staining by color deconvolution", Anal. Quant. Cytol. Histol.
# 23(4):291-299 -- the rows of ``skimage.color.rgb_from_hed``. With
# OD = c_H * H + c_E * E (Beer-Lambert, natural log), skimage's ``rgb2hed``
# recovers (c_H, c_E) / ln(1e6).
H_VEC = np.array([0.65, 0.70, 0.29])
E_VEC = np.array([0.07, 0.99, 0.11])

# --------------------------------------------------------------------------- Beer-Lambert

OD_STEPS = 2048  # look-up steps per unit optical density
OD_MAX = 8.0
_EXP_LUT = np.round(255.0 * np.exp(-np.arange(int(OD_MAX * OD_STEPS) + 1) / OD_STEPS)).astype(
    np.uint8
)


def od_to_rgb(c_h: np.ndarray, c_e: np.ndarray, od_bg: np.ndarray) -> np.ndarray:
    """Beer-Lambert composition: ``RGB = 255 exp(-(c_H H + c_E E + od_bg))``.

    Parameters
    ----------
    c_h, c_e : (h, w) float32 ndarray
        Hematoxylin and eosin concentrations, >= 0 (optical density along the
        stain vectors :data:`H_VEC`, :data:`E_VEC`, which have norm ~1).
    od_bg : (h, w) float32 ndarray
        Neutral residual optical density (glass, mounting medium, noise).

    Returns
    -------
    rgb : (h, w, 3) uint8 ndarray
        ``exp`` comes from a table in steps of 1/:data:`OD_STEPS` OD (below
        half a grey level), rounded to the nearest step.
    """
    out = np.empty((*c_h.shape, 3), dtype=np.uint8)
    bg = od_bg * F32(OD_STEPS)
    bg += F32(0.5)
    top = F32(len(_EXP_LUT) - 1)
    for ch in range(3):
        od = c_h * F32(H_VEC[ch] * OD_STEPS)
        od += c_e * F32(E_VEC[ch] * OD_STEPS)
        od += bg
        np.minimum(od, top, out=od)
        out[..., ch] = np.take(_EXP_LUT, od.astype(np.int32))
    return out


# --------------------------------------------------------------------------- tissue stains


@dataclass(frozen=True)
class Look:
    """Per-slide appearance constants (all physical lengths in µm)."""

    seed: int
    mpp: float
    h_scale: float  # slide-level stain strength (batch variation)
    e_scale: float
    od_glass: float  # neutral optical density of glass + mounting medium
    fibre_angle: float  # mean collagen fibre direction (rad)
    e_nucleus: float = 0.12  # eosin inside nuclei
    edge_um: float = 3.0  # width of the soft tissue edge


NEST_UM = 320.0  # wavelength of the epithelial-nest field
CLEFT_UM = 70.0  # wavelength of the stromal-cleft field
FIBRE_PERIOD_UM = 5.0  # spacing of collagen fibres
_STREAM_NEST, _STREAM_CLEFT, _STREAM_LO, _STREAM_MID, _STREAM_WARP, _STREAM_FIB = range(6)


def _nest_from_noise(n: np.ndarray) -> np.ndarray:
    t = np.clip(n * F32(1.6) + F32(0.5), F32(0.0), F32(1.0))
    return _smoothstep(t)


def _cleft_from_noise(n: np.ndarray) -> np.ndarray:
    return np.clip((n - F32(0.42)) * F32(6.0), F32(0.0), F32(1.0))


def nest_weight_points(look: Look, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Epithelial-nest weight in ``[0, 1]`` at level-0 points (float32)."""
    lam = NEST_UM / look.mpp
    n = value_noise_points(x, y, lam, key_of(look.seed, _STREAM_NEST, 0))
    n += F32(0.5) * value_noise_points(x, y, lam / 2, key_of(look.seed, _STREAM_NEST, 1))
    return _nest_from_noise(n / F32(1.5))


def cleft_points(look: Look, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Stromal-cleft weight in ``[0, 1]`` at level-0 points (float32)."""
    n = value_noise_points(x, y, CLEFT_UM / look.mpp, key_of(look.seed, _STREAM_CLEFT))
    return _cleft_from_noise(n)


def _coarse_tissue(
    look: Look, signed_distance, nx: np.ndarray, ny: np.ndarray, d: float, *, fibres: bool
) -> tuple[np.ndarray, dict[str, np.ndarray]] | None:
    """Tissue fraction (clefts removed) and noise fields on coarse nodes.

    Returns None where no node holds tissue.
    """
    frac = signed_distance(nx, ny)
    frac *= F32(1.0 / max(look.edge_um / look.mpp, d))
    frac += F32(0.5)
    np.clip(frac, F32(0.0), F32(1.0), out=frac)
    if not frac.any():
        return None
    fields = {  # name: (wavelength in µm, stream)
        "nest0": (NEST_UM, (_STREAM_NEST, 0)),
        "nest1": (NEST_UM / 2, (_STREAM_NEST, 1)),
        "lo": (90.0, (_STREAM_LO,)),
        "mid": (22.0, (_STREAM_MID,)),
        "cleft": (CLEFT_UM, (_STREAM_CLEFT,)),
    }
    if fibres:
        fields["fib"] = (25.0, (_STREAM_FIB,))
        fields["warp"] = (45.0, (_STREAM_WARP,))
    lam = np.array([v[0] / look.mpp for v in fields.values()])
    keys = np.array([key_of(look.seed, *v[1]) for v in fields.values()], dtype=np.int64)
    vals = value_noise_batch(
        np.broadcast_to(nx, (len(lam), len(nx))),
        np.broadcast_to(ny, (len(lam), len(ny))),
        lam,
        keys,
    )
    noise = {}
    for k, name in enumerate(fields):
        noise[name] = vals[k]
        wgt = octave_weight(lam[k], d)
        if wgt < 1.0:
            noise[name] *= F32(wgt)
    nest = noise["nest0"] + F32(0.5) * noise["nest1"]
    noise["nest"] = _nest_from_noise(nest / F32(1.5))
    frac *= F32(1.0) - F32(0.9) * _cleft_from_noise(noise["cleft"]) * (F32(1.0) - noise["nest"])
    return frac, noise


def _coarse_spacing(d: float) -> float:
    return max(8.0, 4.0 * d)


def tissue_fraction(
    look: Look, signed_distance, xs: np.ndarray, ys: np.ndarray, d: float
) -> np.ndarray:
    """Fraction of each output pixel covered by tissue (clefts excluded).

    The same field :func:`tissue_stains` multiplies the stains by:
    ``(h, w)`` float32 in ``[0, 1]``.
    """
    nx, cx, tx = coarse_grid(xs, _coarse_spacing(d))
    ny, cy, ty = coarse_grid(ys, _coarse_spacing(d))
    coarse = _coarse_tissue(look, signed_distance, nx, ny, d, fibres=False)
    if coarse is None:
        return np.zeros((len(ys), len(xs)), dtype=F32)
    return upsample(coarse[0], cx, tx, cy, ty)


FIBRE_GAIN = 0.45  # fibre contrast: E varies by a factor 1 +- ~FIBRE_GAIN across fibres


def tissue_stains(
    look: Look,
    signed_distance,
    xs: np.ndarray,
    ys: np.ndarray,
    d: float,
) -> tuple[np.ndarray, np.ndarray] | None:
    """Hematoxylin and eosin concentrations of non-nuclear tissue.

    Stroma is eosinophilic with low-frequency density variation, wavy collagen
    fibres and white clefts; epithelial nests (where nuclei cluster) carry
    paler cytoplasm. Every smooth field (tissue edge, nests, density, clefts,
    fibre warp and strength) is evaluated on a global coarse grid (spacing
    ``max(8, 4 d)`` level-0 px) and combined there into three fields
    ``A, B, C`` that are upsampled bilinearly; per pixel only the fibre profile
    is computed: ``c_E = A + B tri(phase)**3``, ``c_H = C``, where ``tri`` is a
    triangle wave of period :data:`FIBRE_PERIOD_UM` across the fibre direction
    with a noise-warped phase. Octaves finer than an output pixel fade out.

    Parameters
    ----------
    signed_distance : callable
        ``(l0_x (K,), l0_y (L,)) -> (L, K)`` signed distance to the tissue edge
        in level-0 px (``TissueLayout.signed_distance``).
    xs, ys : (w,), (h,) float64 ndarrays
        Level-0 coordinates of the output pixel centres.

    Returns
    -------
    (c_h, c_e) : two (h, w) float32 ndarrays, or None where the region holds no tissue.
    """
    nx, cx, tx = coarse_grid(xs, _coarse_spacing(d))
    ny, cy, ty = coarse_grid(ys, _coarse_spacing(d))
    period = FIBRE_PERIOD_UM / look.mpp
    fib_w = octave_weight(period, d)
    coarse = _coarse_tissue(look, signed_distance, nx, ny, d, fibres=fib_w > 0)
    if coarse is None:
        return None
    frac, noise = coarse
    nest = noise["nest"]
    stroma = F32(1.0) - nest
    mid = noise["mid"]
    dens = F32(1.0) + F32(0.18) * noise["lo"] + F32(0.10) * mid
    e_stroma = frac * stroma * dens * F32(0.55 * look.e_scale)
    e_cyto = frac * nest * dens * F32(0.36 * look.e_scale)
    c_h = frac * (stroma * F32(0.07) + nest * F32(0.11)) * (F32(1.0) + F32(0.3) * mid)
    c_h = upsample(c_h * F32(look.h_scale), cx, tx, cy, ty)

    if fib_w == 0.0:
        return c_h, upsample(e_stroma + e_cyto, cx, tx, cy, ty)
    # fibre factor 1 + gain (tri**3 - 1/4): zero mean over a period
    gain = (F32(1.0) + noise["fib"]) * F32(FIBRE_GAIN * fib_w)
    a = upsample(e_stroma * (F32(1.0) - F32(0.25) * gain) + e_cyto, cx, tx, cy, ty)
    b = upsample(e_stroma * gain, cx, tx, cy, ty)
    phase = upsample(noise["warp"] * F32(2.5), cx, tx, cy, ty)
    ang = look.fibre_angle
    phase += (ys * (np.sin(ang) / period)).astype(F32)[:, None]
    phase += (xs * (np.cos(ang) / period)).astype(F32)[None, :]
    phase -= np.floor(phase)
    phase *= F32(2.0)
    phase -= F32(1.0)
    tri = np.abs(phase, out=phase)  # 1 on a fibre, 0 between fibres
    b *= tri
    b *= tri
    b *= tri
    a += b
    return c_h, a


def glass_od(look: Look, xs: np.ndarray, ys: np.ndarray, d: float) -> np.ndarray:
    """Neutral background optical density with faint per-pixel noise."""
    od = white_noise_grid(xs, ys) * F32(0.008 / max(d, 1.0))
    od += F32(look.od_glass)
    return od


def render_region(
    look: Look, index, tissue, x0: int, y0: int, w: int, h: int, d: float
) -> tuple[np.ndarray, np.ndarray | None]:
    """Render ``(h, w)`` output pixels from level-0 ``(x0, y0)`` at downsample ``d``.

    ``index`` is a ``NucleusIndex`` and ``tissue`` a ``TissueLayout``. Tissue
    stains come first; nuclei replace them where they lie (``d == 1``) or are
    blended by coverage (``d > 1``); glass optical density is added everywhere.

    Returns
    -------
    rgb : (h, w, 3) uint8 ndarray
    labels : (h, w) int32 ndarray or None
        The level-0 label raster at ``d == 1`` when nuclei meet the region.
    """
    xs = x0 + np.arange(w) * d + (d - 1) / 2
    ys = y0 + np.arange(h) * d + (d - 1) / 2
    stains = tissue_stains(look, tissue.signed_distance, xs, ys, d)
    if stains is None:
        c_h, c_e = np.zeros((h, w), F32), np.zeros((h, w), F32)
    else:
        c_h, c_e = stains
    e_nuc = look.e_nucleus * look.e_scale
    margin = d if d > 1 else 0.0  # splatted nuclei reach one pixel out
    sub = index.query(x0 - margin, y0 - margin, x0 + (w + 1) * d, y0 + (h + 1) * d)
    labels = None
    if len(sub):
        if d == 1.0:
            labels, hema = _n.rasterise_l0(sub, x0, y0, w, h, values=True)
            inside = labels > 0
            c_h[inside] = hema[inside]
            c_e[inside] = F32(e_nuc)
        else:
            cov, hema, eos = _n.nuclear_coverage(sub, x0, y0, w, h, d, e_nuc)
            keep = F32(1.0) - cov
            c_h *= keep
            c_h += hema
            c_e *= keep
            c_e += eos
    return od_to_rgb(c_h, c_e, glass_od(look, xs, ys, d)), labels
