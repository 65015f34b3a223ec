"""Texture family: PyRadiomics GLCM, GLRLM, GLSZM and GLDM features of every nucleus.

All features these four PyRadiomics 3.x classes enable by default, per
intensity channel, in 2D (the nucleus is one slice): 24 GLCM, 16 GLRLM,
16 GLSZM and 14 GLDM features, named ``glcm_<feature>_<channel>``,
``glrlm_...``, ``glszm_...``, ``gldm_...``. Left out are the features PyRadiomics
marks deprecated, which it does not compute (they raise ``DeprecationWarning``):
GLCM ``Homogeneity1`` (= ``Id``), ``Homogeneity2`` (= ``Idm``), ``SumVariance``
(= ``ClusterTendency``) and ``Dissimilarity`` (= ``DifferenceAverage``); GLDM
``GrayLevelNonUniformityNormalized`` (= first-order ``Uniformity``) and
``DependencePercentage`` (always 1). ``glcm_sum_average`` is included: it is not
deprecated and ``enableAllFeatures`` computes it, although PyRadiomics' example
parameter files switch it off (it is twice ``JointAverage`` for a symmetrical
GLCM).

Settings, those of PyRadiomics' defaults: grey levels from
:func:`pathpipe.features.binning.discretise` (``binWidth`` 25 unless the
caller sets a bin width or bin count per channel); neighbours at distance 1 in
the 4 in-plane directions
:data:`~pathpipe.features.texture.matrices.ANGLES`; symmetrical GLCM; no distance
weighting, so each feature is computed per direction and averaged over the
directions in which the nucleus has a matrix (empty directions are dropped,
as PyRadiomics deletes them); GLDM with :math:`\\alpha = 0`; GLSZM zones
8-connected. Matrices keep only the grey levels present in the nucleus, and
:math:`i, j` are grey levels (not ranks), as in PyRadiomics.

All nuclei of a tile are processed at once, with no per-nucleus Python loop:
compiled kernels (numba) find, once per tile, each pixel's predecessor along
every angle within its nucleus; per channel, one pass over the pixels links each
pixel to its same-level predecessors, which gives the dependences, the runs and
the zones of every nucleus (:mod:`pathpipe.features.texture.matrices`); the
GLCMs of all nuclei are one count over the (predecessor, pixel) pairs
(:mod:`~pathpipe.features.texture.glcm`). The features are then computed per
matrix with PyRadiomics' operations in PyRadiomics' order, one module per
matrix: :mod:`~pathpipe.features.texture.glcm`,
:mod:`~pathpipe.features.texture.glrlm`, :mod:`~pathpipe.features.texture.glszm`,
:mod:`~pathpipe.features.texture.gldm`.

Expected channel scaling: the bin width is in the channel's unit, e.g. grey level
0-255 with ``binWidth`` 25 (PyRadiomics' default, ~10 levels), or hematoxylin
optical density × 100 (unit 0.01 OD, as :mod:`pathpipe.features.run` passes it) with a
bin width of a few units or a bin count (e.g. 16).

Source: van Griethuysen et al., Cancer Research 77(21):e104-e107, 2017, and the
PyRadiomics 3.0.1 source (``glcm.py``, ``glrlm.py``, ``glszm.py``, ``gldm.py``,
``cmatrices.c``), the reference definition; GLCM after Haralick et al., IEEE
Trans. SMC 3(6):610-621, 1973; GLRLM after Galloway, CGIP 4(2):172-179, 1975;
GLSZM after Thibault et al., Proc. PRIP 2009; GLDM after Sun & Wee, CVGIP
23:341-352, 1983.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from pathpipe.features.binning import discretise, level_ranks, resolve_binning
from pathpipe.features.pixels import channel_values, prepare
from pathpipe.features.registry import FeatureSpec, NucleusBatch, evaluate, specs_of
from pathpipe.features.texture.glcm import GLCM, glcm_features
from pathpipe.features.texture.gldm import GLDM, gldm
from pathpipe.features.texture.glrlm import GLRLM, glrlm
from pathpipe.features.texture.glszm import GLSZM, glszm
from pathpipe.features.texture.matrices import FAMILY, Levels, neighbours, scan

__all__ = ["FAMILY", "FEATURES", "compute", "feature_specs"]

DEFAULT_CHANNELS = ("h", "grey")

_CLASSES = (GLCM, GLRLM, GLSZM, GLDM)


def feature_specs(channels: Sequence[str]) -> list[FeatureSpec]:
    """The texture features of ``channels``: per channel GLCM, GLRLM, GLSZM, GLDM."""
    return [s for ch in channels for cls in _CLASSES for s in specs_of(cls, [ch])]


FEATURES: list[FeatureSpec] = feature_specs(DEFAULT_CHANNELS)
"""The features for the default channels ``h`` and ``grey``."""


def compute(
    batch: NucleusBatch,
    *,
    bin_width: Mapping[str, float] | None = None,
    bin_count: Mapping[str, int] | None = None,
) -> dict[str, np.ndarray]:
    """Texture features of the nuclei ``batch.ids`` for every channel of the batch.

    Parameters
    ----------
    batch : NucleusBatch
    bin_width, bin_count : dict of str, optional
        Discretisation per channel, PyRadiomics ``binWidth`` / ``binCount`` (see
        :func:`pathpipe.features.binning.resolve_binning`; default
        ``binWidth`` 25).

    Returns
    -------
    dict
        Feature name -> (n,) float64 array, in :func:`feature_specs` order. A
        feature PyRadiomics leaves undefined (e.g. the GLCM of a one-pixel
        nucleus, which has no pair of pixels) is NaN; so are nuclei absent from
        the label map or with a non-finite value.
    """
    px = prepare(batch)
    channels = list(batch.channels)
    binning = resolve_binning(channels, bin_width, bin_count)
    if px.flat.size == 0:  # no nucleus has a pixel
        return {s.name: np.full(px.n, np.nan) for s in feature_specs(channels)}
    nb = neighbours(px)
    out: dict[str, np.ndarray] = {}
    for ch in channels:
        x, bad = channel_values(px, batch.channels[ch])
        invalid = bad | (px.count == 0)
        levels, ng = discretise(x, px, *binning[ch])
        rank, n_levels, values = level_ranks(levels, px)
        lv = Levels(levels, rank, n_levels, values, ng)
        out.update(glcm_features(px, nb, lv, ch, invalid))
        sc = scan(nb, lv.levels)
        for obj in (glrlm(px, nb, lv, sc), glszm(px, lv, sc), gldm(px, lv, sc)):
            out.update(evaluate(obj, ch, invalid))
    return out
