"""Zarr v3 codec for tiles kept as the slide's own JPEG bytes (private).

With ``tiling.compression: source`` a tile that is exactly one stored JPEG tile
of the slide is written as that tile's bytes (with the slide's JPEG tables
spliced in, so each chunk is a complete JPEG stream): no re-encoding, no further
loss, and chunks about ten times smaller than lossless codecs make them. The
pixels decoded are the ones :meth:`pathpipe.io.slide.Slide.read_region` returns.

The codec is registered with zarr when :mod:`pathpipe` is imported and through
the ``zarr.codecs`` entry point, so ``zarr.open_group`` reads such stores in any
environment where pathpipe is installed. Writing through zarr is refused: JPEG
is lossy, and these chunks only ever hold the source bytes.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
from zarr.abc.codec import ArrayBytesCodec
from zarr.core.buffer import Buffer, NDBuffer

from pathpipe.errors import StorageError

if TYPE_CHECKING:
    from typing import Self

    from zarr.core.array_spec import ArraySpec

__all__ = ["CODEC_NAME", "SourceJpegCodec", "register"]

CODEC_NAME = "pathpipe.source_jpeg"


@dataclass(frozen=True)
class SourceJpegCodec(ArrayBytesCodec):
    """Decode chunks that are complete JPEG streams of one (1, T, T, 3) uint8 tile.

    Parameters
    ----------
    colorspace, outcolorspace : int, str or None
        Passed to ``imagecodecs.jpeg_decode`` as tifffile decodes the slide's
        tiles (e.g. Aperio stores RGB, not YCbCr, JPEG without a JFIF marker).
    """

    is_fixed_size = False

    colorspace: Any = None
    outcolorspace: Any = None

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        conf = data.get("configuration") or {}
        return cls(colorspace=conf.get("colorspace"), outcolorspace=conf.get("outcolorspace"))

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": CODEC_NAME,
            "configuration": {"colorspace": self.colorspace, "outcolorspace": self.outcolorspace},
        }

    def _decode_sync(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        import imagecodecs

        data = chunk_bytes.to_bytes()
        shape = tuple(chunk_spec.shape)
        tile = imagecodecs.jpeg_decode(
            data,
            colorspace=self.colorspace,
            outcolorspace=self.outcolorspace,
            shape=shape[-3:-1],
        )
        return chunk_spec.prototype.nd_buffer.from_ndarray_like(
            np.ascontiguousarray(tile).reshape(shape)
        )

    async def _decode_single(self, chunk_bytes: Buffer, chunk_spec: ArraySpec) -> NDBuffer:
        return self._decode_sync(chunk_bytes, chunk_spec)

    def _encode_sync(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        raise StorageError(
            f"{CODEC_NAME}: these chunks hold a slide's own JPEG tiles and are written only by "
            "pathpipe tiling; re-encoding as JPEG would lose pixels. Write a copy of the array "
            "with a lossless codec (e.g. zarr.codecs.BloscCodec) instead."
        )

    async def _encode_single(self, chunk_array: NDBuffer, chunk_spec: ArraySpec) -> Buffer | None:
        return self._encode_sync(chunk_array, chunk_spec)

    def compute_encoded_size(self, input_byte_length: int, chunk_spec: ArraySpec) -> int:
        # zarr's codec protocol: variable-size codecs (compressors) answer with
        # NotImplementedError, as zarr's own Blosc codec does.
        raise NotImplementedError(f"{CODEC_NAME} chunks have no fixed size")


def register() -> None:
    """Register the codec with zarr (idempotent)."""
    from zarr.registry import register_codec

    register_codec(CODEC_NAME, SourceJpegCodec)
