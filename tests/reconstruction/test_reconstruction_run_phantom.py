"""run_reconstruction on generated sections of a z-invariant phantom (fast).

Every section is the same irregular object (:mod:`pathpipe.reconstruction.phantom`)
seen through a known transform ``T_k`` (section frame -> object frame), the bottom
one untransformed, so the block frame is the object's frame and each section's
written transform must be ``T_k``; the registered mask volume must be the
object's mask in every plane. Masks at 8 µm/px given by their µm/px (no
``tissue.json``) and no slides (points coloured by section, a one-channel image).
"""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from pathpipe.reconstruction import ReconstructionParams
from pathpipe.reconstruction.phantom import Phantom, canvas_transform
from pathpipe.reconstruction.run import SectionInput, run_reconstruction
from pathpipe.reconstruction.transforms import rotation_error_deg
from pathpipe.reconstruction.warp import read_transforms

SIZE, MASK_MPP = 4000.0, 8.0
PARAMS = ReconstructionParams(section_spacing=50.0)  # working 16 µm/px
TRUTH = {
    0: canvas_transform(SIZE, 0.0),
    1: canvas_transform(SIZE, 37.0, (300.0, -500.0)),
    3: canvas_transform(SIZE, 135.0, (-700.0, 200.0), mirrored=True),
    4: canvas_transform(SIZE, -100.0, (100.0, 600.0)),
}  # section 2 is missing


@pytest.fixture(scope="module")
def phantom_block(tmp_path_factory: pytest.TempPathFactory):
    from PIL import Image

    root = tmp_path_factory.mktemp("phantom")
    phantom = Phantom(SIZE, 3)
    sections = []
    for k, t in TRUTH.items():
        path = root / f"s{k}.png"
        Image.fromarray(phantom.mask(MASK_MPP, t).astype(np.uint8) * 255).save(path)
        sections.append(SectionInput(k, f"s{k}", path, MASK_MPP))
    summary = run_reconstruction(sections[::-1], root / "out", params=PARAMS, block="ph")
    return root / "out", summary, phantom


def test_each_transform_is_recovered(phantom_block) -> None:
    out, _, _ = phantom_block
    written = read_transforms(out / "transforms.json")
    by_section = {s["section"]: s for s in written["sections"]}
    assert sorted(by_section) == [0, 1, 2, 3, 4]
    assert by_section[2]["transform"] is None and by_section[2]["flag"] == "missing"
    xy = (np.random.default_rng(0).uniform(0.3, 0.7, (100, 2))) * SIZE
    for k, truth in TRUTH.items():
        ours = by_section[k]["transform"]
        assert ours.mirrored is truth.mirrored
        assert rotation_error_deg(ours, truth) <= 0.5
        assert np.abs(ours.apply(xy) - truth.apply(xy)).max() <= PARAMS.working_mpp
        assert by_section[k]["z_um"] == k * PARAMS.section_spacing


def test_every_plane_is_the_object(phantom_block) -> None:
    import zarr

    out, summary, phantom = phantom_block
    root = zarr.open_group(str(out / "volume.zarr"), mode="r")
    labels = root["labels/mask/0"][:].astype(bool)
    assert root["0"].shape == (1, *labels.shape)  # no slides: the mask as one channel
    grid = json.loads((out / "transforms.json").read_text())["volume"]
    _, oy, ox = grid["origin_um_zyx"]
    w = PARAMS.working_mpp
    xx, yy = np.meshgrid(ox + w * np.arange(labels.shape[2]), oy + w * np.arange(labels.shape[1]))
    truth = (phantom.value(np.column_stack([xx.ravel(), yy.ravel()])) > 0.5).reshape(xx.shape)
    for k in range(5):  # plane 2 interpolated between two copies of the object
        dice = 2 * (labels[k] & truth).sum() / (labels[k].sum() + truth.sum())
        assert dice >= 0.95, (k, dice)
    expected = truth.sum() * (w / 1000) ** 2 * 4 * PARAMS.section_spacing / 1000
    assert summary["volume_mm3"] == pytest.approx(expected, rel=0.03)
    assert [layer["plane"] for layer in summary["layers"]] == [
        "registered",
        "registered",
        "interpolated",
        "registered",
        "registered",
    ]
    table = pd.read_csv(out / "registration.tsv", sep="\t", keep_default_na=False)
    assert table["flag"].tolist() == ["", "", "missing", "", ""]


def test_registered_outwards_from_the_largest_section(tmp_path) -> None:
    """``reference="largest"``: each transform is ``T_ref⁻¹ T_k`` (the reference's frame)."""
    from PIL import Image

    phantom = Phantom(SIZE, 3)
    sections = []
    for k, t in TRUTH.items():
        path = tmp_path / f"s{k}.png"
        Image.fromarray(phantom.mask(MASK_MPP, t).astype(np.uint8) * 255).save(path)
        sections.append(SectionInput(k, f"s{k}", path, MASK_MPP))
    params = ReconstructionParams(section_spacing=50.0, reference="largest")
    run_reconstruction(sections, tmp_path / "out", params=params)
    written = read_transforms(tmp_path / "out" / "transforms.json")
    ref = written["reference_section"]
    assert ref in TRUTH
    xy = (np.random.default_rng(1).uniform(0.3, 0.7, (100, 2))) * SIZE
    for s in written["sections"]:
        if s["transform"] is None:
            assert s["section"] == 2
            continue
        truth = TRUTH[ref].inverse().compose(TRUTH[s["section"]])
        assert s["transform"].mirrored is truth.mirrored
        assert rotation_error_deg(s["transform"], truth) <= 0.5
        assert np.abs(s["transform"].apply(xy) - truth.apply(xy)).max() <= PARAMS.working_mpp
