"""Tests of synthetic serial sections (pathpipe.synthetic.serial, sectioning, block, serial_spec).

One small block (6 sections of 1024 px at 1 µm/px) is written once per module;
expectations come from the block's own truth (the analytic object and the
transforms in truth.json), never from hard-coded pixel values.
"""

from __future__ import annotations

import dataclasses
import filecmp
import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError
from pathpipe.io.slide import open_slide
from pathpipe.synthetic.block import LABELS, make_block_object
from pathpipe.synthetic.generate import (
    SyntheticSlideSpec,
    make_nuclei,
    make_tissue,
    read_ground_truth,
    render_rgb,
    write_layout,
)
from pathpipe.synthetic.sectioning import plan_sections, slice_grid
from pathpipe.synthetic.serial import read_serial_truth, write_serial_block
from pathpipe.synthetic.serial_spec import SectionTransform, SerialBlockSpec

REPO = Path(__file__).resolve().parents[2]
SLIDES_SCHEMA = REPO / "workflow" / "schemas" / "slides.schema.yaml"

SPEC = SerialBlockSpec(block="blk_A", sections=6, spacing_um=30.0, size=1024, mpp=1.0, seed=3)
THUMB_DOWNSAMPLE = 4  # level 1 of a 1024-px slide


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame, dict]:
    out = tmp_path_factory.mktemp("serial") / "blk_A"
    sheet = write_serial_block(out, SPEC, workers=1)
    return out, sheet, read_serial_truth(out)


def _tissue_mask(path: Path) -> np.ndarray:
    """Tissue of a slide's level 1: blurred grey level below 220."""
    from scipy import ndimage

    with open_slide(path) as slide:
        w, h = slide.info.level_dimensions[1]
        rgb = slide.read_region((0, 0), 1, (w, h))
    return ndimage.gaussian_filter(rgb.astype(np.float32).mean(axis=2), 1.0) < 220


def _to_block_grid(mask: np.ndarray, transform: SectionTransform) -> np.ndarray:
    """A level-1 slide mask resampled on the block's truth grid through ``transform``."""
    g = slice_grid(SPEC)
    xs, ys = transform.to_slide(g[None, :], g[:, None])
    offset = (THUMB_DOWNSAMPLE - 1) / 2  # level-1 pixel j is centred on level-0 4j + 1.5
    col = np.round((xs / SPEC.mpp - offset) / THUMB_DOWNSAMPLE).astype(int)
    row = np.round((ys / SPEC.mpp - offset) / THUMB_DOWNSAMPLE).astype(int)
    ok = (row >= 0) & (row < mask.shape[0]) & (col >= 0) & (col < mask.shape[1])
    out = np.zeros(xs.shape, dtype=bool)
    out[ok] = mask[row[ok], col[ok]]
    return out


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return 2.0 * float((a & b).sum()) / float(a.sum() + b.sum())


# ---- the files ------------------------------------------------------------------


def test_slides_open_with_their_mpp_and_the_sheet_lists_them(block) -> None:
    out, sheet, truth = block
    present = [s for s in truth["sections"] if not s["missing"]]
    assert list(sheet["slide_id"]) == [s["slide_id"] for s in present]
    assert list(sheet["section"]) == [s["section"] for s in present]
    assert (sheet["block"] == "blk_A").all() and (sheet["patient"] == "blk_A").all()
    for row in sheet.itertuples():
        with open_slide(row.path) as slide:
            assert slide.mpp.source == "metadata"
            assert slide.mpp.x == pytest.approx(SPEC.mpp) and slide.mpp.y == pytest.approx(SPEC.mpp)
            assert slide.dimensions == (SPEC.size, SPEC.size)
            assert slide.info.level_count >= 2
    written = pd.read_csv(out / "slides.tsv", sep="\t")
    assert list(written["slide_id"]) == list(sheet["slide_id"])


