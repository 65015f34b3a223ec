"""A light phenotype classifier trained on user-labelled nuclei, stored as JSON.

:class:`PhenotypeClassifier` (standardisation + multinomial logistic regression
on :func:`pathpipe.segmentation.phenotype.nucleus_descriptors`) learns any set of
classes; :func:`labelled_descriptors` measures the nuclei of annotated tiles and
names them by their type map; :func:`train_phenotypes` is the path-level layer
of ``pathpipe segmentation train-phenotypes`` (annotated folder in, classifier
JSON out). The classical method uses the classifier when
``segmentation.phenotype_model`` names its file.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.phenotype import (
    DESCRIPTOR_COLUMNS,
    empty_descriptors,
    nucleus_descriptors,
)

if TYPE_CHECKING:
    from pathpipe.segmentation.annotations import AnnotatedTile

__all__ = [
    "CLASSIFIER_FEATURES",
    "PhenotypeClassifier",
    "labelled_descriptors",
    "train_phenotypes",
]

CLASSIFIER_FEATURES: tuple[str, ...] = tuple(
    DESCRIPTOR_COLUMNS[DESCRIPTOR_COLUMNS.index("area_um2") : DESCRIPTOR_COLUMNS.index("cv_h") + 1]
)
"""Default features of :class:`PhenotypeClassifier`: shape and stain, no
position, no raw colour (which varies from scanner to scanner)."""

_FORMAT = "pathpipe.phenotype_classifier"
_VERSION = 1


def _feature_matrix(descriptors: pd.DataFrame, names: Sequence[str]) -> np.ndarray:
    absent = [c for c in names if c not in descriptors.columns]
    if absent:
        raise ConfigError(
            f"descriptors lack feature columns {absent}; expected nucleus_descriptors output"
        )
    return descriptors[list(names)].to_numpy(np.float64)


class PhenotypeClassifier:
    """Standardisation + multinomial logistic regression on nucleus descriptors.

    Trained with :meth:`fit` (scikit-learn, ``class_weight="balanced"``);
    predicting needs only NumPy: ``p = softmax(((x - mean) / scale) W^T + b)``.
    Missing feature values (NaN) are replaced by the training mean.

    Attributes
    ----------
    classes : tuple of str
    feature_names : tuple of str
    mean, scale : (F,) float64 ndarray
        Standardisation of each feature.
    coef : (K, F) float64 ndarray
    intercept : (K,) float64 ndarray
    mpp : float or None
        µm per pixel of the training tiles (informative; features are in µm).
    """

    def __init__(
        self,
        *,
        classes: Sequence[str],
        feature_names: Sequence[str],
        mean: np.ndarray,
        scale: np.ndarray,
        coef: np.ndarray,
        intercept: np.ndarray,
        mpp: float | None = None,
    ) -> None:
        self.classes = tuple(str(c) for c in classes)
        self.feature_names = tuple(str(f) for f in feature_names)
        self.mean = np.asarray(mean, dtype=np.float64)
        self.scale = np.asarray(scale, dtype=np.float64)
        self.coef = np.asarray(coef, dtype=np.float64)
        self.intercept = np.asarray(intercept, dtype=np.float64)
        self.mpp = None if mpp is None else float(mpp)
        k, f = len(self.classes), len(self.feature_names)
        shapes_ok = (
            k >= 2
            and len(set(self.classes)) == k
            and f >= 1
            and self.mean.shape == (f,)
            and self.scale.shape == (f,)
            and self.coef.shape == (k, f)
            and self.intercept.shape == (k,)
        )
        if not shapes_ok:
            raise ConfigError(
                f"phenotype classifier: inconsistent shapes for {k} classes and {f} features: "
                f"mean {self.mean.shape}, scale {self.scale.shape}, coef {self.coef.shape}, "
                f"intercept {self.intercept.shape}; expected (F,), (F,), (K, F), (K,) "
                "with K >= 2 distinct classes"
            )
        finite = all(np.isfinite(a).all() for a in (self.mean, self.scale, self.coef))
        if not (finite and np.isfinite(self.intercept).all() and (self.scale > 0).all()):
            raise ConfigError("phenotype classifier: parameters must be finite, scale > 0")

    @classmethod
    def fit(
        cls,
        descriptors: pd.DataFrame,
        labels: Sequence[str] | np.ndarray,
        *,
        classes: Sequence[str],
        seed: int = 0,
        feature_names: Sequence[str] = CLASSIFIER_FEATURES,
        mpp: float | None = None,
        c: float = 1.0,
    ) -> PhenotypeClassifier:
        """Train on labelled nuclei.

        Parameters
        ----------
        descriptors : pandas.DataFrame
            :func:`nucleus_descriptors` rows, e.g. from :func:`labelled_descriptors`.
        labels : (N,) sequence of str
            Class name of each row; every name must be in ``classes`` and every
            class must occur.
        classes : sequence of str
            Class names, in the order of the codes :meth:`predict` returns.
        seed : int
        feature_names : sequence of str
        mpp : float, optional
            Recorded with the model.
        c : float
            Inverse L2 regularisation strength of the logistic regression.

        Returns
        -------
        PhenotypeClassifier
        """
        from sklearn.linear_model import LogisticRegression

        classes = tuple(str(k) for k in classes)
        if len(classes) < 2 or len(set(classes)) != len(classes):
            raise ConfigError(f"classes must be >= 2 distinct names, received {list(classes)!r}")
        y_names = np.asarray(labels).astype(str)
        if y_names.shape != (len(descriptors),):
            raise ConfigError(
                f"labels has shape {y_names.shape}; expected one name per descriptor row "
                f"({len(descriptors)},)"
            )
        unknown = sorted(set(y_names) - set(classes))
        if unknown:
            raise ConfigError(f"labels {unknown} are not in classes {list(classes)!r}")
        absent = [k for k in classes if k not in set(y_names)]
        if absent:
            raise ConfigError(
                f"no training nuclei of classes {absent}; every class in {list(classes)!r} "
                "needs labelled examples"
            )
        if not (c > 0 and math.isfinite(c)):
            raise ConfigError(f"c must be a number > 0, received {c!r}")
        x = _feature_matrix(descriptors, feature_names)
        mean = np.nanmean(x, axis=0)
        mean = np.where(np.isfinite(mean), mean, 0.0)
        x = np.where(np.isfinite(x), x, mean)
        scale = x.std(axis=0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        z = (x - mean) / scale
        y = np.array([classes.index(k) for k in y_names])
        model = LogisticRegression(
            C=c, class_weight="balanced", max_iter=2000, random_state=seed
        ).fit(z, y)
        coef, intercept = model.coef_, model.intercept_
        if len(classes) == 2:
            # Binary logistic regression: p(1) = sigmoid(w z + b) = softmax([-s, s]/2)[1].
            coef = np.vstack([-coef[0] / 2.0, coef[0] / 2.0])
            intercept = np.array([-intercept[0] / 2.0, intercept[0] / 2.0])
        return cls(
            classes=classes,
            feature_names=feature_names,
            mean=mean,
            scale=scale,
            coef=coef,
            intercept=intercept,
            mpp=mpp,
        )

    def predict_proba(self, descriptors: pd.DataFrame) -> np.ndarray:
        """Class probabilities, ``(N, K)`` float64 (rows sum to 1)."""
        x = _feature_matrix(descriptors, self.feature_names)
        x = np.where(np.isfinite(x), x, self.mean)
        logits = ((x - self.mean) / self.scale) @ self.coef.T + self.intercept
        logits -= logits.max(axis=1, keepdims=True) if len(logits) else 0.0
        p = np.exp(logits)
        p /= p.sum(axis=1, keepdims=True)
        return p

    def predict(self, descriptors: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
        """Most probable class of every row.

        Returns
        -------
        codes : (N,) int64 ndarray
            Indices into :attr:`classes`.
        confidence : (N,) float64 ndarray
            Probability of the predicted class.
        """
        p = self.predict_proba(descriptors)
        if not len(p):
            return np.zeros(0, np.int64), np.zeros(0, np.float64)
        codes = np.argmax(p, axis=1).astype(np.int64)
        return codes, p[np.arange(len(p)), codes]

    def to_dict(self) -> dict[str, Any]:
        """JSON-able parameters (the file format of :meth:`save`)."""
        return {
            "format": _FORMAT,
            "version": _VERSION,
            "classes": list(self.classes),
            "feature_names": list(self.feature_names),
            "scaler_mean": self.mean.tolist(),
            "scaler_scale": self.scale.tolist(),
            "coef": self.coef.tolist(),
            "intercept": self.intercept.tolist(),
            "mpp": self.mpp,
        }

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write the model as JSON (no pickle). Returns the path."""
        path = Path(path)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(json.dumps(self.to_dict(), indent=1) + "\n")
        os.replace(tmp, path)
        return path

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> PhenotypeClassifier:
        """Read a model written by :meth:`save`.

        Raises
        ------
        StorageError
            Missing or unreadable file, not JSON, not a phenotype classifier,
            or inconsistent parameters.
        """
        path = Path(path)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            raise StorageError(f"phenotype model {path} does not exist") from None
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise StorageError(f"cannot read phenotype model {path}: {exc}") from exc
        if not isinstance(data, dict) or data.get("format") != _FORMAT:
            raise StorageError(
                f"{path} is not a phenotype classifier; expected JSON with format {_FORMAT!r}"
            )
        if data.get("version") != _VERSION:
            raise StorageError(
                f"{path}: phenotype classifier version {data.get('version')!r}; "
                f"this pathpipe reads version {_VERSION}"
            )
        try:
            return cls(
                classes=data["classes"],
                feature_names=data["feature_names"],
                mean=np.asarray(data["scaler_mean"], dtype=np.float64),
                scale=np.asarray(data["scaler_scale"], dtype=np.float64),
                coef=np.asarray(data["coef"], dtype=np.float64),
                intercept=np.asarray(data["intercept"], dtype=np.float64),
                mpp=data.get("mpp"),
            )
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise StorageError(f"{path}: invalid phenotype classifier: {exc}") from exc


