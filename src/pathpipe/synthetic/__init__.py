"""Synthetic H&E slides, cohorts and annotated tiles with known truth.

Modules, one concern each:

==================  ==========================================================
``generate``        slide specs, tissue layout, nuclei, rendering, writing a
                    slide and a cohort (the path-level layer)
``nuclei``          nucleus shapes (harmonic outlines) and their rasterisation
``placement``       where nuclei go in the tissue
``render``          stains and Beer-Lambert composition of RGB tiles
``noise``           coordinate-hashed noise
``writer``          parallel rendering of a pyramid level's tiles
==================  ==========================================================
"""
