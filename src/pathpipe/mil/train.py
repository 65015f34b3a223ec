"""Training and prediction of the gated attention MIL model (:mod:`pathpipe.mil.model`).

Training, after Ilse et al. (2018) and CellFiNet (MICCAI 2023 workshops):

* each epoch visits the training slides in a seeded random order, in
  mini-batches of ``batch_size`` slides; each slide contributes a seeded random
  subset of at most ``max_tiles`` of its tiles (all when it has fewer), drawn
  anew every epoch;
* loss: cross-entropy on the slide logits, weighted per class; ``"balanced"``
  gives class ``c`` the weight ``n / (C · n_c)`` (``n`` training slides, ``C``
  classes, ``n_c`` slides of class ``c``; scikit-learn's convention), so
  ``L = Σ_i w_{y_i} CE_i / Σ_i w_{y_i}`` over a mini-batch;
* Adam (Kingma & Ba 2015) with L2 weight decay;
* with validation slides: after every epoch, the ROC AUC of the validation
  slides (all their tiles, eval mode; one-vs-rest macro AUC for more than two
  classes) and their unweighted mean cross-entropy. An epoch is *better* when
  its AUC is higher, or equal with a lower validation loss (AUC saturates at 1
  on easy cohorts). Training stops after ``patience`` epochs without a better
  one, and the weights of the best epoch are restored. Without validation
  slides every epoch runs and the last weights are kept.

Determinism: tile sampling uses ``numpy.random.default_rng([seed, …])``; weight
initialisation and dropout use torch's generator seeded with ``seed`` inside
:func:`torch.random.fork_rng`, so the caller's random state is untouched and
two CPU runs with the same inputs and seed give identical weights.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from pathpipe.device import resolve_device
from pathpipe.errors import ConfigError
from pathpipe.mil.bags import check_bags, check_labels, check_positive_int, check_seed
from pathpipe.mil.model import GatedAttentionMIL

__all__ = ["TrainHistory", "class_weights", "predict_amil", "train_amil"]

# Tiles per forward pass when predicting (bags are grouped up to this many).
_PREDICT_CHUNK = 8192


@dataclass
class TrainHistory:
    """Record of a :func:`train_amil` run.

    Attributes
    ----------
    epochs : list of dict
        One entry per epoch run: ``epoch`` (1-based), ``loss`` (mean weighted
        training loss), ``val_loss`` and ``val_auc`` (None without validation).
    best_epoch : int
        Epoch whose weights the returned model holds.
    best_val_auc : float or None
    stopped_early : bool
        True when patience ran out before ``epochs``.
    class_weight : list of float
        Weight of each class in the loss.
    seconds : float
        Wall time of the training loop.
    device : str
    """

    epochs: list[dict[str, Any]] = field(default_factory=list)
    best_epoch: int = 0
    best_val_auc: float | None = None
    stopped_early: bool = False
    class_weight: list[float] = field(default_factory=list)
    seconds: float = 0.0
    device: str = "cpu"

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready record."""
        return {
            "best_epoch": self.best_epoch,
            "best_val_auc": self.best_val_auc,
            "stopped_early": self.stopped_early,
            "class_weight": self.class_weight,
            "seconds": round(self.seconds, 3),
            "device": self.device,
            "epochs": self.epochs,
        }


def class_weights(labels: np.ndarray, n_classes: int, class_weight: Any) -> np.ndarray:
    """Per-class loss weights.

    Parameters
    ----------
    labels : (n,) int ndarray
        Training labels, in ``0 .. n_classes - 1``.
    n_classes : int
    class_weight : "balanced", None or sequence of float
        ``"balanced"``: ``n / (n_classes · n_c)``; None: all 1; a sequence: one
        positive weight per class.

    Returns
    -------
    (n_classes,) float32 ndarray
    """
    if class_weight is None:
        return np.ones(n_classes, np.float32)
    if isinstance(class_weight, str):
        if class_weight != "balanced":
            raise ConfigError(
                f"class_weight={class_weight!r}; expected 'balanced', None or one weight per class"
            )
        counts = np.bincount(labels, minlength=n_classes)
        if (counts == 0).any():
            raise ConfigError(
                f"training labels have no slide of class(es) {np.flatnonzero(counts == 0).tolist()}"
                f"; expected every one of the {n_classes} classes"
            )
        return (len(labels) / (n_classes * counts)).astype(np.float32)
    w = np.asarray(class_weight, dtype=np.float64)
    if w.shape != (n_classes,) or not (np.isfinite(w).all() and (w > 0).all()):
        raise ConfigError(
            f"class_weight={class_weight!r}; expected 'balanced', None or {n_classes} "
            "positive weights"
        )
    return w.astype(np.float32)


