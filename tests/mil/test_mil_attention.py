"""pathpipe.mil.attention: tile attention table, heatmap over the thumbnail, galleries.

A 1024² slide at 0.25 µm/px is generated and tiled (0.5 µm/px, 64 px tiles:
a 4 × 4 block of 16 tiles, 128 level-0 px each, at level-0 256..767). Tile
features: ``f0`` is 3 on the bottom-right 2 × 2 tiles ("witnesses") and 0
elsewhere, ``f1..f3`` are noise. The AMIL model's weights are set by hand so
that, after preprocessing (``z`` = standardised ``f0``), tile ``k`` has the
attention score ``4 tanh(relu(z_k))`` and the slide the class-1 logit
``2 Σ_k a_k relu(z_k) - 1``: attention and probability are known in closed form.
"""

from __future__ import annotations

import json
import logging

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from conftest import scene, write_pyramid
from pathpipe.errors import ConfigError, StorageError
from pathpipe.mil.attention import explain_slide_attention
from pathpipe.mil.attention_figures import attention_gallery, attention_heatmap_figure
from pathpipe.mil.attention_maps import (
    attention_heatmap,
    attention_table,
    colour_limits,
    gallery_indices,
    rasterize_tiles,
)
from pathpipe.mil.params import HeatmapParams

torch = pytest.importorskip("torch")
pytest.importorskip("safetensors")

from pathpipe.mil.io import save_amil  # noqa: E402 - after the importorskip
from pathpipe.mil.model import GatedAttentionMIL  # noqa: E402
from pathpipe.mil.preprocessing import FeaturePreprocessor  # noqa: E402
from pathpipe.tiling.run import TilingParams, run_tiling  # noqa: E402

L0_TILE = 128  # 64 px at 0.5 µm/px on a 0.25 µm/px slide
WITNESS_L0 = {(512, 512), (640, 512), (512, 640), (640, 640)}  # bottom-right 2 × 2 tiles
EPS = 1e-5  # BatchNorm eps: eval-mode BN with fresh running stats divides by sqrt(1 + eps)


@pytest.fixture(scope="module", autouse=True)
def _one_thread(torch_one_thread):
    """torch on one thread for this module (see conftest.torch_one_thread)."""


def _hand_model(n_features: int) -> GatedAttentionMIL:
    """Score ``4 tanh(relu(x0))``; class-1 logit ``2 Σ a_k relu(x0_k) - 1`` (see module doc)."""
    model = GatedAttentionMIL(n_features, hidden=[8], dropout=0.0)
    with torch.no_grad():
        for p in model.parameters():
            p.zero_()
        model.encoder[0].weight[0, 0] = 1.0  # h0 = relu(x0 / sqrt(1 + eps))
        model.encoder[2].weight.fill_(1.0)  # BatchNorm: identity with fresh running stats
        model.attention_v.weight[0, 0] = 1.0  # tanh(h0)
        model.attention_u.bias.fill_(30.0)  # gate sigm(30) = 1
        model.attention_w.weight[0, 0] = 4.0
        model.classifier[0].weight[0, 0] = 1.0
        model.classifier[3].weight[1, 0] = 2.0
        model.classifier[3].bias[1] = -1.0
    return model.eval()


def _expected(z: np.ndarray) -> tuple[np.ndarray, float]:
    h = np.maximum(z, 0) / np.sqrt(1 + EPS)
    s = 4 * np.tanh(h)
    a = np.exp(s - s.max())
    a /= a.sum()
    return a, float(1 / (1 + np.exp(-(2 * (a @ h) - 1))))


