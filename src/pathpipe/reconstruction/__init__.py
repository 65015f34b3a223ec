"""Stage ``reconstruction``: serial sections of a block stacked into 3D by point-cloud registration.

After Wu, Shen & Ke, "A General Computationally-Efficient 3D Reconstruction
Pipeline for Multiple Images with Point Clouds" (MICCAI 2023 workshops): each
section's mask becomes a layer of points, layers are registered bottom to top by
point-to-point ICP on a subset of the moving layer (their Algorithm 1). Beyond
the paper: a coarse alignment over all rotations and the mirror, ICP on the
layers' outlines by default (point-to-point ICP on filled masks hardly moves from
its start), everything in µm, guard rails for missing, empty or implausible layers.

Modules, one concern each (the pure array layer, then the path-level layer;
the CLI is :mod:`pathpipe.cli.reconstruction`, the rule comes next):

==================  ==========================================================
``params``          :class:`ReconstructionParams` (config block ``reconstruction:``)
``transforms``      :class:`RigidTransform2D`: rotation, translation (µm), mirror
``points``          :func:`layer_points`: a mask (and image) -> :class:`LayerPoints`
``fitness``         fitness and inlier RMSE of a placement (KD-tree)
``coarse``          :func:`coarse_candidates`: centroids, principal axes, angle and
                    mirror search scored by fitness
``icp``             :func:`icp_align`: Open3D point-to-point ICP on the ``full``,
                    ``band_and``, ``band_or`` or ``voxel`` subset, or (``contour``,
                    the default) point-to-line ICP on both layers' outlines
``register``        :func:`register_pair`, :func:`register_stack` (bottom to top,
                    flags, rows of ``registration.tsv``)
``phantom``         generated sections with a known transform (tests, benchmarks)
``volume``          the registered sections on a grid: resampling, shape-based
                    interpolation of gaps, torn sections, volume
``inputs``          :class:`SectionInput`, masks and their µm/px, a block's
                    sections from the slide sheet
``outputs``         writers: points and mesh PLY (Open3D), OME-Zarr volume
``run``             :func:`run_reconstruction` (path level): masks -> layers ->
                    registration -> ``registration.tsv``, ``transforms.json``,
                    ``points.ply``, ``volume.zarr``, ``mesh.ply``, ``summary.json``
``warp``            a block's transforms applied to points (``pathpipe
                    reconstruction warp``)
``evaluate``        a reconstruction against a generated block's truth:
                    per-pair registration errors, Dice, volume (tests, benchmarks)
==================  ==========================================================
"""

from __future__ import annotations

from pathpipe.reconstruction.params import ReconstructionParams
from pathpipe.reconstruction.points import LayerPoints, layer_points
from pathpipe.reconstruction.transforms import RigidTransform2D

__all__ = ["LayerPoints", "ReconstructionParams", "RigidTransform2D", "layer_points"]