# --------------------------------------------------------------------------- training data


def labelled_descriptors(
    tiles: Iterable[AnnotatedTile],
    *,
    mpp: float,
    classes: Sequence[str],
    stain_matrix: np.ndarray | None = None,
) -> tuple[pd.DataFrame, np.ndarray]:
    """Descriptors and class names of the ground-truth nuclei of annotated tiles.

    Each nucleus of a tile's ``inst_map`` is measured with
    :func:`~pathpipe.segmentation.phenotype.nucleus_descriptors` (hematoxylin from colour deconvolution with
    ``stain_matrix``, default :data:`pathpipe.stain.RUIFROK_HE`; ``mean_h_rel``
    relative to all nuclei of the tile) and named by the majority of its
    ``type_map`` pixels (type ``k`` is ``classes[k - 1]``). Nuclei whose
    majority type is 0 (unlabelled) are skipped.

    Parameters
    ----------
    tiles : iterable of AnnotatedTile
        Every tile needs a ``type_map``.
    mpp : float
    classes : sequence of str
    stain_matrix : (3, 3) float ndarray, optional

    Returns
    -------
    descriptors : pandas.DataFrame
        Columns ``tile`` (name), ``label`` (id in the tile's ``inst_map``) and
        :data:`~pathpipe.segmentation.phenotype.DESCRIPTOR_COLUMNS`; a fresh integer index.
    names : (N,) str ndarray
        Class name of each row.
    """
    from pathpipe.stain import hematoxylin_channel

    classes = tuple(str(c) for c in classes)
    frames, names = [], []
    for tile in tiles:
        if tile.type_map is None:
            raise ConfigError(f"tile {tile.name!r} has no type_map; expected typed annotations")
        inst = np.asarray(tile.inst_map)
        types = np.asarray(tile.type_map).astype(np.int64)
        top = int(types.max(initial=0))
        if top > len(classes):
            raise ConfigError(
                f"tile {tile.name!r} has type {top} but only {len(classes)} classes "
                f"{list(classes)!r}"
            )
        h = hematoxylin_channel(tile.rgb, stain_matrix)
        desc = nucleus_descriptors(inst, h, mpp=mpp, rgb=tile.rgb)
        if desc.empty:
            continue
        # Majority type per nucleus: count (id, type) pairs on nucleus pixels.
        fg = inst > 0
        n_ids = int(inst.max()) + 1
        counts = np.bincount(
            inst[fg].astype(np.int64) * (len(classes) + 1) + types[fg],
            minlength=n_ids * (len(classes) + 1),
        ).reshape(n_ids, len(classes) + 1)
        major = np.argmax(counts, axis=1)[desc.index.to_numpy()]
        keep = major > 0
        d = desc[keep].reset_index()
        d.insert(0, "tile", tile.name)
        frames.append(d)
        names.append(np.asarray(classes, dtype=object)[major[keep] - 1])
    if not frames:
        empty = empty_descriptors().reset_index()
        empty.insert(0, "tile", pd.Series(dtype=object))
        return empty, np.zeros(0, dtype=str)
    return pd.concat(frames, ignore_index=True), np.concatenate(names).astype(str)


