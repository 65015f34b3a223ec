"""Parameters of the reconstruction stage (config block ``reconstruction:``)."""

from __future__ import annotations

import itertools
import re
from dataclasses import dataclass

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param

__all__ = [
    "MASK_SOURCES",
    "REFERENCES",
    "REFINES",
    "SUBSETS",
    "ReconstructionParams",
    "mask_source",
]

#: The points ICP matches (:mod:`pathpipe.reconstruction.icp`): all of the moving
#: layer; the paper's band (Algorithm 1) as a rectangle (x AND y in range, its
#: line 2) or a cross (x OR y in range, its results text); multi-scale voxel
#: centroids of both layers; the outlines of both layers (not in the paper).
SUBSETS = ("full", "band_and", "band_or", "voxel", "contour")

#: Kinds of layer mask: the tissue stage's mask, the density of one nucleus class
#: from the segmentation stage, or one class of the sheet's region annotations.
MASK_SOURCES = ("tissue", "phenotype", "annotation")

#: The section the stack is registered from: the bottom one (the paper's
#: Algorithm 1, bottom to top), or the largest one (registered outwards, up and
#: down, so a chain is at most half the block and starts where sections carry the
#: most shape).
REFERENCES = ("bottom", "largest")

#: What refines the outline registration, where the sections have images: nothing;
#: Open3D's coloured ICP on the points coloured by the section's RGB (Park et al.
#: 2017; the issue's optional step); or the stain density's normalised
#: cross-correlation, which also chooses among the coarse candidates and the
#: mirror (:mod:`pathpipe.reconstruction.intensity`).
REFINES = ("none", "colour", "intensity")

_MASK = re.compile(r"^(tissue|(phenotype|annotation):[^\s:]+)$")


def mask_source(text: str) -> tuple[str, str | None]:
    """``"tissue"`` -> ``("tissue", None)``, ``"phenotype:tumour"`` -> ``("phenotype", "tumour")``.

    Raises
    ------
    ConfigError
        When ``text`` is not ``tissue``, ``phenotype:<class>`` or ``annotation:<class>``.
    """
    if not isinstance(text, str) or not _MASK.match(text):
        raise ConfigError(
            f"reconstruction.mask={text!r}; expected 'tissue', 'phenotype:<class>' "
            "or 'annotation:<class>'"
        )
    kind, _, name = text.partition(":")
    return kind, name or None


