"""Direct decoding of tiled TIFF pyramid levels (private).

For tiled TIFF-based slides (SVS, generic pyramidal TIFF, ...) the backends'
``read_region`` spends most of its time outside the decoder: OpenSlide converts
to premultiplied ARGB and back and builds a PIL image; tiffslide goes through
Zarr. Here the compressed tiles covering a region are read with ``os.pread``
(thread-safe, no shared file position) and decoded by tifffile's own decoder
(imagecodecs: libjpeg-turbo, OpenJPEG, ...), which releases the GIL, so reads
scale across threads.

:meth:`TiffDirect.read_tile` decodes one whole tile of a level straight into
the caller's array (JPEG through imagecodecs with the colour spaces tifffile
would use, checked once per level against tifffile's own decoder), so tiling
at a level's native tile grid costs one decode and no copies.

Only levels that match the backend's level exactly (same width and height,
tiled, 8-bit RGB, contiguous samples) are served; everything else falls back
to the backend. :func:`pathpipe.io.slide.open_slide` checks on each opened slide
that the direct decoder and the backend agree on a probe region, and disables
the direct path if they do not.
"""

from __future__ import annotations

import math
import os
from typing import Any

import numpy as np

__all__ = ["TiffDirect", "jpeg_stream"]


class TiffDirect:
    """Decode regions of the tiled levels of a TIFF file.

    Parameters
    ----------
    path : str
    level_dimensions : sequence of (int, int)
        ``(width, height)`` of each level as the slide backend reports them.
    """

    def __init__(self, path: str, level_dimensions: Any) -> None:
        import tifffile

        self._tf = tifffile.TiffFile(path)
        self._fd = os.open(path, os.O_RDONLY)
        self.pages: dict[int, Any] = {}
        #: Keyword arguments of ``imagecodecs.jpeg_decode`` per JPEG level whose
        #: tiles can be decoded in place (see :meth:`read_tile`).
        self._jpeg: dict[int, dict[str, Any]] = {}
        #: JPEG levels whose tiles, made complete streams, decode to the same pixels.
        self._source_ok: set[int] = set()
        try:
            series = self._tf.series[0]
            levels = series.levels
        except Exception:
            levels = []
        by_size = {}
        for lv in levels:
            page = lv.keyframe if hasattr(lv, "keyframe") else lv.pages[0]
            if _servable(page):
                by_size.setdefault((page.imagewidth, page.imagelength), page)
        for i, (w, h) in enumerate(level_dimensions):
            page = by_size.get((int(w), int(h)))
            if page is not None:
                # Build the decoder closure once, in this thread.
                _ = page.decode
                self.pages[i] = page
                self._jpeg_setup(i, page)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None
        self._tf.close()

    def serves(self, level: int) -> bool:
        return level in self.pages

    def tile_size(self, level: int) -> tuple[int, int]:
        """``(width, height)`` of the stored tiles of ``level``."""
        page = self.pages[level]
        return int(page.tilewidth), int(page.tilelength)

    def read_tile(self, level: int, tile_xy: tuple[int, int], out: np.ndarray) -> bytes | None:
        """Decode stored tile ``(tx, ty)`` of ``level`` into ``out``.

        ``out`` is a C-contiguous (tile height, tile width, 3) uint8 array; the
        tile must lie fully inside the level. Returns the tile's stored
        (compressed) bytes, or None for a missing tile, which is white.
        """
        page = self.pages[level]
        tx, ty = tile_xy
        tw, th = int(page.tilewidth), int(page.tilelength)
        index = ty * math.ceil(page.imagewidth / tw) + tx
        count = page.databytecounts[index]
        if count == 0:
            out[...] = 255
            return None
        data = os.pread(self._fd, count, page.dataoffsets[index])
        kwargs = self._jpeg.get(level)
        if kwargs is not None:
            import imagecodecs

            imagecodecs.jpeg_decode(data, shape=(th, tw), out=out, **kwargs)
            return data
        tile, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
        out[...] = tile.reshape(tile.shape[-3:])[:, :, :3]
        return data

    def source_jpeg(self, level: int) -> dict[str, Any] | None:
        """JPEG tables and colour spaces of ``level`` when its tiles decode in place,
        else None."""
        kwargs = self._jpeg.get(level)
        if kwargs is None or level not in self._source_ok:
            return None
        return {
            "tables": kwargs["tables"],
            "colorspace": kwargs["colorspace"],
            "outcolorspace": kwargs["outcolorspace"],
        }

    def tiles_missing(self, level: int, tiles_xy: np.ndarray) -> bool:
        """Whether any of the stored tiles ``tiles_xy`` (K, 2) of ``level`` is missing."""
        page = self.pages[level]
        n_across = math.ceil(page.imagewidth / page.tilewidth)
        counts = np.asarray(page.databytecounts)
        return bool((counts[tiles_xy[:, 1] * n_across + tiles_xy[:, 0]] == 0).any())

    def _jpeg_setup(self, level: int, page: Any) -> None:
        """Enable in-place JPEG decoding of ``level`` if it matches tifffile's decoder."""
        if page.compression != 7 or page.jpegheader is not None:
            return
        try:
            import imagecodecs
            from tifffile.tifffile import jpeg_decode_colorspace

            colorspace, outcolorspace = jpeg_decode_colorspace(
                page.photometric, page.planarconfig, page.extrasamples, page.is_jfif
            )
            kwargs = {
                "bitspersample": 8,
                "tables": page.jpegtables,
                "colorspace": colorspace,
                "outcolorspace": outcolorspace,
            }
            index = next(i for i, c in enumerate(page.databytecounts) if c > 0)
            data = os.pread(self._fd, page.databytecounts[index], page.dataoffsets[index])
            tw, th = int(page.tilewidth), int(page.tilelength)
            mine = np.empty((th, tw, 3), dtype=np.uint8)
            imagecodecs.jpeg_decode(data, shape=(th, tw), out=mine, **kwargs)
            ref, _, _ = page.decode(data, index, jpegtables=page.jpegtables)
            ref = ref.reshape(ref.shape[-3:])[:, :, :3]
            if not np.array_equal(mine, ref):
                return
            self._jpeg[level] = kwargs
            # The tile as a complete stream, as tiling.compression 'source' stores it
            # and pathpipe.source_jpeg decodes it, must give the same pixels too.
            whole = imagecodecs.jpeg_decode(
                jpeg_stream(page.jpegtables, data),
                colorspace=colorspace,
                outcolorspace=outcolorspace,
                shape=(th, tw),
            )
            if np.array_equal(whole, ref):
                self._source_ok.add(level)
        except Exception:  # any mismatch or decoder quirk: keep tifffile's path
            return

    def read(self, level: int, lv_xy: tuple[int, int], size_wh: tuple[int, int]) -> np.ndarray:
        """Region of ``level`` fully inside it, as (h, w, 3) uint8.

        Missing tiles (byte count 0) are white, as the backends render them.
        """
        page = self.pages[level]
        x0, y0 = lv_xy
        w, h = size_wh
        tw, th = page.tilewidth, page.tilelength
        n_across = math.ceil(page.imagewidth / tw)
        out = np.empty((h, w, 3), dtype=np.uint8)
        offsets = page.dataoffsets
        counts = page.databytecounts
        decode = page.decode
        tables = page.jpegtables
        for ty in range(y0 // th, (y0 + h - 1) // th + 1):
            for tx in range(x0 // tw, (x0 + w - 1) // tw + 1):
                index = ty * n_across + tx
                # overlap of this tile with the requested region, in level pixels
                ax0, ay0 = max(x0, tx * tw), max(y0, ty * th)
                ax1, ay1 = min(x0 + w, (tx + 1) * tw), min(y0 + h, (ty + 1) * th)
                dst = out[ay0 - y0 : ay1 - y0, ax0 - x0 : ax1 - x0]
                count = counts[index]
                if count == 0:
                    dst[...] = 255
                    continue
                data = os.pread(self._fd, count, offsets[index])
                tile, _, _ = decode(data, index, jpegtables=tables)
                tile = tile.reshape(tile.shape[-3:])
                dst[...] = tile[ay0 - ty * th : ay1 - ty * th, ax0 - tx * tw : ax1 - tx * tw, :3]
        return out


def _servable(page: Any) -> bool:
    try:
        return bool(
            page.is_tiled
            and page.tiledepth == 1
            and page.imagedepth == 1
            and page.samplesperpixel == 3
            and not page.extrasamples
            and page.bitspersample == 8
            and page.planarconfig == 1  # contiguous
            and page.photometric in (2, 6)  # RGB, YCbCr
            and page.dtype == np.uint8
        )
    except AttributeError:
        return False


def jpeg_stream(tables: bytes | None, data: bytes) -> bytes:
    """A complete JPEG stream from a TIFF tile and the page's JPEGTables.

    The tables (an abbreviated stream: SOI, DQT/DHT segments, EOI) go after the
    tile's SOI marker, which is what a decoder given both would read.
    """
    if not tables:
        return data
    if tables[:2] != b"\xff\xd8" or tables[-2:] != b"\xff\xd9" or data[:2] != b"\xff\xd8":
        raise ValueError("JPEG tables or tile data do not start with SOI (and tables end with EOI)")
    return b"\xff\xd8" + tables[2:-2] + data[2:]
