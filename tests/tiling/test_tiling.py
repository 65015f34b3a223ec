"""Tiling: grid and QC on inline arrays, and tiles.zarr end to end."""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import zarr
from PIL import Image

from conftest import CMU, TCGA, scene, write_pyramid
from pathpipe.errors import ConfigError, SlideError, StorageError
from pathpipe.io.slide import open_slide
from pathpipe.io.storage import file_checksum, open_store
from pathpipe.tiling import grid as tiling_grid
from pathpipe.tiling import run as tiling_run
from pathpipe.tiling.grid import pixel_qc, plan_runs, tile_grid, tissue_fraction
from pathpipe.tiling.run import TilingParams, run_tiling, tiling_summary


def test_tile_grid_hand_computed():
    grid = tile_grid((600, 300), tile_size=256, stride=256)
    assert grid.tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]
    # stride 192 (overlap 64): cols start at 0, 192, 384 (384+256 >= 600 stops)
    assert tile_grid((600, 256), tile_size=256, stride=192)[:, 1].tolist() == [0, 1, 2]
    assert tile_grid((100, 50), tile_size=256, stride=256).tolist() == [[0, 0]]


def test_tissue_fraction_hand_computed():
    mask = np.zeros((4, 4), bool)
    mask[0, 0] = mask[0, 1] = mask[1, 0] = True  # 3 of the top-left 2x2 block
    # mask pixel = 10 level-0 px; tiles 20 px
    l0_xy = np.array([[0, 0], [20, 0], [0, 20], [30, 30], [10, 0]])
    tf = tissue_fraction(mask, m_scale_xy=(10, 10), l0_xy=l0_xy, l0_tile_wh=(20, 20))
    np.testing.assert_allclose(tf, [0.75, 0, 0, 0, 0.25])
    # a tile half outside the slide counts the outside as background
    tf = tissue_fraction(
        np.ones((4, 4), bool), m_scale_xy=(10, 10), l0_xy=np.array([[30, 0]]), l0_tile_wh=(20, 20)
    )
    np.testing.assert_allclose(tf, [0.5])
    # tiles smaller than a mask pixel take the pixel under their centre
    tf = tissue_fraction(
        mask, m_scale_xy=(10, 10), l0_xy=np.array([[1, 1], [12, 12]]), l0_tile_wh=(4, 4)
    )
    np.testing.assert_allclose(tf, [1.0, 0.0])


def test_pixel_qc_hand_computed():
    white = np.full((16, 16, 3), 250, np.uint8)
    assert pixel_qc(white) == (1.0, 0.0, 0.0)
    grey = np.full((16, 16, 3), 128, np.uint8)
    grey[:, :, 0] = 140  # chroma 12 < 20
    wf, gf, blur = pixel_qc(grey)
    assert (wf, gf, blur) == (0.0, 1.0, 0.0)
    pink = np.zeros((4, 4, 3), np.uint8)
    pink[...] = (230, 120, 200)
    assert pixel_qc(pink)[:2] == (0.0, 0.0)
    # checkerboard of luma 0/255 → Laplacian ±1020 everywhere inside → variance 1020²
    cb = ((np.indices((8, 8)).sum(0) % 2) * 255).astype(np.uint8)
    cb = np.repeat(cb[:, :, None], 3, axis=2)
    assert pixel_qc(cb)[2] == pytest.approx(1020.0**2)
    # half white, half dark
    half = np.zeros((10, 10, 3), np.uint8)
    half[:, :5] = 255
    assert pixel_qc(half)[0] == 0.5


def test_plan_runs():
    grid = np.array([[0, 0], [0, 1], [0, 2], [0, 4], [1, 0], [1, 1]])
    runs = plan_runs(grid, max_run=2)
    assert [r.tolist() for r in runs] == [[0, 1], [2], [3], [4, 5]]
    assert plan_runs(np.zeros((0, 2), int)) == []


def test_params_validation():
    with pytest.raises(ConfigError, match="overlap"):
        TilingParams(tile_size=64, overlap=64)
    with pytest.raises(ConfigError, match="min_tissue_fraction"):
        TilingParams(min_tissue_fraction=1.5)
    with pytest.raises(ConfigError, match="max_tiles"):
        TilingParams(max_tiles=0)
    assert TilingParams(tile_size=64, overlap=16).stride == 48


