"""Parameters of the tiling stage (config block ``tiling:``), and the tile codecs."""

from __future__ import annotations

from dataclasses import dataclass

from pathpipe.errors import ConfigError
from pathpipe.params import check_params, param

__all__ = ["COMPRESSORS", "TilingParams"]

#: Tile codecs: Blosc (cname, clevel) or None for uncompressed chunks; ``source``
#: keeps the slide's own JPEG tiles where the tiles are exactly those (else lz4).
COMPRESSORS: dict[str, tuple[str, int] | None] = {
    "lz4": ("lz4", 1),
    "zstd": ("zstd", 1),
    "none": None,
    "source": ("lz4", 1),
}


@dataclass(frozen=True)
class TilingParams:
    """Parameters of the tiling stage (config block ``tiling:``).

    Attributes
    ----------
    mpp : float
        µm per pixel of the tiles (default 0.5, i.e. about 20×).
    tile_size : int
        Tile edge in pixels at ``mpp``.
    overlap : int
        Pixels shared by neighbouring tiles; the stride is ``tile_size - overlap``.
    min_tissue_fraction : float
        Keep tiles whose area is at least this fraction tissue (from the mask).
    max_white_fraction : float
        Drop tiles with a larger fraction of white pixels (1.0 keeps all).
    min_blur : float
        Drop tiles whose variance of Laplacian is lower (0 keeps all).
    max_tiles : int or None
        Keep at most this many tiles per slide, sampled with ``seed`` among those
        passing the filters (CellFiNet: 30 tiles of 1024 px at 0.25 µm/px).
    seed : int
        Seed of the tile sampling.
    compression : {"lz4", "zstd", "none", "source"}
        Codec of the tile chunks: Blosc lz4 at level 1, Blosc zstd at level 1,
        none, or ``source``: the slide's own JPEG tile bytes, not re-encoded
        (the same pixels, about ten times smaller than lz4), when every tile
        is exactly one stored JPEG tile of the level read (tile size and MPP
        of that level, no overlap); otherwise lz4, with the reason recorded.
    workers : int or None
        Reader threads (default: CPU count).
    """

    mpp: float = param(0.5, "µm/px of the tiles", gt=0)
    tile_size: int = param(256, "tile edge in px at mpp", ge=16)
    overlap: int = param(0, "px shared by neighbouring tiles (< tile_size)", ge=0)
    min_tissue_fraction: float = param(0.5, "keep tiles at least this fraction tissue", ge=0, le=1)
    max_white_fraction: float = param(
        1.0, "drop tiles with a larger fraction of white pixels (1 keeps all)", ge=0, le=1
    )
    min_blur: float = param(
        0.0, "drop tiles with a lower variance of Laplacian (0 keeps all)", ge=0
    )
    max_tiles: int | None = param(
        None, "keep at most this many tiles per slide (seeded)", kind="int", ge=1
    )
    seed: int = param(0, "seed of the tile sampling (config: the top-level seed)", ge=0)
    compression: str = param(
        "lz4",
        "codec of the tile chunks; source keeps the slide's JPEG tiles where possible",
        choices=tuple(COMPRESSORS),
    )
    workers: int | None = param(None, "reader threads (none: CPU count)", kind="int", ge=1)

    def __post_init__(self) -> None:
        check_params(self, "tiling")
        if self.overlap >= self.tile_size:
            raise ConfigError(
                f"tiling.overlap={self.overlap!r}; expected an integer in [0, tile_size={self.tile_size})"
            )

    @property
    def stride(self) -> int:
        return self.tile_size - self.overlap

    @property
    def pixel_filters(self) -> bool:
        """Whether any filter needs the tile pixels (white fraction, blur)."""
        return self.max_white_fraction < 1.0 or self.min_blur > 0.0
