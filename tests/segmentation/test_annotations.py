"""Annotated tile folders: round trip, real NuCLS tiles, synthetic tiles with exact truth."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from pathpipe.errors import ConfigError, StorageError
from pathpipe.segmentation.annotations import AnnotatedTile, read_annotated_dir, write_annotated_dir
from pathpipe.synthetic.tiles import SYNTHETIC_CLASSES, synthetic_annotated_tiles

NUCLS = Path(__file__).parents[1] / "data" / "nucls"


def test_reads_the_real_nucls_tiles() -> None:
    ann = read_annotated_dir(NUCLS, require_types=True)
    assert len(ann.tiles) == 15
    assert ann.classes == ("non_tumour", "tumour")
    assert ann.mpp == pytest.approx(0.25)
    n = sum(len(np.unique(t.inst_map)) - 1 for t in ann.tiles)
    assert n == 640  # as the source documents
    for t in ann.tiles:
        assert t.rgb.shape == (256, 256, 3) and t.rgb.dtype == np.uint8
        assert set(np.unique(t.type_map)) <= {0, 1, 2}
        # a type wherever there is a nucleus, none elsewhere
        assert np.array_equal(t.type_map > 0, t.inst_map > 0)


def test_round_trip(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    inst = np.zeros((16, 20), np.int32)
    inst[2:6, 3:8] = 1
    inst[9:14, 10:15] = 7
    types = np.where(inst == 1, 2, np.where(inst == 7, 1, 0)).astype(np.uint8)
    tiles = [
        AnnotatedTile("a", rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), inst, types),
        AnnotatedTile("b", rng.integers(0, 255, (16, 20, 3), dtype=np.uint8), inst * 0, None),
    ]
    write_annotated_dir(tmp_path / "ann", tiles, classes=["x", "y"], mpp=0.5)
    back = read_annotated_dir(tmp_path / "ann")
    assert back.classes == ("x", "y") and back.mpp == 0.5
    assert [t.name for t in back.tiles] == ["a", "b"]
    assert np.array_equal(back.tiles[0].rgb, tiles[0].rgb)
    assert np.array_equal(back.tiles[0].inst_map, inst)
    assert np.array_equal(back.tiles[0].type_map, types)
    assert back.tiles[1].type_map is None
    with pytest.raises(StorageError, match="no type_map"):
        read_annotated_dir(tmp_path / "ann", require_types=True)


def test_bad_folders_are_named(tmp_path: Path) -> None:
    with pytest.raises(StorageError, match="images/ and labels/"):
        read_annotated_dir(tmp_path)
    (tmp_path / "images").mkdir()
    (tmp_path / "labels").mkdir()
    with pytest.raises(StorageError, match="no images"):
        read_annotated_dir(tmp_path)
    from PIL import Image

    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(tmp_path / "images" / "t.png")
    with pytest.raises(StorageError, match="has no labels file"):
        read_annotated_dir(tmp_path)
    np.savez(tmp_path / "labels" / "t.npz", inst_map=np.zeros((8, 9), np.int32))
    with pytest.raises(StorageError, match=r"inst_map shape \(8, 9\)"):
        read_annotated_dir(tmp_path)
    np.savez(
        tmp_path / "labels" / "t.npz",
        inst_map=np.zeros((8, 8), np.int32),
        type_map=np.full((8, 8), 3, np.uint8),
    )
    (tmp_path / "classes.json").write_text(json.dumps({"classes": ["a"], "mpp": 0.5}))
    with pytest.raises(StorageError, match=r"type 3 but classes\.json names 1"):
        read_annotated_dir(tmp_path)


@pytest.mark.parametrize("mpp", [0.25, 0.5])
def test_synthetic_tiles_carry_exact_truth(mpp: float) -> None:
    tiles = list(
        synthetic_annotated_tiles(n_tiles=2, tile_size=96, mpp=mpp, seed=3, slide_size=2048)
    )
    assert [t.name.split("_")[1] for t in tiles] == ["low", "high"]
    for t in tiles:
        assert t.rgb.shape == (96, 96, 3)
        ids = np.unique(t.inst_map)
        assert ids[0] == 0 and np.array_equal(ids, np.arange(len(ids)))  # sequential
        assert len(ids) > 3
        assert np.array_equal(t.type_map > 0, t.inst_map > 0)
        assert int(t.type_map.max()) <= len(SYNTHETIC_CLASSES)
        # nuclei are darker (hematoxylin) than the rest of the tile
        grey = t.rgb.mean(axis=2)
        assert grey[t.inst_map > 0].mean() < grey[t.inst_map == 0].mean() - 20
    again = list(
        synthetic_annotated_tiles(n_tiles=2, tile_size=96, mpp=mpp, seed=3, slide_size=2048)
    )
    assert all(np.array_equal(a.rgb, b.rgb) for a, b in zip(tiles, again, strict=True))


def test_synthetic_tiles_reject_finer_than_the_slides() -> None:
    with pytest.raises(ConfigError, match="at least"):
        next(synthetic_annotated_tiles(n_tiles=1, mpp=0.1))