@pytest.fixture()
def slide_and_mask(tmp_path):
    """1024² slide at 0.25 µm/px: tissue in the central half; full-slide mask at 8 µm/px."""
    path = write_pyramid(tmp_path / "s.tiff", scene(1024, 1024, seed=2), downsamples=(1, 4))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    mpath = tmp_path / "mask.png"
    Image.fromarray(mask).save(mpath)
    return path, mpath


def test_run_tiling_store_contents(slide_and_mask, tmp_path):
    slide, mask = slide_and_mask
    out = tmp_path / "tiles.zarr"
    params = TilingParams(mpp=0.5, tile_size=64, min_tissue_fraction=0.5, workers=2)
    rec = run_tiling(slide, mask_path=mask, out_path=out, params=params, slide_mpp_source="sheet")
    g = open_store(out, stage="tiling")
    tiles = g["tiles"]
    # 1024 px at 0.25 → 512 px at 0.5 → 8 × 8 grid of 64 px; tissue = central 4 × 4
    assert rec["n_grid"] == 64 and rec["n_candidates"] == 16 and rec["n_tiles"] == 16
    assert tiles.shape == (16, 64, 64, 3) and tiles.dtype == np.uint8
    assert tiles.chunks == (1, 64, 64, 3)
    l0 = g["l0_xy"][:]
    assert l0.dtype == np.int64 and l0.shape == (16, 2)
    assert l0[:4].tolist() == [[256, 256], [384, 256], [512, 256], [640, 256]]  # row-major
    assert g["grid_rc"][:4].tolist() == [[2, 2], [2, 3], [2, 4], [2, 5]]
    np.testing.assert_allclose(g["qc/tissue_fraction"][:], 1.0)
    assert g["qc/white_fraction"][:].max() < 0.05 and g["qc/blur"][:].min() > 0
    with open_slide(slide) as s:
        for i in (0, 7, 15):
            ref = s.read_region_at_mpp(tuple(int(v) for v in l0[i]), (64, 64), 0.5)
            np.testing.assert_array_equal(tiles[i], ref)
    meta = g.attrs["pathpipe"]
    assert meta["complete"] and meta["stage"] == "tiling"
    assert meta["mpp"] == {"x": 0.25, "y": 0.25, "source": "metadata"}
    assert meta["source"]["checksum"] == file_checksum(slide)
    assert meta["params"]["tile_size"] == 64 and meta["level_read"] == 0
    assert meta["pathpipe_version"]


@pytest.mark.parametrize("side", [512, 480])
def test_tiles_on_the_stored_tile_grid_are_decoded_in_place(tmp_path, monkeypatch, side):
    """Tiles at a level's own size and grid take the in-place path, with the
    pixels read_region gives; off the grid or across the slide edge they take
    the strip path."""
    from pathpipe.io.slide import Slide

    path = write_pyramid(tmp_path / "s.tiff", scene(side, side, seed=5), tile=64)
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    calls = []
    real = Slide.read_stored_tile

    def spy(self, level, tile_xy, out):
        calls.append(tile_xy)
        return real(self, level, tile_xy, out)

    monkeypatch.setattr(Slide, "read_stored_tile", spy)
    # overlap 0: the grid is the stored tile grid; overlap 16: it is not
    for overlap in (0, 16):
        calls.clear()
        out = tmp_path / f"t{overlap}.zarr"
        params = TilingParams(mpp=0.25, tile_size=64, overlap=overlap, min_tissue_fraction=0)
        rec = run_tiling(path, mask_path=mask, out_path=out, params=params)
        g = open_store(out, stage="tiling")
        if overlap:
            assert calls == []
        elif side == 512:
            assert len(calls) == rec["n_tiles"] == 64
        else:  # the last row and column cross the edge: those 15 are read alone
            assert len(calls) == rec["n_tiles"] - 15 == 49
        with open_slide(path) as s:
            for i in range(rec["n_tiles"]):
                xy = tuple(int(v) for v in g["l0_xy"][i])
                ref = s.read_region_at_mpp(xy, (64, 64), 0.25)
                np.testing.assert_array_equal(g["tiles"][i], ref)


