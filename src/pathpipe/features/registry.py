"""The feature registry every nuclear feature family shares.

A family module (:data:`FAMILIES`; the table of modules is
:func:`pathpipe.features.run.family_modules`) declares its features as methods
of a class, each marked with :func:`feature` (unit, PyRadiomics name; the
docstring is the definition), and exposes ``feature_specs(channels)`` and
``compute(batch: NucleusBatch, **settings) -> dict[str, ndarray]``, which returns
one float64 array of length ``len(batch.ids)`` per feature name it declares, in
:func:`specs_of` order. :func:`evaluate` calls every feature method of an
instance. The feature dictionary (``docs/features.md``) is generated from the
specs.

Names: ``[<prefix>_]<method>[_<k>][_<channel>]`` -- ``prefix`` a class
attribute (``fo``, ``glcm``...), ``k`` each index of ``feature(index=...)``,
``channel`` the intensity channel of a per-channel family.

NaN policy: a feature that is undefined for a nucleus (e.g. a texture feature of
a nucleus of one pixel, or of constant intensity where the formula divides by
zero) is NaN, never an exception; PyRadiomics' conventions win where it defines
a value.
"""

from __future__ import annotations

import functools
import inspect
import math
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from pathpipe.errors import ConfigError

__all__ = [
    "CHANNEL_UNITS",
    "FAMILIES",
    "FeatureSpec",
    "NucleusBatch",
    "check_settings",
    "evaluate",
    "feature",
    "specs_of",
    "validate_batch",
]

FAMILIES = (
    "geometry",
    "intensity",
    "texture",
    "morphology",
    "chromatin",
    "boundary",
)
"""The six CellFiNet families, in the order of the feature table."""

CHANNEL_UNITS = {"h": "0.01 OD", "grey": "grey level"}
"""Units of the intensity channels of :mod:`pathpipe.features.run`; others are "a.u."."""


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


def check_settings(**values: float) -> None:
    """Raise :class:`ConfigError` unless every setting is a finite number > 0."""
    for name, v in values.items():
        if isinstance(v, bool) or not (isinstance(v, int | float) and 0 < v < math.inf):
            raise ConfigError(f"{name} must be a number > 0, received {v!r}")


# --------------------------------------------------------------------------- registry


def feature(
    unit: str, *, pyradiomics: str | None = None, index: Sequence[int] = ()
) -> Callable[[Callable[..., np.ndarray]], Callable[..., np.ndarray]]:
    """Mark a method of a family's feature class as one feature (or one per ``index``).

    The feature is named after the method (see the module docstring); its
    definition is the method's docstring, with ``{k}`` replaced by the index.
    ``unit`` may contain ``{unit}``, replaced by the channel's unit.
    ``pyradiomics`` is the PyRadiomics feature it equals: the full name
    (``original_shape2D_...``), or the name within the class's
    ``pyradiomics_class`` when the class declares one.
    """

    def mark(fn: Callable[..., np.ndarray]) -> Callable[..., np.ndarray]:
        fn._feature = (unit, pyradiomics, tuple(index))  # type: ignore[attr-defined]
        return fn

    return mark


@functools.cache
def _registered(cls: type) -> tuple[tuple[str, Callable[..., np.ndarray], FeatureSpec, Any], ...]:
    """``(name, method, spec-without-channel, k)`` of every feature of ``cls``, in order."""
    return tuple(_walk(cls))


def _walk(cls: type) -> Iterator[tuple[str, Callable[..., np.ndarray], FeatureSpec, Any]]:
    prefix = getattr(cls, "prefix", None)
    pyradiomics_class = getattr(cls, "pyradiomics_class", None)
    for name, fn in vars(cls).items():
        meta = getattr(fn, "_feature", None)
        if meta is None:
            continue
        unit, pyradiomics, index = meta
        if pyradiomics is not None and pyradiomics_class is not None:
            pyradiomics = f"original_{pyradiomics_class}_{pyradiomics}"
        base = name if prefix is None else f"{prefix}_{name}"
        doc = " ".join(inspect.cleandoc(fn.__doc__ or "").split())
        for k in index or (None,):
            full = base if k is None else f"{base}_{k}"
            text = doc if k is None else doc.replace("{k}", str(k))
            yield full, fn, FeatureSpec(full, cls.family, unit, text, pyradiomics), k


def specs_of(cls: type, channels: Sequence[str] | None = None) -> list[FeatureSpec]:
    """The :class:`FeatureSpec` of every feature of a family class.

    Per-channel families (``channels`` given) get one spec per feature and channel,
    named ``<feature>_<channel>``, channel-major.
    """
    if channels is None:
        return [spec for _, _, spec, _ in _registered(cls)]
    out = []
    for ch in channels:
        unit = CHANNEL_UNITS.get(ch, "a.u.")
        for _, _, spec, _ in _registered(cls):
            out.append(
                FeatureSpec(
                    f"{spec.name}_{ch}",
                    spec.family,
                    spec.unit.replace("{unit}", unit),
                    spec.definition,
                    spec.pyradiomics,
                )
            )
    return out


def evaluate(
    obj: Any, channel: str | None = None, invalid: np.ndarray | None = None
) -> dict[str, np.ndarray]:
    """Call every feature method of ``obj``: name -> ``(n,)`` float64 array.

    Parameters
    ----------
    obj
        An instance of a family's feature class. Its methods take the channel
        as first argument when the class sets ``channel_argument = True`` (one
        instance for all channels); otherwise an instance serves one channel.
    channel : str, optional
        The channel suffix of the names (per-channel families).
    invalid : (n,) bool ndarray, optional
        Nuclei that are NaN in every feature; default: those without a pixel
        (``obj.nuc.count == 0``).
    """
    cls = type(obj)
    if invalid is None:
        invalid = obj.nuc.count == 0
    pass_channel = channel is not None and getattr(cls, "channel_argument", False)
    out: dict[str, np.ndarray] = {}
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
        for name, fn, _, k in _registered(cls):
            args = () if k is None else (k,)
            if pass_channel:
                args = (channel, *args)
            if channel is not None:
                name = f"{name}_{channel}"
            value = np.array(fn(obj, *args), dtype=np.float64).reshape(invalid.shape)
            value[invalid] = np.nan
            out[name] = value
    return out
