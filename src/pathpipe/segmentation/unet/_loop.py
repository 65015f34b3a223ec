"""The optimisation loop shared by segmentation training and DDPM pretraining.

* Device and mixed precision as in :mod:`pathpipe.device`; with float16
  autocast the loss is scaled by a :class:`torch.amp.GradScaler`;
* Adam (Kingma & Ba 2015) with a cosine decay of the learning rate to 1 % of
  its initial value over the run;
* the loss is logged as its mean over each window of ``log_every`` iterations;
* :func:`train_and_save` is the wrap-up both trainings share: the loop, the
  :class:`TrainResult` and the saved model with its training record.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from pathpipe.device import amp_dtype, autocast
from pathpipe.errors import ConfigError

__all__ = ["LoopSettings", "TrainResult", "check_positive_int", "fit", "train_and_save"]


@dataclass(frozen=True)
class TrainResult:
    """Outcome of :func:`pathpipe.segmentation.unet.train_segmentation` or :func:`pathpipe.segmentation.unet.pretrain_diffusion`.

    Attributes
    ----------
    path : pathlib.Path
        Directory the model was saved to (what :func:`pathpipe.segmentation.unet.load_model`
        or ``train_segmentation(init=...)`` reads).
    history : list of dict
        One entry per logged window: ``iteration`` (1-based, last of the
        window), ``loss`` (mean over the window), ``lr`` and the mean of each
        loss term.
    final_loss : float
        ``loss`` of the last entry.
    n_trainable : int
        Parameters the optimiser updated.
    n_params : int
        All parameters of the model.
    seconds : float
        Wall time of the optimisation loop.
    device : str
    """

    path: Path
    history: list[dict[str, float]] = field(repr=False)
    final_loss: float
    n_trainable: int
    n_params: int
    seconds: float
    device: str

    @property
    def losses(self) -> np.ndarray:
        """(n_logged,) float64 ndarray of ``history[i]["loss"]``."""
        return np.array([h["loss"] for h in self.history], np.float64)

    def summary(self) -> dict[str, Any]:
        """JSON-ready record (saved in the model's JSON)."""
        return {
            "final_loss": self.final_loss,
            "n_trainable": self.n_trainable,
            "n_params": self.n_params,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "history": self.history,
        }


def check_positive_int(name: str, value: object) -> int:
    """``value`` when it is a positive int; ConfigError naming ``name`` otherwise."""
    if not (isinstance(value, int) and not isinstance(value, bool) and value >= 1):
        raise ConfigError(f"{name}={value!r}; expected a positive integer")
    return value


@dataclass(frozen=True)
class LoopSettings:
    """The settings of one training run's loop, checked when made.

    ``iterations``, ``batch_size`` and ``log_every`` are positive integers,
    ``lr`` a positive learning rate (already resolved from its default);
    ``seed`` and ``amp`` as given to the training function.
    """

    iterations: int
    batch_size: int
    lr: float
    seed: int
    amp: bool
    log_every: int

    def __post_init__(self) -> None:
        for name in ("iterations", "batch_size", "log_every"):
            check_positive_int(name, getattr(self, name))

    def record(self) -> dict[str, Any]:
        """The settings stored in the model's training record."""
        return {
            "iterations": self.iterations,
            "batch_size": self.batch_size,
            "lr": self.lr,
            "seed": self.seed,
            "amp": self.amp,
        }


def fit(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    batches: Iterator[Any],
    step_loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
    *,
    iterations: int,
    lr: float,
    device: torch.device,
    amp: bool,
    log_every: int,
) -> tuple[list[dict[str, float]], float]:
    """Run ``iterations`` optimiser steps.

    Parameters
    ----------
    model : torch.nn.Module
        Already on ``device``; put in training mode here.
    params : list of Parameter
        The trainable parameters (everything else must have
        ``requires_grad=False``).
    batches : iterator
        One item per iteration, handed to ``step_loss``.
    step_loss : callable
        ``batch -> (loss, terms)``; called under autocast.
    iterations, log_every : int
    lr : float
    device : torch.device
    amp : bool

    Returns
    -------
    history : list of dict
        See :class:`TrainResult`.
    seconds : float
    """
    if not params:
        raise ConfigError("no trainable parameters; expected at least one")
    if not (isinstance(lr, int | float) and lr > 0):
        raise ConfigError(f"lr={lr!r}; expected a positive learning rate")
    opt = torch.optim.Adam(params, lr=lr)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=iterations, eta_min=lr * 0.01)
    scaler = torch.amp.GradScaler(device.type) if amp_dtype(device, amp) == torch.float16 else None
    model.train()
    history: list[dict[str, float]] = []
    window: list[dict[str, float]] = []
    start = time.perf_counter()
    for it in range(1, iterations + 1):
        batch = next(batches)
        with autocast(device, amp):
            loss, terms = step_loss(batch)
        if not torch.isfinite(loss):
            raise ConfigError(
                f"training loss is {float(loss)} at iteration {it}; expected a finite loss "
                f"(lower lr, received {lr})"
            )
        opt.zero_grad(set_to_none=True)
        stepped = True
        if scaler is not None:
            scaler.scale(loss).backward()
            scale = scaler.get_scale()
            scaler.step(opt)  # skipped when the scaled gradients overflowed
            scaler.update()
            stepped = scaler.get_scale() >= scale
        else:
            loss.backward()
            opt.step()
        current_lr = opt.param_groups[0]["lr"]
        if stepped:
            sched.step()
        window.append({"loss": float(loss.detach()), "lr": current_lr, **terms})
        if it % log_every == 0 or it == iterations:
            entry = {"iteration": it}
            for key in window[0]:
                entry[key] = float(np.mean([w[key] for w in window]))
            history.append(entry)
            window = []
    model.eval()
    return history, time.perf_counter() - start


def train_and_save(
    model: torch.nn.Module,
    params: list[torch.nn.Parameter],
    batches: Iterator[Any],
    step_loss: Callable[[Any], tuple[torch.Tensor, dict[str, float]]],
    *,
    loop: LoopSettings,
    device: torch.device,
    out_dir: str | os.PathLike,
    record: dict[str, Any],
    save: Callable[[torch.nn.Module, dict[str, Any]], Any],
) -> TrainResult:
    """Run :func:`fit`, then save the model with its training record.

    Parameters
    ----------
    model, params, batches, step_loss :
        As for :func:`fit`.
    loop : LoopSettings
    device : torch.device
    out_dir : path-like
        The model folder ``save`` writes (recorded in the result).
    record : dict
        The run's own keys of the training record; the loop settings and
        :meth:`TrainResult.summary` follow them.
    save : callable
        ``save(model_on_cpu, extra)`` writes the model folder, with
        ``extra = {"training": <record>}``.

    Returns
    -------
    TrainResult
    """
    history, seconds = fit(
        model,
        params,
        batches,
        step_loss,
        iterations=loop.iterations,
        lr=loop.lr,
        device=device,
        amp=loop.amp,
        log_every=loop.log_every,
    )
    result = TrainResult(
        path=Path(out_dir),
        history=history,
        final_loss=history[-1]["loss"],
        n_trainable=sum(p.numel() for p in params),
        n_params=sum(p.numel() for p in model.parameters()),
        seconds=seconds,
        device=str(device),
    )
    save(model.to("cpu"), {"training": {**record, **loop.record(), **result.summary()}})
    return result
