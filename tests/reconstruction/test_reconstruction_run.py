"""run_reconstruction, warp and ``pathpipe reconstruction run|warp`` on a synthetic serial block.

One block (``pathpipe synthetic serial``: 12 sections of 1024 px at 2 µm/px,
20 µm apart, seed 3; section 7 missing, section 1 torn, some sections mirrored)
is written once per module. Each section's mask is made from its slide's
thumbnail at 4 µm/px (blurred grey level below 225, holes under 8 px filled, so
the ducts stay open) and written as the tissue stage's ``tissue.png`` and
``tissue.json``; the block is reconstructed at 8 µm/px.

The comparison with the generator's truth (frames, per-pair errors, Dice through
the reference section) is :func:`pathpipe.reconstruction.evaluate.evaluate_against_truth`.
Two more blocks are reconstructed: seed 5, and seed 3 with ``object_depth=1.25``
(the lens cut nearly tip to tip, whose targets are a strict ``xfail``).
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.cli import main
from pathpipe.errors import ConfigError
from pathpipe.reconstruction import ReconstructionParams
from pathpipe.reconstruction.evaluate import (
    evaluate_against_truth,
    truth_transforms,
    write_threshold_masks,
)
from pathpipe.reconstruction.inputs import sections_from_sheet
from pathpipe.reconstruction.register import ROW_COLUMNS
from pathpipe.reconstruction.run import run_reconstruction_sheet
from pathpipe.reconstruction.stain_check import STAIN_ANGLE_DEG
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import TORN_AREA_RATIO, area_ratio, interpolate_plane
from pathpipe.reconstruction.warp import read_transforms, run_warp, warp_points
from pathpipe.synthetic.serial import read_serial_truth, write_serial_block
from pathpipe.synthetic.serial_spec import SerialBlockSpec

pytestmark = pytest.mark.slow

SPEC = SerialBlockSpec(block="blk", sections=12, spacing_um=20.0, size=1024, mpp=2.0, seed=3)
PARAMS = ReconstructionParams(section_spacing=20.0, working_mpp=8.0)
FILES = ("registration.tsv", "transforms.json", "points.ply", "volume.zarr", "mesh.ply")


def _reconstruct(root: Path, spec: SerialBlockSpec) -> dict:
    """Write ``spec``'s block and its masks under ``root``; reconstruct it with ``PARAMS``."""
    sheet = write_serial_block(root / "blk", spec, workers=1)
    write_threshold_masks(zip(sheet["slide_id"], sheet["path"], strict=True), root / "results")
    out = root / "out"
    summary = run_reconstruction_sheet(
        root / "blk" / "slides.tsv", "blk", root / "results", out, params=PARAMS
    )
    truth = read_serial_truth(root / "blk")
    return {
        "root": root,
        "out": out,
        "summary": summary,
        "truth": truth,
        "eval": evaluate_against_truth(out, truth),
    }


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return _reconstruct(tmp_path_factory.mktemp("recon"), SPEC)


