"""Slide I/O over openslide and tiffslide, on real and generated slides."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from conftest import CMU, DATA, KIDNEY, TCGA, scene, write_pyramid
from pathpipe.errors import ConfigError, MissingMPPError, SlideError, SlideOpenError, SlideReadError
from pathpipe.io.slide import _to_rgb, open_slide, resize_rgb

BACKENDS = ["openslide", "tiffslide"]


def test_cmu_metadata_both_backends():
    for backend in BACKENDS:
        with open_slide(CMU, backend=backend) as s:
            info = s.info
            assert info.backend == backend
            assert info.dimensions == (2220, 2967)
            assert info.level_count == 1
            assert info.mpp.x == pytest.approx(0.499)
            assert info.mpp.source == "metadata"
            assert info.objective_power == 20
            assert info.vendor == "aperio"


@pytest.mark.parametrize("path, mpp", [(CMU, None), (TCGA, 0.2527)])
def test_backends_give_same_pixels_on_real_slides(path, mpp):
    with (
        open_slide(path, backend="openslide", mpp=mpp, direct=False) as a,
        open_slide(path, backend="tiffslide", mpp=mpp, direct=False) as b,
    ):
        assert a.info.level_dimensions == b.info.level_dimensions
        for level in range(a.info.level_count):
            w, h = a.info.level_dimensions[level]
            for l0_xy in [(0, 0), (a.dimensions[0] // 3, a.dimensions[1] // 2)]:
                size = (min(300, w), min(200, h))
                pa = a.read_region(l0_xy, level, size)
                pb = b.read_region(l0_xy, level, size)
                assert pa.shape == (size[1], size[0], 3)
                diff = np.abs(pa.astype(int) - pb)
                if float(a.info.level_downsamples[level]).is_integer():
                    # same JPEG / JPEG 2000 data; decoders may differ by rounding
                    assert diff.max() <= 2
                else:
                    # openslide paints non-integer-downsample levels at sub-pixel
                    # offsets (resampling); tiffslide reads whole level pixels:
                    # compare 10 px block means, insensitive to sub-pixel shifts
                    ma = pa[:200, :300].reshape(20, 10, 30, 10, 3).mean(axis=(1, 3))
                    mb = pb[:200, :300].reshape(20, 10, 30, 10, 3).mean(axis=(1, 3))
                    assert np.abs(ma - mb).mean() < 3


@pytest.mark.parametrize("path, mpp", [(CMU, None), (TCGA, 0.2527)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_direct_decoder_matches_backend(path, mpp, backend):
    with (
        open_slide(path, backend=backend, mpp=mpp) as fast,
        open_slide(path, backend=backend, mpp=mpp, direct=False) as slow,
    ):
        assert fast.decoder == "tifffile"
        assert slow.decoder == backend
        rng = np.random.default_rng(0)
        for _ in range(5):
            level = int(rng.integers(fast.info.level_count))
            w, h = fast.info.level_dimensions[level]
            size = (int(rng.integers(1, min(w, 700))), int(rng.integers(1, min(h, 700))))
            sx, sy = fast.info.level_scale(level)
            l0_xy = (
                int(rng.integers(0, (w - size[0]) * sx)),
                int(rng.integers(0, (h - size[1]) * sy)),
            )
            assert (
                np.abs(
                    fast.read_region(l0_xy, level, size).astype(int)
                    - slow.read_region(l0_xy, level, size)
                ).max()
                <= 2
            )


@pytest.mark.parametrize(
    "path, mpp, in_place",
    [(CMU, None, True), (TCGA, 0.2527, False)],  # Aperio JPEG (RGB); Aperio JPEG 2000
)
def test_stored_tiles_decode_into_place_like_read_region(path, mpp, in_place):
    with open_slide(path, mpp=mpp) as s:
        tw, th = s.stored_tile_size(0)
        # JPEG levels decode straight into the output; others through tifffile
        assert (0 in s._direct._jpeg) is in_place
        w, h = s.info.level_dimensions[0]
        out = np.empty((th, tw, 3), np.uint8)
        for tx, ty in [(0, 0), (w // tw - 1, h // th - 1), (1, 2)]:
            out[...] = 7
            s.read_stored_tile(0, (tx, ty), out)
            np.testing.assert_array_equal(out, s.read_region((tx * tw, ty * th), 0, (tw, th)))
        with pytest.raises(SlideReadError, match=r"stored tile \(\d+, 0\) of level 0 is not"):
            s.read_stored_tile(0, (w // tw, 0), out)  # crosses the right edge
        with pytest.raises(SlideReadError, match=r"C-contiguous .* received \(\d+, \d+, 3\)"):
            s.read_stored_tile(0, (0, 0), np.empty((tw, th, 3), np.uint8)[:, ::-1][:th, :tw])
    with pytest.raises(SlideReadError, match="not decodable on its own"):
        s.read_stored_tile(0, (0, 0), out)  # closed


def test_stored_tiles_of_a_generated_pyramid_and_missing_tiles(tmp_path):
    path = write_pyramid(tmp_path / "p.tiff", scene(512, 512, seed=4), tile=128)
    with open_slide(path) as s:
        assert s.stored_tile_size(0) == (128, 128) and 0 in s._direct._jpeg
        out = np.empty((128, 128, 3), np.uint8)
        s.read_stored_tile(0, (3, 1), out)
        np.testing.assert_array_equal(out, s.read_region((384, 128), 0, (128, 128)))
        # a tile with byte count 0 (not stored) is white, as the backends render it
        s._direct.pages[0] = _ZeroCounts(s._direct.pages[0])
        s.read_stored_tile(0, (0, 0), out)
        assert (out == 255).all()


class _ZeroCounts:
    """A tifffile page whose tiles all have byte count 0."""

    def __init__(self, page):
        self._page = page
        self.databytecounts = [0] * len(page.databytecounts)

    def __getattr__(self, name):
        return getattr(self._page, name)


def test_generated_pyramid_both_backends(pyramid):
    with (
        open_slide(pyramid, backend="openslide") as a,
        open_slide(pyramid, backend="tiffslide") as b,
    ):
        assert a.info.vendor == "generic-tiff"
        assert (
            a.info.level_dimensions
            == b.info.level_dimensions
            == ((2048, 1536), (512, 384), (128, 96))
        )
        assert a.mpp.x == pytest.approx(0.25) and b.mpp.x == pytest.approx(0.25)
        np.testing.assert_array_equal(
            a.read_region((100, 200), 1, (300, 150)), b.read_region((100, 200), 1, (300, 150))
        )


def test_missing_mpp_is_an_error_unless_given():
    with pytest.raises(MissingMPPError) as err:
        open_slide(TCGA)
    msg = str(err.value)
    assert "TCGA-CR-7395-01A-01-TS1.svs" in msg and "no MPP metadata" in msg and "mpp" in msg
    with open_slide(TCGA, mpp=0.2527, mpp_source="sheet") as s:
        assert (s.mpp.x, s.mpp.y, s.mpp.source) == (0.2527, 0.2527, "sheet")
        # correct tiles with the override: 256 px at 0.5 µm/px covers ~506 level-0 px
        tile = s.read_region_at_mpp((1000, 1000), (256, 256), 0.5)
        assert tile.shape == (256, 256, 3) and tile.std() > 5
        assert s.plan_read((256, 256), 0.5) == (0, (507, 507))


def test_metadata_mpp_wins_over_fallback():
    with open_slide(CMU, mpp=0.3, mpp_source="config") as s:
        assert s.mpp.x == pytest.approx(0.499) and s.mpp.source == "metadata"


def test_implausible_mpp_metadata_is_treated_as_missing():
    with pytest.raises(MissingMPPError, match="implausible MPP"):
        open_slide(DATA / "boxes.tiff")
    with open_slide(DATA / "boxes.tiff", mpp=0.5) as s:
        assert s.mpp.source == "override"


def test_auto_falls_back_to_tiffslide_for_plain_tiff():
    with open_slide(KIDNEY, mpp=0.5) as s:
        assert s.info.backend == "tiffslide"
        assert s.dimensions == (1493, 901)
    with pytest.raises(SlideOpenError, match=r"kidney-48-5\.tif"):
        open_slide(KIDNEY, backend="openslide", mpp=0.5)


@pytest.mark.parametrize(
    "name, cause",
    [
        ("unopenable.tiff", "52479"),
        ("broken.svs", "not a TIFF file"),
        ("unreadable.svs", "Bogus marker"),
    ],
)
def test_unopenable_files_raise_slide_open_error(name, cause):
    with pytest.raises(SlideOpenError) as err:
        open_slide(DATA / name, mpp=0.5)
    assert name in str(err.value) and cause in str(err.value)


def test_corrupt_tile_data_is_caught_when_opening():
    with pytest.raises(
        SlideOpenError, match=r"unreadable\.svs.*cannot be decoded.*Bogus marker length"
    ):
        open_slide(DATA / "unreadable.svs")


def test_corrupt_tile_data_found_later_raises_slide_read_error(tmp_path):
    # a valid pyramid whose first level-0 tile is overwritten after the probe passed
    import tifffile

    path = write_pyramid(tmp_path / "late.tiff", scene(1024, 1024), downsamples=(1, 4))
    with tifffile.TiffFile(path) as tf:
        offset, count = tf.pages[0].dataoffsets[0], tf.pages[0].databytecounts[0]
    with open_slide(path) as s:
        with open(path, "r+b") as fh:
            fh.seek(offset + 20)
            fh.write(b"\xff\xda\xff\xff" * (count // 8))
        with pytest.raises(SlideReadError, match=r"late\.tiff.*cannot decode region"):
            s.read_region((0, 0), 0, (256, 256))
        with pytest.raises(SlideReadError, match=r"late\.tiff.*cannot decode stored tile \(0, 0\)"):
            s.read_stored_tile(0, (0, 0), np.empty((256, 256, 3), np.uint8))


def test_truncated_real_slide_fails_cleanly(tmp_path):
    data = CMU.read_bytes()
    bad = tmp_path / "truncated.svs"
    bad.write_bytes(data[: len(data) // 2])
    with pytest.raises(SlideError) as err:
        with open_slide(bad) as s:
            s.thumbnail_at_mpp(2.0)
    assert "truncated.svs" in str(err.value)


def test_missing_file_and_bad_options(tmp_path):
    with pytest.raises(SlideOpenError, match="file not found"):
        open_slide(tmp_path / "nope.svs")
    with pytest.raises(ConfigError, match="backend"):
        open_slide(CMU, backend="bioformats")
    with pytest.raises(ConfigError, match="slide mpp"):
        open_slide(CMU, mpp=-1.0)


def test_out_of_bounds_is_white(pyramid):
    for backend in BACKENDS:
        with open_slide(pyramid, backend=backend) as s:
            region = s.read_region((2000, 1500), 0, (100, 100))
            assert (region[36:, :] == 255).all() and (region[:, 48:] == 255).all()
            assert (s.read_region((5000, 5000), 0, (10, 10)) == 255).all()
            left = s.read_region((-20, 0), 0, (40, 10))
            assert (left[:, :20] == 255).all()


def test_to_rgb_composites_alpha_onto_white():
    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0], [100, 0, 200, 128]]], dtype=np.uint8)
    rgb = _to_rgb(rgba)
    assert rgb.tolist() == [[[10, 20, 30], [255, 255, 255], [177, 127, 227]]]
    grey = np.array([[7, 9]], dtype=np.uint8)
    assert _to_rgb(grey).tolist() == [[[7, 7, 7], [9, 9, 9]]]


def test_level_choice_and_resize(pyramid):
    with open_slide(pyramid) as s:
        info = s.info
        assert info.level_mpp(1) == pytest.approx((1.0, 1.0))
        assert info.best_level_for_mpp(0.25) == 0
        assert info.best_level_for_mpp(0.5) == 0
        assert info.best_level_for_mpp(1.0) == 1
        assert info.best_level_for_mpp(2.0) == 1
        assert info.best_level_for_mpp(100.0) == 2
        assert info.best_level_for_mpp(0.1) == 0  # upsampling from the finest level
        assert s.plan_read((64, 32), 2.0) == (1, (128, 64))
        tile = s.read_region_at_mpp((512, 512), (64, 32), 2.0)
        assert tile.shape == (32, 64, 3)
        ref = s.read_region((512, 512), 0, (512, 256)).reshape(32, 8, 64, 8, 3).mean(axis=(1, 3))
        # Lanczos vs box average of the same region: close on smooth content
        assert np.abs(tile.astype(float) - ref).mean() < 4


def test_resize_rgb_antialiases():
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # 1-px stripes alias badly without a low-pass filter
    small = resize_rgb(stripes, (16, 16))
    assert small.shape == (16, 16, 3)
    # nearest-neighbour would give all 0 or all 255; a low-pass gives mid-grey
    assert (
        abs(float(small.mean()) - 127.5) < 3
        and np.abs(small[2:-2, 2:-2].astype(int) - 128).max() <= 3
    )
    assert resize_rgb(stripes, (64, 64)) is stripes


def test_thumbnail_and_dask(pyramid):
    with open_slide(pyramid) as s:
        thumb = s.thumbnail_at_mpp(8.0, block=16)
        assert thumb.shape == (48, 64, 3)
        assert s.size_at_mpp(8.0) == (64, 48)
        direct = s.read_region_at_mpp((0, 0), (64, 48), 8.0)
        assert np.abs(thumb.astype(int) - direct).mean() < 3
        lazy = s.to_dask(1, chunk=200)
        assert lazy.shape == (384, 512, 3) and lazy.chunks[0] == (200, 184)
        np.testing.assert_array_equal(lazy.compute(), s.read_region((0, 0), 1, (512, 384)))
        np.testing.assert_array_equal(
            lazy[100:250, 190:410].compute(), s.read_region((760, 400), 1, (220, 150))
        )


def test_anisotropic_mpp_and_non_jpeg(tmp_path):
    img = scene(512, 512, seed=3)
    path = write_pyramid(tmp_path / "lzw.tiff", img, compression="zlib", downsamples=(1, 2))
    with open_slide(path) as s:
        assert s.decoder == "tifffile"
        np.testing.assert_array_equal(s.read_region((0, 0), 0, (512, 512)), img)


def test_closed_slide_read_is_an_error(pyramid):
    s = open_slide(pyramid)
    s.close()
    with pytest.raises(SlideReadError, match="closed"):
        s.read_region((0, 0), 0, (4, 4))


def test_copy_with_other_name_keeps_identity(tmp_path):
    copy = tmp_path / "copy.svs"
    shutil.copy(CMU, copy)
    with open_slide(copy) as s:
        assert s.path == str(copy.resolve())