def test_run_tiling_is_deterministic_and_overlap_works(slide_and_mask, tmp_path):
    slide, mask = slide_and_mask
    params = TilingParams(mpp=0.5, tile_size=64, overlap=16, min_tissue_fraction=0.9, workers=3)
    run_tiling(slide, mask_path=mask, out_path=tmp_path / "a.zarr", params=params)
    run_tiling(
        slide, mask_path=mask, out_path=tmp_path / "b.zarr", params=params, backend="tiffslide"
    )
    a, b = (
        zarr.open_group(str(tmp_path / "a.zarr"), mode="r"),
        zarr.open_group(str(tmp_path / "b.zarr"), mode="r"),
    )
    np.testing.assert_array_equal(a["tiles"][:], b["tiles"][:])
    np.testing.assert_array_equal(a["l0_xy"][:], b["l0_xy"][:])
    l0 = a["l0_xy"][:]
    # stride 48 px at 0.5 µm/px = 96 level-0 px
    assert set(np.diff(np.unique(l0[:, 0]))) == {96}
    # overlapping tiles share content: each tile is resized on its own (0.25 →
    # 0.5 µm/px), so shared pixels agree up to resampling at the tile edges
    shared = np.abs(a["tiles"][0][:, 48:].astype(int) - a["tiles"][1][:, :16])
    assert shared.mean() < 1.0 and shared.max() <= 4
    # without resampling they are identical
    exact = TilingParams(mpp=0.25, tile_size=64, overlap=16, min_tissue_fraction=0.9)
    run_tiling(slide, mask_path=mask, out_path=tmp_path / "c.zarr", params=exact)
    c = zarr.open_group(str(tmp_path / "c.zarr"), mode="r")
    assert c["grid_rc"][1].tolist() == [c["grid_rc"][0][0], c["grid_rc"][0][1] + 1]
    np.testing.assert_array_equal(c["tiles"][0][:, 48:], c["tiles"][1][:, :16])


def test_max_tiles_is_seeded(slide_and_mask, tmp_path):
    slide, mask = slide_and_mask

    def pick(seed, **kw):
        out = tmp_path / f"s{seed}_{len(kw)}.zarr"
        params = TilingParams(
            mpp=0.5, tile_size=64, min_tissue_fraction=0.5, max_tiles=5, seed=seed, **kw
        )
        run_tiling(slide, mask_path=mask, out_path=out, params=params)
        g = zarr.open_group(str(out), mode="r")
        assert (g["qc/white_fraction"][:] <= kw.get("max_white_fraction", 1.0)).all()
        return g["grid_rc"][:]

    a, b, c = pick(1), pick(1), pick(2)
    assert len(a) == 5 and a.tolist() == b.tolist() and a.tolist() != c.tolist()
    assert a.tolist() == sorted(a.tolist())  # grid order
    # with a pixel filter on, the cap still gives 5 tiles passing it
    d = pick(1, max_white_fraction=0.5)
    assert len(d) == 5


def test_pixel_filters_drop_tiles(slide_and_mask, tmp_path):
    slide, mask = slide_and_mask
    base = {"mpp": 0.5, "tile_size": 64, "min_tissue_fraction": 0.0}
    run_tiling(slide, mask_path=mask, out_path=tmp_path / "all.zarr", params=TilingParams(**base))
    run_tiling(
        slide,
        mask_path=mask,
        out_path=tmp_path / "f.zarr",
        params=TilingParams(**base, max_white_fraction=0.5),
    )
    full, kept = (
        zarr.open_group(str(tmp_path / "all.zarr"), mode="r"),
        zarr.open_group(str(tmp_path / "f.zarr"), mode="r"),
    )
    assert full["tiles"].shape[0] == 64
    wf = full["qc/white_fraction"][:]
    expect = np.flatnonzero(wf <= 0.5)
    assert 0 < len(expect) < 64
    assert kept["tiles"].shape[0] == len(expect)
    np.testing.assert_array_equal(kept["l0_xy"][:], full["l0_xy"][:][expect])
    np.testing.assert_array_equal(kept["tiles"][:], full["tiles"][:][expect])


def test_no_tissue_gives_an_empty_store(tmp_path, slide_and_mask):
    slide, _ = slide_and_mask
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(tmp_path / "empty.png")
    rec = run_tiling(slide, mask_path=tmp_path / "empty.png", out_path=tmp_path / "e.zarr")
    g = open_store(tmp_path / "e.zarr")
    assert (
        rec["n_tiles"] == 0 and g["tiles"].shape == (0, 256, 256, 3) and g["l0_xy"].shape == (0, 2)
    )
    df = tiling_summary([tmp_path / "e.zarr"])
    assert df.loc[0, "tiles"] == 0


