"""Stage ``tiling``: tiles of a slide's tissue at a physical resolution, in ``tiles.zarr``.

Modules, one concern each:

==================  ==========================================================
``grid``            pure functions: the tile grid, tissue fraction per tile,
                    pixel QC (white, grey, blur), runs of adjacent tiles
``run``             :class:`~pathpipe.tiling.run.TilingParams`,
                    :func:`~pathpipe.tiling.run.run_tiling` (the path-level
                    layer) and :func:`~pathpipe.tiling.run.tiling_summary`
==================  ==========================================================
"""
