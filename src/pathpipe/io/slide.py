"""Whole-slide image access over openslide-python and tiffslide.

One small interface (:class:`Slide`) over both backends, returning NumPy arrays.

Coordinate frames (used as variable prefixes throughout pathpipe):

``l0_``
    level-0 pixels, ``(x, y)`` as in OpenSlide.
``lv_``
    pixels of the pyramid level being read, ``(x, y)``.
``t_``
    pixels of the *target* resolution requested by the caller (an MPP).

Arrays are ``(row, col[, channel])`` as in scikit-image; sizes passed to the
reader are ``(width, height)`` as in OpenSlide.

Every low-level failure (OpenSlide, tifffile, imagecodecs, OS errors) is turned
here into a :class:`~pathpipe.errors.SlideError` subclass naming the file and the
cause, so later stages only ever see the project's errors.
"""

from __future__ import annotations

import math
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any, Literal

import numpy as np

from pathpipe.errors import ConfigError, SlideOpenError, SlideReadError
from pathpipe.io.slide_info import (
    MPP,
    MPP_PLAUSIBLE_RANGE,
    SlideInfo,
    check_positive,
    slide_info,
)

__all__ = [
    "BACKENDS",
    "MPP",
    "MPP_PLAUSIBLE_RANGE",
    "Slide",
    "SlideInfo",
    "open_slide",
]

Backend = Literal["auto", "openslide", "tiffslide"]
BACKENDS: tuple[str, ...] = ("auto", "openslide", "tiffslide")


