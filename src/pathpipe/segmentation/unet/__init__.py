"""Neural nuclei segmentation: a diffusion-UNet HoVer-Net and DDPM pretraining.

The ``unet`` method of the segmentation stage, and label-efficient pretraining
after "Label-efficient multi-organ segmentation with a diffusion model":
pretrain a DDPM (Ho et al. 2020) on unlabelled tiles
(:func:`pretrain_diffusion`), then train the segmentation network on few
labelled tiles with its UNet as backbone (:func:`train_segmentation` with
``strategy="linear"``, ``"decoder"`` or ``"full"``). Outputs and
post-processing follow HoVer-Net (Graham et al. 2019).

Modules, one concern each:

========================  ====================================================
``config``                :class:`ModelConfig` (no torch)
``targets``               HV maps and training targets (numpy)
``postprocess``           HoVer-Net watershed and instance types (numpy)
``model``                 :class:`SegmentationNet`, :func:`build_model`
``losses``                HoVer-Net loss
``device``                device choice, mixed precision
``data``                  crops, augmentation, tile sampling from stores
``train``                 :func:`train_segmentation`, fine-tuning strategies
``diffusion``             :func:`pretrain_diffusion`
``predict``               :func:`predict_tiles`
``io``                    :func:`save_model`, :func:`load_model` (safetensors)
``_loop``                 the optimiser loop, :class:`TrainResult`
========================  ====================================================

Names are imported lazily: ``from pathpipe.segmentation.unet import ModelConfig, hv_maps``
does not import torch; the others import torch and diffusers on first use.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__all__ = [
    "ModelConfig",
    "PredictedTile",
    "SegmentationNet",
    "TrainResult",
    "build_model",
    "hv_maps",
    "instance_types_from_probs",
    "instances_from_maps",
    "iter_cohort_tiles",
    "load_model",
    "make_targets",
    "predict_tiles",
    "pretrain_diffusion",
    "save_model",
    "train_segmentation",
]

_WHERE = {
    "ModelConfig": "config",
    "PredictedTile": "predict",
    "SegmentationNet": "model",
    "TrainResult": "_loop",
    "build_model": "model",
    "hv_maps": "targets",
    "instance_types_from_probs": "postprocess",
    "instances_from_maps": "postprocess",
    "iter_cohort_tiles": "data",
    "load_model": "io",
    "make_targets": "targets",
    "predict_tiles": "predict",
    "pretrain_diffusion": "diffusion",
    "save_model": "io",
    "train_segmentation": "train",
}

if TYPE_CHECKING:
    from pathpipe.segmentation.unet._loop import TrainResult
    from pathpipe.segmentation.unet.config import ModelConfig
    from pathpipe.segmentation.unet.data import iter_cohort_tiles
    from pathpipe.segmentation.unet.diffusion import pretrain_diffusion
    from pathpipe.segmentation.unet.io import load_model, save_model
    from pathpipe.segmentation.unet.model import SegmentationNet, build_model
    from pathpipe.segmentation.unet.postprocess import (
        instance_types_from_probs,
        instances_from_maps,
    )
    from pathpipe.segmentation.unet.predict import PredictedTile, predict_tiles
    from pathpipe.segmentation.unet.targets import hv_maps, make_targets
    from pathpipe.segmentation.unet.train import train_segmentation


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pathpipe.segmentation.unet' has no attribute {name!r}")
    value = getattr(importlib.import_module(f"pathpipe.segmentation.unet.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
