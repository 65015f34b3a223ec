"""Stage ``features``: CellFiNet cellular features per nucleus and per tile.

Modules, one concern each:

==================  ==========================================================
``run``             :class:`~pathpipe.features.run.FeatureParams`, the per-tile
                    computation and :func:`~pathpipe.features.run.run_features`
                    (the path-level layer), the feature dictionary
``registry``        :class:`~pathpipe.features.registry.FeatureSpec`,
                    :class:`~pathpipe.features.registry.NucleusBatch`, the
                    family names
``geometry``        size and shape (as ``regionprops``)
``intensity``       first-order statistics (as PyRadiomics)
``texture``         GLCM, GLRLM, GLSZM, GLDM (as PyRadiomics)
``morphology``      convexity, concavities, fractal dimension, bending energy
``chromatin``       hetero/euchromatin (Young, Verbeek & Mayall 1986)
``boundary``        centroid-distance signature, curvature (Wu et al. 2020)
``tile``            tile-level aggregates, densities and neighbourhood graphs
``figure``          the per-slide feature figure
==================  ==========================================================
"""