def test_failure_leaves_previous_store_intact(slide_and_mask, tmp_path, monkeypatch):
    slide, mask = slide_and_mask
    out = tmp_path / "tiles.zarr"
    params = TilingParams(mpp=0.5, tile_size=64)
    run_tiling(slide, mask_path=mask, out_path=out, params=params)
    before = zarr.open_group(str(out), mode="r")["tiles"][:]

    def boom(self, grid_rc):
        raise SlideError("x.svs", "simulated decode failure")

    monkeypatch.setattr(tiling_run._TileReader, "iter_run", boom)
    with pytest.raises(SlideError, match="simulated"):
        run_tiling(slide, mask_path=mask, out_path=out, params=params)
    np.testing.assert_array_equal(zarr.open_group(str(out), mode="r")["tiles"][:], before)
    assert sorted(p.name for p in tmp_path.iterdir() if p.name.startswith(".")) == []


def test_failure_after_some_writes_leaves_no_temporary_store(slide_and_mask, tmp_path, monkeypatch):
    slide, mask = slide_and_mask
    real = tiling_run._TileReader.iter_run
    calls = {"n": 0}

    def flaky(self, grid_rc):
        calls["n"] += 1
        if calls["n"] == 4:
            raise SlideError("x.svs", "simulated decode failure")
        return real(self, grid_rc)

    monkeypatch.setattr(tiling_run._TileReader, "iter_run", flaky)
    out = tmp_path / "out" / "tiles.zarr"
    with pytest.raises(SlideError, match="simulated"):
        run_tiling(
            slide,
            mask_path=mask,
            out_path=out,
            params=TilingParams(mpp=0.25, tile_size=64, workers=2),
        )
    assert calls["n"] >= 4
    assert list((tmp_path / "out").iterdir()) == []


def test_real_slides_and_mpp_override(tmp_path):
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((10, 10), 255, np.uint8)).save(mask)
    rec = run_tiling(
        TCGA,
        mask_path=mask,
        out_path=tmp_path / "t.zarr",
        params=TilingParams(mpp=1.0, tile_size=128, min_tissue_fraction=0),
        slide_mpp=0.2527,
        slide_mpp_source="sheet",
    )
    assert rec["mpp"]["source"] == "sheet" and rec["level_read"] == 1
    g = open_store(tmp_path / "t.zarr")
    assert g["tiles"].shape[0] == rec["n_grid"] > 0
    rec = run_tiling(
        CMU,
        mask_path=mask,
        out_path=tmp_path / "c.zarr",
        params=TilingParams(mpp=0.5, tile_size=128, min_tissue_fraction=0),
    )
    assert rec["mpp"]["source"] == "metadata" and rec["n_tiles"] == rec["n_grid"]
    df = tiling_summary([tmp_path / "t.zarr", tmp_path / "c.zarr"])
    assert df["mpp_source"].tolist() == ["sheet", "metadata"]
    assert df["compression"].tolist() == ["lz4", "lz4"]
    with pytest.raises(StorageError):
        tiling_summary([])