class Slide:
    """An open whole-slide image. Create with :func:`open_slide`.

    Thread-safe for concurrent reads (both backends lock or are re-entrant),
    usable as a context manager.
    """

    def __init__(self, handle: Any, info: SlideInfo, direct: Any = None) -> None:
        self._handle = handle
        self.info = info
        self._direct = direct

    @property
    def decoder(self) -> str:
        """``"tifffile"`` when tiled TIFF levels are decoded directly, else the backend."""
        return "tifffile" if self._direct is not None else self.info.backend

    # -- context management -------------------------------------------------
    def __enter__(self) -> Slide:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        if self._handle is not None:
            self._handle.close()
            self._handle = None
        if self._direct is not None:
            self._direct.close()
            self._direct = None

    def __repr__(self) -> str:
        return f"Slide({self.info.path!r}, backend={self.info.backend!r})"

    @property
    def path(self) -> str:
        return self.info.path

    @property
    def dimensions(self) -> tuple[int, int]:
        return self.info.dimensions

    @property
    def mpp(self) -> MPP:
        return self.info.mpp

    # -- reading --------------------------------------------------------------
    def read_region(
        self, l0_xy: tuple[int, int], level: int, size_wh: tuple[int, int]
    ) -> np.ndarray:
        """Read a region of one pyramid level as RGB.

        Parameters
        ----------
        l0_xy : (int, int)
            Top-left corner in level-0 pixels.
        level : int
            Pyramid level to read.
        size_wh : (int, int)
            ``(width, height)`` in pixels of ``level``.

        Returns
        -------
        rgb : (height, width, 3) uint8 ndarray
            Transparent pixels and pixels outside the slide are white.
        """
        if self._handle is None:
            raise SlideReadError(self.info.path, "the slide was closed before reading")
        if not 0 <= level < self.info.level_count:
            raise SlideReadError(
                self.info.path,
                f"level {level} requested, the slide has levels 0..{self.info.level_count - 1}",
            )
        lv_w, lv_h = (int(v) for v in size_wh)
        if lv_w <= 0 or lv_h <= 0:
            raise SlideReadError(self.info.path, f"region size must be positive, got {size_wh}")
        l0_x, l0_y = (int(v) for v in l0_xy)
        sx, sy = self.info.level_scale(level)
        full_w, full_h = self.info.level_dimensions[level]
        # Intersect the request with the level so both backends behave alike
        # outside the slide (openslide: transparent, tiffslide: black).
        lv_x0 = math.floor(l0_x / sx)
        lv_y0 = math.floor(l0_y / sy)
        ix0, iy0 = max(lv_x0, 0), max(lv_y0, 0)
        ix1, iy1 = min(lv_x0 + lv_w, full_w), min(lv_y0 + lv_h, full_h)
        out_of_bounds = ix0 >= ix1 or iy0 >= iy1
        if ix0 == lv_x0 and iy0 == lv_y0 and ix1 - ix0 == lv_w and iy1 - iy0 == lv_h:
            return self._read_raw((l0_x, l0_y), level, (lv_w, lv_h))
        out = np.full((lv_h, lv_w, 3), 255, dtype=np.uint8)
        if out_of_bounds:
            return out
        inner_l0 = (
            round(ix0 * sx) if ix0 != lv_x0 else l0_x,
            round(iy0 * sy) if iy0 != lv_y0 else l0_y,
        )
        part = self._read_raw(inner_l0, level, (ix1 - ix0, iy1 - iy0))
        out[iy0 - lv_y0 : iy1 - lv_y0, ix0 - lv_x0 : ix1 - lv_x0] = part
        return out

    def stored_tile_size(self, level: int) -> tuple[int, int] | None:
        """``(width, height)`` of the stored tiles of ``level`` when they can be
        decoded one by one with :meth:`read_stored_tile`, else None."""
        if self._direct is not None and self._direct.serves(level):
            return self._direct.tile_size(level)
        return None

    def read_stored_tile(
        self, level: int, tile_xy: tuple[int, int], out: np.ndarray
    ) -> bytes | None:
        """Decode the stored tile ``(tx, ty)`` of ``level`` straight into ``out``.

        The fast path of tiling at a level's own tile grid: one decode, no
        copies. Only for levels where :meth:`stored_tile_size` is not None and
        tiles fully inside the level; ``out`` is a C-contiguous
        ``(tile height, tile width, 3)`` uint8 array. The pixels are those
        :meth:`read_region` returns for the same area. Returns the tile's stored
        bytes (None for a tile missing from the file, which is white).
        """
        tw, th = self.stored_tile_size(level) or (0, 0)
        full_w, full_h = self.info.level_dimensions[level]
        tx, ty = tile_xy
        if not (tw and 0 <= tx and 0 <= ty and (tx + 1) * tw <= full_w and (ty + 1) * th <= full_h):
            raise SlideReadError(
                self.info.path,
                f"stored tile {tuple(tile_xy)} of level {level} is not decodable on its own "
                f"(tile size {tw}x{th}, level size {full_w}x{full_h})",
            )
        if out.shape != (th, tw, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
            raise SlideReadError(
                self.info.path,
                f"read_stored_tile needs a C-contiguous ({th}, {tw}, 3) uint8 array, "
                f"received {out.shape} {out.dtype}",
            )
        try:
            return self._direct.read_tile(level, (tx, ty), out)
        except Exception as exc:  # any decoder failure is a read error
            raise SlideReadError(
                self.info.path,
                f"cannot decode stored tile {tuple(tile_xy)} of level {level}: "
                f"{type(exc).__name__}: {exc}",
            ) from exc

    def stored_jpeg(self, level: int) -> dict[str, Any] | None:
        """For a level whose stored tiles are JPEG that decode in place and as
        complete streams (tables spliced in) to the same pixels: its
        ``tables`` (bytes or None), ``colorspace`` and ``outcolorspace``
        (for ``imagecodecs.jpeg_decode``); else None."""
        if self._direct is not None and self._direct.serves(level):
            return self._direct.source_jpeg(level)
        return None

    def stored_tiles_missing(self, level: int, tiles_xy: np.ndarray) -> bool:
        """Whether any stored tile ``(tx, ty)`` of ``tiles_xy`` is absent from the file."""
        if self._direct is None or not self._direct.serves(level):
            return False
        return self._direct.tiles_missing(
            level, np.asarray(tiles_xy, dtype=np.int64).reshape(-1, 2)
        )

    def _read_raw(self, l0_xy: tuple[int, int], level: int, size_wh: tuple[int, int]) -> np.ndarray:
        try:
            if self._direct is not None and self._direct.serves(level):
                sx, sy = self.info.level_scale(level)
                lv_xy = (math.floor(l0_xy[0] / sx), math.floor(l0_xy[1] / sy))
                return self._direct.read(level, lv_xy, size_wh)
            return self._read_backend(l0_xy, level, size_wh)
        except SlideReadError:
            raise
        except (
            Exception
        ) as exc:  # any decoder failure (OpenSlide, tifffile, imagecodecs) is a read error
            raise SlideReadError(
                self.info.path,
                f"cannot decode region at level-0 {tuple(l0_xy)}, level {level}, "
                f"size {tuple(size_wh)}: {type(exc).__name__}: {exc}",
            ) from exc

    def _read_backend(
        self, l0_xy: tuple[int, int], level: int, size_wh: tuple[int, int]
    ) -> np.ndarray:
        """The backend's own read (callers turn its failures into SlideReadError)."""
        if self.info.backend == "openslide":
            rgba = np.asarray(self._handle.read_region(l0_xy, level, size_wh))
        else:
            rgba = self._handle.read_region(l0_xy, level, size_wh, as_array=True)
        return _to_rgb(rgba)

    def read_region_at_mpp(
        self, l0_xy: tuple[int, int], size_wh: tuple[int, int], mpp: float
    ) -> np.ndarray:
        """Read a region at a physical resolution.

        The pyramid level just finer than ``mpp`` is read and resized with
        antialiasing (Lanczos) to exactly ``size_wh``.

        Parameters
        ----------
        l0_xy : (int, int)
            Top-left corner in level-0 pixels.
        size_wh : (int, int)
            Output ``(width, height)`` in pixels at ``mpp``.
        mpp : float
            Target µm per pixel (isotropic).

        Returns
        -------
        rgb : (height, width, 3) uint8 ndarray
        """
        level, lv_size = self.plan_read(size_wh, mpp)
        rgb = self.read_region(l0_xy, level, lv_size)
        return resize_rgb(rgb, size_wh)

    def plan_read(self, size_wh: tuple[int, int], mpp: float) -> tuple[int, tuple[int, int]]:
        """Level and level-pixel size to read for ``size_wh`` target pixels at ``mpp``."""
        check_positive("mpp", mpp)
        level = self.info.best_level_for_mpp(mpp)
        lv_mpp_x, lv_mpp_y = self.info.level_mpp(level)
        t_w, t_h = size_wh
        lv_w = max(1, round(t_w * mpp / lv_mpp_x))
        lv_h = max(1, round(t_h * mpp / lv_mpp_y))
        return level, (lv_w, lv_h)

    def l0_extent(self, size_wh: tuple[int, int], mpp: float) -> tuple[float, float]:
        """Level-0 ``(width, height)`` covered by ``size_wh`` pixels at ``mpp``."""
        return size_wh[0] * mpp / self.info.mpp.x, size_wh[1] * mpp / self.info.mpp.y

    def size_at_mpp(self, mpp: float) -> tuple[int, int]:
        """Slide ``(width, height)`` in pixels at ``mpp`` (rounded up)."""
        l0_w, l0_h = self.info.dimensions
        return (
            max(1, math.ceil(l0_w * self.info.mpp.x / mpp - 1e-6)),
            max(1, math.ceil(l0_h * self.info.mpp.y / mpp - 1e-6)),
        )

    def thumbnail_at_mpp(self, mpp: float, *, block: int = 1024) -> np.ndarray:
        """The whole slide at ``mpp``, assembled from bounded-size reads.

        Parameters
        ----------
        mpp : float
            Target µm per pixel, e.g. 8.0 for tissue detection.
        block : int
            Output block edge in pixels; bounds the memory of each read.

        Returns
        -------
        rgb : (H, W, 3) uint8 ndarray, with ``(W, H) == size_at_mpp(mpp)``.
        """
        t_w, t_h = self.size_at_mpp(mpp)
        out = np.empty((t_h, t_w, 3), dtype=np.uint8)
        for t_x, t_y, b_w, b_h in _blocks(t_w, t_h, block):
            l0_xy = (round(t_x * mpp / self.info.mpp.x), round(t_y * mpp / self.info.mpp.y))
            out[t_y : t_y + b_h, t_x : t_x + b_w] = self.read_region_at_mpp(l0_xy, (b_w, b_h), mpp)
        return out

    def to_dask(self, level: int = 0, *, chunk: int = 1024) -> Any:
        """A lazy ``(H, W, 3)`` uint8 Dask array of one level.

        Each chunk is read with :meth:`read_region` when computed, so the whole
        level never has to fit in memory.
        """
        import dask.array as da

        if not 0 <= level < self.info.level_count:
            raise SlideReadError(
                self.info.path,
                f"level {level} requested, the slide has levels 0..{self.info.level_count - 1}",
            )
        lv_w, lv_h = self.info.level_dimensions[level]
        sx, sy = self.info.level_scale(level)
        rows = _chunk_sizes(lv_h, chunk)
        cols = _chunk_sizes(lv_w, chunk)

        def load(block_info: dict | None = None) -> np.ndarray:
            (r0, r1), (c0, c1), _ = block_info[None]["array-location"]
            return self.read_region((round(c0 * sx), round(r0 * sy)), level, (c1 - c0, r1 - r0))

        return da.map_blocks(
            load, chunks=(rows, cols, (3,)), dtype=np.uint8, meta=np.empty((0, 0, 0), np.uint8)
        )


def _chunk_sizes(total: int, chunk: int) -> tuple[int, ...]:
    full, rest = divmod(total, chunk)
    return (chunk,) * full + ((rest,) if rest else ())


def _blocks(width: int, height: int, block: int) -> Iterator[tuple[int, int, int, int]]:
    for y in range(0, height, block):
        for x in range(0, width, block):
            yield x, y, min(block, width - x), min(block, height - y)


def _to_rgb(arr: np.ndarray) -> np.ndarray:
    """RGB(A) or grey array → RGB uint8, compositing transparency onto white."""
    if arr.dtype != np.uint8:
        raise SlideReadError("<array>", f"expected uint8 pixels, got {arr.dtype}")
    if arr.ndim == 2:
        return np.repeat(arr[:, :, None], 3, axis=2)
    channels = arr.shape[2]
    if channels == 3:
        return np.ascontiguousarray(arr)
    if channels == 4:
        alpha = arr[:, :, 3]
        rgb = arr[:, :, :3]
        if alpha.min() == 255:
            return np.ascontiguousarray(rgb)
        # Straight (non-premultiplied) alpha, as both backends return it.
        a = alpha.astype(np.float32)[:, :, None] / 255.0
        out = rgb.astype(np.float32) * a + 255.0 * (1.0 - a)
        return np.clip(np.rint(out), 0, 255).astype(np.uint8)
    if channels == 1:
        return np.repeat(arr, 3, axis=2)
    raise SlideReadError("<array>", f"expected 1, 3 or 4 channels, got {channels}")


def resize_rgb(rgb: np.ndarray, size_wh: tuple[int, int]) -> np.ndarray:
    """Resize an RGB uint8 image to ``size_wh`` with antialiasing (Lanczos).

    Returns the input unchanged when it already has that size.
    """
    t_w, t_h = size_wh
    if rgb.shape[1] == t_w and rgb.shape[0] == t_h:
        return rgb
    from PIL import Image

    img = Image.fromarray(rgb)
    # Pillow's resampling filters widen their support when reducing, so they
    # antialias (no separate blur needed); reducing_gap speeds large reductions
    # with a box pre-reduction that keeps quality.
    resized = img.resize((t_w, t_h), Image.Resampling.LANCZOS, reducing_gap=3.0)
    return np.asarray(resized)


# ---------------------------------------------------------------------------
# opening
# ---------------------------------------------------------------------------


def open_slide(
    path: str | os.PathLike[str],
    *,
    backend: str = "auto",
    mpp: float | None = None,
    mpp_source: str = "override",
    direct: bool = True,
) -> Slide:
    """Open a whole-slide image.

    Parameters
    ----------
    path : path-like
        Slide file (SVS, NDPI, generic or pyramidal TIFF, ...).
    backend : {"auto", "openslide", "tiffslide"}
        ``auto`` tries openslide first and falls back to tiffslide for files
        openslide cannot open (e.g. plain non-pyramidal TIFF).
    mpp : float, optional
        Level-0 µm per pixel to use when the slide lacks (plausible) MPP
        metadata. Metadata wins when present; ``mpp`` is only a fallback.
    mpp_source : {"sheet", "config", "override"}
        Recorded as :attr:`MPP.source` when ``mpp`` is used.
    direct : bool
        Decode tiled TIFF levels directly with tifffile (several times faster
        than the backends' ``read_region``, same pixels); levels it cannot serve,
        and slides on which a probe read disagrees with the backend, use the
        backend.

    Returns
    -------
    Slide

    Raises
    ------
    SlideOpenError
        The file is missing, unsupported or corrupt (message names file and cause).
    MissingMPPError
        No plausible MPP in the metadata and none given.
    ConfigError
        Unknown ``backend`` or invalid ``mpp``.
    """
    if backend not in BACKENDS:
        raise ConfigError(
            f"slide backend must be one of {', '.join(BACKENDS)}; received {backend!r}"
        )
    if mpp is not None:
        check_positive("slide mpp", mpp)
        if not MPP_PLAUSIBLE_RANGE[0] <= mpp <= MPP_PLAUSIBLE_RANGE[1]:
            raise ConfigError(
                f"slide mpp must be within {MPP_PLAUSIBLE_RANGE} µm/px; received {mpp!r}"
            )
    p = Path(path)
    if not p.exists():
        raise SlideOpenError(p, "file not found")
    if not p.is_file():
        raise SlideOpenError(p, "not a regular file")
    abspath = str(p.resolve())

    handle, used, first_cause = _open_handle(abspath, backend)
    try:
        info = slide_info(handle, used, abspath, mpp=mpp, mpp_source=mpp_source)
    except Exception:
        handle.close()
        raise
    slide = Slide(handle, info)
    try:
        _probe(slide)
    except SlideReadError as exc:
        slide.close()
        cause = f"it opens with {used} but its pixel data cannot be decoded: {exc.cause}"
        if first_cause:
            cause = f"{first_cause}; {cause}"
        raise SlideOpenError(abspath, cause) from exc
    if direct:
        slide._direct = _make_direct(slide)
    return slide


#: Largest per-pixel difference tolerated between direct decoding and the backend
#: on the probe region (JPEG decoders may differ by one level in rare pixels).
_PROBE_TOLERANCE = 2


def _make_direct(slide: Slide) -> Any:
    """A :class:`~pathpipe.io.tiffdirect.TiffDirect` for the slide, or None."""
    from pathpipe.io.tiffdirect import TiffDirect

    info = slide.info
    try:
        direct = TiffDirect(info.path, info.level_dimensions)
    except Exception:  # not a TIFF tifffile understands: the backend reads it
        return None
    if not direct.pages:
        direct.close()
        return None
    # Probe: the centre of each served level must decode like the backend.
    for level in list(direct.pages):
        lv_w, lv_h = info.level_dimensions[level]
        w, h = min(lv_w, 300), min(lv_h, 300)
        lv_xy = ((lv_w - w) // 2, (lv_h - h) // 2)
        sx, sy = info.level_scale(level)
        l0_xy = (math.ceil(lv_xy[0] * sx), math.ceil(lv_xy[1] * sy))
        lv_xy = (math.floor(l0_xy[0] / sx), math.floor(l0_xy[1] / sy))
        w, h = min(w, lv_w - lv_xy[0]), min(h, lv_h - lv_xy[1])
        try:
            ours = direct.read(level, lv_xy, (w, h))
            theirs = slide._read_backend(l0_xy, level, (w, h))
        except Exception:  # the backend reports its own errors on real reads
            del direct.pages[level]
            continue
        if np.abs(ours.astype(np.int16) - theirs).max() > _PROBE_TOLERANCE:
            del direct.pages[level]
    if not direct.pages:
        direct.close()
        return None
    return direct


def _probe(slide: Slide) -> None:
    """Decode a small region at the centre of the coarsest level via the backend.

    Catches files whose headers parse but whose pixel data does not (unsupported
    compression, corrupt tiles) when they are opened, not deep inside a job.
    """
    level = slide.info.level_count - 1
    lv_w, lv_h = slide.info.level_dimensions[level]
    w, h = min(lv_w, 64), min(lv_h, 64)
    sx, sy = slide.info.level_scale(level)
    l0_xy = (math.floor((lv_w - w) // 2 * sx), math.floor((lv_h - h) // 2 * sy))
    slide._read_raw(l0_xy, level, (w, h))


def _open_handle(path: str, backend: str) -> tuple[Any, str, str | None]:
    if backend in ("auto", "openslide"):
        try:
            import openslide
        except ImportError as exc:  # pragma: no cover - dependency is required
            if backend == "openslide":
                raise SlideOpenError(path, f"openslide is not installed ({exc})") from exc
        else:
            try:
                return openslide.OpenSlide(path), "openslide", None
            except openslide.OpenSlideUnsupportedFormatError as exc:
                if backend == "openslide":
                    raise SlideOpenError(path, f"openslide cannot open this format: {exc}") from exc
                first_cause = f"openslide: {exc}"
            except (openslide.OpenSlideError, OSError) as exc:
                if backend == "openslide":
                    raise SlideOpenError(path, f"openslide: {exc}") from exc
                first_cause = f"openslide: {exc}"
    else:
        first_cause = None
    try:
        import tiffslide

        return tiffslide.TiffSlide(path), "tiffslide", first_cause
    except Exception as exc:  # tifffile and zarr raise many types
        cause = f"tiffslide: {type(exc).__name__}: {exc}"
        if first_cause:
            cause = f"{first_cause}; {cause}"
        raise SlideOpenError(path, f"unsupported or corrupt slide ({cause})") from exc
