"""GLSZM: the PyRadiomics grey level size zone matrix features of every nucleus.

16 features per channel, ``glszm_<feature>_<channel>``; zones are 8-connected,
found by union-find over the same-level links of
:func:`pathpipe.features.texture.matrices.scan`; Thibault et al., Proc. PRIP
2009.

Source: PyRadiomics 3.0.1 ``glszm.py`` and ``cmatrices.c``.
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

__all__ = ["GLSZM", "glszm"]


class GLSZM(SizeMatrix):
    r"""PyRadiomics GLSZM features of all nuclei of a batch, one channel.

    A zone is a set of 8-connected pixels of the nucleus with the same grey
    level. Let :math:`P(i,j)` be the number of zones of level :math:`i` and size
    :math:`j` pixels, :math:`N_z` the number of zones, :math:`N_p` the number of
    pixels and :math:`p(i,j)=P(i,j)/N_z`.
    """

    prefix = "glszm"
    family = FAMILY
    pyradiomics_class = "glszm"

    @feature("1", pyradiomics="SmallAreaEmphasis")
    def small_area_emphasis(self) -> np.ndarray:
        r"""Small area emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLSZM 1)."""
        return self._col("small")

    @feature("px²", pyradiomics="LargeAreaEmphasis")
    def large_area_emphasis(self) -> np.ndarray:
        r"""Large area emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLSZM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_z}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLSZM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="GrayLevelNonUniformityNormalized")
    def gray_level_non_uniformity_normalized(self) -> np.ndarray:
        r"""Grey level non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLSZM 4)."""
        return self._col("glnn")

    @feature("1", pyradiomics="SizeZoneNonUniformity")
    def size_zone_non_uniformity(self) -> np.ndarray:
        r"""Size zone non-uniformity :math:`\frac{1}{N_z}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLSZM 5)."""
        return self._col("sn")

    @feature("1", pyradiomics="SizeZoneNonUniformityNormalized")
    def size_zone_non_uniformity_normalized(self) -> np.ndarray:
        r"""Size zone non-uniformity normalised :math:`\frac{1}{N_z^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLSZM 6)."""
        return self._col("snn")

    @feature("1", pyradiomics="ZonePercentage")
    def zone_percentage(self) -> np.ndarray:
        r"""Zone percentage :math:`N_z/N_p` (PyRadiomics GLSZM 7)."""
        return self._col("percentage")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLSZM 8)."""
        return self._col("glv")

    @feature("px²", pyradiomics="ZoneVariance")
    def zone_variance(self) -> np.ndarray:
        r"""Zone variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLSZM 9)."""
        return self._col("sv")

    @feature("bit", pyradiomics="ZoneEntropy")
    def zone_entropy(self) -> np.ndarray:
        r"""Zone entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLSZM 10)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelZoneEmphasis")
    def low_gray_level_zone_emphasis(self) -> np.ndarray:
        r"""Low grey level zone emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLSZM 11)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelZoneEmphasis")
    def high_gray_level_zone_emphasis(self) -> np.ndarray:
        r"""High grey level zone emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLSZM 12)."""
        return self._col("high")

    @feature("1", pyradiomics="SmallAreaLowGrayLevelEmphasis")
    def small_area_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Small area low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLSZM 13)."""
        return self._col("small_low")

    @feature("1", pyradiomics="SmallAreaHighGrayLevelEmphasis")
    def small_area_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Small area high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLSZM 14)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LargeAreaLowGrayLevelEmphasis")
    def large_area_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Large area low grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLSZM 15)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LargeAreaHighGrayLevelEmphasis")
    def large_area_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Large area high grey level emphasis :math:`\frac{1}{N_z}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLSZM 16)."""
        return self._col("large_high")


def glszm(px: Nuclei, lv: Levels, sc: Scan) -> GLSZM:
    """The GLSZM features of every nucleus, from the zones of :func:`scan`."""
    zones = size_matrix_stats(
        px.index[sc.zone_root], lv.rank[sc.zone_root], sc.zone_size, lv.values, 1, px.n
    )
    return GLSZM(zones)