@dataclass(frozen=True, kw_only=True)
class ReconstructionParams:
    """Parameters of the reconstruction stage (config block ``reconstruction:``).

    Attributes
    ----------
    section_spacing : float
        µm between consecutive sections of a block (z = section position × spacing;
        serial studies often keep every n-th section, so more than the cut thickness).
    working_mpp : float
        µm per pixel of the layers' point clouds (masks are averaged to it).
    mask : str
        What makes a layer: ``tissue``, ``phenotype:<class>`` or ``annotation:<class>``.
    subset : {"full", "band_and", "band_or", "voxel", "contour"}
        Moving points the fine ICP uses (see :data:`SUBSETS`).
    band_half_width : float
        Half-width of the paper's band, as a fraction of the layer's extent along
        each axis (the paper: 250 px of about 1,500, i.e. 1/6).
    voxel_sizes : tuple of float
        Voxel edges in µm of the multi-scale ICP, coarse to fine (``voxel``).
    max_correspondence_um : float
        ICP's largest point-pair distance (the paper's ``d_max``) at the finest
        scale, in µm; also the distance of the fitness.
    icp_iterations : int
        Most ICP iterations per scale.
    angle_step : float
        Degrees between the rotations the coarse alignment tries (all of 360°).
    mirror_search : bool
        Whether the coarse alignment also tries the mirrored section.
    min_fitness : float
        A layer whose fitness (fraction of its points within
        ``max_correspondence_um`` of the layer below) is lower is flagged.
    max_rmse_um : float
        A layer whose inlier RMSE in µm is higher is flagged; only a value below
        ``max_correspondence_um`` can flag anything (inliers are closer than that).
    reference : {"bottom", "largest"}
        The section whose frame is the block frame and from which layers are
        registered (see :data:`REFERENCES`).
    refine : {"none", "colour", "intensity"}
        Refinement of each placement where the sections have images (see
        :mod:`~pathpipe.reconstruction.intensity`): none, Open3D's coloured ICP,
        or the normalised cross-correlation of the stain-normalised optical density,
        scored against the two registered sections below.
    phenotype_threshold : float
        ``mask: phenotype:<class>``: a pixel is in the layer where the class's
        nuclei per mm² reach this fraction of the section's 95th percentile of
        tile densities (:func:`~pathpipe.reconstruction.masks.phenotype_mask`).

    Notes
    -----
    Defaults, as measured (``tests/reconstruction/``, ``benchmarks/bench_reconstruction.py``):
    the ``contour`` subset recovers generated sections at any angle, shifted by up
    to a fifth of their width and mirrored, to a few hundredths of a degree, and
    registers a 495k-point layer pair in 1.3 % of full ICP's time where full,
    band and voxel ICP stop degrees short. A correct registration has an inlier
    RMSE of about 0.4 working pixel (the misfit of two rasterisations; 6.5 µm at
    16 µm/px) and a fitness near 1 on generated sections, 0.88–1.0 on the CIMA
    lung pairs (``tests/reconstruction/test_reconstruction_cima.py``), hence the flags at a
    fitness below 0.7 and an RMSE above 2 working pixels. ``max_correspondence_um``
    is 4 working pixels, ``angle_step`` 15° (24 rotations × mirror; any step up to
    20° gave the same results on the CIMA pairs). The band's half-width is the
    paper's (250 px of about 1,500). The voxel sizes are 8 and 4 working pixels.

    ``refine`` (measured on generated 12-section blocks at 8 µm/px, default
    object depth; ``benchmarks/bench_reconstruction_blocks.py``): ``intensity``
    lowers the median rotation error from 3.3° to 0.34° (seed 3) and from 23° to
    0.37° (seed 5), detects 10 of 10 mirrors on both (6 and 4 with ``none``), and
    raises Dice from 0.90 to 0.95 and 0.90 to 0.96 (seeds 7 and 11: 1.7° and
    0.72°, 8 and 10 mirrors; a torn end section). ``colour`` gave medians of 2.4°
    and 22° before the two-section scoring. On the CIMA pairs (three different
    stains) neither helps: rTRE 0.0051–0.0116 with ``intensity``, 0.0088–0.0119
    with ``colour``, 0.0053–0.0118 with ``none``. It costs about 0.6 s per pair on
    these blocks.
    """

    section_spacing: float = param(4.0, "µm between consecutive sections (z step)", gt=0)
    working_mpp: float = param(16.0, "µm/px of the layers' point clouds", gt=0)
    mask: str = param(
        "tissue", "what makes a layer: tissue, phenotype:<class> or annotation:<class>"
    )
    subset: str = param("contour", "moving points fine ICP uses", choices=SUBSETS)
    band_half_width: float = param(
        1 / 6, "half-width of the band, fraction of the layer extent per axis", gt=0, le=0.5
    )
    voxel_sizes: tuple[float, ...] = param(
        (128.0, 64.0), "voxel edges in µm of the multi-scale ICP, coarse to fine", gt=0
    )
    max_correspondence_um: float = param(
        64.0, "ICP's largest point-pair distance in µm at the finest scale", gt=0
    )
    icp_iterations: int = param(50, "most ICP iterations per scale", ge=1)
    angle_step: float = param(
        15.0, "degrees between rotations the coarse alignment tries", gt=0, le=90
    )
    mirror_search: bool = param(True, "also try the mirrored section")
    min_fitness: float = param(0.7, "flag a layer with a lower fitness", ge=0, le=1)
    max_rmse_um: float = param(
        32.0, "flag a layer with a larger inlier RMSE in µm (< max_correspondence_um)", gt=0
    )
    reference: str = param(
        "bottom", "section registered from: bottom (up) or largest (outwards)", choices=REFERENCES
    )
    refine: str = param(
        "intensity",
        "refinement where sections have images: none, colour (coloured ICP) or intensity",
        choices=REFINES,
    )
    phenotype_threshold: float = param(
        0.5,
        "mask phenotype:<class>: density share of the 95th percentile of tiles in the layer",
        gt=0,
        le=1,
    )

    def __post_init__(self) -> None:
        check_params(self, "reconstruction")
        mask_source(self.mask)
        sizes = self.voxel_sizes
        if any(a < b for a, b in itertools.pairwise(sizes)):
            raise ConfigError(
                f"reconstruction.voxel_sizes={list(sizes)!r}; expected sizes from coarse "
                "to fine (non-increasing)"
            )
