"""From network outputs to nuclei: HoVer-Net post-processing and instance types.

Graham S, Vu QD, Raza SEA, et al. "HoVer-Net: Simultaneous segmentation and
classification of nuclei in multi-tissue histology images." Medical Image
Analysis 58 (2019) 101563, section 3.3 (eqs. 6–7), following the reference
implementation (``models/hovernet/post_proc.py``):

1. ``q = fg_prob >= fg_threshold``, small blobs removed.
2. Min–max normalise each distance map, take its Sobel derivative along its
   own axis (∂h/∂x, ∂v/∂y), and map it to ``S = 1 - minmax(∂)``: close to 1
   where the map falls steeply, i.e. on the +1 → -1 jump between touching
   nuclei (eq. 6 ``S_m = max(H_x, V_y)``).
3. Energy ``E = (1 - S_m) · q``, smoothed; markers
   ``M = σ(q - τ(S_m, k))`` with ``τ`` the threshold ``k`` (eq. 7), holes
   filled, opened, small ones removed.
4. Marker-controlled watershed of ``-E`` inside ``q``; a blob that received
   no marker is kept as one nucleus (the reference code drops it).
"""

from __future__ import annotations

import numpy as np
from scipy import ndimage as ndi

from pathpipe.errors import ConfigError

__all__ = ["instance_types_from_probs", "instances_from_maps", "sobel"]


def _sobel_kernels(size: int) -> tuple[np.ndarray, np.ndarray]:
    """Smoothing and derivative kernels of an OpenCV-style ``size`` Sobel.

    Smoothing: binomial coefficients, ``[1, 1]`` convolved ``size - 1`` times;
    derivative: ``[1, 1]`` convolved ``size - 2`` times with ``[-1, 0, 1]``'s
    half ``[-1, 1]`` (``cv2.getDerivKernels``). Both scaled to unit ℓ1 norm of
    the smoothing kernel (the output is min–max normalised anyway).
    """
    smooth = np.array([1.0])
    for _ in range(size - 1):
        smooth = np.convolve(smooth, [1.0, 1.0])
    deriv = np.array([1.0])
    for _ in range(size - 2):
        deriv = np.convolve(deriv, [1.0, 1.0])
    deriv = np.convolve(deriv, [1.0, -1.0])  # as a convolution: f(x+1) - f(x-1) direction
    return smooth / smooth.sum(), deriv / smooth.sum()


def sobel(image: np.ndarray, *, axis: int, size: int = 21) -> np.ndarray:
    """Sobel derivative along ``axis`` (0 rows/down, 1 columns/right), smoothed across it.

    Parameters
    ----------
    image : (H, W) float ndarray
    axis : {0, 1}
    size : int
        Odd kernel size ≥ 3 (HoVer-Net uses 21 at 0.25 µm/px).

    Returns
    -------
    (H, W) float64 ndarray
        Positive where ``image`` increases along ``axis``; borders mirrored
        (OpenCV's default ``BORDER_REFLECT_101``).
    """
    if not (isinstance(size, int) and size >= 3 and size % 2 == 1):
        raise ConfigError(f"sobel size={size!r}; expected an odd integer >= 3")
    smooth, deriv = _sobel_kernels(size)
    img = np.asarray(image, np.float64)
    out = ndi.convolve1d(img, deriv, axis=axis, mode="mirror")
    return ndi.convolve1d(out, smooth, axis=1 - axis, mode="mirror")


def _minmax(x: np.ndarray) -> np.ndarray:
    lo, hi = float(x.min()), float(x.max())
    if hi - lo <= 0:
        return np.zeros_like(x, dtype=np.float64)
    return (x - lo) / (hi - lo)


def _remove_small(labels: np.ndarray, min_area: int) -> np.ndarray:
    if min_area <= 1 or labels.max() == 0:
        return labels
    area = np.bincount(labels.ravel())
    small = area < min_area
    small[0] = False
    labels = labels.copy()
    labels[small[labels]] = 0
    return labels


