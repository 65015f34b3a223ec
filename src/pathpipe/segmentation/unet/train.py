"""Training the segmentation network, from scratch or from a pretrained DDPM.

Fine-tuning strategies (``strategy``), after "Label-efficient multi-organ
segmentation with a diffusion model" (pretrain a DDPM on unlabelled tiles,
reuse its UNet as the segmentation backbone):

* ``scratch`` — random initialisation, every parameter trained (baseline);
* ``linear`` — backbone from the diffusion checkpoint, frozen; only the 1×1
  heads are trained (frozen backbone + linear head);
* ``decoder`` — encoder (``conv_in``, time embedding, down blocks, mid block)
  from the checkpoint and frozen; up blocks and heads trained;
* ``full`` — everything initialised from the checkpoint and fine-tuned.

The UNet's ``conv_norm_out`` / ``conv_out`` are never run by segmentation and
stay frozen under every strategy. Loss: :func:`pathpipe.segmentation.unet.losses.hovernet_loss`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathpipe.device import resolve_device
from pathpipe.errors import ConfigError
from pathpipe.segmentation.annotations import AnnotatedDir, AnnotatedTile
from pathpipe.segmentation.unet._loop import LoopSettings, TrainResult, train_and_save
from pathpipe.segmentation.unet.config import STRATEGIES, ModelConfig
from pathpipe.segmentation.unet.data import (
    check_mpp,
    resolve_annotated,
    segmentation_batches,
    select_fraction,
)
from pathpipe.segmentation.unet.io import load_backbone, save_model
from pathpipe.segmentation.unet.losses import hovernet_loss, resolve_loss_weights
from pathpipe.segmentation.unet.model import (
    ENCODER_MODULES,
    SegmentationNet,
    build_model,
    normalize_rgb,
)

__all__ = [
    "DEFAULT_LR",
    "LINEAR_LR",
    "STRATEGIES",
    "TrainResult",
    "set_strategy",
    "train_segmentation",
]

#: Initial learning rate when none is given.
DEFAULT_LR = 1e-3
#: Initial learning rate of the ``linear`` strategy when none is given: a linear probe
#: on frozen features trains a few hundred weights and needs a larger step (with 1e-3
#: its loss barely moved in 200 steps; benchmarks/README.md).
LINEAR_LR = 1e-2


def set_strategy(model: SegmentationNet, strategy: str) -> list[torch.nn.Parameter]:
    """Set ``requires_grad`` for ``strategy`` and return the trainable parameters.

    Parameters
    ----------
    model : SegmentationNet
    strategy : {"scratch", "linear", "decoder", "full"}

    Returns
    -------
    list of Parameter
        In ``model.parameters()`` order.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}; expected one of {list(STRATEGIES)}")
    model.requires_grad_(strategy != "linear")
    if strategy == "linear":
        for p in model.head_parameters():
            p.requires_grad_(True)
    elif strategy == "decoder":
        for name in ENCODER_MODULES:
            module = getattr(model.unet, name)
            if module is not None:
                module.requires_grad_(False)
    model.unet.conv_norm_out.requires_grad_(False)
    model.unet.conv_out.requires_grad_(False)
    return [p for p in model.parameters() if p.requires_grad]


def _resolve_classes(config: ModelConfig, data: AnnotatedDir) -> ModelConfig:
    """The config with the data's classes; ConfigError when both name different ones."""
    if data.classes and config.classes and tuple(data.classes) != tuple(config.classes):
        raise ConfigError(
            f"training data {str(data.path)!r} has classes {list(data.classes)} but the "
            f"model config names {list(config.classes)}; expected the same classes in the "
            "same order"
        )
    if data.classes and not config.classes:
        config = dataclasses.replace(config, classes=tuple(data.classes))
    top = max(
        (int(t.type_map.max(initial=0)) for t in data.tiles if t.type_map is not None), default=0
    )
    if top > len(config.classes):
        raise ConfigError(
            f"training tiles have type {top} but the model knows {len(config.classes)} classes "
            f"{list(config.classes)}; expected classes (classes.json or config.classes) "
            "naming every type"
        )
    return config


def _to_device(batch: dict[str, np.ndarray], device: torch.device) -> dict[str, torch.Tensor]:
    return {k: torch.from_numpy(np.ascontiguousarray(v)).to(device) for k, v in batch.items()}


