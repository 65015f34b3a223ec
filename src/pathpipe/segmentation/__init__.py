"""Stage ``segmentation``: nuclei of every tile, with phenotypes.

Modules, one concern each:

==================  ==========================================================
``run``             :class:`~pathpipe.segmentation.run.SegmentationParams`,
                    :func:`~pathpipe.segmentation.run.run_segmentation` (the
                    path-level layer), the summary table and evaluation
``classical``       colour deconvolution, thresholding and watershed (numpy)
``unet``            the HoVer-Net-style torch model and DDPM pretraining
``phenotype``       nucleus descriptors, the phenotype rule and classifier
``metrics``         Dice, AJI, panoptic quality, detection scores
``annotations``     annotated tile folders (NuCLS layout) and generated ones
``export``          nuclei table, QuPath GeoJSON and the figure
==================  ==========================================================
"""
