"""Figures and the 3D viewer of a reconstructed block (figures, readers, viewer).

Pure functions on tiny hand-made arrays first; then one small generated block
(``pathpipe synthetic serial``: 5 sections of 512 px at 4 µm/px, masks from
thumbnails as in ``test_reconstruction_run.py``) reconstructed once, on which
``pathpipe reconstruction figures`` draws the PNGs and the viewer page.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from pathpipe.reconstruction.figures import (
    FIGURES,
    crop_box,
    dice,
    overlay_rgb,
    pair_panels,
    sample_points,
    slice_centre,
    z_exaggeration,
)
from pathpipe.reconstruction.transforms import RigidTransform2D
from pathpipe.reconstruction.volume import VolumeGrid

# ---- pure functions ------------------------------------------------------------


def test_overlay_colours_each_case() -> None:
    lower = np.array([[0, 1, 0, 1]], bool)
    upper = np.array([[0, 0, 1, 1]], bool)
    rgb = overlay_rgb(lower, upper)
    assert rgb.shape == (1, 4, 3) and rgb.dtype == np.uint8
    assert rgb[0, 0].tolist() == [255, 255, 255]  # neither: white
    assert rgb[0, 1].tolist() == [214, 39, 160]  # lower only: magenta
    assert rgb[0, 2].tolist() == [44, 160, 44]  # upper only: green
    assert rgb[0, 3].tolist() == [70, 70, 70]  # both: grey
    with pytest.raises(ValueError, match="shapes"):
        overlay_rgb(lower, upper.T)


def test_dice_by_hand() -> None:
    a = np.array([1, 1, 1, 0], bool)
    b = np.array([0, 1, 1, 1], bool)
    assert dice(a, b) == pytest.approx(2 * 2 / 6)
    assert dice(a, a) == 1.0
    assert np.isnan(dice(np.zeros(3, bool), np.zeros(3, bool)))


@pytest.mark.parametrize(
    ("xy", "z", "factor"),
    [(2000.0, 28.0, 20), (2000.0, 500.0, 1), (2000.0, 100.0, 5), (1000.0, 2.5, 100)],
)
def test_z_exaggeration_reaches_a_quarter_with_a_round_factor(xy, z, factor) -> None:
    assert z_exaggeration(xy, z) == factor
    assert z * factor >= 0.25 * xy or factor == 1


def test_slice_centre_is_fullest_plane_and_centroid() -> None:
    labels = np.zeros((3, 5, 7), np.uint8)
    labels[1, 1:4, 2:5] = 1  # 9 voxels, centre (2, 3)
    labels[2, 0, 0] = 1
    assert slice_centre(labels) == (1, 2, 3)
    assert slice_centre(np.zeros((4, 6, 8), np.uint8)) == (2, 3, 4)


def test_crop_box_is_the_union_bounding_box_with_margin() -> None:
    a = np.zeros((10, 12), bool)
    b = np.zeros((10, 12), bool)
    a[4, 5] = True
    b[6, 9] = True
    assert crop_box(a, b, margin=1) == (slice(3, 8), slice(4, 11))
    assert crop_box(a, b, margin=5) == (slice(0, 10), slice(0, 12))  # clipped
    assert crop_box(np.zeros((3, 4), bool)) == (slice(0, 3), slice(0, 4))
    stack = np.zeros((2, 10, 12), bool)
    stack[1, 2, 3] = True
    assert crop_box(stack, margin=0) == (slice(2, 3), slice(3, 4))


def test_sample_points_keeps_order_and_is_seeded() -> None:
    xyz = np.arange(300, dtype=float).reshape(100, 3)
    rgb = np.zeros((100, 3), np.uint8)
    few, _ = sample_points(xyz, rgb, 10, seed=1)
    assert len(few) == 10 and np.all(np.diff(few[:, 0]) > 0)
    np.testing.assert_array_equal(few, sample_points(xyz, rgb, 10, seed=1)[0])
    assert sample_points(xyz, rgb, 1000)[0] is xyz


def test_pair_panels_after_registration_overlap_exactly() -> None:
    """An L-shaped mask and its copy rotated by 90° about the origin: Dice 1 once registered."""
    mask = np.zeros((8, 8), bool)
    mask[1:7, 1:3] = True
    mask[5:7, 1:6] = True
    # Rotating the mask's µm frame by -90° about (0, 0) sends (x, y) to (y, -x): shift it
    # back into the slide by 8 µm in y. The upper section is the rotated copy, its
    # transform the inverse, so both map onto the lower one's frame.
    rotated = np.rot90(mask)  # rotated[i, j] = mask[j, 7 - i]
    to_block = RigidTransform2D(-90.0, 0.0, 8.0, False).inverse()
    grid = VolumeGrid.around(
        np.zeros(2), np.array([8.0, 8.0]), first_section=0, planes=2, spacing_um=4.0,
        working_mpp=1.0,
    )  # fmt: skip
    p = pair_panels(
        (0, mask, (1.0, 1.0), RigidTransform2D()), (1, rotated, (1.0, 1.0), to_block), grid
    )
    assert p.before_lower.shape == p.before_upper.shape
    assert p.dice_before < 0.7
    assert p.after_lower.sum() == mask.sum()
    assert p.dice_after == pytest.approx(1.0)
    unregistered = pair_panels(
        (0, mask, (1.0, 1.0), RigidTransform2D()), (1, mask, (1.0, 1.0), None), grid
    )
    assert unregistered.after_upper is None and np.isnan(unregistered.dice_after)


# ---- a generated block ------------------------------------------------------------


@pytest.fixture(scope="module")
def block(tmp_path_factory: pytest.TempPathFactory) -> dict:
    from pathpipe.reconstruction.evaluate import write_threshold_masks
    from pathpipe.reconstruction.params import ReconstructionParams
    from pathpipe.reconstruction.run import run_reconstruction_sheet
    from pathpipe.synthetic.serial import write_serial_block
    from pathpipe.synthetic.serial_spec import SerialBlockSpec

    root = tmp_path_factory.mktemp("recon_figures")
    spec = SerialBlockSpec(block="blk", sections=5, spacing_um=20.0, size=512, mpp=4.0, seed=1)
    sheet = write_serial_block(root / "blk", spec, workers=1)
    slides = zip(sheet["slide_id"], sheet["path"], strict=True)
    write_threshold_masks(slides, root / "results", mask_mpp=8.0)
    out = root / "results" / "reconstruction" / "blk"
    params = ReconstructionParams(section_spacing=20.0, working_mpp=16.0)
    run_reconstruction_sheet(
        root / "blk" / "slides.tsv", "blk", root / "results", out, params=params
    )
    return {"root": root, "sheet": root / "blk" / "slides.tsv", "out": out, "n": len(sheet)}


@pytest.fixture(scope="module")
def drawn(block: dict) -> dict:
    """``pathpipe reconstruction figures`` run as the rule runs it."""
    viewer = block["out"] / "viewer.html"
    cmd = [sys.executable, "-m", "pathpipe.cli", "reconstruction", "figures"]
    cmd += ["--dir", str(block["out"]), "--sheet", str(block["sheet"]), "--block", "blk"]
    cmd += ["--results", str(block["root"] / "results"), "--viewer", str(viewer)]
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=300, check=False)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    return {"figures": block["out"] / "figures", "viewer": viewer}


@pytest.mark.slow
def test_figures_are_pngs_of_the_expected_size(block: dict, drawn: dict) -> None:
    from PIL import Image

    sizes = {}
    for name in FIGURES:
        with Image.open(drawn["figures"] / name) as img:
            assert img.format == "PNG", name
            sizes[name] = img.size
    # pairs.png: 6.4 in wide, one row (2.9 in) per pair of consecutive sections, at 90 dpi.
    pairs = block["n"] - 1
    assert sizes["pairs.png"] == (576, round((2.9 * pairs + 0.6) * 90))
    assert sizes["view3d.png"] == (576, 504)
    assert sizes["slices.png"][0] == 576 and sizes["slices.png"][1] > 300


@pytest.mark.slow
def test_slices_have_the_physical_aspect(block: dict, tmp_path: Path) -> None:
    from pathpipe.reconstruction.figures import draw_slices
    from pathpipe.reconstruction.readers import read_volume

    volume = read_volume(block["out"] / "volume.zarr")
    assert volume.grid.spacing_um == (20.0, 16.0, 16.0)
    drawn = draw_slices(volume, tmp_path / "slices.png", block="blk")
    grid = drawn["grid"]  # cropped to the mask in y and x, same spacing and planes
    dz, dy, dx = grid.spacing_um
    nz, ny, nx = grid.shape
    assert grid.spacing_um == volume.grid.spacing_um and nz == volume.labels.shape[0]
    rows, cols = crop_box(volume.labels)
    assert (ny, nx) == (rows.stop - rows.start, cols.stop - cols.start)
    assert grid.origin_um[2] == volume.grid.origin_um[2] + cols.start * dx
    ext = {name.split()[0]: e for name, e in drawn["extents"].items()}
    # extent = (left, right, bottom, top) in µm: width and height are the grid's in µm.
    for name, (w_um, h_um) in {
        "xy": (nx * dx, ny * dy), "xz": (nx * dx, nz * dz), "yz": (ny * dy, nz * dz)
    }.items():  # fmt: skip
        left, right, bottom, top = ext[name]
        assert (right - left, bottom - top) == pytest.approx((w_um, h_um)), name
    k, i, j = drawn["centre"]
    assert volume.labels[k, rows][i, cols][j] == 1  # the centre of a convex-ish blob is inside it
    assert drawn["z_factor"] == z_exaggeration(max(nx * dx, ny * dy), nz * dz)


@pytest.mark.slow
def test_viewer_is_self_contained_and_holds_the_traces(block: dict, drawn: dict) -> None:
    html = drawn["viewer"].read_text(encoding="utf-8")
    assert not re.search(r"<script[^>]*\bsrc\s*=\s*[\"']?(https?:)?//", html, re.IGNORECASE)
    # Every <script> is inline (plotly.js itself names CDN URLs for geo maps, unused here).
    assert all("src" not in tag for tag in re.findall(r"<script[^>]*>", html))
    assert len(html) < 8_000_000  # a few MB: plotly.js (~4.6 MB) and the decimated data
    assert "Plotly.newPlot" in html and "plotly.js v" in html  # the library is embedded
    assert '"type":"scatter3d"' in html and '"type":"mesh3d"' in html
    assert "registered points (points.ply)" in html and "surface (mesh.ply)" in html


@pytest.mark.slow
def test_viewer_figure_carries_every_point_and_face(block: dict) -> None:
    from pathpipe.reconstruction.readers import read_mesh_ply, read_points_ply
    from pathpipe.reconstruction.viewer import viewer_figure

    xyz, rgb = read_points_ply(block["out"] / "points.ply")
    vertices, faces = read_mesh_ply(block["out"] / "mesh.ply")
    fig = viewer_figure(xyz, rgb, vertices, faces, block="blk", z_factor=2)
    mesh, points = fig.data
    assert len(points.x) == len(xyz) and len(mesh.i) == len(faces)
    np.testing.assert_allclose(np.asarray(points.z), xyz[:, 2])
    assert set(np.unique(xyz[:, 2])) <= {k * 20.0 for k in range(5)}
    assert fig.layout.scene.aspectratio.z == pytest.approx(
        2
        * np.ptp(np.vstack([xyz, vertices])[:, 2])
        / np.ptp(np.vstack([xyz, vertices])[:, :2], axis=0).max()
    )