@pytest.fixture(scope="module")
def bundle(tmp_path_factory):
    """Slide, tiles.zarr, tile table, model directory and the preprocessing z of f0."""
    root = tmp_path_factory.mktemp("attention")
    slide = write_pyramid(root / "s.tiff", scene(1024, 1024, seed=3), downsamples=(1, 4))
    mask = np.zeros((32, 32), np.uint8)
    mask[8:24, 8:24] = 255
    Image.fromarray(mask).save(root / "mask.png")
    store = root / "s" / "tiles.zarr"
    run_tiling(
        slide,
        mask_path=root / "mask.png",
        out_path=store,
        params=TilingParams(mpp=0.5, tile_size=64, workers=1),
        checksum=False,
    )
    import zarr

    l0 = zarr.open_group(str(store), mode="r")["l0_xy"][:]
    rng = np.random.default_rng(0)
    witness = np.array([tuple(p) in WITNESS_L0 for p in l0.tolist()])
    frame = pd.DataFrame(
        {
            "tile": np.arange(len(l0)),
            "l0_x": l0[:, 0],
            "l0_y": l0[:, 1],
            "f0": np.where(witness, 3.0, 0.0),
            **{f"f{i}": rng.normal(size=len(l0)) for i in (1, 2, 3)},
        }
    )
    table = root / "s" / "tile_features.parquet"
    frame.to_parquet(table)
    pre = FeaturePreprocessor().fit(frame, ["f0", "f1", "f2", "f3"])
    assert pre.features[0] == "f0"
    model_dir = save_amil(
        root / "model", _hand_model(len(pre.features)), config={"classes": ["neg", "pos"]},
        preprocessor=pre,
    )  # fmt: skip
    z = pre.transform(frame)[:, 0].astype(np.float64)
    return {
        "root": root, "slide": slide, "store": store, "table": table, "model": model_dir,
        "frame": frame, "pre": pre, "witness": witness, "z": z,
    }  # fmt: skip


# -------------------------------------------------------------- attention table
def test_attention_table_matches_closed_form(bundle):
    model = _hand_model(len(bundle["pre"].features))
    table, p = attention_table(model, bundle["pre"], bundle["frame"], slide_id="s")
    a, p_exp = _expected(bundle["z"])
    assert list(table.columns) == ["tile", "l0_x", "l0_y", "attention", "attention_norm", "rank"]
    assert table["attention"].sum() == pytest.approx(1.0, abs=1e-12)
    np.testing.assert_allclose(table["attention"], a, rtol=1e-5)
    np.testing.assert_allclose(table["attention_norm"], a * len(a), rtol=1e-5)
    assert p == pytest.approx(p_exp, rel=1e-5)
    # The 4 witness tiles take ranks 1-4 (ties in table order), the others 5-16.
    witness = bundle["witness"]
    assert sorted(table["rank"][witness]) == [1, 2, 3, 4]
    assert sorted(table["rank"]) == list(range(1, 17))
    assert table["rank"][witness].tolist() == [1, 2, 3, 4]
    np.testing.assert_array_equal(table[["l0_x", "l0_y"]], bundle["frame"][["l0_x", "l0_y"]])


def test_single_tile_bag_has_attention_one_and_warns(bundle, caplog):
    model = _hand_model(len(bundle["pre"].features))
    with caplog.at_level(logging.WARNING, logger="pathpipe.mil.attention_maps"):
        table, p = attention_table(model, bundle["pre"], bundle["frame"].iloc[[5]], slide_id="one")
    assert table["attention"].tolist() == [1.0] and table["attention_norm"].tolist() == [1.0]
    assert table["rank"].tolist() == [1] and 0 < p < 1
    assert "one" in caplog.text and "trivially 1" in caplog.text


def test_empty_table_and_bad_inputs_raise(bundle):
    model = _hand_model(len(bundle["pre"].features))
    with pytest.raises(ConfigError, match=r"slide 'empty'.*all tiles filtered out"):
        attention_table(model, bundle["pre"], bundle["frame"].iloc[:0], slide_id="empty")
    with pytest.raises(ConfigError, match=r"lacks column\(s\) \['l0_y'\]"):
        attention_table(model, bundle["pre"], bundle["frame"].drop(columns="l0_y"))
    with pytest.raises(ConfigError, match=r"slide 'f'.*lacks 1 column"):
        attention_table(model, bundle["pre"], bundle["frame"].drop(columns="f2"), slide_id="f")
    # Without preprocessing the raw numeric features go in as they are.
    table, _ = attention_table(model, None, bundle["frame"])
    assert table["attention"].sum() == pytest.approx(1.0)
    with pytest.raises(ConfigError, match="expected a binary"):
        attention_table(GatedAttentionMIL(4, n_classes=3), None, bundle["frame"])