def test_sheet_validates_against_the_slide_sheet_schema(block) -> None:
    from snakemake.utils import validate

    out, _, _ = block
    sheet = pd.read_csv(
        out / "slides.tsv", sep="\t", dtype=str, keep_default_na=False, na_values=[""]
    )
    assert {"slide_id", "path", "block", "section"} <= set(sheet.columns)
    sheet["mpp"] = sheet["mpp"].astype(float)
    sheet["section"] = sheet["section"].astype(int)
    validate(sheet, str(SLIDES_SCHEMA))
    assert sheet["slide_id"].is_unique and sheet["section"].is_unique


def test_missing_section_is_listed_and_not_written(block) -> None:
    out, sheet, truth = block
    missing = truth["missing_sections"]
    assert len(missing) == SPEC.missing_sections == 1
    (k,) = missing
    assert 0 < k < SPEC.sections - 1
    section = truth["sections"][k]
    assert section["missing"] and section["file"] is None
    assert not (out / f"{SPEC.slide_id(k)}.tiff").exists()
    assert k not in set(sheet["section"])
    assert len(list(out.glob("*.tiff"))) == SPEC.sections - 1


def test_same_spec_same_files_other_seed_other_block(block, tmp_path: Path) -> None:
    out, _, truth = block
    again = tmp_path / "again"
    write_serial_block(again, SPEC, workers=2)
    names = sorted(p.name for p in out.iterdir() if p.name != "slides.tsv")
    assert names == sorted(p.name for p in again.iterdir() if p.name != "slides.tsv")
    _, mismatch, errors = filecmp.cmpfiles(out, again, names, shallow=False)
    assert not mismatch and not errors
    other = plan_sections(dataclasses.replace(SPEC, seed=4))
    assert [p.transform for p in other] != [s["transform"] for s in truth["sections"]]


def test_rerun_does_not_rewrite_slides_and_a_folder_holds_one_block(block) -> None:
    out, sheet, _ = block
    mtimes = [Path(p).stat().st_mtime_ns for p in sheet["path"]]
    write_serial_block(out, SPEC, workers=1)
    assert [Path(p).stat().st_mtime_ns for p in sheet["path"]] == mtimes
    with pytest.raises(ConfigError, match="holds block 'blk_A'"):
        write_serial_block(out, dataclasses.replace(SPEC, block="other"))


# ---- the truth ------------------------------------------------------------------


def test_truth_transform_maps_each_section_onto_the_object_slice(block) -> None:
    out, _, truth = block
    labels = truth["truth_volume"]["labels"]
    assert labels.shape == (SPEC.sections, *(2 * [len(slice_grid(SPEC))]))
    for section in truth["sections"]:
        if section["missing"] or section["torn"]:
            continue
        mask = _tissue_mask(out / section["file"])
        reference = labels[section["section"]] >= LABELS["tissue"]
        transform = section["transform"]
        assert _dice(_to_block_grid(mask, transform), reference) > 0.93
        # without the transform, or with the wrong handedness, the slice does not fit
        flipped = dataclasses.replace(transform, mirrored=not transform.mirrored)
        assert _dice(_to_block_grid(mask, flipped), reference) < 0.8
        identity = dataclasses.replace(
            transform, rotation_deg=0.0, translation_x_um=0.0, translation_y_um=0.0
        )
        if abs(transform.rotation_deg) > 20 or transform.mirrored:
            assert _dice(_to_block_grid(mask, identity), reference) < 0.8


def test_mirrored_sections_are_present(block) -> None:
    _, _, truth = block
    assert any(s["transform"].mirrored for s in truth["sections"] if not s["missing"])
    for seed in range(12):  # at least one written section mirrored whenever N >= 4
        for n in (4, 5, 8):
            spec = dataclasses.replace(SPEC, sections=n, seed=seed)
            plans = plan_sections(spec)
            assert any(p.transform.mirrored and not p.missing for p in plans)
            assert not plans[0].missing and not plans[-1].missing
            assert sum(p.torn for p in plans) == 1 and not any(p.torn and p.missing for p in plans)
            shifts = [
                math.hypot(p.transform.translation_x_um, p.transform.translation_y_um)
                for p in plans
            ]
            assert max(shifts) <= SPEC.max_translation * SPEC.width_um


