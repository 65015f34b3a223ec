"""Where the torch models (the unet, AMIL) run: device choice and mixed precision.

* ``device="auto"`` is CUDA when available, else the CPU;
* with ``amp`` on CUDA, forward passes run under :func:`torch.autocast` in
  bfloat16 where the GPU supports it, else float16 (training then scales the
  loss, :mod:`pathpipe.segmentation.unet._loop`); on the CPU ``amp`` is ignored (float32).
"""

from __future__ import annotations

import contextlib

import torch

from pathpipe.errors import ConfigError

__all__ = ["amp_dtype", "autocast", "resolve_device"]


def resolve_device(device: str | torch.device) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; other values as :class:`torch.device`."""
    if isinstance(device, str) and device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        dev = torch.device(device)
    except (RuntimeError, TypeError) as exc:
        raise ConfigError(f"device={device!r}; expected 'auto', 'cpu' or 'cuda[:n]'") from exc
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={device!r} but CUDA is not available; use 'auto' or 'cpu'")
    return dev


def amp_dtype(device: torch.device, amp: bool) -> torch.dtype | None:
    """Autocast dtype: bfloat16 / float16 on CUDA with ``amp``, None otherwise."""
    if not amp or device.type != "cuda":
        return None
    return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16


def autocast(device: torch.device, amp: bool) -> contextlib.AbstractContextManager:
    """:func:`torch.autocast` for :func:`amp_dtype`, or a no-op."""
    dtype = amp_dtype(device, amp)
    if dtype is None:
        return contextlib.nullcontext()
    return torch.autocast(device_type=device.type, dtype=dtype)
