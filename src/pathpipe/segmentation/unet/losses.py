"""HoVer-Net training loss.

Graham S, Vu QD, Raza SEA, et al. "HoVer-Net: Simultaneous segmentation and
classification of nuclei in multi-tissue histology images." Medical Image
Analysis 58 (2019) 101563, section 3.2, eqs. 1–5::

    L = λa·La + λb·Lb + λc·Lc + λd·Ld + λe·Le + λf·Lf

* ``La`` — mean squared error of the HV maps over all pixels (eq. 2);
* ``Lb`` — mean squared gradient error (MSGE) over nuclear pixels: the squared
  difference of ∂h/∂x and ∂v/∂y of prediction and target, both taken with the
  same 5×5 Sobel kernel (eq. 3);
* ``Lc`` / ``Le`` — cross-entropy of the nuclear-pixel / type logits (eq. 4);
* ``Ld`` / ``Lf`` — soft Dice loss of the nuclear-pixel / type softmax (eq. 5),
  summed over channels as in the reference implementation (smoothing 1e-3),
  computed per tile and averaged over the batch.

Weights (:data:`LOSS_WEIGHTS`) as in the paper: ``λb = 2``, all others 1.
Type terms are averaged only over tiles that have a type map.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from pathpipe.errors import ConfigError

__all__ = ["LOSS_WEIGHTS", "hovernet_loss", "resolve_loss_weights"]

#: Loss weights of HoVer-Net (section 3.2): MSGE weighted 2, every other term 1.
LOSS_WEIGHTS: dict[str, float] = {
    "hv_mse": 1.0,
    "hv_msge": 2.0,
    "fg_ce": 1.0,
    "fg_dice": 1.0,
    "type_ce": 1.0,
    "type_dice": 1.0,
}

_SMOOTH = 1e-3


def _sobel_5x5(device: torch.device) -> torch.Tensor:
    """(2, 1, 5, 5) kernels of ∂/∂x and ∂/∂y from the reference implementation.

    ``k_x[i, j] = x_j / (x_j² + y_i² + ε)`` on the grid ``-2..2`` (and the
    transpose for ``∂/∂y``).
    """
    r = torch.arange(-2, 3, dtype=torch.float32, device=device)
    y, x = torch.meshgrid(r, r, indexing="ij")
    den = x * x + y * y + 1e-15
    return torch.stack([x / den, y / den])[:, None]


def _hv_gradients(hv: torch.Tensor) -> torch.Tensor:
    """(B, 2, H, W): ∂h/∂x of channel 0 and ∂v/∂y of channel 1."""
    kernels = _sobel_5x5(hv.device).to(hv.dtype)
    return F.conv2d(hv, kernels, padding=2, groups=2)


def _dice(probs: torch.Tensor, onehot: torch.Tensor) -> torch.Tensor:
    """Soft Dice loss per channel, summed over channels; (B,) per sample."""
    dims = (2, 3)
    inter = (probs * onehot).sum(dims)
    total = probs.sum(dims) + onehot.sum(dims)
    return (1.0 - (2.0 * inter + _SMOOTH) / (total + _SMOOTH)).sum(1)


def resolve_loss_weights(overrides: dict[str, float] | None = None) -> dict[str, float]:
    """:data:`LOSS_WEIGHTS` updated with ``overrides`` (validated)."""
    w = dict(LOSS_WEIGHTS)
    for name, value in (overrides or {}).items():
        if name not in w:
            raise ConfigError(f"unknown loss weight {name!r}; expected some of {sorted(w)}")
        if not (isinstance(value, int | float) and value >= 0):
            raise ConfigError(f"loss weight {name}={value!r}; expected a number >= 0")
        w[name] = float(value)
    return w


def hovernet_loss(
    out: dict[str, torch.Tensor],
    target: dict[str, torch.Tensor],
    *,
    weights: dict[str, float] | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Total HoVer-Net loss and its terms.

    Parameters
    ----------
    out : dict of tensors
        Network outputs: ``fg`` (B, 2, H, W) logits, ``hv`` (B, 2, H, W),
        ``type`` (B, K + 1, H, W) logits.
    target : dict of tensors
        ``fg`` (B, H, W) int64 in {0, 1}, ``hv`` (B, 2, H, W) float32,
        ``type`` (B, H, W) int64 in 0..K, ``has_types`` (B,) bool.
    weights : dict, optional
        Overrides of :data:`LOSS_WEIGHTS`.

    Returns
    -------
    loss : 0-d float32 tensor
    terms : dict of float
        Each unweighted term (keys of :data:`LOSS_WEIGHTS`).
    """
    w = resolve_loss_weights(weights)
    fg_logits = out["fg"].float()
    hv = out["hv"].float()
    type_logits = out["type"].float()
    fg_t, hv_t, type_t = target["fg"], target["hv"], target["type"]
    has_types = target["has_types"]

    terms: dict[str, torch.Tensor] = {}
    # Eq. 2: MSE of the HV maps.
    terms["hv_mse"] = F.mse_loss(hv, hv_t)
    # Eq. 3: MSGE on nuclear pixels.
    nuclear = fg_t[:, None].to(hv.dtype).expand_as(hv)
    grad_err = (_hv_gradients(hv) - _hv_gradients(hv_t)) ** 2
    terms["hv_msge"] = (grad_err * nuclear).sum() / (nuclear.sum() + 1e-8)
    # Eqs. 4-5 on the nuclear-pixel branch.
    terms["fg_ce"] = F.cross_entropy(fg_logits, fg_t)
    terms["fg_dice"] = _dice(fg_logits.softmax(1), F.one_hot(fg_t, 2).permute(0, 3, 1, 2)).mean()
    # Eqs. 4-5 on the type branch, tiles with ground-truth types only.
    n_typed = int(has_types.sum())
    k = type_logits.shape[1]
    if n_typed and k > 1:
        tl, tt = type_logits[has_types], type_t[has_types]
        terms["type_ce"] = F.cross_entropy(tl, tt)
        terms["type_dice"] = _dice(tl.softmax(1), F.one_hot(tt, k).permute(0, 3, 1, 2)).mean()
    else:
        zero = type_logits.sum() * 0.0
        terms["type_ce"] = zero
        terms["type_dice"] = zero
    loss = sum(w[name] * value for name, value in terms.items())
    return loss, {name: float(value.detach()) for name, value in terms.items()}
