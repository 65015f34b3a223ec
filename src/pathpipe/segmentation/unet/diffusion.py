"""DDPM pretraining of the segmentation backbone on unlabelled tiles.

Ho J, Jain A, Abbeel P. "Denoising diffusion probabilistic models."
NeurIPS 2020. With the linear variance schedule ``β_1 = 1e-4 … β_T = 0.02``
(section 4) and ``ᾱ_t = ∏_{s≤t} (1 - β_s)``, every step

1. draws clean tiles ``x_0`` (random crops, flips, quarter turns, scaled to
   [-1, 1]), ``t ~ Uniform{0, …, T-1}`` and ``ε ~ N(0, I)``;
2. forms ``x_t = √ᾱ_t x_0 + √(1 - ᾱ_t) ε`` (eq. 4;
   :meth:`diffusers.DDPMScheduler.add_noise`);
3. minimises the simplified objective ``‖ε - ε_θ(x_t, t)‖²`` (eq. 14).

``ε_θ`` is the :class:`diffusers.UNet2DModel` of :func:`pathpipe.segmentation.unet.model.build_unet`,
the same architecture as the segmentation backbone, so
``train_segmentation(init=out_dir)`` loads it unchanged. No EMA of the weights
is kept (Ho et al. use one for sampling; the backbone is fine-tuned anyway).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pathpipe.device import resolve_device
from pathpipe.errors import ConfigError
from pathpipe.segmentation.unet._loop import LoopSettings, TrainResult, train_and_save
from pathpipe.segmentation.unet.config import ModelConfig
from pathpipe.segmentation.unet.data import check_mpp, tile_batches
from pathpipe.segmentation.unet.io import save_diffusion
from pathpipe.segmentation.unet.model import build_unet, normalize_rgb

__all__ = ["DEFAULT_LR", "make_scheduler", "pretrain_diffusion"]

#: Initial learning rate when none is given (Ho et al. 2020, appendix B).
DEFAULT_LR = 2e-4
#: Linear β schedule of Ho et al. (2020), section 4.
BETA_START, BETA_END = 1e-4, 0.02


def make_scheduler(config: ModelConfig) -> Any:
    """The :class:`diffusers.DDPMScheduler`: ``config.diffusion_steps`` steps, linear β 1e-4 … 0.02."""
    from diffusers import DDPMScheduler

    return DDPMScheduler(
        num_train_timesteps=config.diffusion_steps,
        beta_schedule="linear",
        beta_start=BETA_START,
        beta_end=BETA_END,
        prediction_type="epsilon",
    )


def pretrain_diffusion(
    tiles: np.ndarray | Iterable[np.ndarray] | Sequence[str | os.PathLike],
    out_dir: str | os.PathLike,
    *,
    config: ModelConfig | None = None,
    iterations: int = 10000,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    amp: bool = True,
    log_every: int = 10,
) -> TrainResult:
    """Train a DDPM on unlabelled tiles and save its UNet.

    Parameters
    ----------
    tiles : (N, H, W, 3) uint8 ndarray, iterable of (H, W, 3) uint8 ndarrays, or sequence of paths
        In-memory tiles, or ``results/{slide}/tiles.zarr`` stores, sampled
        lazily and uniformly over all their tiles
        (:func:`pathpipe.segmentation.unet.data.iter_cohort_tiles`); store MPPs are checked
        against ``config.mpp``.
    out_dir : path-like
        Receives ``diffusion.safetensors`` and ``diffusion.json``
        (:func:`pathpipe.segmentation.unet.io.save_diffusion`).
    config : ModelConfig, optional
        Architecture (``ModelConfig()`` by default), crop size and number of
        diffusion steps; ``classes`` are irrelevant here.
    iterations : int
        Optimiser steps (default 10000).
    batch_size : int
        Crops per step (default 8).
    lr : float, optional
        Initial Adam learning rate, cosine-decayed (None: :data:`DEFAULT_LR`,
        2e-4 as Ho et al. 2020).
    seed : int
        Seeds initialisation, tile sampling, augmentation, ``t`` and ``ε``.
    device : str
        ``"auto"``, ``"cpu"`` or ``"cuda[:n]"``.
    amp : bool
        Mixed precision on CUDA.
    log_every : int

    Returns
    -------
    TrainResult
        ``history`` holds the ε-prediction MSE.
    """
    config = config or ModelConfig()
    if not isinstance(config, ModelConfig):
        raise ConfigError(f"config is {type(config).__name__}; expected ModelConfig")
    loop = LoopSettings(
        iterations, batch_size, DEFAULT_LR if lr is None else lr, seed, amp, log_every
    )
    batches, source = tile_batches(
        tiles,
        crop_size=config.crop_size,
        batch_size=batch_size,
        n_batches=iterations,
        seed=seed,
    )
    for path, mpp in zip(source.get("stores", []), source.get("store_mpps", []), strict=True):
        check_mpp(mpp, config.mpp, what=f"tiles store {path!r}")
    dev = resolve_device(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        unet = build_unet(config)
    unet.to(dev)
    scheduler = make_scheduler(config)
    gen = torch.Generator().manual_seed(seed)
    n_steps = config.diffusion_steps

    def step_loss(batch: np.ndarray) -> tuple[torch.Tensor, dict[str, float]]:
        x0 = normalize_rgb(torch.from_numpy(batch).to(dev))
        t = torch.randint(0, n_steps, (x0.shape[0],), generator=gen)
        noise = torch.randn(x0.shape, generator=gen).to(dev)
        x_t = scheduler.add_noise(x0, noise, t.to(dev))  # eq. 4
        eps = unet(x_t, t.to(dev)).sample
        loss = F.mse_loss(eps.float(), noise)  # eq. 14
        return loss, {}

    params = [p for p in unet.parameters() if p.requires_grad]
    return train_and_save(
        unet,
        params,
        batches,
        step_loss,
        loop=loop,
        device=dev,
        out_dir=out_dir,
        record={"objective": "DDPM epsilon prediction, Ho et al. 2020 eq. 14", **source},
        save=lambda m, extra: save_diffusion(out_dir, m, scheduler, config, extra=extra),
    )
