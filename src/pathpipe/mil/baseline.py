"""Tile-level random forest: CellFiNet's benchmark for the attention MIL model.

CellFiNet (MICCAI 2023 workshops) compares AMIL with a random forest
(Breiman 2001) trained on tiles: every tile gets its slide's label, the
classes are balanced, and a slide's score is the mean over its tiles of the
predicted class probability,

    p(slide) = (1 / K) Σ_k p_RF(y = c | x_k).

Class balance is scikit-learn's ``class_weight="balanced"`` over the training
tiles (class ``c`` weighs ``N / (C · N_c)`` with ``N`` tiles, ``N_c`` of them
labelled ``c``).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError
from pathpipe.mil.bags import check_bags, check_labels, check_positive_int, check_seed

__all__ = ["RandomForestBaseline"]


class RandomForestBaseline:
    """Random forest on tiles with slide score = mean tile probability.

    Parameters
    ----------
    n_estimators : int
        Trees in the forest.
    min_samples_leaf : int
        Minimum tiles per leaf.
    max_features : str, int or float
        Features tried per split (:class:`sklearn.ensemble.RandomForestClassifier`).
    max_tiles : int or None
        Train on a seeded random subset of at most this many tiles per slide
        (None: all tiles).
    n_jobs : int
        Parallel jobs of scikit-learn.

    Attributes
    ----------
    forest : sklearn.ensemble.RandomForestClassifier or None
        The fitted forest (None before :meth:`fit`).
    n_features : int
    n_classes : int
    """

    def __init__(
        self,
        *,
        n_estimators: int = 200,
        min_samples_leaf: int = 1,
        max_features: str | int | float = "sqrt",
        max_tiles: int | None = None,
        n_jobs: int = 1,
    ) -> None:
        self.n_estimators = check_positive_int("n_estimators", n_estimators)
        self.min_samples_leaf = check_positive_int("min_samples_leaf", min_samples_leaf)
        self.max_features = max_features
        self.max_tiles = check_positive_int("max_tiles", max_tiles, allow_none=True)
        self.n_jobs = n_jobs
        self.forest: Any = None
        self.n_features = 0
        self.n_classes = 0

    def fit(self, bags: Sequence[Any], labels: Any, *, seed: int = 0) -> RandomForestBaseline:
        """Fit on the tiles of the training slides.

        Parameters
        ----------
        bags : sequence of (K_i, F) array-like
        labels : (n,) array-like of int
            Slide class indices; every tile of slide ``i`` is labelled ``labels[i]``.
        seed : int
            Seed of the forest and of the tile subsampling.

        Returns
        -------
        self
        """
        from sklearn.ensemble import RandomForestClassifier

        x = check_bags(bags)
        y = check_labels(labels, len(x))
        if len(np.unique(y)) < 2:
            raise ConfigError(f"labels hold only class {int(y[0])}; expected at least two classes")
        seed = check_seed(seed)
        rng = np.random.default_rng([seed, 0xF0E5])
        if self.max_tiles is not None:
            x = [
                b
                if len(b) <= self.max_tiles
                else b[rng.choice(len(b), self.max_tiles, replace=False)]
                for b in x
            ]
        tiles = np.concatenate(x)
        tile_y = np.repeat(y, [len(b) for b in x])
        self.forest = RandomForestClassifier(
            n_estimators=self.n_estimators,
            min_samples_leaf=self.min_samples_leaf,
            max_features=self.max_features,
            class_weight="balanced",
            n_jobs=self.n_jobs,
            random_state=seed,
        ).fit(tiles, tile_y)
        self.n_features = tiles.shape[1]
        self.n_classes = max(2, int(y.max()) + 1)
        return self

    def predict(self, bags: Sequence[Any]) -> np.ndarray:
        """Slide scores: the mean tile probability.

        Parameters
        ----------
        bags : sequence of (K_i, F) array-like

        Returns
        -------
        (n,) float64 ndarray, or (n, n_classes) with more than two classes
            Probability of class 1 (binary) or of each class.
        """
        if self.forest is None:
            raise ConfigError("RandomForestBaseline.predict before fit; call fit first")
        x = check_bags(bags, n_features=self.n_features)
        sizes = [len(b) for b in x]
        tile_p = np.zeros((sum(sizes), self.n_classes))
        # Columns of predict_proba are the classes seen in training (self.forest.classes_).
        tile_p[:, self.forest.classes_] = self.forest.predict_proba(np.concatenate(x))
        bounds = np.cumsum([0, *sizes])
        slide_p = np.add.reduceat(tile_p, bounds[:-1], axis=0) / np.asarray(sizes)[:, None]
        return slide_p[:, 1] if self.n_classes == 2 else slide_p
