"""Saving and loading models: safetensors weights + a JSON description, no pickle.

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
from pathpipe.segmentation.unet.config import ModelConfig
from pathpipe.segmentation.unet.model import SegmentationNet, build_model, unet_kwargs

__all__ = [
    "DIFFUSION_FILES",
    "MODEL_FILES",
    "load_backbone",
    "load_model",
    "read_diffusion",
    "save_diffusion",
    "save_model",
]

MODEL_FILES = ("model.safetensors", "model.json")
DIFFUSION_FILES = ("diffusion.safetensors", "diffusion.json")
_SEG_FORMAT = "pathpipe-segmentation"
_DIFF_FORMAT = "pathpipe-diffusion"
_FORMAT_VERSION = 1


def _write_weights(path: Path, state: dict[str, torch.Tensor]) -> None:
    from safetensors.torch import save_file

    from pathpipe.io.storage import atomic_file

    tensors = {k: v.detach().to("cpu").contiguous() for k, v in state.items()}
    with atomic_file(path) as tmp:
        save_file(tensors, str(tmp))


def _read_weights(path: Path) -> dict[str, torch.Tensor]:
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(path))
    except (OSError, SafetensorError) as exc:
        raise StorageError(f"cannot read weights {path}: {exc}") from exc


def _read_json(path: Path, fmt: str) -> dict[str, Any]:
    try:
        meta = json.loads(path.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise StorageError(f"cannot read {path}: {exc}") from exc
    if not isinstance(meta, dict) or meta.get("format") != fmt:
        found = meta.get("format") if isinstance(meta, dict) else type(meta).__name__
        raise StorageError(f"{path} has format {found!r}; expected {fmt!r}")
    return meta


def _require_files(root: Path, names: tuple[str, ...], what: str) -> None:
    missing = [n for n in names if not (root / n).is_file()]
    if missing:
        raise StorageError(
            f"{what} directory {str(root)!r} lacks {', '.join(missing)}; "
            f"expected {' and '.join(names)}"
        )


def _compare_keys(expected: dict[str, torch.Tensor], found: dict[str, torch.Tensor]) -> list[str]:
    """Differences between two state dicts (missing, unexpected, shape), as text."""
    problems = []
    missing = sorted(set(expected) - set(found))
    extra = sorted(set(found) - set(expected))
    if missing:
        problems.append(f"{len(missing)} missing keys (e.g. {missing[:3]})")
    if extra:
        problems.append(f"{len(extra)} unexpected keys (e.g. {extra[:3]})")
    shapes = [
        f"{k}: {tuple(found[k].shape)} vs expected {tuple(v.shape)}"
        for k, v in expected.items()
        if k in found and found[k].shape != v.shape
    ]
    if shapes:
        problems.append(f"{len(shapes)} shape mismatches (e.g. {shapes[:2]})")
    return problems


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
        Created if missing; other files in it are left alone. Each file is
        written atomically.
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
    from pathpipe import __version__
    from pathpipe.io.storage import write_json

    root = Path(path_dir)
    root.mkdir(parents=True, exist_ok=True)
    _write_weights(root / MODEL_FILES[0], model.state_dict())
    write_json(
        root / MODEL_FILES[1],
        {
            "format": _SEG_FORMAT,
            "format_version": _FORMAT_VERSION,
            "pathpipe_version": __version__,
            "config": config.to_dict(),
            "extra": extra or {},
        },
    )
    return root


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
    root = Path(path_dir)
    _require_files(root, MODEL_FILES, "segmentation model")
    meta = _read_json(root / MODEL_FILES[1], _SEG_FORMAT)
    try:
        config = ModelConfig.from_dict(meta.get("config"))
    except ConfigError as exc:
        raise StorageError(f"{root / MODEL_FILES[1]}: invalid model config: {exc}") from exc
    model = build_model(config)
    state = _read_weights(root / MODEL_FILES[0])
    problems = _compare_keys(model.state_dict(), state)
    if problems:
        raise StorageError(
            f"weights {root / MODEL_FILES[0]} do not fit the architecture in "
            f"{MODEL_FILES[1]}: {'; '.join(problems)}"
        )
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
    unet : diffusers.UNet2DModel
    scheduler : diffusers.DDPMScheduler
    config : ModelConfig
        The config the UNet was built from (:func:`pathpipe.segmentation.unet.build_unet`).
    extra : dict, optional

    Returns
    -------
    pathlib.Path
    """
    from pathpipe import __version__
    from pathpipe.io.storage import write_json

    root = Path(path_dir)
    root.mkdir(parents=True, exist_ok=True)
    _write_weights(root / DIFFUSION_FILES[0], unet.state_dict())
    write_json(
        root / DIFFUSION_FILES[1],
        {
            "format": _DIFF_FORMAT,
            "format_version": _FORMAT_VERSION,
            "pathpipe_version": __version__,
            "unet_config": _jsonable(dict(unet.config)),
            "scheduler_config": _jsonable(dict(scheduler.config)),
            "model_config": config.to_dict(),
            "extra": extra or {},
        },
    )
    return root


def _jsonable(d: dict[str, Any]) -> dict[str, Any]:
    return json.loads(json.dumps(d, default=lambda o: list(o) if isinstance(o, tuple) else str(o)))


def read_diffusion(path_dir: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """The JSON description and UNet weights of a pretrained diffusion directory.

    Raises
    ------
    StorageError
        Missing or unreadable files.
    """
    root = Path(path_dir)
    _require_files(root, DIFFUSION_FILES, "diffusion checkpoint")
    meta = _read_json(root / DIFFUSION_FILES[1], _DIFF_FORMAT)
    return meta, _read_weights(root / DIFFUSION_FILES[0])


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
    problems = _compare_keys(model.unet.state_dict(), state)
    if diffs or problems:
        raise ConfigError(
            f"diffusion checkpoint {str(init)!r} has another UNet architecture than the "
            f"segmentation config: {'; '.join(diffs + problems)}; expected the same "
            "block_out_channels, layers_per_block, norm_num_groups and attention"
        )
    model.unet.load_state_dict(state, strict=True)
    return meta