def test_torn_section_lacks_a_piece_of_its_tissue(block) -> None:
    out, _, truth = block
    (k,) = truth["torn_sections"]
    assert truth["sections"][k]["torn_removed_fraction"] == pytest.approx(
        SPEC.torn_fraction, abs=0.01
    )
    kept = {}  # share of the object's slice found on the slide
    for section in truth["sections"]:
        if section["missing"]:
            continue
        mask = _to_block_grid(_tissue_mask(out / section["file"]), section["transform"])
        reference = truth["truth_volume"]["labels"][section["section"]] >= LABELS["tissue"]
        kept[section["section"]] = (mask & reference).sum() / reference.sum()
    neighbours = [kept[j] for j in (k - 1, k + 1) if j in kept]
    assert neighbours, "the torn section has a written neighbour"
    assert kept[k] < min(neighbours) - 0.1
    assert kept[k] == pytest.approx(1 - SPEC.torn_fraction, abs=0.06)


def test_stain_strength_varies_between_sections(block) -> None:
    _, _, truth = block
    h = np.array([s["stain_strength"][0] for s in truth["sections"]])
    assert h.std() > 0.02
    for section in truth["sections"]:
        if not section["missing"]:
            _, slide_spec = read_ground_truth(Path(block[0]) / section["file"])
            assert slide_spec.stain_strength == pytest.approx(tuple(section["stain_strength"]))
    plain = plan_sections(dataclasses.replace(SPEC, stain_variation=0.0))
    assert len({p.stain_strength for p in plain}) == 1


def test_nuclei_are_high_class_in_the_tumour_and_low_elsewhere(block) -> None:
    out, _, truth = block
    obj = make_block_object(truth["spec"])
    seen = set()
    for section in truth["sections"]:
        if section["missing"]:
            continue
        nuclei, _ = read_ground_truth(out / section["file"])
        x, y = section["transform"].to_block(nuclei["l0_x"] * SPEC.mpp, nuclei["l0_y"] * SPEC.mpp)
        z = section["z_um"]
        high = nuclei["nuclear_class"].to_numpy() == "high"
        assert (obj.tumour(x[high], y[high], z) > 0).all()
        assert (obj.tumour(x[~high], y[~high], z) <= 0).all()
        assert (obj.tissue(x, y, z) > 0).all()
        seen.update(nuclei["nuclear_class"])
    assert seen == {"low", "high"}


def test_volumes_match_a_dense_sampling_of_the_object(block) -> None:
    _, _, truth = block
    obj = make_block_object(truth["spec"])
    step = 3.0  # another grid than the generator's (truth_um = 4, 4 planes per spacing)
    g = np.arange(step / 2, SPEC.width_um, step)
    slab = (SPEC.sections - 1) * SPEC.spacing_um
    dz = SPEC.spacing_um / 3
    zs = np.arange(dz / 2, slab, dz)
    tissue = tumour = 0.0
    for z in zs:
        labels = obj.labels(g[None, :], g[:, None], z)
        tissue += (labels >= LABELS["tissue"]).sum()
        tumour += (labels >= LABELS["tumour"]).sum()
    voxel_mm3 = step * step * dz * 1e-9
    volumes = truth["volumes"]
    assert volumes["tissue_mm3"] == pytest.approx(tissue * voxel_mm3, rel=0.01)
    assert volumes["tumour_mm3"] == pytest.approx(tumour * voxel_mm3, rel=0.02)
    assert 0 < volumes["tumour_mm3"] < volumes["tissue_mm3"]
    areas = [s["tissue_area_mm2"] for s in truth["sections"]]
    assert min(areas) > 0.2 * max(areas), "every section cuts the tissue"


