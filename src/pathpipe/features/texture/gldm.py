"""GLDM: the PyRadiomics grey level dependence matrix features of every nucleus.

14 features per channel, ``gldm_<feature>_<channel>``, distance 1 and
:math:`\\alpha = 0`: the dependence of a pixel is 1 plus its same-level
8-neighbours (:func:`pathpipe.features.texture.matrices.scan`); Sun & Wee,
CVGIP 23:341-352, 1983.

Source: PyRadiomics 3.0.1 ``gldm.py`` and ``cmatrices.c``.
"""

from __future__ import annotations

import numpy as np

from pathpipe.features.pixels import Nuclei
from pathpipe.features.registry import feature
from pathpipe.features.texture.matrices import (
    FAMILY,
    Levels,
    Scan,
    SizeMatrix,
    size_matrix_stats,
)

__all__ = ["GLDM", "gldm"]


class GLDM(SizeMatrix):
    r"""PyRadiomics GLDM features (:math:`\alpha = 0`) of all nuclei of a batch, one channel.

    The dependence of a pixel is 1 plus the number of its 8 neighbours in the
    nucleus with the same grey level. Let :math:`P(i,j)` be the number of pixels
    of level :math:`i` with dependence :math:`j`, :math:`N_z = N_p` the number of
    pixels and :math:`p(i,j)=P(i,j)/N_z`.
    """

    prefix = "gldm"
    family = FAMILY
    pyradiomics_class = "gldm"

    @feature("1", pyradiomics="SmallDependenceEmphasis")
    def small_dependence_emphasis(self) -> np.ndarray:
        r"""Small dependence emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLDM 1 as its code computes it; its documentation divides by :math:`i^2`)."""
        return self._col("small")

    @feature("1", pyradiomics="LargeDependenceEmphasis")
    def large_dependence_emphasis(self) -> np.ndarray:
        r"""Large dependence emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLDM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_z}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLDM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="DependenceNonUniformity")
    def dependence_non_uniformity(self) -> np.ndarray:
        r"""Dependence non-uniformity :math:`\frac{1}{N_z}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLDM 4)."""
        return self._col("sn")

    @feature("1", pyradiomics="DependenceNonUniformityNormalized")
    def dependence_non_uniformity_normalized(self) -> np.ndarray:
        r"""Dependence non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLDM 5)."""
        return self._col("snn")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLDM 6)."""
        return self._col("glv")

    @feature("1", pyradiomics="DependenceVariance")
    def dependence_variance(self) -> np.ndarray:
        r"""Dependence variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLDM 7)."""
        return self._col("sv")

    @feature("bit", pyradiomics="DependenceEntropy")
    def dependence_entropy(self) -> np.ndarray:
        r"""Dependence entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLDM 8)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelEmphasis")
    def low_gray_level_emphasis(self) -> np.ndarray:
        r"""Low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLDM 9)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelEmphasis")
    def high_gray_level_emphasis(self) -> np.ndarray:
        r"""High grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLDM 10)."""
        return self._col("high")

    @feature("1", pyradiomics="SmallDependenceLowGrayLevelEmphasis")
    def small_dependence_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Small dependence low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLDM 11)."""
        return self._col("small_low")

    @feature("1", pyradiomics="SmallDependenceHighGrayLevelEmphasis")
    def small_dependence_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Small dependence high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLDM 12)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LargeDependenceLowGrayLevelEmphasis")
    def large_dependence_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Large dependence low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLDM 13)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LargeDependenceHighGrayLevelEmphasis")
    def large_dependence_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Large dependence high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLDM 14)."""
        return self._col("large_high")


def gldm(px: Nuclei, lv: Levels, sc: Scan) -> GLDM:
    """The GLDM features of every nucleus, from the dependences of :func:`scan`."""
    return GLDM(size_matrix_stats(px.index, lv.rank, sc.dep, lv.values, 1, px.n))