# ---------------------------------------------------------------- rasterising
def test_rasterize_maps_level0_rectangles_to_thumbnail_pixels():
    # scale 0.1: tile at level-0 (200, 300), 100 × 100 → rows 30..39, cols 20..29
    mean, cov = rasterize_tiles((60, 50), 0.1, [[200, 300]], (100, 100), [2.5])
    assert cov.sum() == pytest.approx(100.0)
    np.testing.assert_array_equal(cov[30:40, 20:30], 1.0)
    np.testing.assert_array_equal(mean[30:40, 20:30], 2.5)
    assert np.isnan(mean).sum() == 60 * 50 - 100
    # A tile at x = 205 covers half of columns 20 and 30; anisotropic scale (0.1, 0.2).
    mean, cov = rasterize_tiles((60, 50), (0.1, 0.2), [[205, 100]], (100, 50), [1.0])
    np.testing.assert_allclose(cov[20, 19:32], [0, 0.5, *[1] * 9, 0.5, 0])
    np.testing.assert_allclose(cov[19:31, 25], [0, *[1] * 10, 0])
    np.testing.assert_array_equal(mean[20:30, 20:31], 1.0)
    # Overlapping tiles are averaged; tiles past the image edge are clipped.
    mean, cov = rasterize_tiles((10, 10), 1.0, [[0, 0], [2, 0], [8, 8]], 4, [1.0, 3.0, 5.0])
    assert mean[0, 1] == 1.0 and mean[0, 2] == 2.0 and mean[0, 4] == 3.0
    assert cov[0, 3] == 2.0 and cov[0, 5] == 1.0 and cov[0, 6] == 0.0
    assert cov[8:, 8:].tolist() == [[1.0, 1.0], [1.0, 1.0]]
    with pytest.raises(ConfigError, match="expected a positive number or"):
        rasterize_tiles((10, 10), 0, [[0, 0]], 4, [1.0])
    with pytest.raises(ConfigError, match=r"expected \(1,\)"):
        rasterize_tiles((10, 10), 1, [[0, 0]], 4, [1.0, 2.0])


def test_colour_limits():
    v = np.array([0.25, 1.0, 2.0])
    assert colour_limits(v, percentiles=(0, 100)) == (-2.0, 2.0)  # log2, symmetric about 1
    assert colour_limits(v, percentiles=(0, 100), centre=None) == (-2.0, 1.0)
    assert colour_limits(v, log=False, percentiles=(0, 100), centre=None) == (0.25, 2.0)
    assert colour_limits(v, limits=(0.5, 8)) == (-1.0, 3.0)
    assert colour_limits([1.0]) == (-1.0, 1.0)  # one tile: widened
    with pytest.raises(ConfigError, match="low > 0"):
        colour_limits(v, limits=(0, 1))


def test_heatmap_colours_blend_exactly():
    import matplotlib as mpl

    thumb = np.full((20, 20, 3), 100, np.uint8)
    out = attention_heatmap(
        thumb, 0.5, [[0, 0], [20, 0]], 10, [1.0, 4.0], cmap="viridis", log=False,
        limits=(1.0, 4.0), alpha=1.0,
    )  # fmt: skip
    lo = np.array(mpl.colormaps["viridis"](0.0)[:3]) * 255
    hi = np.array(mpl.colormaps["viridis"](1.0)[:3]) * 255
    np.testing.assert_array_equal(out[0:5, 0:5], np.broadcast_to(np.rint(lo), (5, 5, 3)))
    np.testing.assert_array_equal(out[0:5, 10:15], np.broadcast_to(np.rint(hi), (5, 5, 3)))
    untouched = np.ones((20, 20), bool)
    untouched[0:5, 0:5] = untouched[0:5, 10:15] = False
    np.testing.assert_array_equal(out[untouched], thumb[untouched])
    half = attention_heatmap(
        thumb, 0.5, [[20, 0]], 10, [4.0], cmap="viridis", log=False, limits=(1, 4), alpha=0.5
    )
    np.testing.assert_array_equal(half[2, 12], np.rint(0.5 * 100 + 0.5 * hi))
    with pytest.raises(ConfigError, match="not a matplotlib colour map"):
        attention_heatmap(thumb, 0.5, [[0, 0]], 10, [1.0], cmap="nope")
    with pytest.raises(ConfigError, match=r"expected \(H, W, 3\) uint8"):
        attention_heatmap(thumb[..., 0], 0.5, [[0, 0]], 10, [1.0])


