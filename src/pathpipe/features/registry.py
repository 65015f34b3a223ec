"""Shared types of the nuclear feature families (private).

Every family module (``_features_<family>.py``) declares its features as a list
of :class:`FeatureSpec` (name, family, unit, definition from the docstring of the
function that computes it) and exposes one function
``compute(batch: NucleusBatch, **settings) -> dict[str, ndarray]`` returning one
float64 array of length ``len(batch.ids)`` per feature name it declares. The
feature dictionary (``docs/features.md``) is generated from these specs.

NaN policy: a feature that is undefined for a nucleus (e.g. a texture feature of
a nucleus of one pixel, or of constant intensity where the formula divides by
zero) is NaN, never an exception; PyRadiomics' conventions win where it defines
a value.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from pathpipe.errors import ConfigError

__all__ = ["FAMILIES", "FeatureSpec", "NucleusBatch", "validate_batch"]

FAMILIES = (
    "geometry",
    "intensity",
    "texture",
    "morphology",
    "chromatin",
    "boundary",
)
"""The six CellFiNet families, in the order of the feature table."""


@dataclass(frozen=True)
class FeatureSpec:
    """One nuclear feature.

    Attributes
    ----------
    name : str
        Column name in ``nuclear_features.parquet`` (``[a-z0-9_]+``; intensity
        and texture features carry their channel, e.g. ``glcm_contrast_h``).
    family : str
        One of :data:`FAMILIES`.
    unit : str
        Physical unit ("µm", "µm²", "rad", "OD", "1" for dimensionless...).
    definition : str
        Formula or one-sentence definition, with its source.
    pyradiomics : str or None
        The PyRadiomics feature it equals (e.g. ``"original_glcm_Contrast"``),
        None when PyRadiomics has no such feature.
    """

    name: str
    family: str
    unit: str
    definition: str
    pyradiomics: str | None = None


@dataclass
class NucleusBatch:
    """The nuclei of one tile, as every family's ``compute`` receives them.

    Attributes
    ----------
    labels : (H, W) int32 ndarray
        Instance labels of the tile, 0 background.
    ids : (n,) int64 ndarray
        Label ids to compute features for, in output order.
    channels : dict of str to (H, W) float64 ndarray
        Intensity images by channel suffix, e.g. ``{"h": hematoxylin OD,
        "grey": grey level 0-255}``.
    mpp : float
        µm per pixel of the tile.
    """

    labels: np.ndarray
    ids: np.ndarray
    channels: dict[str, np.ndarray] = field(default_factory=dict)
    mpp: float = 0.5


def validate_batch(batch: NucleusBatch) -> None:
    """Raise :class:`ConfigError` unless ``batch`` is a well-formed :class:`NucleusBatch`."""
    labels = np.asarray(batch.labels)
    if labels.ndim != 2 or not np.issubdtype(labels.dtype, np.integer):
        raise ConfigError(
            f"NucleusBatch.labels: expected an (H, W) integer array, received shape "
            f"{labels.shape} dtype {labels.dtype}"
        )
    if labels.size and labels.min() < 0:
        raise ConfigError(
            f"NucleusBatch.labels has negative ids (min {labels.min()}); expected 0 for "
            "background and positive ids"
        )
    ids = np.asarray(batch.ids)
    if ids.ndim != 1 or not (ids.size == 0 or np.issubdtype(ids.dtype, np.integer)):
        raise ConfigError(
            f"NucleusBatch.ids: expected a 1-D integer array, received shape {ids.shape} "
            f"dtype {ids.dtype}"
        )
    if ids.size and (ids.min() <= 0 or np.unique(ids).size != ids.size):
        raise ConfigError("NucleusBatch.ids: expected distinct positive label ids")
    mpp = batch.mpp
    if isinstance(mpp, bool) or not (isinstance(mpp, int | float) and 0 < mpp < math.inf):
        raise ConfigError(f"NucleusBatch.mpp must be a number > 0 (µm per pixel), received {mpp!r}")
    for name, img in batch.channels.items():
        if np.shape(img) != labels.shape:
            raise ConfigError(
                f"NucleusBatch.channels[{name!r}] has shape {np.shape(img)}; expected the "
                f"labels shape {labels.shape}"
            )
