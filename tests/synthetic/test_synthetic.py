"""Tests of the synthetic slide generator (pathpipe.synthetic.generate).

Slides are small (about 1.5 megapixels) and seeded; every expectation is derived
from the generator's own ground truth rather than hard-coded.
"""

from __future__ import annotations

import dataclasses
import itertools
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError
from pathpipe.synthetic.generate import (
    CLASS_CODES,
    CLASS_PRESETS,
    SyntheticSlideSpec,
    index_nuclei,
    make_nuclei,
    make_tissue,
    read_ground_truth,
    render_labels,
    render_rgb,
    render_tissue,
    write_cohort,
    write_slide,
)

SPEC = SyntheticSlideSpec(width=1536, height=1280, slide_class="high", seed=3)


@pytest.fixture(scope="module")
def world():
    """Spec, tissue, nuclei table and index of the shared test slide."""
    tissue = make_tissue(SPEC)
    nuclei = make_nuclei(SPEC, tissue=tissue)
    return SPEC, tissue, nuclei, index_nuclei(nuclei)


@pytest.fixture(scope="module")
def slide_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_slide(tmp_path_factory.mktemp("synthetic") / "slide.tiff", SPEC, workers=1)


# ---- the written file ----------------------------------------------------------


def test_slide_reads_the_same_in_openslide_and_tiffslide(slide_path: Path) -> None:
    openslide = pytest.importorskip("openslide")
    tiffslide = pytest.importorskip("tiffslide")
    with openslide.OpenSlide(slide_path) as osl, tiffslide.TiffSlide(slide_path) as tsl:
        assert osl.properties["openslide.vendor"] == "generic-tiff"
        assert osl.level_count == tsl.level_count == len(SPEC.level_downsamples) == 2
        assert osl.level_dimensions == tsl.level_dimensions == SPEC.level_dimensions
        assert float(osl.properties["openslide.mpp-x"]) == pytest.approx(SPEC.mpp)
        assert float(osl.properties["openslide.mpp-y"]) == pytest.approx(SPEC.mpp)
        assert float(tsl.properties["tiffslide.mpp-x"]) == pytest.approx(SPEC.mpp)
        assert "class=high seed=3 mpp=0.25" in osl.properties["tiff.ImageDescription"]
        for level, l0_xy, size in ((0, (300, 200), (400, 300)), (1, (0, 0), (384, 320))):
            a = np.asarray(osl.read_region(l0_xy, level, size).convert("RGB"))
            b = np.asarray(tsl.read_region(l0_xy, level, size).convert("RGB"))
            assert np.abs(a.astype(int) - b).max() <= 2


def test_slide_pixels_are_the_rendered_image(slide_path: Path, world) -> None:
    tiffslide = pytest.importorskip("tiffslide")
    spec, tissue, _, index = world
    with tiffslide.TiffSlide(slide_path) as tsl:
        for level, d in enumerate(spec.level_downsamples):
            size = (256, 256)
            got = np.asarray(tsl.read_region((512, 256), level, size).convert("RGB"))
            want = render_rgb(spec, index, tissue, l0_xy=(512, 256), size_wh=size, downsample=d)
            assert np.abs(got.astype(float) - want).mean() < 3.0  # JPEG q90


def test_ground_truth_sidecar_matches_make_nuclei(slide_path: Path, world) -> None:
    spec, _, nuclei, _ = world
    table, stored_spec = read_ground_truth(slide_path)
    assert stored_spec == spec
    # area_px is counted while writing level 0 and rasterised per nucleus here
    pd.testing.assert_frame_equal(table, nuclei)
    assert sorted(p.name for p in slide_path.parent.iterdir()) == [
        "slide.nuclei.parquet",
        "slide.tiff",
    ]


def test_parallel_writer_gives_the_same_slide(tmp_path: Path, slide_path: Path) -> None:
    tifffile = pytest.importorskip("tifffile")
    other = write_slide(tmp_path / "slide.tiff", SPEC, workers=2)
    with tifffile.TiffFile(slide_path) as a, tifffile.TiffFile(other) as b:
        for pa, pb in zip(a.pages, b.pages, strict=True):
            np.testing.assert_array_equal(pa.asarray(), pb.asarray())
    pd.testing.assert_frame_equal(read_ground_truth(other)[0], read_ground_truth(slide_path)[0])


# ---- determinism and exactness -------------------------------------------------


def test_same_seed_same_slide_other_seed_other_slide(world) -> None:
    spec, tissue, nuclei, index = world
    pd.testing.assert_frame_equal(make_nuclei(spec), nuclei)
    region = {"l0_xy": (640, 512), "size_wh": (128, 96)}
    rgb = render_rgb(spec, nuclei, tissue, **region)
    np.testing.assert_array_equal(render_rgb(spec, index, make_tissue(spec), **region), rgb)

    other = dataclasses.replace(spec, seed=4)
    other_nuclei = make_nuclei(other)
    assert len(other_nuclei) != len(nuclei) or not np.allclose(other_nuclei["l0_x"], nuclei["l0_x"])
    other_rgb = render_rgb(other, other_nuclei, make_tissue(other), **region)
    assert np.abs(other_rgb.astype(int) - rgb).mean() > 5


