"""Placement of synthetic nuclei for :mod:`pathpipe.synthetic.generate` (private).

Candidates are proposed uniformly over the slide, thinned by tissue, clefts and
a nest-weight field, and accepted by a hard-core rule in random order.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING

import numpy as np

from pathpipe.synthetic import render as _r
from pathpipe.synthetic.nuclei import HARMONICS

if TYPE_CHECKING:
    from pathpipe.synthetic.spec import NucleusClassParams, SyntheticSlideSpec, TissueLayout

__all__: list[str] = []

OVERSAMPLE = 2.0  # candidates per target nucleus before hard-core thinning
HARD_CORE = 0.9  # reject centres closer than this times the sum of radii
MAX_HARMONIC_SUM = 0.35  # cap on sum |a_k|, keeps r(theta) > 0.65


def draw_shapes(
    rng: np.random.Generator, n: int, p: NucleusClassParams, mpp: float, h_scale: float
) -> dict[str, np.ndarray]:
    """Random shape and stain parameters of ``n`` nuclei of one class.

    Radius log-normal (mean ``radius_um``, sd ``radius_sd_um``, clipped to
    [0.5, 2.2] x mean); harmonic amplitudes ``a_k = irregularity |z| / sqrt(k-1)``
    with ``z ~ N(0, 1)``, scaled down where ``sum |a_k|`` would exceed
    :data:`MAX_HARMONIC_SUM`; phases, angle, axis ratio uniform; stain
    parameters jittered around the class values (hematoxylin also by the
    slide's stain strength ``h_scale``). ``extent_px`` bounds the shape.
    """
    cv2 = math.log1p((p.radius_sd_um / p.radius_um) ** 2)
    r_um = np.exp(math.log(p.radius_um) - cv2 / 2 + math.sqrt(cv2) * rng.standard_normal(n))
    r_um = np.clip(r_um, 0.5 * p.radius_um, 2.2 * p.radius_um)
    k = np.asarray(HARMONICS, dtype=np.float64)
    amps = p.irregularity * np.abs(rng.standard_normal((n, len(k)))) / np.sqrt(k - 1)
    total = amps.sum(axis=1, keepdims=True)
    amps *= np.minimum(1.0, MAX_HARMONIC_SUM / np.maximum(total, 1e-12))
    out = {
        "radius_px": r_um / mpp,
        "axis_ratio": rng.uniform(*p.axis_ratio, n),
        "angle": rng.uniform(0.0, np.pi, n),
        "amps": amps,
        "phases": rng.uniform(0.0, 2 * np.pi, (n, len(k))),
        "texture_seed": rng.integers(0, 2**31 - 1, n),
        "hematoxylin": p.hematoxylin * h_scale * rng.uniform(0.9, 1.1, n),
        "chromatin_contrast": p.chromatin_contrast * rng.uniform(0.8, 1.2, n),
        "chromatin_grain_px": p.chromatin_grain_um / mpp * rng.uniform(0.85, 1.15, n),
    }
    bound = 1.0 + amps.sum(axis=1)
    out["extent_px"] = out["radius_px"] * bound / np.sqrt(out["axis_ratio"]) + 1.0
    return out


def candidates(
    rng: np.random.Generator,
    spec: SyntheticSlideSpec,
    tissue: TissueLayout,
    look: _r.Look,
    *,
    n_wanted: int,
    params: NucleusClassParams,
    epithelial: bool,
) -> dict[str, np.ndarray]:
    """Thinned uniform proposals: inside tissue, outside clefts, nest-weighted.

    Returns up to ``n_wanted`` candidates (fewer only where the tissue cannot
    hold a nucleus of this class fully inside it), as the columns of
    :func:`draw_shapes` plus ``l0_x``, ``l0_y`` and ``epithelial``.
    """
    edge_px = look.edge_um / spec.mpp
    parts = [{k: v[:0] for k, v in draw_shapes(rng, 0, params, spec.mpp, look.h_scale).items()}]
    parts[0]["l0_x"] = parts[0]["l0_y"] = np.zeros(0)
    have, accept_rate = 0, 0.3
    for _ in range(32):  # at a 2 % acceptance floor, 32 rounds propose > 50 x n_wanted
        if have >= n_wanted:
            break
        n = int((n_wanted - have) / accept_rate * 1.1) + 64
        sh = draw_shapes(rng, n, params, spec.mpp, look.h_scale)
        x = rng.uniform(0, spec.width, n)
        y = rng.uniform(0, spec.height, n)
        u = rng.uniform(0, 1, n)
        nest = _r.nest_weight_points(look, x, y)
        weight = 0.35 + 0.65 * nest if epithelial else 1.0 - 0.75 * nest
        ext = sh["extent_px"]
        ok = tissue.signed_distance_at(x, y) > ext + edge_px
        ok &= (x >= ext) & (x <= spec.width - 1 - ext) & (y >= ext) & (y <= spec.height - 1 - ext)
        ok &= _r.cleft_points(look, x, y) < 0.1
        ok &= u < weight
        accept_rate = max(ok.mean(), 0.02)
        sh = {k: v[ok] for k, v in sh.items()}
        sh["l0_x"], sh["l0_y"] = x[ok], y[ok]
        parts.append(sh)
        have += int(ok.sum())
    out = {k: np.concatenate([p[k] for p in parts])[:n_wanted] for k in parts[0]}
    out["epithelial"] = np.full(len(out["l0_x"]), epithelial)
    return out


def greedy_hard_core(x: np.ndarray, y: np.ndarray, r: np.ndarray) -> np.ndarray:
    """Sequential hard-core acceptance in index order, vectorised.

    Candidate ``j`` is accepted when no accepted ``i < j`` lies closer than
    ``0.9 (r_i + r_j)``. Computed in rounds (a candidate whose lower-index
    conflicting candidates are all decided is decided next), which yields the
    same set as the sequential loop.
    """
    from scipy.spatial import cKDTree

    n = len(x)
    if n == 0:
        return np.zeros(0, dtype=bool)
    pts = np.column_stack([x, y])
    pairs = cKDTree(pts).query_pairs(2 * HARD_CORE * float(r.max()), output_type="ndarray")
    if len(pairs):
        i, j = pairs.min(axis=1), pairs.max(axis=1)
        close = np.hypot(x[i] - x[j], y[i] - y[j]) < HARD_CORE * (r[i] + r[j])
        i, j = i[close], j[close]
    else:
        i = j = np.zeros(0, dtype=np.int64)
    accepted = np.zeros(n, dtype=bool)
    undecided = np.ones(n, dtype=bool)
    while undecided.any():
        live = undecided[i] & undecided[j]
        blocked = np.zeros(n, dtype=bool)
        blocked[j[live]] = True
        newly = undecided & ~blocked
        accepted |= newly
        undecided &= ~newly
        undecided[j[newly[i]]] = False
    return accepted
