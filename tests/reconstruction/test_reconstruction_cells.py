"""Cell maps, GeoJSON warping, mask sources and sheet checks on tiny hand-made inputs.

Every expected value is computed by hand from a known transform (``transforms.json``
written here, not registered), so these tests are fast; the generated serial
block's end-to-end checks are in ``test_reconstruction_sources.py``.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.cli import main
from pathpipe.errors import ConfigError, StorageError
from pathpipe.reconstruction.cells import CELL_COLUMNS, block_cells, run_cells
from pathpipe.reconstruction.geojson import class_polygons, map_geometry, ring_area
from pathpipe.reconstruction.inputs import (
    SectionInput,
    check_sheet_sections,
    section_slide_mpp,
    sections_from_sheet,
)
from pathpipe.reconstruction.masks import phenotype_mask, rasterise_polygons, section_mask
from pathpipe.reconstruction.run import TRANSFORMS_FORMAT
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.warp import read_transforms, warp_geojson, warp_points

PLAIN = RigidTransform2D(30.0, 100.0, -50.0, False)
MIRROR = RigidTransform2D(-120.0, 2000.0, 400.0, True)


def _write_transforms(path: Path, block: str = "b") -> Path:
    sections = [
        {"section": 0, "slide_id": "b_s0", "z_um": 0.0, "transform": RigidTransform2D()},
        {"section": 1, "slide_id": "b_s1", "z_um": 10.0, "transform": PLAIN},
        {"section": 2, "slide_id": None, "z_um": 20.0, "transform": None},
        {"section": 3, "slide_id": "b_s3", "z_um": 30.0, "transform": MIRROR},
    ]
    for s in sections:
        s["transform"] = None if s["transform"] is None else s["transform"].to_dict()
    data = {"format": TRANSFORMS_FORMAT, "version": 1, "block": block, "sections": sections}
    path.write_text(json.dumps(data))
    return path


def _feature(geometry: dict, name: str = "tumour") -> dict:
    props = {"objectType": "annotation", "classification": {"name": name, "color": [1, 2, 3]}}
    return {"type": "Feature", "geometry": geometry, "properties": props}


SQUARE = [[10.0, 10.0], [50.0, 10.0], [50.0, 50.0], [10.0, 50.0], [10.0, 10.0]]
HOLE = [[20.0, 20.0], [20.0, 30.0], [30.0, 30.0], [30.0, 20.0], [20.0, 20.0]]


# ---- GeoJSON --------------------------------------------------------------------


def test_geojson_round_trips_against_warp_points_and_keeps_orientation(tmp_path) -> None:
    transforms = read_transforms(_write_transforms(tmp_path / "t.json"))
    collection = {
        "type": "FeatureCollection",
        "features": [
            _feature({"type": "Polygon", "coordinates": [SQUARE, HOLE]}),
            _feature({"type": "Point", "coordinates": [5.0, 6.0]}, "other"),
            _feature({"type": "MultiPoint", "coordinates": [[1.0, 2.0], [3.0, 4.0]]}),
            _feature({"type": "LineString", "coordinates": [[0.0, 0.0], [7.0, 9.0]]}),
            _feature({"type": "MultiPolygon", "coordinates": [[SQUARE], [HOLE]]}),
        ],
    }
    assert ring_area(SQUARE) > 0 > ring_area(HOLE)  # as written: exterior CCW, hole CW
    for section, mirrored in ((1, False), (3, True)):
        out = warp_geojson(collection, transforms, section, mpp=(0.5, 0.25))
        poly = out["features"][0]
        assert poly["properties"]["classification"]["name"] == "tumour"
        assert poly["properties"]["block_z_um"] == 10.0 * section
        exterior, hole = (np.asarray(r) for r in poly["geometry"]["coordinates"])
        expected = warp_points(np.asarray(SQUARE) * [0.5, 0.25], transforms, section)[:, :2]
        np.testing.assert_allclose(exterior, expected[::-1] if mirrored else expected)
        # orientation kept on both sections: a mirror alone would flip the signs
        assert ring_area(exterior) > 0 > ring_area(hole)
        point = out["features"][1]["geometry"]["coordinates"]
        np.testing.assert_allclose(
            point, warp_points([[2.5, 1.5]], transforms, section)[0, :2], atol=1e-9
        )
        line = np.asarray(out["features"][3]["geometry"]["coordinates"])
        np.testing.assert_allclose(  # lines are not rings: order kept
            line, warp_points([[0.0, 0.0], [3.5, 2.25]], transforms, section)[:, :2]
        )
        multi = out["features"][4]["geometry"]["coordinates"]
        assert ring_area(multi[0][0]) > 0 > ring_area(multi[1][0])
    assert collection["features"][0]["geometry"]["coordinates"][0] == SQUARE  # input untouched

    # the command line; --z writes z as the third coordinate
    (tmp_path / "in.geojson").write_text(json.dumps(collection))
    argv = ["reconstruction", "warp", "--transforms", str(tmp_path / "t.json"), "--section"]
    argv += ["3", "--geojson", str(tmp_path / "in.geojson"), "--out", str(tmp_path / "o.geojson")]
    assert main([*argv, "--mpp", "0.5,0.25", "--z"]) == 0
    written = json.loads((tmp_path / "o.geojson").read_text())
    ring = np.asarray(written["features"][0]["geometry"]["coordinates"][0])
    assert ring.shape == (5, 3) and np.all(ring[:, 2] == 30.0)
    assert main([*argv[:-2], "--out", str(tmp_path / "x.geojson"), "--section", "2"]) == 1
    assert not (tmp_path / "x.geojson").exists()


def test_unknown_geometry_type_is_named() -> None:
    with pytest.raises(ConfigError, match=r"'Circle'; expected one of \['Point'"):
        map_geometry({"type": "Circle", "coordinates": [0, 0]}, lambda p: p)


# ---- cells ----------------------------------------------------------------------


def _nuclei(n: int = 5, seed: int = 0) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    return pd.DataFrame(
        {
            "nucleus_id": np.arange(n),
            "tile": np.zeros(n, int),
            "label": np.arange(1, n + 1),
            "l0_x": rng.uniform(0, 1000, n),
            "l0_y": rng.uniform(0, 1000, n),
            "area_um2": rng.uniform(10, 50, n),
            "phenotype": pd.Categorical(rng.choice(["tumour", "lymphocyte"], n)),
        }
    )


def _cells_inputs(tmp_path: Path) -> tuple[Path, Path, Path]:
    """Block ``b``: sections 0 (no nuclei table), 1 (anisotropic 0.5 × 0.25 µm/px in
    tissue.json), 2 (no transform), 3 (mirrored; µm/px only from the sheet)."""
    results = tmp_path / "results"
    rows = ["slide_id\tpath\tmpp\tblock\tsection"]
    for k in range(4):
        rows.append(f"b_s{k}\tnone.svs\t{'0.4' if k == 3 else ''}\tb\t{k}")
        (results / f"b_s{k}").mkdir(parents=True)
    (tmp_path / "slides.tsv").write_text("\n".join(rows) + "\n")
    (results / "b_s1" / "tissue.json").write_text(
        json.dumps({"mask_mpp": [8.0, 4.0], "mpp": {"x": 0.5, "y": 0.25, "source": "file"}})
    )
    for k in (1, 2, 3):
        _nuclei(seed=k).to_parquet(results / f"b_s{k}" / "nuclei.parquet")
    return _write_transforms(tmp_path / "t.json"), tmp_path / "slides.tsv", results


def test_cells_are_the_nuclei_through_their_section_transform(tmp_path, caplog) -> None:
    transforms, sheet, results = _cells_inputs(tmp_path)
    out = tmp_path / "cells.parquet"
    argv = ["reconstruction", "cells", "--transforms", str(transforms), "--sheet", str(sheet)]
    argv += ["--block", "b", "--results", str(results), "--out", str(out)]
    with caplog.at_level("WARNING"):
        assert main(argv) == 0
    assert "['b_s2']" in caplog.text and "['b_s0']" in caplog.text  # skipped, named
    cells = pd.read_parquet(out)
    assert list(cells.columns) == [*CELL_COLUMNS, "area_um2"]
    assert cells.groupby("section").size().to_dict() == {1: 5, 3: 5}
    t = read_transforms(transforms)
    for section, mpp in ((1, (0.5, 0.25)), (3, (0.4, 0.4))):
        nuclei = _nuclei(seed=section)
        got = cells[cells["section"] == section]
        expected = warp_points(nuclei[["l0_x", "l0_y"]].to_numpy() * mpp, t, section)
        np.testing.assert_allclose(got[["x_um", "y_um", "z_um"]], expected, atol=1e-9)
        assert got["phenotype"].tolist() == nuclei["phenotype"].astype(str).tolist()
        assert got["nucleus_id"].tolist() == list(range(5))
        assert (got["block"] == "b").all() and (got["slide_id"] == f"b_s{section}").all()
    assert [p.name for p in tmp_path.iterdir() if "cells" in p.name] == ["cells.parquet"]

    with pytest.raises(ConfigError, match="are of block 'b'; expected block 'c'"):
        run_cells(transforms, sheet, "c", results, tmp_path / "c.parquet")
    pd.DataFrame({"l0_x": [1.0]}).to_parquet(results / "b_s1" / "nuclei.parquet")
    with pytest.raises(StorageError, match=r"lacks columns \['l0_y', 'phenotype'\]"):
        run_cells(transforms, sheet, "b", results, tmp_path / "bad.parquet")
    assert not (tmp_path / "bad.parquet").exists()


def test_block_cells_of_a_mirrored_section_by_hand() -> None:
    transforms = {
        "block": "b",
        "sections": [
            {"section": 4, "z_um": 8.0, "transform": RigidTransform2D(90.0, 10.0, 0.0, True)}
        ],
    }
    nuclei = pd.DataFrame({"l0_x": [2.0], "l0_y": [4.0], "phenotype": ["t"]})
    cells = block_cells(nuclei, transforms, 4, (0.5, 2.0), slide_id="s")
    # (1, 8) µm -> mirror (-1, 8) -> rotate 90° (-8, -1) -> + (10, 0)
    np.testing.assert_allclose(cells[["x_um", "y_um", "z_um"]].to_numpy(), [[2.0, -1.0, 8.0]])


def test_slide_mpp_falls_back_to_the_sheet_then_fails_naming_what_it_tried(tmp_path) -> None:
    s = SectionInput(0, "x", tmp_path / "tissue.png", 4.0, slide_mpp=(0.3, 0.3))
    assert section_slide_mpp(s) == (0.3, 0.3)
    with pytest.raises(ConfigError, match=r"'x' \(section 0\).*expected 'mpp' in"):
        section_slide_mpp(SectionInput(0, "x", tmp_path / "tissue.png", 4.0))


# ---- masks ----------------------------------------------------------------------


def test_rasterised_polygon_with_a_hole_by_hand() -> None:
    # pixel centres at (c + 0.5) * 2 µm: the square 10..50 µm covers centres 11..49,
    # columns 5..24 (20); the hole 20..30 µm covers centres 21..29, columns 10..14 (5)
    mask = rasterise_polygons([[np.asarray(SQUARE), np.asarray(HOLE)]], (30, 30), (2.0, 2.0))
    assert mask.sum() == 20 * 20 - 5 * 5
    assert mask[5, 5] and mask[24, 24] and not mask[12, 12] and not mask[4, 5]


def test_phenotype_mask_is_where_the_class_is_dense() -> None:
    """A 4 × 4 tile grid of 100 level-0 px at 0.5 µm/px (2,500 µm² per tile): 20 nuclei
    in each of tiles (1, 1) and (1, 2), 2 in tile (3, 3): densities 8,000 and 800 per
    mm²; the threshold 0.5 × 8,000 keeps the two dense tiles only."""
    gr, gc = np.mgrid[:4, :4]
    tiles = np.column_stack([gc.ravel() * 100, gr.ravel() * 100])
    rng = np.random.default_rng(0)
    corners = np.repeat([[100, 100], [200, 100], [300, 300]], [20, 20, 2], axis=0)
    pts = rng.uniform(0, 100, (42, 2)) + corners
    mask, mpp, density = phenotype_mask(pts, tiles, (100, 100), (0.5, 0.5))
    assert mpp == (12.5, 12.5) and mask.shape == (16, 16)
    np.testing.assert_allclose(density[1, 1:3], 8000.0)
    assert density[3, 3] == pytest.approx(800.0) and density.sum() == pytest.approx(16800.0)
    # the two tiles' 32 px, less their 4 outer corners (bilinear: 8,000 × (5/8)² < 4,000)
    assert mask[4:8, 4:12].sum() == 32 - 4 and mask.sum() == 28
    assert mask[4:8, 5:11].all() and not mask[12:, 12:].any()
    empty, _, _ = phenotype_mask(np.zeros((0, 2)), tiles, (100, 100), (0.5, 0.5))
    assert empty.shape == (16, 16) and not empty.any()
    with pytest.raises(ConfigError, match="threshold=0; expected a fraction"):
        phenotype_mask(np.zeros((0, 2)), tiles, (100, 100), (0.5, 0.5), threshold=0)


def test_section_mask_sources_name_what_is_missing(tmp_path) -> None:
    s = SectionInput(0, "x", tmp_path / "tissue.png", 4.0, results_dir=tmp_path)
    with pytest.raises(ConfigError, match="'x' has no annotations; expected the sheet's"):
        section_mask(s, "annotation:tumour")
    with pytest.raises(StorageError, match=r"nuclei\.parquet"):
        section_mask(s, "phenotype:tumour")
    _nuclei().to_parquet(tmp_path / "nuclei.parquet")
    with pytest.raises(StorageError, match=r"tiles\.zarr"):
        section_mask(s, "phenotype:tumour")
    with pytest.raises(ConfigError, match="expected 'tissue', 'phenotype:<class>'"):
        section_mask(s, "stroma")
    collection = {"type": "FeatureCollection", "features": [_feature({"type": "Point"})]}
    assert class_polygons(collection, "tumour") == []


# ---- the sheet --------------------------------------------------------------------


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        ([("a", "b1", "0"), ("c", "b1", "")], r"\['c'\] have a block but no section"),
        ([("a", "b1", "0"), ("c", "", "1")], r"\['c'\] have a section but no block"),
        ([("a", "b1", "0"), ("c", "b1", "0.0")], r"\['a', 'c'\] share block 'b1' section 0"),
    ],
    ids=["block-without-section", "section-without-block", "duplicate-section"],
)
def test_sheet_blocks_are_checked_naming_the_slides(tmp_path, rows, named) -> None:
    lines = ["slide_id\tpath\tblock\tsection"] + [f"{i}\tx.svs\t{b}\t{s}" for i, b, s in rows]
    (tmp_path / "s.tsv").write_text("\n".join(lines) + "\n")
    with pytest.raises(ConfigError, match=named):
        sections_from_sheet(tmp_path / "s.tsv", "b1", tmp_path)
    table = pd.DataFrame(rows, columns=["slide_id", "block", "section"]).replace("", None)
    with pytest.raises(ConfigError, match=named):
        check_sheet_sections(table)


def test_sheet_annotations_and_mpp_reach_the_sections(tmp_path) -> None:
    lines = ["slide_id\tpath\tmpp\tblock\tsection\tannotations"]
    lines += ["a\tx.svs\t0.25\tb1\t0\ta.geojson", "c\tx.svs\t\tb1\t1\t", "d\tx.svs\t\t\t"]
    (tmp_path / "s.tsv").write_text("\n".join(lines) + "\n")
    a, c = sections_from_sheet(tmp_path / "s.tsv", "b1", tmp_path / "r")
    assert a.annotations_path == "a.geojson" and a.slide_mpp == (0.25, 0.25)
    assert c.annotations_path is None and c.slide_mpp is None
    assert a.folder == tmp_path / "r" / "a"
