"""Input and output shared by every stage: slides, stores, codecs, workers.

Modules, one concern each:

==================  ==========================================================
``slide``           :func:`~pathpipe.io.slide.open_slide`: one interface over
                    openslide and tiffslide, region reads at an MPP
``slide_info``      :class:`~pathpipe.io.slide_info.SlideInfo`: levels, the
                    level-0 MPP and where it came from
``tiffdirect``      direct decoding of a TIFF level's stored tiles (in place)
``jpeg_codec``      zarr codec ``pathpipe.source_jpeg`` (tiles kept as the
                    slide's own JPEG bytes)
``storage``         atomic writes, Zarr stores and shards with provenance,
                    Parquet with provenance, JSON
``workers``         the ordered process/thread pool map the tile stages use
``model_folder``    trained models as folders of safetensors weights and a
                    JSON description (the mil stage's AMIL, the unet)
==================  ==========================================================

Nothing here imports a stage; every stage may import from here.
"""