def _relabel(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    lut = np.zeros(int(labels.max()) + 1, np.int32)
    lut[ids] = np.arange(1, ids.size + 1, dtype=np.int32)
    return lut[labels]


def instances_from_maps(
    fg_prob: np.ndarray,
    hv: np.ndarray,
    *,
    fg_threshold: float = 0.5,
    marker_threshold: float = 0.4,
    sobel_size: int = 21,
    min_area: int = 10,
) -> np.ndarray:
    """Nucleus instances from foreground probability and HV maps (HoVer-Net).

    Parameters
    ----------
    fg_prob : (H, W) float ndarray
        Probability that a pixel is nuclear.
    hv : (2, H, W) float ndarray
        Horizontal and vertical distance maps (:func:`pathpipe.segmentation.unet.targets.hv_maps`).
    fg_threshold : float
        Nuclear pixels are ``fg_prob >= fg_threshold`` (0.5).
    marker_threshold : float
        ``k`` of eq. 7: pixels whose edge score ``S_m`` reaches it are cut from
        the markers (0.4 as in the reference implementation).
    sobel_size : int
        Sobel kernel size (21 in the reference implementation at 0.25 µm/px;
        smaller suits smaller nuclei).
    min_area : int
        Blobs, markers and final instances smaller than this many pixels are
        dropped (10).

    Returns
    -------
    inst : (H, W) int32 ndarray
        0 background, nuclei numbered 1..n.
    """
    from skimage.morphology import disk
    from skimage.segmentation import watershed

    fg = np.asarray(fg_prob, np.float64)
    hv = np.asarray(hv, np.float64)
    if fg.ndim != 2 or hv.shape != (2, *fg.shape):
        raise ConfigError(
            f"fg_prob shape {fg.shape} and hv shape {hv.shape}; expected (H, W) and (2, H, W)"
        )
    if not (isinstance(min_area, int) and min_area >= 0):
        raise ConfigError(f"min_area={min_area!r}; expected a non-negative integer of pixels")

    blobs, _ = ndi.label(fg >= fg_threshold)
    blobs = _remove_small(blobs, min_area)
    q = (blobs > 0).astype(np.float64)
    if not q.any():
        return np.zeros(fg.shape, np.int32)

    # Eq. 6: S_m = max(H_x, V_y), each the min-max normalised Sobel derivative
    # of the min-max normalised map, flipped so that steep falls score 1.
    s_h = 1.0 - _minmax(sobel(_minmax(hv[0]), axis=1, size=sobel_size))
    s_v = 1.0 - _minmax(sobel(_minmax(hv[1]), axis=0, size=sobel_size))
    s_m = np.maximum(s_h, s_v)
    s_m = np.clip(s_m - (1.0 - q), 0.0, None)

    # Energy landscape for the watershed: high inside nuclei, low on edges.
    energy = -ndi.gaussian_filter((1.0 - s_m) * q, sigma=0.8, truncate=1.25)  # cv2 3×3 blur

    # Eq. 7: markers are the nuclear pixels away from edges.
    marker = np.clip(q - (s_m >= marker_threshold), 0, None) > 0
    marker = ndi.binary_fill_holes(marker)
    marker = ndi.binary_opening(marker, structure=disk(2))
    markers, _ = ndi.label(marker)
    markers = _remove_small(markers, min_area)

    inst = watershed(energy, markers=markers, mask=q > 0).astype(np.int32)

    # Blobs without a marker (nuclei too small to survive the opening, or a
    # flat HV map) would vanish; unlike the reference code, keep them whole.
    has_marker = np.bincount(blobs[markers > 0], minlength=int(blobs.max()) + 1) > 0
    orphan = ~has_marker
    orphan[0] = False
    if orphan.any():
        keep = orphan[blobs]
        inst[keep] = blobs[keep] + int(inst.max())
    return _relabel(_remove_small(inst, min_area))


def instance_types_from_probs(
    inst: np.ndarray, type_probs: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Type of each instance: the class of highest mean probability over its pixels.

    For instance ``i`` with pixels ``P_i`` and class probabilities ``p_k``
    (``k = 1..K``; channel 0, background, is excluded)::

        m_ik = mean_{p in P_i} p_k(p),  type_i = argmax_k m_ik - 1,  conf_i = max_k m_ik

    Parameters
    ----------
    inst : (H, W) integer ndarray
        Instances numbered 1..n (0 background).
    type_probs : (K + 1, H, W) float ndarray
        Softmax of the type head, channel 0 background.

    Returns
    -------
    types : (n,) int64 ndarray
        0-based class index (type-map value minus 1) of instance ``i + 1``;
        -1 for every instance when the model has no classes (``K = 0``).
    confidence : (n,) float32 ndarray
        ``m_ik`` of that class (NaN when ``K = 0``).
    """
    inst = np.asarray(inst)
    probs = np.asarray(type_probs, np.float64)
    if probs.ndim != 3 or probs.shape[1:] != inst.shape or probs.shape[0] < 1:
        raise ConfigError(
            f"type_probs shape {probs.shape} for inst shape {inst.shape}; expected (K + 1, H, W)"
        )
    n = int(inst.max(initial=0))
    if n == 0:
        return np.zeros(0, np.int64), np.zeros(0, np.float32)
    k = probs.shape[0] - 1
    if k == 0:
        return np.full(n, -1, np.int64), np.full(n, np.nan, np.float32)
    flat = inst.ravel()
    area = np.bincount(flat, minlength=n + 1)[1:].astype(np.float64)
    means = (
        np.stack(
            [
                np.bincount(flat, weights=probs[c].ravel(), minlength=n + 1)[1:]
                for c in range(1, k + 1)
            ],
            axis=1,
        )
        / np.maximum(area, 1.0)[:, None]
    )
    types = means.argmax(axis=1).astype(np.int64)
    conf = means[np.arange(n), types].astype(np.float32)
    return types, conf