def test_heatmap_marks_the_witness_tiles_on_the_real_thumbnail(bundle):
    from pathpipe.io.slide import open_slide

    model = _hand_model(len(bundle["pre"].features))
    table, _ = attention_table(model, bundle["pre"], bundle["frame"])
    with open_slide(bundle["slide"]) as s:
        thumb = s.thumbnail_at_mpp(2.0)  # 128 × 128; scale 0.25 / 2 = 1/8
    s = 0.25 / 2.0
    xy = table[["l0_x", "l0_y"]].to_numpy()
    out = attention_heatmap(thumb, s, xy, L0_TILE, table["attention_norm"])
    # A tile at level-0 (x, y) covers thumbnail rows y·s .. (y+128)·s, cols x·s .. (x+128)·s.
    redness = []
    for x, y in xy:
        r, c = round(y * s), round(x * s)
        block = out[r + 2 : r + 14, c + 2 : c + 14].astype(float)
        redness.append((block[..., 0] - block[..., 2]).mean())
    redness = np.array(redness)
    witness = bundle["witness"]
    assert redness[witness].min() > redness[~witness].max() + 50
    # Outside the tiled block (level-0 256..767 → thumbnail 32..95) the thumbnail is untouched.
    outside = np.ones(thumb.shape[:2], bool)
    outside[32:96, 32:96] = False
    np.testing.assert_array_equal(out[outside], thumb[outside])
    fig = attention_heatmap_figure(thumb, s, xy, L0_TILE, table["attention_norm"], title="t")
    assert fig._suptitle.get_text() == "t" and len(fig.axes) == 3  # two panels + colour bar


# -------------------------------------------------------------------- gallery
def test_gallery_order_and_few_tiles():
    a = np.array([0.1, 0.4, 0.05, 0.3, 0.15])
    top, bottom = gallery_indices(a, 2)
    assert top.tolist() == [1, 3] and bottom.tolist() == [2, 0]
    tiles = np.stack([np.full((8, 8, 3), 40 * i, np.uint8) for i in range(5)])
    fig = attention_gallery(tiles, a, n=2, tile_ids=[10, 11, 12, 13, 14], title="g")
    axes = np.array(fig.axes).reshape(2, 2)
    for row, idx in zip(axes, (top, bottom), strict=True):
        for ax, i in zip(row, idx, strict=True):
            np.testing.assert_array_equal(ax.images[0].get_array(), tiles[i])
    assert axes[0, 0].get_title().startswith("#1  tile 11")
    assert axes[1, 0].get_title().startswith("#5  tile 12")
    # Three tiles with n = 5: all three in both rows, in opposite orders.
    top, bottom = gallery_indices(a[:3], 5)
    assert top.tolist() == [1, 0, 2] and bottom.tolist() == [2, 0, 1]
    fig = attention_gallery(tiles[:3], a[:3], n=5)
    assert len(fig.axes) == 6
    fig = attention_gallery(tiles[:1], [1.0])  # single tile
    assert len(fig.axes) == 2
    with pytest.raises(ConfigError, match="expected one per tile"):
        attention_gallery(tiles[:2], a)


