"""The segmentation network: a diffusion UNet backbone with HoVer-Net heads.

The backbone is :class:`diffusers.UNet2DModel`, the network a DDPM is trained
with (:mod:`pathpipe.segmentation.unet.diffusion`), so pretrained weights load into it
unchanged — the label-efficient recipe of "Label-efficient multi-organ
segmentation with a diffusion model": pretrain a DDPM on unlabelled tiles, then
use its UNet as the segmentation backbone. The heads read the decoder's last
feature map (the output of the UNet's last up block, before its
``conv_norm_out`` / ``conv_out``, which segmentation leaves unused and frozen)
and are 1×1 convolutions, i.e. per-pixel linear maps:

* ``fg``: nuclear-pixel logits, 2 channels (background, nucleus);
* ``hv``: horizontal and vertical distance maps, 2 channels (HoVer-Net,
  Graham et al. 2019, Med Image Anal 58:101563);
* ``type``: type logits, ``len(classes) + 1`` channels, 0 = background.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from pathpipe.segmentation.unet.config import ModelConfig

__all__ = ["SegmentationNet", "build_model", "build_unet", "normalize_rgb", "unet_kwargs"]

#: Modules of the UNet that segmentation never runs (it reads the features before them).
UNUSED_UNET_MODULES = ("conv_norm_out", "conv_out")
#: Modules of the UNet's encoder, frozen by the ``decoder`` fine-tuning strategy.
ENCODER_MODULES = ("conv_in", "time_proj", "time_embedding", "down_blocks", "mid_block")


def unet_kwargs(config: ModelConfig) -> dict[str, Any]:
    """Keyword arguments of :class:`diffusers.UNet2DModel` for ``config``.

    Returns
    -------
    dict
        The architecture: 3 input and 3 output channels (the DDPM predicts the
        noise of an RGB image), ``block_out_channels``, ``layers_per_block``,
        ``norm_num_groups``, plain ResNet blocks (attention only in the lowest
        level and the mid block when ``config.attention``).
    """
    levels = len(config.block_out_channels)
    down = ["DownBlock2D"] * levels
    up = ["UpBlock2D"] * levels
    if config.attention:
        down[-1] = "AttnDownBlock2D"
        up[0] = "AttnUpBlock2D"
    return {
        "sample_size": config.crop_size,
        "in_channels": 3,
        "out_channels": 3,
        "block_out_channels": tuple(config.block_out_channels),
        "layers_per_block": config.layers_per_block,
        "norm_num_groups": config.norm_num_groups,
        "down_block_types": tuple(down),
        "up_block_types": tuple(up),
        "add_attention": config.attention,
        "attention_head_dim": 8,
    }


def build_unet(config: ModelConfig) -> Any:
    """A freshly initialised :class:`diffusers.UNet2DModel` for ``config``."""
    from diffusers import UNet2DModel

    return UNet2DModel(**unet_kwargs(config))


def normalize_rgb(rgb: torch.Tensor) -> torch.Tensor:
    """uint8 RGB tiles to the network's input range.

    Parameters
    ----------
    rgb : (B, H, W, 3) uint8 tensor

    Returns
    -------
    (B, 3, H, W) float32 tensor
        ``x / 127.5 - 1`` in [-1, 1], the scaling DDPM training uses (Ho et al.
        2020, section 3.3).
    """
    if rgb.ndim != 4 or rgb.shape[-1] != 3 or rgb.dtype != torch.uint8:
        raise ValueError(
            f"rgb has shape {tuple(rgb.shape)} dtype {rgb.dtype}; expected (B, H, W, 3) uint8"
        )
    return rgb.permute(0, 3, 1, 2).float().div_(127.5).sub_(1.0)


class SegmentationNet(nn.Module):
    """UNet backbone + 1×1-convolution heads (see the module docstring).

    Attributes
    ----------
    config : ModelConfig
    unet : diffusers.UNet2DModel
        The backbone; its state-dict keys are those of a DDPM's UNet.
    fg_head, hv_head, type_head : torch.nn.Conv2d
        1×1 convolutions with 2, 2 and ``len(classes) + 1`` outputs.
    """

    def __init__(self, config: ModelConfig) -> None:
        super().__init__()
        self.config = config
        self.unet = build_unet(config)
        width = config.block_out_channels[0]
        self.fg_head = nn.Conv2d(width, 2, kernel_size=1)
        self.hv_head = nn.Conv2d(width, 2, kernel_size=1)
        self.type_head = nn.Conv2d(width, config.n_types, kernel_size=1)
        for name in UNUSED_UNET_MODULES:
            getattr(self.unet, name).requires_grad_(False)

    def head_parameters(self) -> list[nn.Parameter]:
        """Parameters of the three heads."""
        return [p for h in (self.fg_head, self.hv_head, self.type_head) for p in h.parameters()]

    def features(self, x: torch.Tensor, t: int | torch.Tensor | None = None) -> torch.Tensor:
        """The decoder's last feature map.

        Runs the UNet as :meth:`diffusers.UNet2DModel.forward` does — time
        embedding, ``conv_in``, down blocks with skip connections, mid block,
        up blocks — and stops before ``conv_norm_out`` / ``conv_out``.

        Parameters
        ----------
        x : (B, 3, H, W) float tensor
            Normalised input (:func:`normalize_rgb`); ``H`` and ``W``
            multiples of ``config.downsample``.
        t : int or (B,) tensor, optional
            Diffusion timestep of the time embedding (default ``config.timestep``).

        Returns
        -------
        (B, block_out_channels[0], H, W) tensor
        """
        unet = self.unet
        step = self.config.timestep if t is None else t
        if not torch.is_tensor(step):
            step = torch.tensor([step], dtype=torch.long, device=x.device)
        steps = step.to(x.device).reshape(-1).expand(x.shape[0])
        emb = unet.time_embedding(unet.time_proj(steps).to(dtype=x.dtype))

        sample = unet.conv_in(x)
        skips: tuple[torch.Tensor, ...] = (sample,)
        for block in unet.down_blocks:
            sample, res = block(hidden_states=sample, temb=emb)
            skips += res
        if unet.mid_block is not None:
            sample = unet.mid_block(sample, emb)
        for block in unet.up_blocks:
            n = len(block.resnets)
            res, skips = skips[-n:], skips[:-n]
            sample = block(sample, res, emb)
        return sample

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Head outputs for a normalised batch.

        Parameters
        ----------
        x : (B, 3, H, W) float tensor
            :func:`normalize_rgb` of the tiles.

        Returns
        -------
        dict of (B, C, H, W) tensors
            ``fg`` logits (C = 2), ``hv`` maps (C = 2), ``type`` logits
            (C = ``len(classes) + 1``).
        """
        f = self.features(x)
        return {"fg": self.fg_head(f), "hv": self.hv_head(f), "type": self.type_head(f)}


def build_model(config: ModelConfig) -> SegmentationNet:
    """A randomly initialised :class:`SegmentationNet` (torch's default init)."""
    if not isinstance(config, ModelConfig):
        raise TypeError(f"config is {type(config).__name__}; expected ModelConfig")
    return SegmentationNet(config)