def _sample_tiles(bag: np.ndarray, max_tiles: int | None, rng: np.random.Generator) -> np.ndarray:
    """At most ``max_tiles`` rows of ``bag``, drawn without replacement, in bag order."""
    if max_tiles is None or bag.shape[0] <= max_tiles:
        return bag
    return bag[np.sort(rng.choice(bag.shape[0], size=max_tiles, replace=False))]


def _forward_chunks(
    model: GatedAttentionMIL, bags: Sequence[np.ndarray], dev: torch.device
) -> tuple[torch.Tensor, list[np.ndarray]]:
    """Eval-mode logits (B, C) and per-bag attention of ``bags``, grouped in chunks."""
    logits, attention = [], []
    start = 0
    while start < len(bags):
        stop, n_tiles = start, 0
        while stop < len(bags) and (stop == start or n_tiles + len(bags[stop]) <= _PREDICT_CHUNK):
            n_tiles += len(bags[stop])
            stop += 1
        sizes = [len(b) for b in bags[start:stop]]
        tiles = torch.from_numpy(np.concatenate(bags[start:stop])).to(dev)
        lg, att = model.forward_bags(tiles, sizes)
        logits.append(lg.float().cpu())
        attention.extend(a.numpy() for a in att.float().cpu().split(sizes))
        start = stop
    return torch.cat(logits), attention


def _probabilities(logits: torch.Tensor) -> np.ndarray:
    p = torch.softmax(logits, dim=1).numpy().astype(np.float64)
    return p[:, 1] if p.shape[1] == 2 else p


