"""Gated attention-based deep MIL (AMIL) for slide classification from tile features.

After Ilse, Tomczak & Welling (2018), "Attention-based Deep Multiple Instance
Learning", ICML, as used on cellular tile features by CellFiNet (MICCAI 2023
workshops). A slide is a bag of ``K`` tiles with features ``x_k ∈ R^F``:

1. **Tile encoder** ``h_k = f(x_k) ∈ R^L``: blocks Linear → Dropout →
   BatchNorm1d → ReLU, sized from the feature dimension (default ``F → F/2 →
   F/4``, each at least 8; ``L`` is the last size).
2. **Gated attention** (Ilse et al. 2018, eq. 9)::

       a_k = exp(w^T (tanh(V h_k) ⊙ sigm(U h_k))) / Σ_j exp(w^T (tanh(V h_j) ⊙ sigm(U h_j)))

   with ``V, U ∈ R^{D×L}``, ``w ∈ R^D`` and ``D = max(L/2, 8)``.
3. **Attention pooling** (eq. 8): ``z = Σ_k a_k h_k``.
4. **Classifier**: Linear → ReLU → Dropout → Linear to ``n_classes`` logits.

BatchNorm and bags of one tile. The encoder's BatchNorm normalises over all
tiles of a forward pass: in training these are the tiles of a mini-batch of
slides (:meth:`GatedAttentionMIL.forward_bags`), so its statistics mix slides
of both classes; in eval mode the running statistics are used. A training-mode
pass over a single tile (where batch statistics are undefined) is normalised
with the running statistics, as in eval mode, and does not update them
(:class:`TileBatchNorm`). A bag of one tile therefore always works; its
attention is 1.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from pathpipe.errors import ConfigError

__all__ = ["GatedAttentionMIL", "TileBatchNorm", "default_hidden"]


def default_hidden(n_features: int) -> tuple[int, ...]:
    """Encoder sizes ``(max(F // 2, 8), max(F // 4, 8))`` for ``F = n_features``."""
    return (max(n_features // 2, 8), max(n_features // 4, 8))


class TileBatchNorm(nn.BatchNorm1d):
    """:class:`torch.nn.BatchNorm1d` that accepts a single tile in training mode.

    With one row, batch statistics are undefined; that row is normalised with
    the running statistics (eval-style) and the running statistics are left
    unchanged. Otherwise identical to BatchNorm1d (same state-dict keys).
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.training and x.shape[0] == 1:
            return F.batch_norm(
                x, self.running_mean, self.running_var, self.weight, self.bias, False, 0.0, self.eps
            )
        return super().forward(x)


class GatedAttentionMIL(nn.Module):
    """Gated attention MIL classifier (see the module docstring).

    Parameters
    ----------
    n_features : int
        Tile feature dimension ``F``.
    hidden : sequence of int, optional
        Output sizes of the encoder blocks; default :func:`default_hidden`.
    dropout : float
        Dropout probability of the encoder blocks and the classifier, in ``[0, 1)``.
    n_classes : int
        Number of slide classes, at least 2.

    Attributes
    ----------
    config : dict
        The constructor arguments (JSON-ready; what :func:`pathpipe.mil.io.save_amil` stores).
    """

    def __init__(
        self,
        n_features: int,
        *,
        hidden: Sequence[int] | None = None,
        dropout: float = 0.25,
        n_classes: int = 2,
    ) -> None:
        super().__init__()
        if not (isinstance(n_features, int) and not isinstance(n_features, bool)) or n_features < 1:
            raise ConfigError(f"n_features={n_features!r}; expected a positive integer")
        sizes = default_hidden(n_features) if hidden is None else tuple(hidden)
        if not sizes or not all(
            isinstance(s, int) and not isinstance(s, bool) and s >= 1 for s in sizes
        ):
            raise ConfigError(f"hidden={hidden!r}; expected a non-empty list of positive integers")
        if not (isinstance(dropout, int | float) and 0 <= dropout < 1):
            raise ConfigError(f"dropout={dropout!r}; expected a number in [0, 1)")
        if not (isinstance(n_classes, int) and not isinstance(n_classes, bool)) or n_classes < 2:
            raise ConfigError(f"n_classes={n_classes!r}; expected an integer >= 2")
        self.config: dict[str, Any] = {
            "n_features": n_features,
            "hidden": list(sizes),
            "dropout": float(dropout),
            "n_classes": n_classes,
        }
        blocks: list[nn.Module] = []
        width = n_features
        for size in sizes:
            blocks += [nn.Linear(width, size), nn.Dropout(dropout), TileBatchNorm(size), nn.ReLU()]
            width = size
        self.encoder = nn.Sequential(*blocks)
        att = max(width // 2, 8)
        # Ilse et al. (2018) eq. 9: V (tanh branch), U (sigmoid gate), w (scores).
        self.attention_v = nn.Linear(width, att)
        self.attention_u = nn.Linear(width, att)
        self.attention_w = nn.Linear(att, 1)
        head = max(width // 2, 8)
        self.classifier = nn.Sequential(
            nn.Linear(width, head), nn.ReLU(), nn.Dropout(dropout), nn.Linear(head, n_classes)
        )

    @property
    def n_features(self) -> int:
        return int(self.config["n_features"])

    @property
    def n_classes(self) -> int:
        return int(self.config["n_classes"])

    def _scores(self, h: torch.Tensor) -> torch.Tensor:
        """(N,) attention scores ``w^T (tanh(V h) ⊙ sigm(U h))`` before the softmax (eq. 9)."""
        gated = torch.tanh(self.attention_v(h)) * torch.sigmoid(self.attention_u(h))
        return self.attention_w(gated).squeeze(-1)

    def forward(self, bag: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify one bag.

        Parameters
        ----------
        bag : (K, F) float tensor
            The slide's tiles, ``K >= 1``.

        Returns
        -------
        logits : (n_classes,) float tensor
        attention : (K,) float tensor
            Attention weights ``a_k``, summing to 1.
        """
        logits, attention = self.forward_bags(bag, [bag.shape[0]] if bag.ndim == 2 else [])
        return logits[0], attention

    def forward_bags(
        self, tiles: torch.Tensor, sizes: Sequence[int]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Classify several bags in one pass (the encoder's BatchNorm sees all their tiles).

        Parameters
        ----------
        tiles : (N, F) float tensor
            The tiles of ``B`` bags, concatenated in order.
        sizes : sequence of int
            ``(B,)`` tile counts, each at least 1, summing to ``N``.

        Returns
        -------
        logits : (B, n_classes) float tensor
        attention : (N,) float tensor
            Attention weights; those of each bag sum to 1.
        """
        if tiles.ndim != 2 or tiles.shape[1] != self.n_features:
            raise ConfigError(
                f"bag has shape {tuple(tiles.shape)}; expected (tiles, {self.n_features})"
            )
        sizes = [int(s) for s in sizes]
        if not sizes or min(sizes) < 1 or sum(sizes) != tiles.shape[0]:
            raise ConfigError(
                f"bag sizes {sizes[:5]} for {tiles.shape[0]} tiles; expected positive tile "
                "counts summing to the number of tiles (an empty bag has no tiles to classify)"
            )
        h = self.encoder(tiles)
        scores = self._scores(h)
        attention = torch.cat([torch.softmax(s, dim=0) for s in scores.split(sizes)])
        # Ilse et al. (2018) eq. 8: z = Σ_k a_k h_k, per bag.
        weighted = (attention.unsqueeze(-1) * h).split(sizes)
        pooled = torch.stack([w.sum(dim=0) for w in weighted])
        return self.classifier(pooled), attention
