"""GLRLM: the PyRadiomics grey level run length matrix features of every nucleus.

16 features per channel, ``glrlm_<feature>_<channel>``, per angle and averaged
over the angles in which some line holds two or more pixels of the nucleus. The
runs come from :func:`pathpipe.features.texture.matrices.scan` (a linked pixel
continues its predecessor's run); Galloway, CGIP 4(2):172-179, 1975.

Source: PyRadiomics 3.0.1 ``glrlm.py`` and ``cmatrices.c``.
"""

from __future__ import annotations

import numpy as np

from pathpipe.features.pixels import Nuclei
from pathpipe.features.registry import feature
from pathpipe.features.texture.matrices import (
    FAMILY,
    N_ANGLES,
    Levels,
    Neighbours,
    Scan,
    SizeMatrix,
    size_matrix_stats,
)

__all__ = ["GLRLM", "glrlm"]


class GLRLM(SizeMatrix):
    r"""PyRadiomics GLRLM features of all nuclei of a batch, one channel.

    A run is a maximal line of consecutive pixels of the nucleus along an angle
    with the same grey level. Let :math:`P(i,j)` be the number of runs of level
    :math:`i` and length :math:`j` along one angle, :math:`N_r` the number of runs,
    :math:`N_p` the number of pixels, :math:`p(i,j) = P(i,j)/N_r`. Every feature is
    computed per angle and averaged over the angles in which some line holds two
    or more pixels of the nucleus (PyRadiomics drops the others).

    Parameters
    ----------
    per_angle : (n, A, len(SIZE_COLUMNS)) float64 ndarray
    valid : (n, A) bool ndarray
    """

    prefix = "glrlm"
    family = FAMILY
    pyradiomics_class = "glrlm"

    def __init__(self, per_angle: np.ndarray, valid: np.ndarray):
        n_valid = np.where(valid.any(axis=1), valid.sum(axis=1), np.nan)
        super().__init__(np.where(valid[..., None], per_angle, 0.0).sum(axis=1) / n_valid[:, None])

    @feature("1", pyradiomics="ShortRunEmphasis")
    def short_run_emphasis(self) -> np.ndarray:
        r"""Short run emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{j^2}` (PyRadiomics GLRLM 1)."""
        return self._col("small")

    @feature("px²", pyradiomics="LongRunEmphasis")
    def long_run_emphasis(self) -> np.ndarray:
        r"""Long run emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)j^2` (PyRadiomics GLRLM 2)."""
        return self._col("large")

    @feature("1", pyradiomics="GrayLevelNonUniformity")
    def gray_level_non_uniformity(self) -> np.ndarray:
        r"""Grey level non-uniformity :math:`\frac{1}{N_r}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLRLM 3)."""
        return self._col("gln")

    @feature("1", pyradiomics="GrayLevelNonUniformityNormalized")
    def gray_level_non_uniformity_normalized(self) -> np.ndarray:
        r"""Grey level non-uniformity normalised :math:`\frac{1}{N_r^2}\sum_i\left(\sum_j P(i,j)\right)^2` (PyRadiomics GLRLM 4)."""
        return self._col("glnn")

    @feature("1", pyradiomics="RunLengthNonUniformity")
    def run_length_non_uniformity(self) -> np.ndarray:
        r"""Run length non-uniformity :math:`\frac{1}{N_r}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLRLM 5)."""
        return self._col("sn")

    @feature("1", pyradiomics="RunLengthNonUniformityNormalized")
    def run_length_non_uniformity_normalized(self) -> np.ndarray:
        r"""Run length non-uniformity normalised :math:`\frac{1}{N_r^2}\sum_j\left(\sum_i P(i,j)\right)^2` (PyRadiomics GLRLM 6)."""
        return self._col("snn")

    @feature("1", pyradiomics="RunPercentage")
    def run_percentage(self) -> np.ndarray:
        r"""Run percentage :math:`N_r/N_p` (PyRadiomics GLRLM 7)."""
        return self._col("percentage")

    @feature("1", pyradiomics="GrayLevelVariance")
    def gray_level_variance(self) -> np.ndarray:
        r"""Grey level variance :math:`\sum_{i,j}p(i,j)(i-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)i` (PyRadiomics GLRLM 8)."""
        return self._col("glv")

    @feature("px²", pyradiomics="RunVariance")
    def run_variance(self) -> np.ndarray:
        r"""Run variance :math:`\sum_{i,j}p(i,j)(j-\mu)^2`, :math:`\mu=\sum_{i,j}p(i,j)j` (PyRadiomics GLRLM 9)."""
        return self._col("sv")

    @feature("bit", pyradiomics="RunEntropy")
    def run_entropy(self) -> np.ndarray:
        r"""Run entropy :math:`-\sum_{i,j}p(i,j)\log_2(p(i,j)+\epsilon)` (PyRadiomics GLRLM 10)."""
        return self._col("entropy")

    @feature("1", pyradiomics="LowGrayLevelRunEmphasis")
    def low_gray_level_run_emphasis(self) -> np.ndarray:
        r"""Low grey level run emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{i^2}` (PyRadiomics GLRLM 11)."""
        return self._col("low")

    @feature("1", pyradiomics="HighGrayLevelRunEmphasis")
    def high_gray_level_run_emphasis(self) -> np.ndarray:
        r"""High grey level run emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)i^2` (PyRadiomics GLRLM 12)."""
        return self._col("high")

    @feature("1", pyradiomics="ShortRunLowGrayLevelEmphasis")
    def short_run_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Short run low grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)}{i^2j^2}` (PyRadiomics GLRLM 13)."""
        return self._col("small_low")

    @feature("1", pyradiomics="ShortRunHighGrayLevelEmphasis")
    def short_run_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Short run high grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)i^2}{j^2}` (PyRadiomics GLRLM 14)."""
        return self._col("small_high")

    @feature("1", pyradiomics="LongRunLowGrayLevelEmphasis")
    def long_run_low_gray_level_emphasis(self) -> np.ndarray:
        r"""Long run low grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}\frac{P(i,j)j^2}{i^2}` (PyRadiomics GLRLM 15)."""
        return self._col("large_low")

    @feature("1", pyradiomics="LongRunHighGrayLevelEmphasis")
    def long_run_high_gray_level_emphasis(self) -> np.ndarray:
        r"""Long run high grey level emphasis :math:`\frac{1}{N_r}\sum_{i,j}P(i,j)i^2j^2` (PyRadiomics GLRLM 16)."""
        return self._col("large_high")


def glrlm(px: Nuclei, nb: Neighbours, lv: Levels, sc: Scan) -> GLRLM:
    """The GLRLM features of every nucleus, from the runs of :func:`scan`."""
    runs = size_matrix_stats(
        px.index[sc.run_first] * N_ANGLES + sc.run_angle,
        lv.rank[sc.run_first],
        sc.run_length,
        lv.values,
        N_ANGLES,
        px.n * N_ANGLES,
    )
    valid = nb.multi & (px.count > 0)[:, None]
    return GLRLM(runs.reshape(px.n, N_ANGLES, -1), valid)
