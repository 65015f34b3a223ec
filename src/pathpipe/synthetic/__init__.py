"""Synthetic H&E slides, cohorts, annotated tiles and serial sections with known truth.

Modules, one concern each:

==================  ==========================================================
``generate``        slide specs, tissue layout, nuclei, rendering, writing a
                    slide and a cohort (the path-level layer)
``nuclei``          nucleus shapes (harmonic outlines) and their rasterisation
``placement``       where nuclei go in the tissue
``render``          stains and Beer-Lambert composition of RGB tiles
``noise``           coordinate-hashed noise
``writer``          parallel rendering of a pyramid level's tiles
``tiles``           annotated tiles cut from synthetic slides
``serial_spec``     serial block spec, section transforms and plans (shared types)
``block``           the analytic 3D object of a block: tissue, tumour, ducts
``sectioning``      a block's sections: transforms, faults, slices, nuclei
``serial``          writing a block of sections and its truth (the path-level layer)
==================  ==========================================================
"""
