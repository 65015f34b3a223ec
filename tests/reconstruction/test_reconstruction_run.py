"""run_reconstruction, warp and ``pathpipe reconstruction run|warp`` on a synthetic serial block.

One block (``pathpipe synthetic serial``: 12 sections of 1024 px at 2 µm/px,
20 µm apart, seed 3; section 7 missing, section 1 torn, some sections mirrored)
is written once per module. Each section's mask is made from its slide's
thumbnail at 4 µm/px (blurred grey level below 225, holes under 8 px filled, so
the ducts stay open) and written as the tissue stage's ``tissue.png`` and
``tissue.json``; the block is reconstructed at 8 µm/px.

Frames: our block frame is the bottom section's slide frame (µm). The truth
(``truth.json``) gives each section's map slide -> truth block; a mask pixel's
centre lies half a level-0 pixel beyond the truth's slide coordinate (the truth
puts level-0 pixel ``j``'s centre at ``j × mpp``), so ``T'_k = T_k ∘ shift(-mpp/2)``
maps our section frame to the truth block. Registration errors compare the
relative transforms of consecutive written sections (``A_a⁻¹ A_b`` against
``T'_a⁻¹ T'_b``): the rotation difference, and the displacement error at the
section's centre in working pixels. Dice maps the truth volume's voxel centres
into our frame through the bottom section (``T'_0⁻¹``), which is exactly how
our frame is defined, so registration drift shows in it.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.cli import main
from pathpipe.errors import ConfigError
from pathpipe.reconstruction import ReconstructionParams
from pathpipe.reconstruction.inputs import sections_from_sheet
from pathpipe.reconstruction.register import ROW_COLUMNS
from pathpipe.reconstruction.run import run_reconstruction_sheet
from pathpipe.reconstruction.transforms import RigidTransform2D, rotation_error_deg
from pathpipe.reconstruction.volume import TORN_AREA_RATIO, area_ratio, interpolate_plane
from pathpipe.reconstruction.warp import read_transforms, run_warp, warp_points
from pathpipe.synthetic.serial import read_serial_truth, write_serial_block
from pathpipe.synthetic.serial_spec import SerialBlockSpec

pytestmark = pytest.mark.slow

SPEC = SerialBlockSpec(block="blk", sections=12, spacing_um=20.0, size=1024, mpp=2.0, seed=3)
PARAMS = ReconstructionParams(section_spacing=20.0, working_mpp=8.0)
MASK_MPP = 4.0
FILES = ("registration.tsv", "transforms.json", "points.ply", "volume.zarr", "mesh.ply")


def _thumbnail_mask(path: str) -> tuple[np.ndarray, list[float]]:
    from scipy import ndimage
    from skimage.morphology import remove_small_holes

    from pathpipe.io.slide import open_slide

    with open_slide(path) as slide:
        rgb = slide.thumbnail_at_mpp(MASK_MPP)
        (w, h), mpp = slide.info.dimensions, slide.info.mpp.x
    grey = ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), 1.5)
    mask = remove_small_holes(grey < 225, max_size=8)
    return mask, [w * mpp / mask.shape[1], h * mpp / mask.shape[0]]


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from PIL import Image

    root = tmp_path_factory.mktemp("recon")
    sheet = write_serial_block(root / "blk", SPEC, workers=1)
    for row in sheet.itertuples():
        mask, mpp = _thumbnail_mask(row.path)
        folder = root / "results" / row.slide_id
        folder.mkdir(parents=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "tissue.png")
        (folder / "tissue.json").write_text(json.dumps({"mask_mpp": mpp}))
    out = root / "out"
    summary = run_reconstruction_sheet(
        root / "blk" / "slides.tsv", "blk", root / "results", out, params=PARAMS
    )
    return {"root": root, "out": out, "summary": summary, "truth": read_serial_truth(root / "blk")}


def _truth_transforms(truth: dict) -> dict[int, RigidTransform2D]:
    half = RigidTransform2D(0.0, -0.5 * truth["mpp"], -0.5 * truth["mpp"], False)
    return {
        s["section"]: RigidTransform2D.from_matrix(s["transform"].matrix()).compose(half)
        for s in truth["sections"]
    }


def _ours(out: Path) -> dict[int, RigidTransform2D]:
    data = read_transforms(out / "transforms.json")
    return {s["section"]: s["transform"] for s in data["sections"] if s["transform"] is not None}


def _pair_errors(block: dict) -> tuple[list[float], list[float], list[bool]]:
    truth, ours = _truth_transforms(block["truth"]), _ours(block["out"])
    centre = np.array([[SPEC.width_um / 2, SPEC.width_um / 2]])
    secs = sorted(ours)
    rot, shift, mirror_ok = [], [], []
    for a, b in itertools.pairwise(secs):
        est = ours[a].inverse().compose(ours[b])
        tru = truth[a].inverse().compose(truth[b])
        at = truth[b].inverse().apply(centre)  # the object's centre in section b's frame
        rot.append(rotation_error_deg(est, tru))
        shift.append(float(np.linalg.norm(est.apply(at) - tru.apply(at))) / PARAMS.working_mpp)
        mirror_ok.append(est.mirrored == tru.mirrored)
    return rot, shift, mirror_ok


def _truth_in_our_grid(
    block: dict, through: dict[int, RigidTransform2D], out: Path | None = None
) -> tuple:
    """Per plane: our mask sampled at the truth voxel centres (mapped by ``through[k]``)."""
    out = block["out"] if out is None else out
    import zarr

    tv = block["truth"]["truth_volume"]
    truth = tv["labels"] >= 1
    _, toy, tox = tv["origin_um_zyx"]
    _, tsy, tsx = tv["spacing_um_zyx"]
    ny, nx = truth.shape[1:]
    x, y = np.meshgrid(tox + tsx * np.arange(nx), toy + tsy * np.arange(ny))
    labels = zarr.open_group(str(out / "volume.zarr"), mode="r")["labels/mask/0"][:]
    grid = json.loads((out / "transforms.json").read_text())["volume"]
    _, oy, ox = grid["origin_um_zyx"]
    ours = np.zeros_like(truth)
    for k in range(truth.shape[0]):
        p = through[k].apply(np.column_stack([x.ravel(), y.ravel()]))
        col = np.rint((p[:, 0] - ox) / PARAMS.working_mpp).astype(int)
        row = np.rint((p[:, 1] - oy) / PARAMS.working_mpp).astype(int)
        ok = (row >= 0) & (row < labels.shape[1]) & (col >= 0) & (col < labels.shape[2])
        plane = np.zeros(row.size, dtype=bool)
        plane[ok] = labels[k][row[ok], col[ok]] > 0
        ours[k] = plane.reshape(ny, nx)
    return ours, truth


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


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
    """Section 1 lost 20 % of its tissue: flagged ``torn`` (area 0.83 of its
    neighbours' mean; intact sections 0.90–1.09) and its plane gets the
    interpolation of its neighbours added."""
    assert block["truth"]["torn_sections"] == [1]
    layers = {layer["section"]: layer for layer in block["summary"]["layers"]}
    assert layers[1]["flag"] == "torn" and layers[1]["plane"] == "registered+interpolated"
    assert layers[1]["area_ratio"] < TORN_AREA_RATIO
    others = [k for k, layer in layers.items() if "torn" in layer["flag"] and k != 1]
    assert others == []
    table = pd.read_csv(block["out"] / "registration.tsv", sep="\t", keep_default_na=False)
    assert table.loc[table["section"] == 1, "flag"].item() == "torn"


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
    """Measured (this block, ``refine="intensity"``): median rotation error 1.7°
    (3.1° with ``refine="none"``), translation 0.56 working px (0.91), 8 of 10
    consecutive pairs' mirror right (8); the pairs next to the ends fail (the end
    sections are small, change most between sections and carry no tumour)."""
    rot, shift, mirror_ok = _pair_errors(block)
    assert len(rot) == 10
    assert np.median(shift) <= 1.5
    assert np.median(rot) <= 5.0
    assert sum(mirror_ok) >= 7
    assert sorted(rot)[4] <= 2.5  # half of the pairs within 2.5°


@pytest.mark.xfail(
    strict=True,
    reason="issue #12 targets not met on this block: median 1.7°, 0.56 px, 2 of 10 mirrors wrong "
    "(the pairs at the block's ends fail: small end sections that change most per section)",
)
def test_registration_meets_the_issue_targets(block) -> None:
    rot, shift, mirror_ok = _pair_errors(block)
    assert np.median(rot) <= 0.5
    assert np.median(shift) <= 1.0
    assert all(mirror_ok)


def test_each_plane_is_its_section_resampled(block) -> None:
    """Frames matched per section (through its own registered transform): the volume
    code places each mask where its transform says; Dice ≥ 0.9 per written plane."""
    truth_t, ours = _truth_transforms(block["truth"]), _ours(block["out"])
    through = {k: ours.get(k, RigidTransform2D()).compose(truth_t[k].inverse()) for k in truth_t}
    mine, truth = _truth_in_our_grid(block, through)
    for k in ours:
        if k == 1:  # torn: the truth is the untorn slice
            continue
        assert _dice(mine[k], truth[k]) >= 0.9, k


def test_dice_and_volume_against_truth(block) -> None:
    """Measured: Dice 0.86 in the bottom section's frame (0.81 with ``refine="none"``;
    drift of the first pair);
    volume -5.1 % of the truth's (the slide masks' pale rim; the per-plane Dice above
    is unaffected by registration)."""
    truth_t = _truth_transforms(block["truth"])
    through = dict.fromkeys(truth_t, truth_t[0].inverse())
    mine, truth = _truth_in_our_grid(block, through)
    assert _dice(mine, truth) >= 0.75
    expected = block["truth"]["volumes"]["tissue_mm3"]
    assert abs(block["summary"]["volume_mm3"] / expected - 1) <= 0.08


@pytest.mark.xfail(
    strict=True,
    reason="issue #12 target not met from the bottom section: Dice 0.86 (the first pair's "
    "error carries into every plane)",
)
def test_dice_meets_the_issue_target(block) -> None:
    truth_t = _truth_transforms(block["truth"])
    through = dict.fromkeys(truth_t, truth_t[0].inverse())
    mine, truth = _truth_in_our_grid(block, through)
    assert _dice(mine, truth) >= 0.9


def test_a_second_block_registers_with_the_intensity_refinement(tmp_path) -> None:
    """Another generated block (seed 5), so the method is not tuned to one. Measured:
    median rotation error 2.0° (64° with ``refine="none"``), translation 2.4 working
    px (2.9), 8 of 10 mirrors right (5), Dice 0.80 (0.73)."""
    from PIL import Image

    spec = SerialBlockSpec(block="blk", sections=12, spacing_um=20.0, size=1024, mpp=2.0, seed=5)
    sheet = write_serial_block(tmp_path / "blk", spec, workers=1)
    for row in sheet.itertuples():
        mask, mpp = _thumbnail_mask(row.path)
        folder = tmp_path / "results" / row.slide_id
        folder.mkdir(parents=True)
        Image.fromarray(mask.astype(np.uint8) * 255).save(folder / "tissue.png")
        (folder / "tissue.json").write_text(json.dumps({"mask_mpp": mpp}))
    out = tmp_path / "out"
    summary = run_reconstruction_sheet(
        tmp_path / "blk" / "slides.tsv", "blk", tmp_path / "results", out, params=PARAMS
    )
    block = {"out": out, "summary": summary, "truth": read_serial_truth(tmp_path / "blk")}
    rot, _, mirror_ok = _pair_errors(block)
    assert np.median(rot) <= 3.0
    assert sum(mirror_ok) >= 8
    truth_t = _truth_transforms(block["truth"])
    mine, truth = _truth_in_our_grid(block, dict.fromkeys(truth_t, truth_t[0].inverse()))
    assert _dice(mine, truth) >= 0.75


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
    # same block x, y, up to the pair's registration error (5 -> 6: 0.2°, 0.5 px)
    truth_t = _truth_transforms(block["truth"])
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
    frame is the block frame. Measured: Dice 0.90 (0.81 from the bottom; planes 3-9
    0.95-0.98, the end planes 0.51-0.86), volume -5.2 %."""
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

    truth_t = _truth_transforms(truth)
    through = dict.fromkeys(truth_t, truth_t[ref].inverse())
    mine, expected = _truth_in_our_grid(block, through, out)
    assert _dice(mine, expected) >= 0.88
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


def test_a_torn_section_is_smaller_than_its_neighbours_mean() -> None:
    yy, xx = np.mgrid[:60, :60]
    disc = (yy - 30) ** 2 + (xx - 30) ** 2 < 20**2
    torn = disc & (xx < 42)
    assert area_ratio(disc, disc, disc) == 1.0
    assert area_ratio(torn, disc, disc) < TORN_AREA_RATIO
    middle = interpolate_plane(disc, np.roll(disc, 10, axis=1), 0.5)
    assert abs(middle.sum() / disc.sum() - 1) < 0.05
    assert middle[30, 35] and not middle[30, 12]
