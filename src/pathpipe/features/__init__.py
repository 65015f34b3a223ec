"""Stage ``features``: CellFiNet cellular features per nucleus and per tile.

Modules, one concern each:

==================  ==========================================================
``run``             :class:`~pathpipe.features.run.FeatureParams`, the table of
                    family modules (:func:`~pathpipe.features.run.family_modules`),
                    the per-tile computation and
                    :func:`~pathpipe.features.run.run_features` (the path-level
                    layer)
``registry``        the feature registry: :class:`~pathpipe.features.registry.FeatureSpec`,
                    :class:`~pathpipe.features.registry.NucleusBatch`, the family
                    names, the ``feature`` decorator, ``specs_of``, ``evaluate``
``pixels``          the pixels of a batch grouped by nucleus, once per tile
                    (:class:`~pathpipe.features.pixels.Nuclei`)
``contours``        outer contours: traced, resampled, smoothed (boundary, morphology)
``hull``            convex hulls and scikit-image's convex image (geometry, morphology)
``binning``         grey-level discretisation as PyRadiomics (intensity, texture)
``geometry``        family: size and shape (as ``regionprops``, PyRadiomics shape2D)
``intensity``       family: first-order statistics (as PyRadiomics)
``texture``         family: GLCM, GLRLM, GLSZM, GLDM (as PyRadiomics), one module
                    per matrix; ``texture.family`` holds its ``compute``
``morphology``      family: convexity, concavities, fractal dimension, bending energy
``chromatin``       family: hetero/euchromatin (Young, Verbeek & Mayall 1986)
``boundary``        family: centroid-distance signature, curvature (Wu et al. 2020)
``tile``            tile-level aggregates, densities and neighbourhood graphs
``figure``          the per-slide feature figure
``dictionary``      the generated feature dictionary (``docs/features.md``)
==================  ==========================================================

Layers: a family module imports only the shared modules (``registry``,
``pixels``, ``contours``, ``hull``, ``binning``, ``texture.matrices``), never
another family.
"""