def train_segmentation(
    data: AnnotatedDir | str | os.PathLike | Sequence[AnnotatedTile],
    out_dir: str | os.PathLike,
    *,
    config: ModelConfig | None = None,
    init: str | os.PathLike | None = None,
    strategy: str = "scratch",
    iterations: int = 2000,
    batch_size: int = 8,
    lr: float | None = None,
    seed: int = 0,
    device: str = "auto",
    amp: bool = True,
    fraction: float = 1.0,
    log_every: int = 10,
    loss_weights: dict[str, float] | None = None,
) -> TrainResult:
    """Train the nuclei segmentation network and save it to ``out_dir``.

    Each iteration draws ``batch_size`` tiles uniformly, takes a random
    ``config.crop_size`` crop with a random flip and quarter turn, and
    minimises the HoVer-Net loss (:mod:`pathpipe.segmentation.unet.losses`) with Adam and a
    cosine learning-rate decay (:mod:`pathpipe.segmentation.unet._loop`).

    Parameters
    ----------
    data : AnnotatedDir, path-like or sequence of AnnotatedTile
        Annotated tiles (:mod:`pathpipe.segmentation.annotations`). A folder's
        ``classes.json`` gives the classes and the MPP.
    out_dir : path-like
        Where :func:`pathpipe.segmentation.unet.io.save_model` writes the model.
    config : ModelConfig, optional
        Architecture and MPP. Default: the ``model_config`` of ``init`` when
        given, else ``ModelConfig()``. Empty ``classes`` are taken from the data.
    init : path-like, optional
        Diffusion checkpoint directory (:func:`pathpipe.segmentation.unet.diffusion.pretrain_diffusion`);
        required by every strategy but ``scratch``.
    strategy : {"scratch", "linear", "decoder", "full"}
        See the module docstring.
    iterations : int
        Optimiser steps (default 2000).
    batch_size : int
        Crops per step (default 8).
    lr : float, optional
        Initial Adam learning rate, decayed to 1 % by cosine (None:
        :data:`DEFAULT_LR`, 1e-3; :data:`LINEAR_LR`, 1e-2, for ``linear``).
    seed : int
        Seeds initialisation, tile subset, crops, augmentation. CPU runs repeat exactly.
    device : str
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:n]"``.
    amp : bool
        Mixed precision on CUDA (bfloat16, or float16 with gradient scaling).
    fraction : float
        Train on a seeded subset of ``round(fraction · n)`` labelled tiles (at
        least one), e.g. 0.01 or 0.1 for label-efficiency experiments.
    log_every : int
        Iterations per history entry (default 10).
    loss_weights : dict, optional
        Overrides of :data:`pathpipe.segmentation.unet.losses.LOSS_WEIGHTS`.

    Returns
    -------
    TrainResult

    Raises
    ------
    ConfigError
        Bad arguments; data MPP more than 10 % off ``config.mpp``; classes that
        disagree; ``init`` missing for a strategy that needs it, or with another
        architecture.
    """
    if strategy not in STRATEGIES:
        raise ConfigError(f"strategy={strategy!r}; expected one of {list(STRATEGIES)}")
    if strategy != "scratch" and init is None:
        raise ConfigError(
            f"strategy={strategy!r} starts from a pretrained diffusion UNet; pass "
            "init=<directory written by pretrain_diffusion> (or use strategy='scratch')"
        )
    if strategy == "scratch" and init is not None:
        raise ConfigError(
            f"strategy='scratch' trains from a random initialisation but init={str(init)!r} "
            "was given; expected 'linear', 'decoder' or 'full' with init"
        )
    if lr is None:
        lr = LINEAR_LR if strategy == "linear" else DEFAULT_LR
    loop = LoopSettings(iterations, batch_size, lr, seed, amp, log_every)
    resolve_loss_weights(loss_weights)
    if config is None:
        if init is not None:
            from pathpipe.segmentation.unet.io import read_diffusion

            meta, _ = read_diffusion(init)
            config = ModelConfig.from_dict(meta["model_config"])
        else:
            config = ModelConfig()
    annotated = resolve_annotated(data)
    check_mpp(annotated.mpp, config.mpp, what=f"training data {str(annotated.path)!r}")
    config = _resolve_classes(config, annotated)
    tiles = select_fraction(annotated.tiles, fraction, seed=seed)
    dev = resolve_device(device)

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = build_model(config)
    init_meta: dict[str, Any] = {}
    if init is not None:
        init_meta = load_backbone(model, init)
        pre = init_meta.get("model_config", {}).get("mpp")
        if pre is not None:
            check_mpp(float(pre), config.mpp, what=f"diffusion checkpoint {str(init)!r}")
    params = set_strategy(model, strategy)
    model.to(dev)

    batches: Iterator[dict[str, np.ndarray]] = segmentation_batches(
        tiles, crop_size=config.crop_size, batch_size=batch_size, seed=seed
    )

    def step_loss(batch: dict[str, np.ndarray]) -> tuple[torch.Tensor, dict[str, float]]:
        t = _to_device(batch, dev)
        out = model(normalize_rgb(t["rgb"]))
        return hovernet_loss(out, t, weights=loss_weights)

    record = {
        "strategy": strategy,
        "init": None if init is None else str(Path(init).resolve()),
        "data": str(annotated.path),
        "n_tiles": len(tiles),
        "n_tiles_available": len(annotated.tiles),
        "fraction": fraction,
        "loss_weights": loss_weights or {},
    }
    return train_and_save(
        model,
        params,
        batches,
        step_loss,
        loop=loop,
        device=dev,
        out_dir=out_dir,
        record=record,
        save=lambda m, extra: save_model(out_dir, m, config, extra=extra),
    )
