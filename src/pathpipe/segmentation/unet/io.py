"""Saving and loading the unet's models as model folders (:mod:`pathpipe.io.model_folder`).

A segmentation model directory holds::

    model.safetensors   the SegmentationNet state dict
    model.json          {"format": "pathpipe-segmentation", "config": ModelConfig,
                         "pathpipe_version": ..., "extra": {"training": ...}}

A pretrained diffusion directory (:func:`pathpipe.segmentation.unet.pretrain_diffusion`)::

    diffusion.safetensors   the diffusers UNet2DModel state dict (its own key names)
    diffusion.json          {"format": "pathpipe-diffusion", "unet_config": ...,
                             "scheduler_config": ..., "model_config": ModelConfig, ...}

Weights are read with :func:`safetensors.torch.load_file` only.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import torch

from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.model_folder import (
    ModelFormat,
    check_weights,
    read_model_folder,
    state_problems,
    write_model_folder,
)
from pathpipe.segmentation.unet.config import ModelConfig
from pathpipe.segmentation.unet.model import SegmentationNet, build_model, unet_kwargs

__all__ = [
    "DIFFUSION_FILES",
    "DIFFUSION_FORMAT",
    "MODEL_FILES",
    "MODEL_FORMAT",
    "load_backbone",
    "load_model",
    "read_diffusion",
    "save_diffusion",
    "save_model",
]

MODEL_FORMAT = ModelFormat("model", "pathpipe-segmentation", 1, "segmentation model")
DIFFUSION_FORMAT = ModelFormat("diffusion", "pathpipe-diffusion", 1, "diffusion checkpoint")
MODEL_FILES = MODEL_FORMAT.files
DIFFUSION_FILES = DIFFUSION_FORMAT.files


def save_model(
    path_dir: str | os.PathLike,
    model: SegmentationNet,
    config: ModelConfig,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``model.safetensors`` and ``model.json`` into ``path_dir``.

    Parameters
    ----------
    path_dir : path-like
        The model folder (:func:`pathpipe.io.model_folder.write_model_folder`).
    model : SegmentationNet
    config : ModelConfig
        The config the model was built from.
    extra : dict, optional
        JSON-ready information stored under ``"extra"`` (e.g. the training summary).

    Returns
    -------
    pathlib.Path
        ``path_dir``.
    """
    meta = {"config": config.to_dict(), "extra": extra or {}}
    return write_model_folder(path_dir, MODEL_FORMAT, model.state_dict(), meta)


def load_model(
    path_dir: str | os.PathLike, *, device: str | torch.device = "cpu"
) -> tuple[SegmentationNet, ModelConfig]:
    """Read a model written by :func:`save_model`.

    Parameters
    ----------
    path_dir : path-like
    device : str or torch.device

    Returns
    -------
    model : SegmentationNet
        In eval mode, on ``device``.
    config : ModelConfig

    Raises
    ------
    StorageError
        Missing files, an unreadable or foreign JSON, or weights that do not
        match the architecture of the stored config.
    """
    meta, state = read_model_folder(path_dir, MODEL_FORMAT)
    try:
        config = ModelConfig.from_dict(meta.get("config"))
    except ConfigError as exc:
        raise StorageError(
            f"{Path(path_dir) / MODEL_FORMAT.description}: invalid model config: {exc}"
        ) from exc
    model = build_model(config)
    check_weights(model.state_dict(), state, path_dir, MODEL_FORMAT)
    model.load_state_dict(state, strict=True)
    return model.to(device).eval(), config


def save_diffusion(
    path_dir: str | os.PathLike,
    unet: torch.nn.Module,
    scheduler: Any,
    config: ModelConfig,
    *,
    extra: dict[str, Any] | None = None,
) -> Path:
    """Write ``diffusion.safetensors`` and ``diffusion.json`` into ``path_dir``.

    Parameters
    ----------
    path_dir : path-like
        The checkpoint folder (:func:`pathpipe.io.model_folder.write_model_folder`).
    unet : diffusers.UNet2DModel
    scheduler : diffusers.DDPMScheduler
    config : ModelConfig
        The config the UNet was built from (:func:`pathpipe.segmentation.unet.build_unet`).
    extra : dict, optional

    Returns
    -------
    pathlib.Path
    """
    meta = {
        "unet_config": _jsonable(dict(unet.config)),
        "scheduler_config": _jsonable(dict(scheduler.config)),
        "model_config": config.to_dict(),
        "extra": extra or {},
    }
    return write_model_folder(path_dir, DIFFUSION_FORMAT, unet.state_dict(), meta)


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def read_diffusion(path_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON description and UNet weights of a pretrained diffusion directory.

    Raises
    ------
    StorageError
        Missing or unreadable files.
    """
    return read_model_folder(path_dir, DIFFUSION_FORMAT)


def load_backbone(model: SegmentationNet, init: str | os.PathLike) -> dict[str, Any]:
    """Load a pretrained DDPM UNet (:func:`pathpipe.segmentation.unet.pretrain_diffusion`) into ``model.unet``.

    Parameters
    ----------
    model : SegmentationNet
    init : path-like
        Diffusion checkpoint directory.

    Returns
    -------
    dict
        The checkpoint's JSON description.

    Raises
    ------
    StorageError
        Missing or unreadable files.
    ConfigError
        The checkpoint's UNet architecture differs from ``model.config``'s.
    """
    meta, state = read_diffusion(init)
    want = _jsonable(unet_kwargs(model.config))
    have = meta.get("unet_config", {})
    diffs = [
        f"{k}={have.get(k)!r} (model config gives {v!r})"
        for k, v in want.items()
        if k != "sample_size" and have.get(k) != v
    ]
    problems = state_problems(model.unet.state_dict(), state)
    if diffs or problems:
        raise ConfigError(
            f"diffusion checkpoint {str(init)!r} has another UNet architecture than the "
            f"segmentation config: {'; '.join(diffs + problems)}; expected the same "
            "block_out_channels, layers_per_block, norm_num_groups and attention"
        )
    model.unet.load_state_dict(state, strict=True)
    return meta
