"""Tiling a slide whose pixels are not square (0.25 µm wide, 0.5 µm tall).

Every other tiling test uses square pixels, where swapping x and y MPP changes
nothing. Here the slide is 256 µm × 128 µm (1024 × 256 level-0 pixels) and its
pixels encode where they are: red = x in µm (one level per µm), green = 2 × y in
µm, so a tile read at the wrong place, or with x and y scaled the wrong way, has
the wrong colours.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathpipe.io.slide import MPP, open_slide
from pathpipe.io.storage import open_store
from pathpipe.tiling.run import TilingParams, run_tiling

MPP_X, MPP_Y = 0.25, 0.5
L0_W, L0_H = 1024, 256  # 256 µm × 128 µm


def _ramp_image() -> np.ndarray:
    """Level 0: red = column // 4 (x in µm, floored), green = row (2 y in µm, floored)."""
    img = np.empty((L0_H, L0_W, 3), np.uint8)
    img[:, :, 0] = (np.arange(L0_W) // 4)[None, :]
    img[:, :, 1] = np.arange(L0_H)[:, None]
    img[:, :, 2] = 128
    return img


def _box_mean(img: np.ndarray, kx: int, ky: int) -> np.ndarray:
    """Mean of ``img`` over blocks of ``kx`` columns by ``ky`` rows (float)."""
    h, w = img.shape[0] // ky, img.shape[1] // kx
    return img[: h * ky, : w * kx].reshape(h, ky, w, kx, 3).astype(np.float64).mean(axis=(1, 3))


def _write_anisotropic(path: Path, img: np.ndarray, downsamples: tuple[int, ...]) -> Path:
    """A lossless tiled pyramid (levels by block averaging) whose resolution tags
    give MPP_X by MPP_Y µm/px at level 0."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        for i, d in enumerate(downsamples):
            tw.write(
                _box_mean(img, d, d).round().astype(np.uint8),
                tile=(128, 128),
                compression="zlib",
                photometric="rgb",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                resolution=(1e4 / (MPP_X * d), 1e4 / (MPP_Y * d)),
                resolutionunit="CENTIMETER",
            )
    return path


@pytest.fixture(scope="module")
def aniso(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The slide (downsamples 1 and 2: level 1 has pixels of 0.5 × 1 µm) and a tissue mask."""
    d = tmp_path_factory.mktemp("aniso")
    slide = _write_anisotropic(d / "aniso.tiff", _ramp_image(), (1, 2))
    # Mask of 16 × 8 cells of 16 µm (64 × 32 level-0 px); tissue at
    # x in [48, 96) µm (cells 3..5) and y in [0, 48) µm (cells 0..2).
    mask = np.zeros((8, 16), np.uint8)
    mask[0:3, 3:6] = 255
    Image.fromarray(mask).save(d / "mask.png")
    return slide, d / "mask.png"


@pytest.mark.parametrize("backend", ["openslide", "tiffslide"])
def test_per_axis_mpp_is_read_and_used(aniso, backend):
    slide, _ = aniso
    with open_slide(slide, backend=backend) as s:
        assert s.info.mpp == MPP(MPP_X, MPP_Y, "metadata")
        assert s.info.level_mpp(1) == (0.5, 1.0)
        # 256 µm × 128 µm at 0.5 µm/px
        assert s.size_at_mpp(0.5) == (512, 256)
        # 64 px at 0.5 µm/px = 32 µm = 128 level-0 px wide, 64 tall
        assert s.l0_extent((64, 64), 0.5) == (128.0, 64.0)
        assert s.plan_read((64, 64), 0.5) == (0, (128, 64))
        # 32 px at 1 µm/px = 32 µm: level 1 (0.5 × 1 µm/px), 64 × 32 of its pixels
        assert s.plan_read((32, 32), 1.0) == (1, (64, 32))


# Level 0 (0.25 × 0.5 µm) and level 1 (0.5 × 1 µm) are both resized 2:1 along x only.
@pytest.mark.parametrize(("mpp", "tile_size", "level"), [(0.5, 64, 0), (1.0, 32, 1)])
def test_tiles_of_an_anisotropic_slide(aniso, tmp_path, mpp, tile_size, level):
    slide, mask = aniso
    params = TilingParams(mpp=mpp, tile_size=tile_size, min_tissue_fraction=0.0, workers=2)
    rec = run_tiling(slide, mask_path=mask, out_path=tmp_path / "t.zarr", params=params)
    g = open_store(tmp_path / "t.zarr", stage="tiling")
    # Tiles are 32 µm square either way: 256 / 32 = 8 columns, 128 / 32 = 4 rows.
    assert rec["n_grid"] == rec["n_tiles"] == 32
    assert rec["level_read"] == level
    assert rec["mpp"] == {"x": MPP_X, "y": MPP_Y, "source": "metadata"}
    assert rec["l0_tile_size"] == [128.0, 64.0]  # 32 µm / 0.25, 32 µm / 0.5
    rows, cols = np.mgrid[0:4, 0:8]
    assert g["grid_rc"][:].tolist() == np.stack([rows.ravel(), cols.ravel()], 1).tolist()
    assert g["l0_xy"][:].tolist() == np.stack([cols.ravel() * 128, rows.ravel() * 64], 1).tolist()
    # Tissue at x 48-96 µm, y 0-48 µm; tiles of 32 µm: column 1 (32-64 µm) is half
    # tissue along x, column 2 all; row 0 all tissue along y, row 1 (32-64 µm) half.
    tf = np.zeros((4, 8), np.float32)
    tf[0, 1:3] = [0.5, 1.0]
    tf[1, 1:3] = [0.25, 0.5]
    np.testing.assert_array_equal(g["qc/tissue_fraction"][:].reshape(4, 8), tf)
    # Each tile pixel averages mpp / 0.25 level-0 columns and mpp / 0.5 rows.
    expected = _box_mean(_ramp_image(), round(mpp / MPP_X), round(mpp / MPP_Y))
    tiles = g["tiles"][:]
    # tile (1, 2) starts at x = 64 µm, y = 32 µm: red 64, green 2 × 32
    np.testing.assert_allclose(tiles[10][0, 0], [64, 64, 128], atol=1)
    for i, (r, c) in enumerate(g["grid_rc"][:]):
        ref = expected[r * tile_size : (r + 1) * tile_size, c * tile_size : (c + 1) * tile_size]
        np.testing.assert_allclose(tiles[i], ref, atol=1, err_msg=f"tile {(r, c)}")


def test_thumbnail_of_an_anisotropic_slide(aniso):
    slide, _ = aniso
    with open_slide(slide) as s:
        # 2 µm/px: 128 × 64 px; small blocks so block origins along both axes matter
        thumb = s.thumbnail_at_mpp(2.0, block=16)
    assert thumb.shape == (64, 128, 3)
    expected = _box_mean(_ramp_image(), round(2.0 / MPP_X), round(2.0 / MPP_Y))
    np.testing.assert_allclose(thumb, expected, atol=1)
