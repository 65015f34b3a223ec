"""Stage `segmentation`: ownership of nuclei in overlapping tiles, GeoJSON export,
the path-level run on generated slides, and evaluation against ground truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.optimize import linear_sum_assignment
from scipy.spatial import cKDTree

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.evaluate import evaluate_segmentation
from pathpipe.segmentation.export import nucleus_polygons
from pathpipe.segmentation.params import SegmentationParams
from pathpipe.segmentation.run import NUCLEI_COLUMNS, run_segmentation
from pathpipe.segmentation.segmenter import keep_owned


def _grid(n_rows: int, n_cols: int, missing: set[tuple[int, int]] = frozenset()):
    grid = [(r, c) for r in range(n_rows) for c in range(n_cols) if (r, c) not in missing]
    grid_rc = np.array(grid, dtype=np.int64)
    return grid_rc, {rc: i for i, rc in enumerate(grid)}


def test_nucleus_in_an_overlap_is_kept_by_the_nearest_tile_centre() -> None:
    # tile_size 10, stride 6: tile (r, c) spans rows r*6 .. r*6+9; centre r*6 + 4.5.
    grid_rc, present = _grid(3, 3)
    kw = {"tile_size": 10, "stride": 6, "present": present}
    # Global point (8, 8): tiles (0,0), (0,1), (1,0), (1,1) contain it. Distances to their
    # centres: (0,0) hypot(3.5, 3.5) = 4.95; (0,1), (1,0) hypot(3.5, 2.5) = 4.30;
    # (1,1) hypot(2.5, 2.5) = 3.54 -> (1,1) owns it.
    t00, t11 = present[(0, 0)], present[(1, 1)]
    assert not keep_owned(grid_rc, t00, np.array([[8.0, 8.0]]), **kw)[0]
    assert keep_owned(grid_rc, t11, np.array([[2.0, 2.0]]), **kw)[0]
    # A point only tile (0,0) sees stays there.
    assert keep_owned(grid_rc, t00, np.array([[1.0, 1.0]]), **kw)[0]


def test_owner_missing_falls_to_the_next_nearest_tile_with_lowest_index_on_ties() -> None:
    grid_rc, present = _grid(3, 3, missing={(1, 1)})
    kw = {"tile_size": 10, "stride": 6, "present": present}
    # Without (1,1): (0,1) and (1,0) tie at 4.30; the lower tile index, (0,1), keeps it.
    t01, t10, t00 = present[(0, 1)], present[(1, 0)], present[(0, 0)]
    assert t01 < t10
    assert keep_owned(grid_rc, t01, np.array([[8.0, 2.0]]), **kw)[0]
    assert not keep_owned(grid_rc, t10, np.array([[2.0, 8.0]]), **kw)[0]
    assert not keep_owned(grid_rc, t00, np.array([[8.0, 8.0]]), **kw)[0]


def test_every_nucleus_is_kept_exactly_once() -> None:
    rng = np.random.default_rng(0)
    tile_size, stride = 64, 48
    grid_rc, present = _grid(4, 5, missing={(1, 2), (3, 0)})
    points = rng.uniform(0, 4 * stride + tile_size - stride, size=(2000, 2))
    kept = np.zeros(len(points), int)
    seen = np.zeros(len(points), int)
    for i, (r, c) in enumerate(grid_rc):
        local = points - np.array([r, c]) * stride
        inside = np.all((local >= -0.5) & (local < tile_size - 0.5), axis=1)
        seen += inside
        keep = keep_owned(
            grid_rc, i, local[inside], tile_size=tile_size, stride=stride, present=present
        )
        kept[np.flatnonzero(inside)[keep]] += 1
    assert np.array_equal(kept, (seen > 0).astype(int))
    assert (seen > 1).sum() > 300  # the overlaps were exercised


def test_without_overlap_everything_is_kept() -> None:
    grid_rc, present = _grid(2, 2)
    keep = keep_owned(
        grid_rc, 0, np.array([[0.0, 0.0], [63.0, 63.0]]), tile_size=64, stride=64, present=present
    )
    assert keep.all()


def test_polygons_run_through_the_boundary_pixel_centres() -> None:
    labels = np.zeros((12, 12), np.int32)
    labels[2:6, 3:9] = 4  # rows 2..5, cols 3..8
    labels[8, 8] = 2  # one pixel
    labels[10, 2] = 5
    labels[10, 3] = 5  # two pixels in a row: no area between centres
    square, single, absent, pair = nucleus_polygons(labels, [4, 2, 3, 5])
    assert absent is None
    for ring in (square, single, pair):
        assert np.array_equal(ring[0], ring[-1])
    # collinear vertices dropped: the rectangle's four corner pixel centres
    assert sorted(map(tuple, square[:-1])) == [(2, 3), (2, 8), (5, 3), (5, 8)]
    # degenerate nuclei get the rectangle of their pixel edges
    assert sorted(map(tuple, single[:-1])) == [(7.5, 7.5), (7.5, 8.5), (8.5, 7.5), (8.5, 8.5)]
    assert pair[:, 1].min() == 1.5 and pair[:, 1].max() == 3.5


# ---------------------------------------------------------------------------
# path level: a generated slide through tissue -> tiling -> segmentation
# ---------------------------------------------------------------------------

NUCLS = Path(__file__).parents[1] / "data" / "nucls"


@pytest.fixture(scope="module")
def synthetic_slide(tmp_path_factory: pytest.TempPathFactory):
    from pathpipe.synthetic.generate import SyntheticSlideSpec, read_ground_truth, write_slide
    from pathpipe.tissue import run_tissue

    d = tmp_path_factory.mktemp("segslide")
    spec = SyntheticSlideSpec(width=2560, height=2560, slide_class="high", seed=5)
    path = write_slide(d / "slide.tiff", spec, workers=1)
    run_tissue(path, mask_path=d / "mask.png", overlay_path=d / "ov.png", qc_path=d / "qc.json")
    truth, _ = read_ground_truth(path)
    return path, d / "mask.png", truth


def _tiles(slide, mask, out: Path, **params) -> Path:
    from pathpipe.tiling.run import TilingParams, run_tiling

    run_tiling(slide, mask_path=mask, out_path=out, params=TilingParams(workers=1, **params))
    return out


def _run(tiles: Path, out: Path, **params) -> tuple[dict, pd.DataFrame]:
    rec = run_segmentation(
        tiles,
        labels_path=out / "nuclei.zarr",
        table_path=out / "nuclei.parquet",
        geojson_path=out / "nuclei.geojson",
        figure_path=out / "segmentation.png",
        summary_path=out / "segmentation.json",
        params=SegmentationParams(workers=1, **params),
    )
    return rec, pd.read_parquet(out / "nuclei.parquet")


def _tiled_truth(truth: pd.DataFrame, tiles: Path) -> pd.DataFrame:
    """Ground-truth nuclei whose centre lies inside some tile (at least 2 µm from its edge)."""
    import zarr

    root = zarr.open_group(str(tiles), mode="r")
    l0_xy = np.asarray(root["l0_xy"])
    span = root.attrs["pathpipe"]["l0_tile_size"][0]
    margin = 8  # level-0 px = 2 µm: nuclei cut to slivers by the tile edge are not counted
    x, y = truth["l0_x"].to_numpy(), truth["l0_y"].to_numpy()
    inside = np.zeros(len(truth), bool)
    for x0, y0 in l0_xy:
        inside |= (
            (x >= x0 + margin)
            & (x < x0 + span - margin)
            & (y >= y0 + margin)
            & (y < y0 + span - margin)
        )
    return truth[inside]


def _detection_f1(truth_xy: np.ndarray, pred_xy: np.ndarray, radius: float) -> float:
    tree = cKDTree(pred_xy)
    cost = np.full((len(truth_xy), len(pred_xy)), 1e6)
    for i, js in enumerate(tree.query_ball_point(truth_xy, radius)):
        for j in js:
            cost[i, j] = np.hypot(*(truth_xy[i] - pred_xy[j]))
    r, c = linear_sum_assignment(cost)
    tp = int((cost[r, c] <= radius).sum())
    return 2 * tp / (len(truth_xy) + len(pred_xy))


def test_classical_finds_the_generated_nuclei_in_level0_coordinates(synthetic_slide, tmp_path):
    slide, mask, truth = synthetic_slide
    tiles = _tiles(slide, mask, tmp_path / "tiles.zarr")
    rec, nuclei = _run(tiles, tmp_path)
    assert list(nuclei.columns) == NUCLEI_COLUMNS
    assert rec["n_nuclei"] == len(nuclei) > 200
    assert rec["stain"]["method"] == "macenko"
    # Centroids land on the true nuclei in level-0 pixels (3 µm = 12 px at 0.25 µm/px).
    gt = _tiled_truth(truth, tiles)
    inner = nuclei[~nuclei["touches_border"]]
    f1 = _detection_f1(gt[["l0_x", "l0_y"]].to_numpy(), inner[["l0_x", "l0_y"]].to_numpy(), 12.0)
    assert f1 >= 0.9
    # Areas in µm² against the truth (area_px at 0.25 µm/px) for matched nuclei.
    tree = cKDTree(gt[["l0_x", "l0_y"]].to_numpy())
    d, j = tree.query(inner[["l0_x", "l0_y"]].to_numpy())
    close = d < 3
    ratio = inner["area_um2"].to_numpy()[close] / (gt["area_px"].to_numpy()[j[close]] * 0.0625)
    assert 0.8 < np.median(ratio) < 1.25
    # Phenotypes: lymphocytes are the generated lymphocytes.
    ct = gt["cell_type"].to_numpy()[j[close]]
    ph = inner["phenotype"].to_numpy()[close]
    assert np.mean(ph[ct == "lymphocyte"] == "lymphocyte") > 0.8
    assert np.mean(ph[ct == "epithelial"] == "tumour") > 0.8
    assert nuclei["confidence"].between(0, 1).all()
    # ids are unique and every (tile, label) exists in the label map
    import zarr

    labels = zarr.open_group(str(tmp_path / "nuclei.zarr"), mode="r")["labels"]
    assert labels.dtype == np.int32 and labels.chunks[0] == 1
    # one chunk per tile, grouped in shard files: fewer files than tiles
    n_files = len(list((tmp_path / "nuclei.zarr" / "labels").glob("c.*")))
    assert labels.shards[0] > 1 and n_files == -(-labels.shape[0] // labels.shards[0])
    assert nuclei["nucleus_id"].is_unique
    for tile, group in nuclei.groupby("tile"):
        present = set(np.unique(labels[int(tile)]))
        assert set(group["label"]) <= present
    meta = zarr.open_group(str(tmp_path / "nuclei.zarr"), mode="r").attrs["pathpipe"]
    assert meta["complete"] and meta["stage"] == "segmentation"
    assert (tmp_path / "segmentation.png").stat().st_size > 10_000


def test_geojson_is_valid_qupath_detections(synthetic_slide, tmp_path):
    slide, mask, _ = synthetic_slide
    tiles = _tiles(slide, mask, tmp_path / "tiles.zarr", max_tiles=4)
    _, nuclei = _run(tiles, tmp_path)
    geo = json.loads((tmp_path / "nuclei.geojson").read_text())
    assert geo["type"] == "FeatureCollection"
    assert len(geo["features"]) == len(nuclei) > 0
    by_id = nuclei.set_index("nucleus_id")
    for f in geo["features"]:
        assert f["type"] == "Feature" and f["geometry"]["type"] == "Polygon"
        (ring,) = f["geometry"]["coordinates"]
        assert len(ring) >= 4 and ring[0] == ring[-1]
        props = f["properties"]
        assert props["objectType"] == "detection"
        assert props["classification"]["name"] in {"tumour", "lymphocyte", "other"}
        assert len(props["classification"]["color"]) == 3
        row = by_id.loc[int(f["id"].split("-")[1])]
        xy = np.array(ring)
        # the centroid lies inside the polygon's bounding box, in level-0 pixels
        assert xy[:, 0].min() - 1 <= row["l0_x"] <= xy[:, 0].max() + 1
        assert xy[:, 1].min() - 1 <= row["l0_y"] <= xy[:, 1].max() + 1


def test_overlapping_tiles_count_each_nucleus_once(synthetic_slide, tmp_path):
    slide, mask, _ = synthetic_slide
    plain = _tiles(slide, mask, tmp_path / "a.zarr", min_tissue_fraction=0.9)
    over = _tiles(slide, mask, tmp_path / "b.zarr", min_tissue_fraction=0.9, overlap=64)
    _, n_plain = _run(plain, tmp_path / "a")
    _, n_over = _run(over, tmp_path / "b")
    # Overlap: many nuclei are seen by two or four tiles, but each is kept once, so no
    # two kept centroids coincide.
    xy = n_over[["l0_x", "l0_y"]].to_numpy()
    pairs = cKDTree(xy).query_pairs(r=4.0)
    assert len(pairs) <= 0.01 * len(xy)
    # and the overlapping grid counts about as many nuclei per area as the plain one
    import zarr

    def area(p):
        root = zarr.open_group(str(p), mode="r")
        span = root.attrs["pathpipe"]["l0_tile_size"][0]
        stride = span * (1 - 64 / 256) if p == over else span
        return root["l0_xy"].shape[0] * stride**2

    dens_plain = len(n_plain) / area(plain)
    dens_over = len(n_over) / area(over)
    assert 0.8 < dens_over / dens_plain < 1.25


def test_tiles_without_nuclei_give_empty_outputs(synthetic_slide, tmp_path):
    import zarr

    slide, mask, _ = synthetic_slide
    tiles = _tiles(slide, mask, tmp_path / "tiles.zarr", max_tiles=3)
    root = zarr.open_group(str(tiles), mode="r+")
    root["tiles"][:] = 255  # white glass
    rec, nuclei = _run(tiles, tmp_path)
    assert rec["n_nuclei"] == 0 and len(nuclei) == 0
    assert list(nuclei.columns) == NUCLEI_COLUMNS
    assert rec["stain"]["method"] == "fixed"  # nothing to estimate from
    geo = json.loads((tmp_path / "nuclei.geojson").read_text())
    assert geo == {"type": "FeatureCollection", "features": []}
    labels = zarr.open_group(str(tmp_path / "nuclei.zarr"), mode="r")["labels"]
    assert labels.shape[0] == 3 and int(np.asarray(labels).max()) == 0
    assert (tmp_path / "segmentation.png").exists()


def test_bad_inputs_are_named(tmp_path):
    with pytest.raises(StorageError, match="does not exist"):
        _run(tmp_path / "missing.zarr", tmp_path)
    with pytest.raises(ConfigError, match=r"segmentation\.model=None with .*expected the"):
        SegmentationParams(method="unet")
    with pytest.raises(ConfigError, match=r"segmentation\.classes=\['a', 'b'\] lacks"):
        SegmentationParams(classes=("a", "b"))
    with pytest.raises(ConfigError, match=r"segmentation\.method='stardist'; expected"):
        SegmentationParams(method="stardist")
    with pytest.raises(ConfigError, match=r"segmentation\.classes=\['a b'\]; expected names"):
        SegmentationParams(classes=("a b",), phenotype_model="p.json")
    with pytest.raises(ConfigError, match=r"segmentation\.device='gpu'; expected"):
        SegmentationParams(device="gpu")
    with pytest.raises(ConfigError, match=r"segmentation\.stain_tiles=0; expected an integer >= 1"):
        SegmentationParams(stain_tiles=0)
    assert not (tmp_path / "nuclei.parquet").exists()


def test_evaluation_on_the_real_nucls_tiles():
    scores, per_tile = evaluate_segmentation(
        NUCLS, class_map={"lymphocyte": "non_tumour", "other": "non_tumour"}
    )
    assert len(per_tile) == 15
    assert scores["n_true"] == 640
    assert scores["f1"] > 0.75 and scores["dice"] > 0.7
    assert set(scores["per_class"]) == {"non_tumour", "tumour"}
    assert 0 <= scores["pq"] <= scores["dq"] <= 1


def test_cli_evaluate_passes_the_flat_classical_options(tmp_path):
    from pathpipe.cli import main
    from pathpipe.segmentation.classical import ClassicalParams

    class_map = {"lymphocyte": "non_tumour", "other": "non_tumour"}
    rc = main(
        ["segmentation", "evaluate", "--data", str(NUCLS), "--out", str(tmp_path / "s.json"),
         "--per-tile", str(tmp_path / "t.tsv"), "--class-map", "lymphocyte=non_tumour,other=non_tumour",
         "--threshold", "0.6", "--no-fill-holes", "--stain", "fixed"]
    )  # fmt: skip
    assert rc == 0
    scores = json.loads((tmp_path / "s.json").read_text())
    assert len(pd.read_csv(tmp_path / "t.tsv", sep="\t")) == 15
    params = SegmentationParams(
        stain="fixed", classical=ClassicalParams(threshold=0.6, fill_holes=False)
    )
    expected, _ = evaluate_segmentation(NUCLS, params=params, class_map=class_map)
    assert scores == json.loads(json.dumps(expected))


def test_evaluation_reaches_f1_09_on_generated_tiles(tmp_path):
    from pathpipe.segmentation.annotations import write_annotated_dir
    from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

    for mpp in (0.5, 0.25):
        tiles = list(synthetic_annotated_tiles(n_tiles=6, mpp=mpp, seed=21, slide_size=4096))
        write_annotated_dir(tmp_path / str(mpp), tiles, classes=SYNTHETIC_CLASSES, mpp=mpp)
        scores, _ = evaluate_segmentation(tmp_path / str(mpp))
        assert scores["f1"] >= 0.9, (mpp, scores["f1"])
        # per-class counts include nuclei cut by the tile edge, whose phenotype is unsure
        assert scores["per_class"]["tumour"]["f1"] > 0.85, mpp
        assert scores["per_class"]["lymphocyte"]["recall"] > 0.6, mpp


def test_unet_method_runs_a_trained_model_on_a_slide(synthetic_slide, tmp_path):
    from pathpipe.segmentation.unet.config import ModelConfig
    from pathpipe.segmentation.unet.train import train_segmentation
    from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

    slide, mask, _ = synthetic_slide
    tiles = _tiles(slide, mask, tmp_path / "tiles.zarr", max_tiles=2)
    train = list(synthetic_annotated_tiles(n_tiles=2, tile_size=64, seed=1, slide_size=2048))
    config = ModelConfig(
        classes=SYNTHETIC_CLASSES,
        mpp=0.5,
        block_out_channels=(8, 16),
        layers_per_block=1,
        crop_size=32,
    )
    train_segmentation(train, tmp_path / "model", config=config, iterations=3, device="cpu")
    rec, nuclei = _run(
        tiles,
        tmp_path,
        method="unet",
        model=str(tmp_path / "model"),
        classes=SYNTHETIC_CLASSES,
        device="cpu",
    )
    assert rec["model"]["config"]["classes"] == list(SYNTHETIC_CLASSES)
    assert list(nuclei.columns) == NUCLEI_COLUMNS
    assert set(nuclei["phenotype"].cat.categories) == set(SYNTHETIC_CLASSES)
    # the model's classes must be the configured ones
    with pytest.raises(ConfigError, match="predicts classes"):
        _run(tiles, tmp_path / "x", method="unet", model=str(tmp_path / "model"), device="cpu")
    assert not (tmp_path / "x" / "nuclei.parquet").exists()


def test_cli_pretrain_then_finetune(synthetic_slide, tmp_path):
    """`pathpipe segmentation pretrain` on a slide's tiles, then `train --init`."""
    from pathpipe.cli import main
    from pathpipe.segmentation.annotations import write_annotated_dir
    from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

    slide, mask, _ = synthetic_slide
    tiles = _tiles(slide, mask, tmp_path / "tiles.zarr", max_tiles=2)
    small = ["--batch-size", "2", "--device", "cpu"]
    rc = main(
        ["segmentation", "pretrain", "--tiles", str(tiles), "--out", str(tmp_path / "diff"),
         "--iterations", "2", "--block-out-channels", "8,16", "--layers-per-block", "1",
         "--crop-size", "32", *small]
    )  # fmt: skip
    assert rc == 0 and (tmp_path / "diff" / "diffusion.safetensors").exists()
    ann = list(synthetic_annotated_tiles(n_tiles=2, tile_size=64, seed=2, slide_size=2048))
    write_annotated_dir(tmp_path / "ann", ann, classes=SYNTHETIC_CLASSES, mpp=0.5)
    rc = main(
        ["segmentation", "train", "--data", str(tmp_path / "ann"), "--out", str(tmp_path / "m"),
         "--init", str(tmp_path / "diff"), "--strategy", "decoder", "--iterations", "2", *small]
    )  # fmt: skip
    assert rc == 0 and (tmp_path / "m" / "model.safetensors").exists()
    # a strategy that needs a checkpoint, without one, fails with ERROR and exit 1
    rc = main(
        ["segmentation", "train", "--data", str(tmp_path / "ann"), "--out", str(tmp_path / "x"),
         "--strategy", "linear", "--iterations", "2", *small]
    )  # fmt: skip
    assert rc == 1 and not (tmp_path / "x").exists()