def test_transform_matrix_formula_and_inverse() -> None:
    t = SectionTransform(30.0, 12.0, -5.0, True, 100.0, 100.0)
    theta = math.radians(30.0)
    p = np.array([140.0, 90.0])
    rot = np.array([[math.cos(theta), -math.sin(theta)], [math.sin(theta), math.cos(theta)]])
    expected = rot @ (np.diag([-1.0, 1.0]) @ (p - 100.0)) + 100.0 + np.array([12.0, -5.0])
    assert np.allclose(t.to_block(*p), expected)
    assert np.allclose(t.matrix() @ [*p, 1.0], [*expected, 1.0])
    assert np.allclose(t.to_slide(*t.to_block(*p)), p)
    assert SectionTransform.from_dict(json.loads(json.dumps(t.to_dict()))) == t


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"sections": 1}, "serial.sections=1"),
        ({"block": "bad id"}, "serial.block='bad id'"),
        ({"missing_sections": 5}, "serial.missing_sections=5"),
        ({"torn_fraction": 0.9}, "serial.torn_fraction=0.9"),
        ({"max_translation": 0.5}, "serial.max_translation=0.5"),
    ],
)
def test_bad_spec_is_a_config_error_naming_the_value(changes: dict, named: str) -> None:
    with pytest.raises(ConfigError, match="expected") as info:
        dataclasses.replace(SPEC, **changes)
    assert named in str(info.value)


def test_cli_round_trip(tmp_path: Path) -> None:
    from pathpipe.cli import main

    sheet_path = tmp_path / "sheet.tsv"
    argv = ["synthetic", "serial", "--out-dir", str(tmp_path / "b"), "--block", "cli_b"]
    argv += ["--sections", "3", "--spacing-um", "40", "--size", "512", "--mpp", "2"]
    argv += ["--seed", "9", "--sheet", str(sheet_path), "--workers", "1"]
    assert main(argv) == 0
    sheet = pd.read_csv(sheet_path, sep="\t")
    truth = read_serial_truth(tmp_path / "b" / "truth.json")
    assert truth["spec"] == SerialBlockSpec(
        block="cli_b", sections=3, spacing_um=40.0, size=512, mpp=2.0, seed=9
    )
    assert list(sheet["section"]) == [s["section"] for s in truth["sections"] if not s["missing"]]
    assert list(sheet["block"].unique()) == ["cli_b"]
    for path in sheet["path"]:
        with open_slide(path) as slide:
            assert slide.mpp.x == pytest.approx(2.0)


# ---- what the slide generator gained for serial sections ----------------------------


def test_stain_strength_keeps_old_specs_and_sets_the_stain() -> None:
    spec = SyntheticSlideSpec(width=256, height=256, mpp=1.0, slide_class="low", seed=1)
    assert "stain_strength" not in spec.to_dict()  # specs without it keep their hash
    tissue = make_tissue(spec)
    means = []
    for strength in ((0.5, 0.5), (2.0, 2.0)):
        s = dataclasses.replace(spec, stain_strength=strength)
        assert SyntheticSlideSpec.from_dict(s.to_dict()) == s
        rgb = render_rgb(s, make_nuclei(s, tissue=tissue), tissue, l0_xy=(0, 0), size_wh=(256, 256))
        means.append(rgb.mean())
    assert means[1] < means[0] - 20
    with pytest.raises(ConfigError, match=r"stain_strength=\(0\.1, 1\.0\)"):
        dataclasses.replace(spec, stain_strength=(0.1, 1.0))


def test_write_layout_needs_nucleus_ids_in_order(tmp_path: Path) -> None:
    spec = SyntheticSlideSpec(width=256, height=256, mpp=1.0, slide_class="low", seed=1)
    tissue = make_tissue(spec)
    nuclei = make_nuclei(spec, tissue=tissue)
    assert len(nuclei) > 0
    nuclei["nucleus_id"] += 1
    with pytest.raises(ConfigError, match="nucleus_id"):
        write_layout(tmp_path / "x.tiff", spec, tissue, nuclei, description="x")
    assert not (tmp_path / "x.tiff").exists()