# ----------------------------------------------------------------- path level
def _run(bundle, tmp_path, **kw):
    args = {
        "model_dir": bundle["model"], "table_path": bundle["table"],
        "tiles_store": bundle["store"], "slide_path": bundle["slide"],
        "heatmap_out": tmp_path / "attention_heatmap.png",
        "gallery_out": tmp_path / "attention_gallery.png",
        "table_out": tmp_path / "attention.parquet",
        "params": HeatmapParams(thumbnail_mpp=2.0, n_gallery=3),
    }  # fmt: skip
    args.update(kw)
    return explain_slide_attention(**args)


def test_explain_slide_attention_writes_outputs(bundle, tmp_path):
    summary = _run(bundle, tmp_path)
    a, p = _expected(bundle["z"])
    assert summary["slide"] == "s" and summary["n_tiles"] == 16
    assert summary["probability"] == pytest.approx(p, rel=1e-5)
    assert summary["predicted_label"] == ("pos" if p >= 0.5 else "neg")
    assert summary["thumbnail_shape"] == [128, 128]
    for name in ("attention_heatmap.png", "attention_gallery.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG" and img.size[0] > 300
    import pyarrow.parquet as pq

    pf = pq.read_table(tmp_path / "attention.parquet")
    np.testing.assert_allclose(pf.column("attention").to_numpy(), a, rtol=1e-5)
    meta = json.loads(pf.schema.metadata[b"pathpipe"])
    assert meta["stage"] == "mil" and meta["step"] == "attention"
    assert meta["probability"] == pytest.approx(p, rel=1e-5)
    assert meta["model"] == str(bundle["model"].resolve()) and meta["classes"] == ["neg", "pos"]
    assert meta["thumbnail_scale_xy"] == [0.125, 0.125]
    assert not [f for f in tmp_path.iterdir() if f.name.startswith(".")]  # no temporaries


def test_table_and_store_must_agree(bundle, tmp_path):
    frame = bundle["frame"].copy()
    frame.loc[3, "l0_x"] += 64
    frame.to_parquet(tmp_path / "shifted.parquet")
    with pytest.raises(StorageError, match=r"disagree on the level-0 position of 1 of 16 tiles"):
        _run(bundle, tmp_path, table_path=tmp_path / "shifted.parquet", slide_id="x")
    frame = bundle["frame"].copy()
    frame.loc[0, "tile"] = 16
    frame.to_parquet(tmp_path / "beyond.parquet")
    with pytest.raises(StorageError, match=r"\[16\].*holds 16 tiles"):
        _run(bundle, tmp_path, table_path=tmp_path / "beyond.parquet", slide_id="x")
    other = write_pyramid(tmp_path / "o.tiff", scene(512, 512), downsamples=(1,))
    with pytest.raises(StorageError, match=r"1024 × 1024 px but .* is 512 × 512"):
        _run(bundle, tmp_path, slide_path=other)
    assert not (tmp_path / "attention.parquet").exists()  # nothing written on failure


def test_slide_without_tiles_gets_a_note_not_a_failure(bundle, tmp_path, caplog):
    import pyarrow.parquet as pq

    bundle["frame"].iloc[:0].to_parquet(tmp_path / "empty.parquet")
    with caplog.at_level(logging.WARNING, logger="pathpipe.mil.attention"):
        summary = _run(bundle, tmp_path, table_path=tmp_path / "empty.parquet", slide_id="e")
    assert "slide 'e'" in caplog.text and "all filtered out" in caplog.text
    assert summary["n_tiles"] == 0 and summary["probability"] is None
    assert summary["predicted_label"] is None and summary["thumbnail_shape"] == [128, 128]
    for name in ("attention_heatmap.png", "attention_gallery.png"):
        with Image.open(tmp_path / name) as img:
            assert img.format == "PNG"
    pf = pq.read_table(tmp_path / "attention.parquet")
    assert pf.num_rows == 0 and "attention" in pf.column_names
    meta = json.loads(pf.schema.metadata[b"pathpipe"])
    assert meta["n_tiles"] == 0 and "not classified" in meta["note"]