@pytest.mark.parametrize("downsample", [1, 4])
def test_rendering_does_not_depend_on_how_a_region_is_cut(world, downsample: int) -> None:
    spec, tissue, _, index = world
    d = downsample
    x0, y0, w, h = 400 // d * d, 300 // d * d, 700 // d, 520 // d
    whole = render_rgb(spec, index, tissue, l0_xy=(x0, y0), size_wh=(w, h), downsample=d)
    cols, rows = (0, 37, w // 2, w), (0, h // 2, h // 2 + 1, h)  # uneven, a one-pixel row
    pieces = np.zeros_like(whole)
    for r0, r1 in itertools.pairwise(rows):
        for c0, c1 in itertools.pairwise(cols):
            pieces[r0:r1, c0:c1] = render_rgb(
                spec,
                index,
                tissue,
                l0_xy=(x0 + c0 * d, y0 + r0 * d),
                size_wh=(c1 - c0, r1 - r0),
                downsample=d,
            )
    np.testing.assert_array_equal(pieces, whole)


def test_labels_match_areas_centres_classes_and_the_rendered_nuclei(world) -> None:
    spec, tissue, nuclei, index = world
    labels, classes = render_labels(spec, index, l0_xy=(0, 0), size_wh=(spec.width, spec.height))
    assert labels.dtype == np.int32 and classes.dtype == np.uint8
    counts = np.bincount(labels.ravel(), minlength=len(nuclei) + 1)
    np.testing.assert_array_equal(counts[1:], nuclei["area_px"].to_numpy())

    at_centre = labels[np.round(nuclei["l0_y"]).astype(int), np.round(nuclei["l0_x"]).astype(int)]
    own = at_centre == nuclei["nucleus_id"].to_numpy()
    assert own.mean() > 0.97
    assert (at_centre[~own] > nuclei["nucleus_id"].to_numpy()[~own]).all()  # drawn over

    expected = np.where(
        nuclei["cell_type"] == "lymphocyte", CLASS_CODES["lymphocyte"], CLASS_CODES["high"]
    )
    np.testing.assert_array_equal(classes[labels > 0], expected[labels[labels > 0] - 1])
    assert (classes[labels == 0] == 0).all()

    # render_rgb at downsample 1 draws nuclei on exactly the labelled pixels
    region = {"l0_xy": (256, 256), "size_wh": (512, 384)}
    with_nuclei = render_rgb(spec, index, tissue, **region)
    without = render_rgb(spec, nuclei.iloc[:0], tissue, **region)
    drawn = (with_nuclei != without).any(axis=-1)
    np.testing.assert_array_equal(drawn, labels[256:640, 256:768] > 0)


# ---- content -------------------------------------------------------------------


def test_high_class_nuclei_are_larger_denser_and_less_regular() -> None:
    from skimage.measure import regionprops_table

    stats = {}
    for cls, seed in (("low", 1), ("high", 2)):
        spec = SyntheticSlideSpec(width=2048, height=2048, slide_class=cls, seed=seed)
        tissue = make_tissue(spec)
        nuclei = make_nuclei(spec, tissue=tissue)
        epi = nuclei[nuclei["cell_type"] == "epithelial"]
        tissue_px = tissue.coverage * spec.width * spec.height
        labels, _ = render_labels(spec, nuclei, l0_xy=(0, 0), size_wh=(spec.width, spec.height))
        props = pd.DataFrame(regionprops_table(labels, properties=("label", "solidity")))
        props = props[props["label"].isin(epi["nucleus_id"])]
        stats[cls] = {
            "area": epi["area_px"].to_numpy(float),
            "n": len(epi),
            "tissue_px": tissue_px,
            "solidity": props["solidity"].to_numpy(),
        }
    lo, hi = stats["low"], stats["high"]
    # means differ by more than 5 standard errors
    se = np.hypot(lo["area"].std() / np.sqrt(lo["n"]), hi["area"].std() / np.sqrt(hi["n"]))
    assert hi["area"].mean() - lo["area"].mean() > 5 * se
    dens_lo, dens_hi = lo["n"] / lo["tissue_px"], hi["n"] / hi["tissue_px"]
    se = np.hypot(np.sqrt(lo["n"]) / lo["tissue_px"], np.sqrt(hi["n"]) / hi["tissue_px"])
    assert dens_hi - dens_lo > 3 * se  # Poisson counts
    se = np.hypot(
        lo["solidity"].std() / np.sqrt(len(lo["solidity"])),
        hi["solidity"].std() / np.sqrt(len(hi["solidity"])),
    )
    assert lo["solidity"].mean() - hi["solidity"].mean() > 3 * se
    # the presets say the same
    assert CLASS_PRESETS["high"].radius_um > CLASS_PRESETS["low"].radius_um
    assert CLASS_PRESETS["high"].density_per_mm2 > CLASS_PRESETS["low"].density_per_mm2


def test_nuclei_are_dark_purple_and_glass_is_white(slide_path: Path, world) -> None:
    tiffslide = pytest.importorskip("tiffslide")
    from scipy import ndimage
    from skimage.color import rgb2hed

    spec, tissue, _, index = world
    with tiffslide.TiffSlide(slide_path) as tsl:
        rgb = np.asarray(tsl.read_region((0, 0), 0, (spec.width, spec.height)).convert("RGB"))
    whole = {"l0_xy": (0, 0), "size_wh": (spec.width, spec.height)}
    labels, classes = render_labels(spec, index, **whole)
    fraction = render_tissue(spec, tissue, **whole)
    assert fraction.dtype == np.float32 and 0 <= fraction.min() <= fraction.max() <= 1
    assert fraction[labels > 0].min() > 0.9  # nuclei lie inside tissue
    nuclear = classes == CLASS_CODES["high"]
    near = ndimage.binary_dilation(labels > 0, iterations=4)  # JPEG ringing, rims
    stroma = ndimage.binary_erosion(fraction == 1, iterations=8) & ~near
    glass = ndimage.binary_erosion(fraction == 0, iterations=8)
    assert nuclear.sum() > 1000 and stroma.sum() > 1000 and glass.sum() > 1000

    grey = rgb.mean(axis=-1)
    assert grey[nuclear].mean() < grey[stroma].mean() - 30
    nuc_rgb = rgb[nuclear].mean(axis=0)
    assert nuc_rgb[2] > nuc_rgb[1] and nuc_rgb[0] > nuc_rgb[1]  # purple: R, B above G
    hema = rgb2hed(rgb)[..., 0]
    assert np.median(hema[nuclear]) > np.median(hema[stroma]) + 3 * hema[stroma].std()
    assert grey[glass].mean() > 235 and rgb[glass].std() < 4


# ---- validation and cohorts ----------------------------------------------------


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"width": -5}, "width=-5"),
        ({"height": 10}, "height=10"),
        ({"slide_class": "medium"}, "slide_class='medium'"),
        ({"mpp": 0.0}, "mpp=0.0"),
        ({"tile_size": 100}, "tile_size=100"),
        ({"jpeg_quality": 101}, "jpeg_quality=101"),
        ({"level_downsamples": (2, 4)}, "level_downsamples=(2, 4)"),
        ({"tissue_coverage": (0.8, 0.3)}, "tissue_coverage=(0.8, 0.3)"),
        ({"seed": -1}, "seed=-1"),
        ({"width": 512.5}, "width=512.5"),
        ({"tissue_blobs": (3,)}, "tissue_blobs=(3,)"),
        ({"lymphocyte_fraction": 2}, "lymphocyte_fraction=2"),
    ],
)
def test_bad_spec_is_a_config_error_naming_the_value(changes: dict, named: str) -> None:
    kw = {"width": 512, "height": 512, "slide_class": "low", **changes}
    with pytest.raises(ConfigError, match="expected") as info:
        SyntheticSlideSpec(**kw)
    assert named in str(info.value)