@pytest.fixture(scope="module")
def lens(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """The same seed with ``object_depth=1.25``: the lens cut nearly tip to tip."""
    spec = SerialBlockSpec(
        block="blk", sections=12, spacing_um=20.0, size=1024, mpp=2.0, seed=3, object_depth=1.25
    )
    return _reconstruct(tmp_path_factory.mktemp("lens"), spec)


def _ours(out: Path) -> dict[int, RigidTransform2D]:
    data = read_transforms(out / "transforms.json")
    return {s["section"]: s["transform"] for s in data["sections"] if s["transform"] is not None}


# ---- the files ------------------------------------------------------------------


def test_every_output_exists_and_reads(block) -> None:
    import open3d as o3d
    import zarr

    out = block["out"]
    for name in (*FILES, "summary.json"):
        assert (out / name).exists(), name
    table = pd.read_csv(out / "registration.tsv", sep="\t", keep_default_na=False)
    assert list(table.columns) == ["section", "slide_id", *ROW_COLUMNS]
    assert table["section"].tolist() == list(range(SPEC.sections))

    cloud = o3d.io.read_point_cloud(str(out / "points.ply"))
    xyz = np.asarray(cloud.points)
    assert len(xyz) == block["summary"]["points"] > 1000
    assert cloud.has_colors()
    written = [s["section"] for s in block["truth"]["sections"] if not s["missing"]]
    assert set(np.unique(xyz[:, 2])) == {k * PARAMS.section_spacing for k in written}

    mesh = o3d.io.read_triangle_mesh(str(out / "mesh.ply"))
    assert len(mesh.triangles) > 100
    verts = np.asarray(mesh.vertices)
    assert verts[:, 2].min() >= -PARAMS.section_spacing
    assert verts[:, 2].max() <= SPEC.sections * PARAMS.section_spacing

    root = zarr.open_group(str(out / "volume.zarr"), mode="r")
    ms = root.attrs["multiscales"][0]
    assert ms["version"] == "0.4"
    assert [a["name"] for a in ms["axes"]] == ["c", "z", "y", "x"]
    scale = ms["datasets"][0]["coordinateTransformations"][0]
    assert scale == {"type": "scale", "scale": [1.0, 20.0, 8.0, 8.0]}
    image, labels = root["0"], root["labels/mask/0"]
    assert image.shape[0] == 3 and image.shape[1:] == labels.shape
    assert labels.shape[0] == SPEC.sections and labels.dtype == np.uint8
    label_ms = root["labels/mask"].attrs["multiscales"][0]
    assert label_ms["datasets"][0]["coordinateTransformations"][0]["scale"] == [20.0, 8.0, 8.0]
    assert root["labels"].attrs["labels"] == ["mask"]
    for array in ("0", "labels/mask/0"):
        meta = json.loads((out / "volume.zarr" / array / ".zarray").read_text())
        assert meta["dimension_separator"] == "/"
    # the RGB is tissue-coloured where the mask is, white far outside
    lab = labels[:].astype(bool)
    rgb = image[:]
    assert rgb[:, lab].mean() < 230 and rgb[:, ~lab].mean() > 240


def test_the_torn_section_is_flagged_and_patched(block) -> None:
    """Section 1 lost 20 % of its tissue: flagged ``torn`` (area 0.79 of its
    neighbours' mean; intact sections 0.90–1.08) and its plane gets the
    interpolation of its neighbours added."""
    assert block["truth"]["torn_sections"] == [1]
    layers = {layer["section"]: layer for layer in block["summary"]["layers"]}
    assert layers[1]["flag"] == "torn" and layers[1]["plane"] == "registered+interpolated"
    assert layers[1]["area_ratio"] < TORN_AREA_RATIO
    others = [k for k, layer in layers.items() if "torn" in layer["flag"] and k != 1]
    assert others == []
    table = pd.read_csv(block["out"] / "registration.tsv", sep="\t", keep_default_na=False)
    assert table.loc[table["section"] == 1, "flag"].item() == "torn"


def test_no_section_of_one_stain_is_flagged_stain(block) -> None:
    """Every section is stained alike up to its strength (log sd 0.15): no ``stain``
    flag, every section's OD direction within half the threshold of the block's."""
    layers = [layer for layer in block["summary"]["layers"] if "stain_angle_deg" in layer]
    assert len(layers) == SPEC.sections - 1  # all but the missing one
    assert all("stain" not in layer["flag"] for layer in layers)
    assert max(layer["stain_angle_deg"] for layer in layers) < STAIN_ANGLE_DEG / 2


def test_missing_section_is_flagged_and_interpolated(block) -> None:
    import zarr

    missing = block["truth"]["missing_sections"]
    assert missing == [7]
    layers = {layer["section"]: layer for layer in block["summary"]["layers"]}
    assert layers[7]["flag"] == "missing" and layers[7]["plane"] == "interpolated"
    labels = zarr.open_group(str(block["out"] / "volume.zarr"), mode="r")["labels/mask/0"][:]
    areas = labels.reshape(len(labels), -1).sum(axis=1)
    assert min(areas[6], areas[8]) * 0.8 <= areas[7] <= max(areas[6], areas[8]) * 1.2


# ---- against the truth ------------------------------------------------------------


def test_registration_against_truth(block) -> None:
    """Measured (this block, ``refine="intensity"``): median rotation error 0.34°
    (3.3° with ``refine="none"``), translation 0.38 working px (0.61), 10 of 10
    consecutive pairs' mirror right (6); the worst pairs 1.4° (1 -> 2, the torn
    section) and 1.5° (6 -> 8, across the missing section)."""
    r = block["eval"]
    rot = [p["rotation_error_deg"] for p in r["pairs"]]
    assert r["pairs_count"] == 10
    assert [(p["section_a"], p["section_b"]) for p in r["pairs"]][6:8] == [(6, 8), (8, 9)]
    assert r["median_displacement_px"] <= 1.0
    assert r["median_rotation_deg"] <= 1.0
    assert r["mirrors_right"] == 10
    assert max(rot) <= 5.0


def test_registration_meets_the_issue_targets(block) -> None:
    """Issue #12: median rotation ≤ 0.5°, translation ≤ 1 working px, every mirror right."""
    r = block["eval"]
    assert r["median_rotation_deg"] <= 0.5
    assert r["median_displacement_px"] <= 1.0
    assert r["mirrors_right"] == r["pairs_count"]


def test_each_plane_is_its_section_resampled(block) -> None:
    """Frames matched per section (through its own registered transform): the volume
    code places each mask where its transform says; Dice ≥ 0.9 per written plane."""
    own = block["eval"]["plane_dice_own"]
    for k in _ours(block["out"]):
        if k == 1:  # torn: the truth is the untorn slice
            continue
        assert own[k] >= 0.9, k


def test_dice_and_volume_against_truth(block) -> None:
    """Measured: Dice 0.954 in the bottom section's frame (0.901 with
    ``refine="none"``); every plane 0.90-0.99 (the top one lowest); volume -4.2 %
    of the truth's (the slide masks' pale rim), the same as the stage's ``volume_mm3``."""
    r = block["eval"]
    assert r["reference_section"] == 0
    assert r["dice"] >= 0.92
    assert min(r["plane_dice"]) >= 0.85
    assert abs(r["volume_ratio"] - 1) <= 0.08
    expected = block["truth"]["volumes"]["tissue_mm3"]
    assert block["summary"]["volume_mm3"] / expected == pytest.approx(r["volume_ratio"], rel=1e-6)


def test_dice_meets_the_issue_target(block) -> None:
    """Issue #12: Dice ≥ 0.9 of the labels volume against the truth, from the bottom section."""
    assert block["eval"]["dice"] >= 0.9


def test_a_second_block_meets_the_issue_targets(tmp_path) -> None:
    """Another generated block (seed 5), so the method is not tuned to one. Measured:
    median rotation error 0.37° (23° with ``refine="none"``), translation 0.50 working
    px (0.91), 10 of 10 mirrors right (4), Dice 0.963 (0.900)."""
    spec = SerialBlockSpec(block="blk", sections=12, spacing_um=20.0, size=1024, mpp=2.0, seed=5)
    r = _reconstruct(tmp_path, spec)["eval"]
    assert r["median_rotation_deg"] <= 0.5
    assert r["median_displacement_px"] <= 1.0
    assert r["mirrors_right"] == r["pairs_count"] == 10
    assert r["dice"] >= 0.92


@pytest.mark.xfail(
    strict=True,
    reason="issue #12 targets not met on the lens (object_depth 1.25, seed 3): median rotation 1.7°, 0.60 px, 8 of 10 mirrors, Dice 0.74 "
    "(the end sections change shape fast; at 8 µm/px their images carry no structure that "
    "tells the true placement from a wrong one)",
)
def test_the_lens_meets_the_issue_targets(lens) -> None:
    r = lens["eval"]
    assert r["median_rotation_deg"] <= 0.5
    assert r["median_displacement_px"] <= 1.0
    assert r["mirrors_right"] == r["pairs_count"]
    assert r["dice"] >= 0.9


def test_what_the_lens_reaches(lens) -> None:
    """The lens cut nearly tip to tip (``object_depth=1.25``, seed 3). Measured:
    median rotation error 1.7°, translation 0.60 working px, 8 of 10 mirrors right,
    Dice 0.74 from the bottom section (the pairs at the fast-changing ends fail and
    carry their error into every plane above)."""
    r = lens["eval"]
    assert r["pairs_count"] == 10
    assert r["median_rotation_deg"] <= 3.0
    assert r["median_displacement_px"] <= 1.0
    assert r["mirrors_right"] >= 7
    assert r["dice"] >= 0.65


# ---- warp -----------------------------------------------------------------------


def test_warp_round_trips_known_points(block, tmp_path) -> None:
    transforms = read_transforms(block["out"] / "transforms.json")
    section = 4
    xy = np.array([[100.0, 200.0], [1024.0, 1024.0], [1500.0, 300.0]])
    xyz = warp_points(xy, transforms, section)
    t = _ours(block["out"])[section]
    np.testing.assert_allclose(xyz[:, 2], section * PARAMS.section_spacing)
    np.testing.assert_allclose(t.inverse().apply(xyz[:, :2]), xy, atol=1e-9)

    pixels = pd.DataFrame({"x": xy[:, 0] / SPEC.mpp, "y": xy[:, 1] / SPEC.mpp, "id": [1, 2, 3]})
    pixels.to_csv(tmp_path / "in.csv", index=False)
    argv = ["reconstruction", "warp", "--transforms", str(block["out"] / "transforms.json")]
    argv += ["--section", str(section), "--points", str(tmp_path / "in.csv")]
    argv += ["--out", str(tmp_path / "out.parquet"), "--mpp", str(SPEC.mpp)]
    assert main(argv) == 0
    warped = pd.read_parquet(tmp_path / "out.parquet")
    assert warped["id"].tolist() == [1, 2, 3]
    np.testing.assert_allclose(warped[["block_x_um", "block_y_um", "block_z_um"]], xyz)

    # the same tissue point on two consecutive sections (by the truth) lands on the
    # same block x, y, up to the pair's registration error (5 -> 6: 0.07°, 0.59 px)
    truth_t = truth_transforms(block["truth"])
    centre = np.array([[SPEC.width_um / 2, SPEC.width_um / 2]])
    on6 = truth_t[6].inverse().apply(centre)
    on5 = truth_t[5].inverse().compose(truth_t[6]).apply(on6)
    a, b = warp_points(on5, transforms, 5), warp_points(on6, transforms, 6)
    assert np.linalg.norm(a[0, :2] - b[0, :2]) < 2 * PARAMS.working_mpp
    assert b[0, 2] - a[0, 2] == PARAMS.section_spacing

    with pytest.raises(ConfigError, match=r"section 7 .* no transform"):
        warp_points(xy, transforms, 7)
    with pytest.raises(ConfigError, match="lacks columns"):
        run_warp(
            block["out"] / "transforms.json", 4, tmp_path / "in.csv", tmp_path / "o.csv", x="u"
        )


# ---- the command line and bad input -----------------------------------------------


def test_cli_run_from_the_largest_section(block, tmp_path) -> None:
    """``--reference largest``: registered outwards from the largest section, whose
    frame is the block frame (section 4 here). Measured: Dice 0.965 (0.954 from the
    bottom; every plane 0.92-0.99), median rotation error 0.39°, volume -4.2 %."""
    root, out = block["root"], tmp_path / "cli"
    argv = ["reconstruction", "run", "--sheet", str(root / "blk" / "slides.tsv"), "--block"]
    argv += ["blk", "--results", str(root / "results"), "--out-dir", str(out)]
    argv += ["--section-spacing", "20", "--working-mpp", "8", "--reference", "largest"]
    assert main(argv) == 0
    for name in (*FILES, "summary.json"):
        assert (out / name).exists(), name
    written = json.loads((out / "transforms.json").read_text())
    truth = block["truth"]
    areas = {s["section"]: s["tissue_area_mm2"] for s in truth["sections"] if not s["missing"]}
    assert written["reference"] == "largest"
    assert areas[written["reference_section"]] >= 0.97 * max(areas.values())  # most points
    ref = written["reference_section"]
    ref_row = next(s for s in written["sections"] if s["section"] == ref)
    assert ref_row["transform"] == RigidTransform2D().to_dict()

    r = evaluate_against_truth(out, truth)
    assert r["reference_section"] == ref
    assert r["dice"] >= 0.92
    assert r["mirrors_right"] == r["pairs_count"]
    summary = json.loads((out / "summary.json").read_text())
    assert abs(summary["volume_mm3"] / truth["volumes"]["tissue_mm3"] - 1) <= 0.08


def test_bad_input_is_named(block, tmp_path) -> None:
    root = block["root"]
    # the mask sources are tested in test_reconstruction_sources.py; here, what they lack
    with pytest.raises(ConfigError, match="'blk_s00' has no annotations; expected the sheet"):
        run_reconstruction_sheet(
            root / "blk" / "slides.tsv",
            "blk",
            root / "results",
            tmp_path / "x",
            params=ReconstructionParams(mask="annotation:tumour"),
        )
    sheet = pd.read_csv(root / "blk" / "slides.tsv", sep="\t")
    sheet.loc[2, "section"] = None
    sheet.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"\['blk_s02'\] have a block but no section"):
        sections_from_sheet(tmp_path / "bad.tsv", "blk", root / "results")
    sheet.loc[2, "section"] = 2.5
    sheet.to_csv(tmp_path / "bad.tsv", sep="\t", index=False)
    with pytest.raises(ConfigError, match=r"\['blk_s02'\] of block 'blk' have no whole-number"):
        sections_from_sheet(tmp_path / "bad.tsv", "blk", root / "results")
    with pytest.raises(ConfigError, match="no rows of block 'other'"):
        sections_from_sheet(root / "blk" / "slides.tsv", "other", root / "results")
    assert (
        main(
            [
                "reconstruction",
                "run",
                "--sheet",
                str(root / "blk" / "slides.tsv"),
                "--block",
                "other",
                "--results",
                str(root),
                "--out-dir",
                str(tmp_path),
            ]
        )
        == 1
    )


# ---- pure helpers ---------------------------------------------------------------


def test_a_folded_section_is_smaller_than_its_neighbours_mean() -> None:
    """A strip of 12 of the disc's 40 px folded back over the section: the mask keeps
    the union, so the section covers less than its neighbours and is flagged."""
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    folded = disc & (xx < 38)
    folded[:, 26:38] |= disc[:, 38:50][:, ::-1]  # the strip beyond x = 38, mirrored onto 26..37
    assert folded.sum() < disc.sum()
    assert area_ratio(folded, disc, disc) < TORN_AREA_RATIO


def test_a_torn_section_is_smaller_than_its_neighbours_mean() -> None:
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    torn = disc & (xx < 42)
    assert area_ratio(disc, disc, disc) == 1.0
    assert area_ratio(torn, disc, disc) < TORN_AREA_RATIO
    middle = interpolate_plane(disc, np.roll(disc, 10, axis=1), 0.5)
    assert abs(middle.sum() / disc.sum() - 1) < 0.05
    assert middle[30, 35] and not middle[30, 12]
