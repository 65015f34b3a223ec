"""The architecture and training geometry of a segmentation network.

:class:`ModelConfig` is plain data (no torch import): the workflow's config
block, the JSON saved next to every model and the check that a pretrained
diffusion UNet fits a segmentation network all go through it.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, fields
from typing import Any

from pathpipe.errors import ConfigError

__all__ = ["STRATEGIES", "ModelConfig"]

#: Fine-tuning strategies of :func:`pathpipe.segmentation.unet.train.train_segmentation`
#: (scratch, or from a pretrained diffusion UNet: linear, decoder, full); all but
#: ``scratch`` need a checkpoint.
STRATEGIES = ("scratch", "linear", "decoder", "full")


@dataclass(frozen=True)
class ModelConfig:
    """Architecture of :class:`pathpipe.segmentation.unet.model.SegmentationNet` and of the DDPM it can start from.

    The backbone is a :class:`diffusers.UNet2DModel` with one level per entry of
    ``block_out_channels``; every level but the last halves the resolution, so
    inputs are padded to a multiple of :attr:`downsample`.

    Attributes
    ----------
    classes : tuple of str
        Nucleus type names; type-map value ``k`` is ``classes[k - 1]``. Empty
        means "take them from the training data" (``classes.json``); a model
        with no classes segments without typing.
    mpp : float
        µm per pixel the model is trained at (default 0.5, about 20×). Data at
        another resolution (more than 10 % off) is refused.
    block_out_channels : tuple of int
        Channels of each UNet level (default ``(32, 64, 128)``: 3 levels,
        downsampling 4, about 3.5 M parameters with ``layers_per_block=2``).
    layers_per_block : int
        ResNet blocks per down level (up levels have one more), default 2 as in
        DDPM (Ho et al. 2020).
    norm_num_groups : int
        GroupNorm groups; must divide every entry of ``block_out_channels``.
    attention : bool
        Self-attention in the lowest-resolution level and the mid block
        (default False: its memory grows with the square of the tile area).
    timestep : int
        Diffusion timestep whose embedding conditions the backbone when it
        extracts segmentation features (default 0). The image itself is not
        noised: at ``t = 0`` a DDPM-pretrained UNet sees the clean-image regime
        it was trained on, which is the natural choice for a backbone that is
        fine-tuned; larger values (Baranchuk et al. 2022 use 50–250 of 1000)
        only change the time embedding here.
    crop_size : int
        Side of the random training crops in pixels (default 128); a multiple
        of :attr:`downsample`.
    diffusion_steps : int
        Number of DDPM timesteps ``T`` (default 1000, Ho et al. 2020).
    """

    classes: tuple[str, ...] = ()
    mpp: float = 0.5
    block_out_channels: tuple[int, ...] = (32, 64, 128)
    layers_per_block: int = 2
    norm_num_groups: int = 8
    attention: bool = False
    timestep: int = 0
    crop_size: int = 128
    diffusion_steps: int = 1000

    def __post_init__(self) -> None:
        classes = self.classes
        if isinstance(classes, str) or not all(isinstance(c, str) and c for c in classes):
            raise ConfigError(
                f"model classes={classes!r}; expected a list of non-empty class names"
            )
        if len(set(classes)) != len(classes):
            raise ConfigError(
                f"model classes={list(classes)!r} has duplicates; expected unique names"
            )
        object.__setattr__(self, "classes", tuple(classes))
        if not (isinstance(self.mpp, int | float) and math.isfinite(self.mpp) and self.mpp > 0):
            raise ConfigError(f"model mpp={self.mpp!r}; expected a positive number of µm per pixel")
        object.__setattr__(self, "mpp", float(self.mpp))
        channels = self.block_out_channels
        if (
            isinstance(channels, str)
            or len(channels) < 1
            or not all(_is_int(c) and c > 0 for c in channels)
        ):
            raise ConfigError(
                f"model block_out_channels={channels!r}; expected a list of positive integers"
            )
        object.__setattr__(self, "block_out_channels", tuple(int(c) for c in channels))
        for name in ("layers_per_block", "norm_num_groups", "crop_size", "diffusion_steps"):
            value = getattr(self, name)
            if not (_is_int(value) and value >= 1):
                raise ConfigError(f"model {name}={value!r}; expected a positive integer")
        bad = [c for c in self.block_out_channels if c % self.norm_num_groups]
        if bad:
            raise ConfigError(
                f"model norm_num_groups={self.norm_num_groups} does not divide "
                f"block_out_channels {bad}; expected a divisor of every entry"
            )
        if not isinstance(self.attention, bool):
            raise ConfigError(f"model attention={self.attention!r}; expected true or false")
        if not (_is_int(self.timestep) and 0 <= self.timestep < self.diffusion_steps):
            raise ConfigError(
                f"model timestep={self.timestep!r}; expected an integer in "
                f"[0, diffusion_steps={self.diffusion_steps})"
            )
        if self.crop_size % self.downsample:
            raise ConfigError(
                f"model crop_size={self.crop_size}; expected a multiple of the UNet's "
                f"downsampling {self.downsample} (2 ** (levels - 1))"
            )

    @property
    def downsample(self) -> int:
        """Total downsampling of the UNet, ``2 ** (len(block_out_channels) - 1)``."""
        return 2 ** (len(self.block_out_channels) - 1)

    @property
    def n_types(self) -> int:
        """Channels of the type head: ``len(classes) + 1`` (0 = background)."""
        return len(self.classes) + 1

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict (tuples become lists)."""
        out = asdict(self)
        out["classes"] = list(self.classes)
        out["block_out_channels"] = list(self.block_out_channels)
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ModelConfig:
        """Inverse of :meth:`to_dict`.

        Raises
        ------
        ConfigError
            Unknown keys or invalid values.
        """
        if not isinstance(data, dict):
            raise ConfigError(f"model config is {type(data).__name__}; expected a mapping")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise ConfigError(
                f"model config has unknown keys {unknown}; expected some of {sorted(known)}"
            )
        kw = dict(data)
        for key in ("classes", "block_out_channels"):
            if key in kw and isinstance(kw[key], list):
                kw[key] = tuple(kw[key])
        return cls(**kw)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)