def test_bad_region_is_a_config_error(world) -> None:
    spec, tissue, _, index = world
    with pytest.raises(ConfigError, match=r"size_wh=\(0, 5\)"):
        render_rgb(spec, index, tissue, l0_xy=(0, 0), size_wh=(0, 5))
    with pytest.raises(ConfigError, match=r"downsample=0\.5"):
        render_rgb(spec, index, tissue, l0_xy=(0, 0), size_wh=(8, 8), downsample=0.5)


def test_cohort_sheet_and_idempotent_rerun(tmp_path: Path) -> None:
    sheet = write_cohort(tmp_path, n_per_class=1, size=384, seed=5)
    assert list(sheet.columns) == [
        "slide_id",
        "path",
        "label",
        "patient",
        "split",
        "mpp",
        "block",
        "section",
    ]
    assert list(sheet["slide_id"]) == ["synth_low_01", "synth_high_01"]
    assert list(sheet["label"]) == ["low", "high"]
    assert sheet["patient"].is_unique and sheet["split"].isna().all()
    for row in sheet.itertuples():
        _table, spec = read_ground_truth(row.path)
        assert spec.slide_class == row.label and spec.mpp == row.mpp
    mtimes = [Path(p).stat().st_mtime_ns for p in sheet["path"]]
    again = write_cohort(tmp_path, n_per_class=1, size=384, seed=5)
    pd.testing.assert_frame_equal(again, sheet)
    assert [Path(p).stat().st_mtime_ns for p in sheet["path"]] == mtimes

    broken = Path(sheet["path"][0])  # a truncated slide is written again
    broken.write_bytes(broken.read_bytes()[:1000])
    write_cohort(tmp_path, n_per_class=1, size=384, seed=5)
    assert broken.stat().st_size > 1000
    assert read_ground_truth(broken)[1].slide_class == "low"
