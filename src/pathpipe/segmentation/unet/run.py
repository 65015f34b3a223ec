"""Path-level training of the unet method: ``pathpipe segmentation train|pretrain``.

:func:`train_unet` reads an annotated tile folder and trains the segmentation
network (:func:`pathpipe.segmentation.unet.train.train_segmentation`);
:func:`pretrain_unet` pretrains its backbone as a DDPM on the tiles of
``tiles.zarr`` stores (:func:`pathpipe.segmentation.unet.diffusion.pretrain_diffusion`).
Both save to a model folder. :class:`TrainingParams` holds their options.

No torch at import: the training modules are imported when a function runs.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param
from pathpipe.segmentation.unet.config import STRATEGIES, ModelConfig

if TYPE_CHECKING:
    from pathpipe.segmentation.unet._loop import TrainResult

__all__ = ["TrainingParams", "model_config", "pretrain_unet", "train_unet"]

log = logging.getLogger(__name__)


@dataclass(frozen=True, kw_only=True)
class TrainingParams:
    """Options of ``pathpipe segmentation train`` and ``pretrain``.

    The architecture options (``crop_size``, ``block_out_channels``,
    ``layers_per_block``) left at None keep :class:`ModelConfig`'s defaults;
    when training starts from a checkpoint (``init``) the architecture is the
    checkpoint's. ``strategy`` and ``fraction`` concern ``train`` only.

    Attributes
    ----------
    iterations, batch_size : int
        Optimiser steps and crops per step.
    lr : float or None
        Initial learning rate (None: the default of the mode and strategy).
    crop_size : int or None
        Side of the training crops, px.
    block_out_channels : tuple of int or None
        UNet channels per level, e.g. ``(32, 64, 128)``.
    layers_per_block : int or None
        ResNet blocks per UNet level.
    device : str
        ``"auto"``, ``"cpu"``, ``"cuda"`` or ``"cuda:<i>"``.
    amp : bool
        Mixed precision on GPU.
    seed : int
    strategy : {"scratch", "linear", "decoder", "full"}
        Fine-tuning strategy (:mod:`pathpipe.segmentation.unet.train`).
    fraction : float
        Seeded share of the labelled tiles to train on, in (0, 1].
    """

    iterations: int = param(2000, "optimiser steps", ge=1)
    batch_size: int = param(8, "crops per step", ge=1)
    lr: float | None = param(
        None, "initial learning rate (none: the default of the mode)", kind="float", gt=0
    )
    crop_size: int | None = param(
        None, "training crop edge, px (none: the model config's)", kind="int", ge=1
    )
    # Integers, which pathpipe.params has no list kind for: the CLI adds its option.
    block_out_channels: tuple[int, ...] | None = None
    layers_per_block: int | None = param(
        None, "ResNet blocks per UNet level (none: the model config's)", kind="int", ge=1
    )
    device: str = param("auto", "auto, cpu, cuda or cuda:N")
    amp: bool = param(True, "mixed precision on GPU")
    seed: int = param(0, "seed of initialisation, tile sampling and augmentation", ge=0)
    strategy: str = param(
        "scratch",
        "train: scratch; or, with --init: linear (frozen backbone, linear heads), "
        "decoder (fine-tune the decoder), full (fine-tune everything)",
        choices=STRATEGIES,
    )
    fraction: float = param(1.0, "train: seeded share of the labelled tiles to use", gt=0, le=1)

    def __post_init__(self) -> None:
        check_params(self, "training")
        channels = self.block_out_channels
        if channels is not None:
            ok = not isinstance(channels, str) and all(
                isinstance(c, int) and not isinstance(c, bool) and c > 0 for c in channels
            )
            if not ok or not channels:
                raise ConfigError(
                    f"training.block_out_channels={channels!r}; expected positive integers "
                    "such as 32,64,128"
                )
            object.__setattr__(self, "block_out_channels", tuple(channels))


def model_config(params: TrainingParams, *, mpp: float | None) -> ModelConfig:
    """The :class:`ModelConfig` of the options given (the others keep its defaults)."""
    given = {
        "crop_size": params.crop_size,
        "block_out_channels": params.block_out_channels,
        "layers_per_block": params.layers_per_block,
        "mpp": mpp,
    }
    return ModelConfig(**{k: v for k, v in given.items() if v is not None})


def train_unet(
    data: str | os.PathLike[str],
    out_dir: str | os.PathLike[str],
    *,
    params: TrainingParams | None = None,
    init: str | os.PathLike[str] | None = None,
    mpp: float | None = None,
) -> TrainResult:
    """Train the segmentation network on an annotated tile folder; save it to ``out_dir``.

    Parameters
    ----------
    data : path-like
        Annotated tile folder (:mod:`pathpipe.segmentation.annotations`).
    out_dir : path-like
        Output model folder.
    params : TrainingParams
    init : path-like, optional
        Diffusion checkpoint from :func:`pretrain_unet`; its architecture is used.
    mpp : float, optional
        µm/px the model is trained at (default: the folder's ``classes.json``,
        else :class:`ModelConfig`'s).

    Returns
    -------
    TrainResult
    """
    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.segmentation.unet.train import train_segmentation

    params = params or TrainingParams()
    ann = read_annotated_dir(data)
    mpp = mpp if mpp is not None else ann.mpp
    if init is not None:
        if params.crop_size is not None or params.block_out_channels is not None:
            log.info("init given: the architecture comes from the checkpoint")
        config = None
    else:
        config = model_config(params, mpp=mpp)
    return train_segmentation(
        ann,
        out_dir,
        config=config,
        init=init,
        strategy=params.strategy,
        fraction=params.fraction,
        iterations=params.iterations,
        batch_size=params.batch_size,
        lr=params.lr,
        device=params.device,
        amp=params.amp,
        seed=params.seed,
    )


def pretrain_unet(
    stores: Sequence[str | os.PathLike[str]],
    out_dir: str | os.PathLike[str],
    *,
    params: TrainingParams | None = None,
    mpp: float | None = None,
) -> TrainResult:
    """Pretrain the backbone as a DDPM on the tiles of ``tiles.zarr`` stores; save it.

    Parameters
    ----------
    stores : sequence of path-like
        ``tiles.zarr`` stores, all at one MPP.
    out_dir : path-like
        Output checkpoint folder (``train_unet(init=out_dir)`` reads it).
    params : TrainingParams
        ``strategy`` and ``fraction`` are not used.
    mpp : float, optional
        µm/px of the model (default: the stores'; stores at another MPP are refused).

    Returns
    -------
    TrainResult
    """
    from pathpipe.io.storage import open_store
    from pathpipe.segmentation.unet.data import store_mpp
    from pathpipe.segmentation.unet.diffusion import pretrain_diffusion

    params = params or TrainingParams()
    if mpp is None:
        mpps = {store_mpp(open_store(p, stage="tiling")) for p in stores}
        if len(mpps) != 1:
            raise ConfigError(
                f"the tile stores have different MPPs {sorted(mpps)}; expected one (pass --mpp "
                "to choose, stores at another MPP are refused)"
            )
        (mpp,) = mpps
    return pretrain_diffusion(
        [str(p) for p in stores],
        out_dir,
        config=model_config(params, mpp=mpp),
        iterations=params.iterations,
        batch_size=params.batch_size,
        lr=params.lr,
        device=params.device,
        amp=params.amp,
        seed=params.seed,
    )
