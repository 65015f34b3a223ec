"""Tissue detection: pure function on inline images, and the path-level step."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

from conftest import CMU
from pathpipe.errors import ConfigError
from pathpipe.tissue import TissueParams, detect_tissue, overlay_mask, run_tissue, saturation


def disk_scene(
    size: int, *, mpp: float, radius_um: float, speck_um: float = 0.0, hole_um: float = 0.0
) -> np.ndarray:
    """White glass with a pink tissue disk (and optionally a small speck and a hole)."""
    yy, xx = np.mgrid[0:size, 0:size] * mpp  # µm
    c = size * mpp / 2
    img = np.full((size, size, 3), 240, dtype=np.uint8)
    tissue = (yy - c) ** 2 + (xx - c) ** 2 <= radius_um**2
    if hole_um:
        tissue &= (yy - c) ** 2 + (xx - c) ** 2 > hole_um**2
    img[tissue] = (215, 140, 190)
    if speck_um:
        speck = (yy - 0.1 * c) ** 2 + (xx - 0.1 * c) ** 2 <= speck_um**2
        img[speck] = (120, 60, 140)
    return img


def test_saturation_values():
    rgb = np.array([[[255, 255, 255], [200, 100, 100], [0, 0, 0]]], dtype=np.uint8)
    np.testing.assert_allclose(saturation(rgb), [[0.0, 0.5, 0.0]])
    with pytest.raises(ConfigError, match=r"\(M, N, 3\)"):
        saturation(np.zeros((4, 4), np.uint8))


def test_disk_area_is_found_and_resolution_independent():
    areas = []
    for mpp in (8.0, 4.0):
        size = round(2400 / mpp)
        img = disk_scene(size, mpp=mpp, radius_um=700, speck_um=60, hole_um=150)
        mask, details = detect_tissue(img, mpp=mpp)
        area_um2 = mask.sum() * mpp * mpp
        areas.append(area_um2)
        # the hole is filled and the speck (~11,000 µm² < 50,000) removed
        assert details["n_regions"] == 1
        assert area_um2 == pytest.approx(np.pi * 700**2, rel=0.05)
        assert not mask[round(0.1 * size / 2), round(0.1 * size / 2)]
        assert mask[size // 2, size // 2]
    assert areas[0] == pytest.approx(areas[1], rel=0.03)


def test_options_change_the_result():
    mpp = 8.0
    img = disk_scene(300, mpp=mpp, radius_um=700, speck_um=60, hole_um=150)
    keep_holes, _ = detect_tissue(img, mpp=mpp, params=TissueParams(fill_holes=False, closing_um=0))
    assert not keep_holes[150, 150]
    keep_speck, d = detect_tissue(img, mpp=mpp, params=TissueParams(min_region_um2=0))
    assert d["n_regions"] == 2 and keep_speck[round(0.1 * 150), round(0.1 * 150)]
    fixed, d = detect_tissue(img, mpp=mpp, params=TissueParams(threshold=0.9))
    assert d["threshold"] == 0.9 and not fixed.any()


def test_blank_slide_has_no_tissue():
    rng = np.random.default_rng(0)
    img = np.clip(rng.normal(242, 2, (200, 200, 3)), 0, 255).astype(np.uint8)
    mask, details = detect_tissue(img, mpp=8.0)
    assert not mask.any() and details["n_regions"] == 0
    mask, _ = detect_tissue(np.full((50, 50, 3), 255, np.uint8), mpp=8.0)
    assert not mask.any()


def test_tissue_touching_the_border_is_kept():
    img = np.full((100, 100, 3), 240, np.uint8)
    img[:, :40] = (215, 140, 190)
    mask, _ = detect_tissue(img, mpp=8.0)
    assert mask[:, :38].all() and not mask[:, 45:].any()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"threshold": "li"}, "threshold"),
        ({"threshold": 1.5}, "threshold"),
        ({"detection_mpp": 0}, "detection_mpp"),
        ({"min_region_um2": -1}, "min_region_um2"),
    ],
)
def test_bad_params(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        TissueParams(**kwargs)


def test_overlay_marks_tissue():
    img = np.full((20, 20, 3), 200, np.uint8)
    mask = np.zeros((20, 20), bool)
    mask[5:15, 5:15] = True
    out = overlay_mask(img, mask)
    assert (out[0, 0] == 200).all() and not (out[10, 10] == 200).all()
    with pytest.raises(ConfigError, match="does not match"):
        overlay_mask(img, mask[:10])


def test_run_tissue_on_real_slide(tmp_path):
    rec = run_tissue(
        CMU,
        mask_path=tmp_path / "m.png",
        overlay_path=tmp_path / "o.png",
        qc_path=tmp_path / "q.json",
    )
    mask = np.asarray(Image.open(tmp_path / "m.png"))
    # 2220 × 2967 px at 0.499 µm/px → 139 × 186 px at 8 µm/px
    assert mask.shape == (186, 139)
    assert set(np.unique(mask)) <= {0, 255}
    assert Image.open(tmp_path / "o.png").size == (139, 186)
    saved = json.loads((tmp_path / "q.json").read_text())
    assert saved["tissue_area_mm2"] == pytest.approx(rec["tissue_area_mm2"])
    frac = (mask > 0).mean()
    assert saved["tissue_fraction"] == pytest.approx(frac)
    assert saved["tissue_area_mm2"] == pytest.approx(frac * 2220 * 2967 * 0.499**2 / 1e6, rel=0.02)
    assert 0.1 < frac < 0.9  # the CMU region has tissue and background
    assert saved["mpp"] == {
        "x": pytest.approx(0.499),
        "y": pytest.approx(0.499),
        "source": "metadata",
    }
    assert saved["provenance"]["source"]["checksum"].startswith("sha256:")
    assert saved["provenance"]["params"]["detection_mpp"] == 8.0
