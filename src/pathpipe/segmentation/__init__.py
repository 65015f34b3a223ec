"""Stage ``segmentation``: nuclei of every tile, with phenotypes.

Modules, one concern each:

==================  ==========================================================
``params``          :class:`~pathpipe.segmentation.params.SegmentationParams`
                    (config block ``segmentation:``)
``run``             :func:`~pathpipe.segmentation.run.run_segmentation`, the
                    path-level layer (tiles.zarr in, nuclei.* out), and the
                    cohort summary table
``segmenter``       per-tile compute: :class:`~pathpipe.segmentation.segmenter.Segmenter`,
                    ownership of nuclei in overlapping tiles
``classical``       colour deconvolution, thresholding and watershed (numpy),
                    :class:`~pathpipe.segmentation.classical.ClassicalParams`
``unet``            the HoVer-Net-style torch model and DDPM pretraining
                    (``unet.run``: ``pathpipe segmentation train|pretrain``)
``phenotype``       nucleus descriptors and the built-in phenotype rule
``classifier``      the phenotype classifier trained on labelled nuclei
                    (``pathpipe segmentation train-phenotypes``)
``metrics``         Dice, AJI, panoptic quality, detection scores of one map
``tile_counts``     additive per-tile counts and dataset summaries
``_matching``       the matching kernels of ``metrics`` and ``tile_counts``
``evaluate``        ``pathpipe segmentation evaluate`` on annotated tiles
``annotations``     annotated tile folders (NuCLS layout) and generated ones
``export``          QuPath GeoJSON, outlines and the report figure
==================  ==========================================================
"""
