"""Inference: tiles in, nuclei (instance map, types, confidences) out."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from pathpipe.device import autocast, resolve_device
from pathpipe.errors import ConfigError
from pathpipe.segmentation.unet._loop import check_positive_int
from pathpipe.segmentation.unet.config import ModelConfig
from pathpipe.segmentation.unet.model import SegmentationNet, normalize_rgb
from pathpipe.segmentation.unet.postprocess import instance_types_from_probs, instances_from_maps

__all__ = ["PredictedTile", "predict_maps", "predict_tiles"]


@dataclass(frozen=True)
class PredictedTile:
    """Nuclei found in one tile.

    Attributes
    ----------
    inst : (H, W) int32 ndarray
        0 background, nuclei numbered 1..n.
    types : (n,) int64 ndarray
        Type of nucleus ``i + 1`` as a 0-based index into ``config.classes``
        (type-map value minus 1); -1 when the model has no classes.
    confidence : (n,) float32 ndarray
        Mean probability of that type over the nucleus's pixels.
    """

    inst: np.ndarray
    types: np.ndarray
    confidence: np.ndarray

    @property
    def n(self) -> int:
        """Number of nuclei."""
        return int(self.types.shape[0])


def _check_tiles(tiles: np.ndarray) -> np.ndarray:
    arr = np.asarray(tiles)
    if arr.ndim == 3:
        arr = arr[None]
    if arr.ndim != 4 or arr.shape[3] != 3 or arr.dtype != np.uint8:
        raise ConfigError(
            f"tiles have shape {arr.shape} dtype {arr.dtype}; expected (B, H, W, 3) uint8"
        )
    return arr


def _iter_maps(
    model: SegmentationNet,
    arr: np.ndarray,
    *,
    device: str | torch.device | None,
    batch_size: int,
    amp: bool,
) -> Iterator[dict[str, np.ndarray]]:
    """:func:`predict_maps` one batch at a time."""
    check_positive_int("batch_size", batch_size)
    if device is None:
        dev = next(model.parameters()).device
    else:
        dev = resolve_device(device)
        model.to(dev)
    model.eval()
    h, w = arr.shape[1:3]
    m = model.config.downsample
    ph, pw = -h % m, -w % m
    with torch.inference_mode():
        for s in range(0, arr.shape[0], batch_size):
            x = normalize_rgb(
                torch.from_numpy(np.ascontiguousarray(arr[s : s + batch_size])).to(dev)
            )
            if ph or pw:
                mode = "reflect" if ph < h and pw < w else "replicate"
                x = F.pad(x, (0, pw, 0, ph), mode=mode)
            with autocast(dev, amp):
                out = model(x)
            yield {
                "fg": out["fg"].float().softmax(1)[:, 1, :h, :w].cpu().numpy(),
                "hv": out["hv"].float()[:, :, :h, :w].cpu().numpy(),
                "type": out["type"].float().softmax(1)[:, :, :h, :w].cpu().numpy(),
            }


def predict_maps(
    model: SegmentationNet,
    tiles: np.ndarray,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    amp: bool = True,
) -> dict[str, np.ndarray]:
    """Per-pixel network outputs (probabilities and HV maps) of a stack of tiles.

    Tiles are padded at the bottom/right by reflection to a multiple of
    ``config.downsample`` and the outputs cropped back.

    Parameters
    ----------
    model : SegmentationNet
        Moved to ``device`` when one is given.
    tiles : (B, H, W, 3) uint8 ndarray
    device : str or torch.device, optional
        Default: where the model is. ``"auto"``: CUDA when available.
    batch_size : int
    amp : bool
        Autocast on CUDA (bfloat16 / float16); ignored on the CPU.

    Returns
    -------
    dict of float32 ndarrays
        ``fg`` (B, H, W) nuclear probability, ``hv`` (B, 2, H, W),
        ``type`` (B, K + 1, H, W) type probabilities (channel 0 background).
    """
    arr = _check_tiles(tiles)
    parts = list(_iter_maps(model, arr, device=device, batch_size=batch_size, amp=amp))
    return {k: np.concatenate([p[k] for p in parts]) for k in ("fg", "hv", "type")}


def predict_tiles(
    model: SegmentationNet,
    config: ModelConfig,
    tiles: np.ndarray,
    *,
    device: str | torch.device | None = None,
    batch_size: int = 8,
    amp: bool = True,
    fg_threshold: float = 0.5,
    marker_threshold: float = 0.4,
    sobel_size: int = 21,
    min_area: int = 10,
) -> list[PredictedTile]:
    """Segment and type the nuclei of a stack of tiles.

    Runs the network batched under :func:`torch.inference_mode`
    (:func:`predict_maps`), then HoVer-Net post-processing per tile
    (:func:`pathpipe.segmentation.unet.postprocess.instances_from_maps`) and per-nucleus types
    (:func:`pathpipe.segmentation.unet.postprocess.instance_types_from_probs`). Any tile size works;
    tiles should be at ``config.mpp``.

    Parameters
    ----------
    model : SegmentationNet
    config : ModelConfig
        The model's config (as returned by :func:`pathpipe.segmentation.unet.io.load_model`).
    tiles : (B, H, W, 3) uint8 ndarray
        A single (H, W, 3) tile is accepted too.
    device : str or torch.device, optional
        Default: where the model is.
    batch_size : int
        Tiles per forward pass (default 8).
    amp : bool
        Autocast on CUDA.
    fg_threshold, marker_threshold, sobel_size, min_area
        Post-processing parameters of :func:`pathpipe.segmentation.unet.postprocess.instances_from_maps`.

    Returns
    -------
    list of PredictedTile
        One per tile, in input order.
    """
    if config != model.config:
        raise ConfigError(
            "config differs from the model's own config; pass the config load_model returned"
        )
    arr = _check_tiles(tiles)
    results = []
    for maps in _iter_maps(model, arr, device=device, batch_size=batch_size, amp=amp):
        for fg, hv, type_probs in zip(maps["fg"], maps["hv"], maps["type"], strict=True):
            inst = instances_from_maps(
                fg,
                hv,
                fg_threshold=fg_threshold,
                marker_threshold=marker_threshold,
                sobel_size=sobel_size,
                min_area=min_area,
            )
            types, conf = instance_types_from_probs(inst, type_probs)
            results.append(PredictedTile(inst, types, conf))
    return results