# --------------------------------------------------------------------------- path level


def train_phenotypes(
    data: str | os.PathLike[str],
    out_path: str | os.PathLike[str],
    *,
    mpp: float | None = None,
    stain: str = "macenko",
    seed: int = 0,
) -> dict[str, Any]:
    """Train a :class:`PhenotypeClassifier` on an annotated tile folder and save it.

    Reads the folder (:func:`pathpipe.segmentation.annotations.read_annotated_dir`,
    type maps required), estimates stain vectors from all its tiles, measures
    and names the ground-truth nuclei (:func:`labelled_descriptors`), fits the
    classifier and writes it as JSON (:meth:`PhenotypeClassifier.save`).

    Parameters
    ----------
    data : path-like
        Annotated tile folder whose ``classes.json`` names the classes.
    out_path : path-like
        Output classifier JSON.
    mpp : float, optional
        µm/px of the tiles when ``classes.json`` gives none.
    stain : {"macenko", "fixed"}
        Stain vectors of the hematoxylin channel (:func:`pathpipe.stain.estimate_stain_matrix`).
    seed : int

    Returns
    -------
    dict
        ``path``, ``classes``, ``n_nuclei`` and ``training_accuracy`` (fraction of
        the training nuclei the saved classifier names right).
    """
    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.stain import estimate_stain_matrix

    ann = read_annotated_dir(data, require_types=True)
    tile_mpp = ann.mpp if ann.mpp is not None else mpp
    if tile_mpp is None:
        raise ConfigError(
            f"{data}/classes.json gives no 'mpp' and none was passed (--mpp); expected the "
            "µm/px of the annotated tiles"
        )
    if not ann.classes:
        raise ConfigError(f"{data}/classes.json must name the classes of the type maps")
    matrix = estimate_stain_matrix([t.rgb for t in ann.tiles], method=stain, seed=seed).matrix
    desc, y = labelled_descriptors(
        ann.tiles, mpp=tile_mpp, classes=ann.classes, stain_matrix=matrix
    )
    clf = PhenotypeClassifier.fit(desc, y, classes=ann.classes, seed=seed)
    path = clf.save(out_path)
    codes, _ = clf.predict(desc)
    accuracy = float(np.mean(np.asarray(ann.classes)[codes] == np.asarray(y)))
    return {
        "path": str(path),
        "classes": list(ann.classes),
        "n_nuclei": len(y),
        "training_accuracy": accuracy,
    }