def _auc(y: np.ndarray, proba: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    if proba.ndim == 1:
        return float(roc_auc_score(y, proba))
    return float(roc_auc_score(y, proba, multi_class="ovr", labels=np.arange(proba.shape[1])))


def predict_amil(
    model: GatedAttentionMIL, bags: Sequence[Any], *, device: str | torch.device | None = None
) -> tuple[np.ndarray, list[np.ndarray]]:
    """Slide probabilities and tile attention of a trained model.

    Parameters
    ----------
    model : GatedAttentionMIL
        Put in eval mode by this function.
    bags : sequence of (K_i, F) array-like
        All tiles of each slide.
    device : str or torch.device, optional
        Where to run; default: where the model's weights are.

    Returns
    -------
    probabilities : (n,) float64 ndarray, or (n, n_classes) with more than two classes
        Probability of class 1 (binary) or of each class.
    attention : list of (K_i,) float32 ndarray
        Attention weights of each slide's tiles (each sums to 1).

    Raises
    ------
    ConfigError
        An empty bag ("all tiles filtered out", naming the slide index) or a
        feature count other than the model's.
    """
    checked = check_bags(bags, n_features=model.n_features)
    dev = next(model.parameters()).device if device is None else resolve_device(device)
    model.to(dev).eval()
    with torch.no_grad():
        logits, attention = _forward_chunks(model, checked, dev)
    return _probabilities(logits), attention


def train_amil(
    bags: Sequence[Any],
    labels: Any,
    *,
    val_bags: Sequence[Any] | None = None,
    val_labels: Any | None = None,
    max_tiles: int | None = 30,
    epochs: int = 100,
    lr: float = 1e-3,
    weight_decay: float = 1e-4,
    patience: int = 10,
    seed: int = 0,
    device: str | torch.device = "auto",
    class_weight: Any = "balanced",
    batch_size: int = 8,
    hidden: Sequence[int] | None = None,
    dropout: float = 0.25,
    n_classes: int | None = None,
) -> tuple[GatedAttentionMIL, TrainHistory]:
    """Train a :class:`GatedAttentionMIL` on slide bags (see the module docstring).

    Parameters
    ----------
    bags : sequence of (K_i, F) array-like
        Preprocessed tile features of each training slide.
    labels : (n,) array-like of int
        Class index of each training slide.
    val_bags, val_labels : optional
        Validation slides and labels for early stopping; every class must occur.
    max_tiles : int or None
        Tiles sampled per slide and epoch; None uses all.
    epochs : int
        Maximum number of epochs.
    lr, weight_decay : float
        Adam learning rate and L2 weight decay.
    patience : int
        Epochs without a better validation epoch before stopping.
    seed : int
        Seed of the initialisation, dropout, slide order and tile sampling.
    device : str or torch.device
        ``"auto"`` (CUDA when available), ``"cpu"`` or ``"cuda[:n]"``.
    class_weight : "balanced", None or sequence of float
        See :func:`class_weights`.
    batch_size : int
        Slides per optimiser step.
    hidden, dropout :
        Architecture, see :class:`GatedAttentionMIL`.
    n_classes : int, optional
        Default: ``max(label) + 1`` over training and validation labels, at least 2.

    Returns
    -------
    model : GatedAttentionMIL
        Best (or last) weights, in eval mode, on ``device``.
    history : TrainHistory

    Raises
    ------
    ConfigError
        Invalid options, an empty bag (naming the slide index), labels that do
        not match the bags, or validation labels with a single class.
    """
    train_x = check_bags(bags, what="bags")
    n_feat = train_x[0].shape[1]
    y = check_labels(labels, len(train_x), n_classes=n_classes)
    has_val = val_bags is not None or val_labels is not None
    if has_val and (val_bags is None or val_labels is None):
        raise ConfigError("val_bags and val_labels go together; received only one of them")
    if has_val:
        val_x = check_bags(val_bags, what="val_bags", n_features=n_feat)
        val_y = check_labels(val_labels, len(val_x), what="val_labels", n_classes=n_classes)
    if n_classes is None:
        n_classes = max(2, int(y.max()) + 1, int(val_y.max()) + 1 if has_val else 0)
    if has_val and len(np.unique(val_y)) < 2:
        raise ConfigError(
            f"val_labels hold only class {int(val_y[0])}; expected at least two classes "
            "(validation ROC AUC needs both)"
        )
    max_tiles = check_positive_int("max_tiles", max_tiles, allow_none=True)
    epochs = check_positive_int("epochs", epochs)
    patience = check_positive_int("patience", patience)
    batch_size = check_positive_int("batch_size", batch_size)
    for name, value in (("lr", lr), ("weight_decay", weight_decay)):
        if not (isinstance(value, int | float) and value >= 0) or (name == "lr" and value == 0):
            kind = "positive" if name == "lr" else "non-negative"
            raise ConfigError(f"{name}={value!r}; expected a {kind} number")
    seed = check_seed(seed)
    weights = class_weights(y, n_classes, class_weight)
    dev = resolve_device(device)

    rng = np.random.default_rng([seed, 0xA311])
    history = TrainHistory(class_weight=weights.tolist(), device=str(dev))
    rng_devices = [dev.index or 0] if dev.type == "cuda" else []
    t0 = time.perf_counter()
    with torch.random.fork_rng(devices=rng_devices):
        torch.manual_seed(seed)
        model = GatedAttentionMIL(n_feat, hidden=hidden, dropout=dropout, n_classes=n_classes)
        model.to(dev)
        optimiser = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
        w_dev = torch.from_numpy(weights).to(dev)
        y_dev = torch.from_numpy(y).to(dev)
        best: tuple[float, float] | None = None  # (auc, val_loss) of the best epoch
        best_state: dict[str, torch.Tensor] | None = None
        waited = 0
        for epoch in range(1, epochs + 1):
            model.train()
            order = rng.permutation(len(train_x))
            loss_sum = 0.0
            for start in range(0, len(order), batch_size):
                idx = order[start : start + batch_size]
                sampled = [_sample_tiles(train_x[i], max_tiles, rng) for i in idx]
                tiles = torch.from_numpy(np.concatenate(sampled)).to(dev)
                logits, _ = model.forward_bags(tiles, [len(s) for s in sampled])
                loss = F.cross_entropy(logits, y_dev[torch.from_numpy(idx)], weight=w_dev)
                optimiser.zero_grad(set_to_none=True)
                loss.backward()
                optimiser.step()
                loss_sum += float(loss.detach()) * len(idx)
            record: dict[str, Any] = {
                "epoch": epoch,
                "loss": loss_sum / len(order),
                "val_loss": None,
                "val_auc": None,
            }
            history.epochs.append(record)
            if not has_val:
                history.best_epoch = epoch
                continue
            model.eval()
            with torch.no_grad():
                val_logits, _ = _forward_chunks(model, val_x, dev)
            val_loss = float(F.cross_entropy(val_logits, torch.from_numpy(val_y)))
            val_auc = _auc(val_y, _probabilities(val_logits))
            record.update(val_loss=val_loss, val_auc=val_auc)
            if best is None or val_auc > best[0] or (val_auc == best[0] and val_loss < best[1]):
                best = (val_auc, val_loss)
                best_state = copy.deepcopy(model.state_dict())
                history.best_epoch, history.best_val_auc = epoch, val_auc
                waited = 0
            else:
                waited += 1
                if waited >= patience:
                    history.stopped_early = epoch < epochs
                    break
        if best_state is not None:
            model.load_state_dict(best_state)
    history.seconds = time.perf_counter() - t0
    return model.eval(), history