@pytest.mark.slow
def test_peak_memory_does_not_grow_with_slide_size(tmp_path, monkeypatch):
    """Tiling a slide 16× larger must not need much more memory (streaming)."""
    # Shards of 4 tiles, so both slides fill shards: the buffer of one shard
    # (at most SHARD_BYTES, 16 MiB by default) is a constant, not growth.
    monkeypatch.setattr(tiling_grid, "SHARD_BYTES", 4 * 256 * 256 * 3)
    peaks = []
    for side in (1024, 4096):
        path = write_pyramid(
            tmp_path / f"{side}.tiff",
            scene(side, side, seed=side, tissue_box=(0, 0, 1, 1)),
            downsamples=(1, 4, 16),
        )
        mask = tmp_path / "full.png"
        Image.fromarray(np.full((16, 16), 255, np.uint8)).save(mask)
        tracemalloc.start()
        rec = run_tiling(
            path,
            mask_path=mask,
            out_path=tmp_path / f"{side}.zarr",
            params=TilingParams(mpp=0.25, tile_size=256, workers=2),
            checksum=False,
        )
        _, peak = tracemalloc.get_traced_memory()
        tracemalloc.stop()
        peaks.append(peak)
        assert rec["n_tiles"] == (side // 256) ** 2
    # 16 vs 256 tiles; the 4096² image alone would be 48 MB
    assert peaks[1] < 2.0 * peaks[0] + 8e6, peaks


def test_pixel_qc_matches_numpy_reference():
    from pathpipe.tiling.grid import _pixel_qc_numpy

    rng = np.random.default_rng(7)
    for shape in [(256, 256, 3), (31, 17, 3), (2, 2, 3), (1, 5, 3)]:
        tile = rng.integers(0, 256, size=shape, dtype=np.uint8)
        tile[: shape[0] // 2] = np.clip(tile[: shape[0] // 2].astype(int) + 120, 0, 255)
        assert pixel_qc(tile) == pytest.approx(_pixel_qc_numpy(tile), rel=1e-12, abs=1e-9)
    # a tile cut from a wider strip (not contiguous), as the strip reader yields
    strip = scene(256, 64, seed=9)
    view = strip[:, 100:164]
    assert not view.flags.c_contiguous
    assert pixel_qc(view) == pytest.approx(_pixel_qc_numpy(view), rel=1e-12)
    assert pixel_qc(view) == pixel_qc(np.ascontiguousarray(view))
    with pytest.raises(ConfigError, match="uint8"):
        pixel_qc(np.zeros((4, 4, 3), np.float32))


@pytest.mark.parametrize("codec", ["zstd", "none"])
def test_compression_choices_store_the_same_tiles(slide_and_mask, tmp_path, codec):
    slide, mask = slide_and_mask
    base = {"mpp": 0.5, "tile_size": 64}
    run_tiling(slide, mask_path=mask, out_path=tmp_path / "lz4.zarr", params=TilingParams(**base))
    run_tiling(
        slide,
        mask_path=mask,
        out_path=tmp_path / "x.zarr",
        params=TilingParams(**base, compression=codec),
    )
    a = zarr.open_group(str(tmp_path / "lz4.zarr"), mode="r")
    b = zarr.open_group(str(tmp_path / "x.zarr"), mode="r")
    np.testing.assert_array_equal(a["tiles"][:], b["tiles"][:])
    (sharding,) = b["tiles"].metadata.to_dict()["codecs"]
    codecs = [c["name"] for c in sharding["configuration"]["codecs"]]
    assert codecs == (["bytes", "blosc"] if codec == "zstd" else ["bytes"])
    if codec == "zstd":
        assert sharding["configuration"]["codecs"][1]["configuration"]["cname"] == "zstd"
    with pytest.raises(ConfigError, match="compression"):
        TilingParams(compression="gzip")


def _store_bytes(path):
    return sum(p.stat().st_size for p in (path / "tiles").glob("c.*"))


def test_source_compression_keeps_the_slides_jpeg_tiles(tmp_path):
    """compression: source stores the slide's JPEG bytes: same pixels, smaller,
    readable by plain zarr in another process (the codec's entry point)."""
    import subprocess
    import sys

    path = write_pyramid(tmp_path / "s.tiff", scene(512, 512, seed=6), tile=64)
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    base = {"mpp": 0.25, "tile_size": 64, "min_tissue_fraction": 0}
    rec = run_tiling(
        path,
        mask_path=mask,
        out_path=tmp_path / "s.zarr",
        params=TilingParams(**base, compression="source"),
    )
    run_tiling(path, mask_path=mask, out_path=tmp_path / "l.zarr", params=TilingParams(**base))
    assert rec["compression"] == "source" and "source_fallback" not in rec
    src, lz4 = open_store(tmp_path / "s.zarr"), open_store(tmp_path / "l.zarr")
    assert lz4.attrs["pathpipe"]["compression"] == "lz4"
    (sharding,) = src["tiles"].metadata.to_dict()["codecs"]
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["pathpipe.source_jpeg"]
    np.testing.assert_array_equal(src["tiles"][:], lz4["tiles"][:])
    for k in ("l0_xy", "qc/white_fraction", "qc/blur"):
        np.testing.assert_array_equal(src[k][:], lz4[k][:])
    with open_slide(path) as s:
        for i in (0, 27, 63):
            xy = tuple(int(v) for v in src["l0_xy"][i])
            np.testing.assert_array_equal(src["tiles"][i], s.read_region(xy, 0, (64, 64)))
    assert _store_bytes(tmp_path / "s.zarr") < 0.5 * _store_bytes(tmp_path / "l.zarr")
    code = (
        "import sys, zarr; g = zarr.open_group(sys.argv[1], mode='r'); "
        "assert 'pathpipe' not in sys.modules; print(int(g['tiles'][5].sum()))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code, str(tmp_path / "s.zarr")],
        capture_output=True,
        text=True,
        check=True,
    )
    assert int(out.stdout) == int(lz4["tiles"][5].sum())
    # re-encoding as JPEG would lose pixels: writes through zarr are refused
    arr = zarr.open_array(str(tmp_path / "s.zarr" / "tiles"), mode="r+")
    with pytest.raises(StorageError, match="lose pixels"):
        arr[0] = 7


def test_source_compression_on_an_aperio_rgb_jpeg_slide(tmp_path):
    """Aperio stores RGB (not YCbCr) JPEG tiles; the codec decodes them as tifffile does."""
    with open_slide(CMU) as s:
        w, h = s.info.level_dimensions[0]
        tw, _ = s.stored_tile_size(0)
    mask = np.zeros((h // 16, w // 16), np.uint8)
    mask[h // 64 : h // 32, w // 64 : w // 32] = 255  # an interior patch, away from the edges
    Image.fromarray(mask).save(tmp_path / "m.png")
    rec = run_tiling(
        CMU,
        mask_path=tmp_path / "m.png",
        out_path=tmp_path / "c.zarr",
        params=TilingParams(
            mpp=0.499, tile_size=tw, min_tissue_fraction=0.01, compression="source"
        ),
        slide_mpp=0.499,
    )
    assert rec["compression"] == "source" and rec["n_tiles"] > 0
    g = open_store(tmp_path / "c.zarr")
    with open_slide(CMU, mpp=0.499) as s:
        for i in range(rec["n_tiles"]):
            xy = tuple(int(v) for v in g["l0_xy"][i])
            np.testing.assert_array_equal(g["tiles"][i], s.read_region(xy, 0, (tw, tw)))


@pytest.mark.parametrize(
    "case, reason",
    [
        ("overlap", "not the stored tile grid"),
        ("resized", "are 128x128 px of level 0, whose stored tiles are 64x64 px"),
        ("edge", "cross the slide edge"),
        ("jpeg2000", "not decodable as standalone JPEG"),
        ("stream", "not decodable as standalone JPEG"),
    ],
)
def test_source_compression_falls_back_to_lz4_with_the_reason(
    tmp_path, caplog, monkeypatch, case, reason
):
    side = 480 if case == "edge" else 512
    path = write_pyramid(tmp_path / "s.tiff", scene(side, side, seed=7), tile=64)
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    kw = {"mpp": 0.25, "tile_size": 64, "min_tissue_fraction": 0, "compression": "source"}
    mpp = None
    if case == "overlap":
        kw["overlap"] = 16
    elif case == "resized":
        kw["mpp"] = 0.5
    elif case == "jpeg2000":
        path, mpp, kw["mpp"], kw["tile_size"] = TCGA, 0.2527, 0.2527, 256
    elif case == "stream":  # tiles made complete streams would not decode the same
        import pathpipe.io.tiffdirect as direct

        monkeypatch.setattr(direct, "jpeg_stream", lambda tables, data: b"\xff\xd8broken")
    rec = run_tiling(
        path, mask_path=mask, out_path=tmp_path / "t.zarr", params=TilingParams(**kw), slide_mpp=mpp
    )
    assert rec["compression"] == "lz4" and reason in rec["source_fallback"]
    assert "compression 'source' not possible" in caplog.text and reason in caplog.text
    g = open_store(tmp_path / "t.zarr")
    (sharding,) = g["tiles"].metadata.to_dict()["codecs"]
    assert [c["name"] for c in sharding["configuration"]["codecs"]] == ["bytes", "blosc"]
    assert g["tiles"].shape[0] == rec["n_tiles"] > 0


def test_source_compression_with_pixel_filters_dropping_tiles(tmp_path):
    img = scene(512, 512, seed=3)
    img[:, :200] = 255  # blank glass on the left
    path = write_pyramid(tmp_path / "s.tiff", img, tile=64)
    mask = tmp_path / "m.png"
    Image.fromarray(np.full((8, 8), 255, np.uint8)).save(mask)
    stores = {}
    for codec in ("source", "lz4"):
        params = TilingParams(
            mpp=0.25, tile_size=64, min_tissue_fraction=0, max_white_fraction=0.5, compression=codec
        )
        rec = run_tiling(path, mask_path=mask, out_path=tmp_path / f"{codec}.zarr", params=params)
        assert rec["compression"] == codec and 0 < rec["n_tiles"] < rec["n_candidates"]
        stores[codec] = open_store(tmp_path / f"{codec}.zarr")
    np.testing.assert_array_equal(stores["source"]["tiles"][:], stores["lz4"]["tiles"][:])
    assert (stores["source"]["qc/white_fraction"][:] <= 0.5).all()
