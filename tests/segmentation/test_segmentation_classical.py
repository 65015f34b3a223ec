"""Classical nuclei segmentation: detection quality, empty tiles, physical size limits."""

from __future__ import annotations

import time

import numpy as np
import pytest
from scipy import ndimage as ndi
from scipy.optimize import linear_sum_assignment

from pathpipe.errors import ConfigError
from pathpipe.segmentation.classical import ClassicalParams, segment_nuclei
from pathpipe.stain import RUIFROK_HE, deconvolve
from pathpipe.synthetic.tiles import synthetic_annotated_tiles

MATCH_RADIUS_UM = 3.0  # about half the diameter of a typical nucleus


def centroids(labels: np.ndarray) -> np.ndarray:
    ids = np.unique(labels)
    ids = ids[ids > 0]
    if not len(ids):
        return np.zeros((0, 2))
    return np.array(ndi.center_of_mass(np.ones_like(labels), labels, ids)).reshape(-1, 2)


def detection_counts(
    pred: np.ndarray, truth: np.ndarray, *, mpp: float, min_truth_um2: float = 0.0
) -> tuple[int, int, int]:
    """(true positives, predictions, truths): one-to-one centroid matching
    (Hungarian, on distance) within MATCH_RADIUS_UM. Truth objects smaller than
    ``min_truth_um2`` (slivers of nuclei cut by the tile edge) are left out."""
    if min_truth_um2 > 0:
        area = np.bincount(truth.ravel()) * mpp * mpp
        small = np.flatnonzero(area < min_truth_um2)
        truth = np.where(np.isin(truth, small), 0, truth)
    a, b = centroids(pred), centroids(truth)
    if not len(a) or not len(b):
        return 0, len(a), len(b)
    dist = np.linalg.norm(a[:, None] - b[None], axis=2) * mpp
    rows, cols = linear_sum_assignment(dist)
    return int((dist[rows, cols] <= MATCH_RADIUS_UM).sum()), len(a), len(b)


def f1(counts: list[tuple[int, int, int]]) -> float:
    tp, n_pred, n_truth = (sum(c[k] for c in counts) for k in range(3))
    return 2.0 * tp / (n_pred + n_truth)


def render(c_h: np.ndarray, c_e: np.ndarray) -> np.ndarray:
    """Beer-Lambert H&E image from concentration maps, (H, W, 3) uint8."""
    od = c_h[..., None] * RUIFROK_HE[0] + c_e[..., None] * RUIFROK_HE[1]
    return np.clip(np.round(255.0 * np.exp(-od)), 0, 255).astype(np.uint8)


def disc_tile(
    discs_um: list[tuple[float, float, float]], *, mpp: float, size_um: float = 128.0
) -> np.ndarray:
    """Pink stroma with dark discs ``(row_um, col_um, radius_um)``, 4x supersampled."""
    n = round(size_um / mpp)
    sub = 4
    coords = (np.arange(n * sub) + 0.5) * (mpp / sub)
    rr, cc = np.meshgrid(coords, coords, indexing="ij")
    inside = np.zeros(rr.shape, bool)
    for r0, c0, rad in discs_um:
        inside |= (rr - r0) ** 2 + (cc - c0) ** 2 <= rad**2
    cover = inside.reshape(n, sub, n, sub).mean(axis=(1, 3))
    return render(0.1 + 0.9 * cover, 0.55 * (1 - cover) + 0.1 * cover)


@pytest.fixture(scope="module")
def synthetic_tiles() -> dict[float, list]:
    return {mpp: list(synthetic_annotated_tiles(n_tiles=8, mpp=mpp, seed=0)) for mpp in (0.5, 0.25)}


# --------------------------------------------------------------------------- quality


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_detection_f1_on_synthetic_tiles(synthetic_tiles: dict, mpp: float) -> None:
    tiles = synthetic_tiles[mpp]
    preds = [segment_nuclei(t.rgb, mpp=mpp) for t in tiles]
    params = ClassicalParams()
    # Measured (seed 0): 0.957 at 0.5 µm/px and 0.986 at 0.25 µm/px against the
    # nuclei the size limits allow; 0.944 and 0.943 against every sliver.
    detectable = [
        detection_counts(p, t.inst_map, mpp=mpp, min_truth_um2=params.min_area_um2)
        for p, t in zip(preds, tiles, strict=True)
    ]
    everything = [
        detection_counts(p, t.inst_map, mpp=mpp) for p, t in zip(preds, tiles, strict=True)
    ]
    assert f1(detectable) >= 0.9
    assert f1(everything) >= 0.9


def test_output_is_sequential_int32_and_returns_hematoxylin(synthetic_tiles: dict) -> None:
    tile = synthetic_tiles[0.5][1]
    labels, h = segment_nuclei(tile.rgb, mpp=0.5, return_hematoxylin=True)
    assert labels.dtype == np.int32 and labels.shape == tile.rgb.shape[:2]
    ids = np.unique(labels)
    assert ids[0] == 0 and len(ids) > 10
    np.testing.assert_array_equal(ids, np.arange(len(ids)))
    assert h.dtype == np.float32 and h.shape == labels.shape and h.min() >= 0
    # nuclei are hematoxylin-dark
    assert h[labels > 0].mean() > 3 * h[labels == 0].mean()


def test_stain_matrix_argument_is_used(synthetic_tiles: dict) -> None:
    tile = synthetic_tiles[0.5][1]
    np.testing.assert_array_equal(
        segment_nuclei(tile.rgb, mpp=0.5, stain_matrix=RUIFROK_HE),
        segment_nuclei(tile.rgb, mpp=0.5),
    )
    swapped = RUIFROK_HE[[1, 0, 2]]  # "hematoxylin" = eosin: finds stroma, not nuclei
    assert not np.array_equal(
        segment_nuclei(tile.rgb, mpp=0.5, stain_matrix=swapped), segment_nuclei(tile.rgb, mpp=0.5)
    )


def test_speed_of_a_256_tile(synthetic_tiles: dict) -> None:
    tile = synthetic_tiles[0.5][1].rgb
    segment_nuclei(tile, mpp=0.5)
    start = time.perf_counter()
    for _ in range(5):
        segment_nuclei(tile, mpp=0.5)
    # ~15 ms on one core; generous bound for a loaded test machine
    assert (time.perf_counter() - start) / 5 < 0.2


# --------------------------------------------------------------------------- tiles without nuclei


def test_white_tile_gives_no_nuclei() -> None:
    labels = segment_nuclei(np.full((256, 256, 3), 255, np.uint8), mpp=0.5)
    assert labels.dtype == np.int32 and not labels.any()


def test_flat_and_noisy_pink_tiles_give_no_nuclei() -> None:
    rng = np.random.default_rng(0)
    flat = render(np.full((256, 256), 0.12), np.full((256, 256), 0.6))
    assert not segment_nuclei(flat, mpp=0.5).any()
    c_h = 0.12 + 0.03 * ndi.gaussian_filter(rng.normal(size=(256, 256)), 2) * 10
    c_e = 0.6 + 0.1 * rng.normal(size=(256, 256))
    noisy = render(np.clip(c_h, 0, None), np.clip(c_e, 0, None))
    for mpp in (0.5, 0.25):
        assert not segment_nuclei(noisy, mpp=mpp).any()


def test_grey_tile_gives_no_nuclei() -> None:
    # neutral grey deconvolves into "hematoxylin"; the neutral-angle test removes it
    rng = np.random.default_rng(1)
    grey = 120 + rng.normal(0, 15, (256, 256, 1)) + rng.normal(0, 4, (256, 256, 3))
    grey = np.clip(grey, 0, 255).astype(np.uint8)
    assert not segment_nuclei(grey, mpp=0.5).any()
    assert segment_nuclei(grey, mpp=0.5, params=ClassicalParams(neutral_angle_deg=0)).any()


def test_synthetic_stroma_with_nuclei_removed_gives_no_nuclei(synthetic_tiles: dict) -> None:
    for mpp in (0.5, 0.25):
        for tile in synthetic_tiles[mpp][:4]:
            conc = deconvolve(tile.rgb, RUIFROK_HE)
            nuclei = ndi.binary_dilation(tile.inst_map > 0, iterations=3)
            conc[nuclei] = np.median(conc[~nuclei], axis=0)
            stroma = render(conc[..., 0], conc[..., 1])
            assert segment_nuclei(tile.rgb, mpp=mpp).any()
            assert not segment_nuclei(stroma, mpp=mpp).any()


def test_empty_image() -> None:
    labels, h = segment_nuclei(np.zeros((0, 5, 3), np.uint8), mpp=0.5, return_hematoxylin=True)
    assert labels.shape == (0, 5) and h.shape == (0, 5)


# --------------------------------------------------------------------------- physical sizes


DISCS_UM2 = (6.0, 12.0, 40.0, 200.0, 700.0)  # areas; default limits keep 12-200


def disc_layout() -> list[tuple[float, float, float]]:
    centres = [(20, 20), (20, 60), (20, 100), (80, 30), (80, 90)]
    return [(r, c, float(np.sqrt(a / np.pi))) for (r, c), a in zip(centres, DISCS_UM2, strict=True)]


def kept_areas(labels: np.ndarray, mpp: float) -> list[float]:
    return sorted(np.bincount(labels.ravel())[1:] * mpp * mpp)


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_size_limits_are_physical(mpp: float) -> None:
    rgb = disc_tile(disc_layout(), mpp=mpp)
    areas = kept_areas(segment_nuclei(rgb, mpp=mpp), mpp)
    assert len(areas) == 3  # 6 µm² and 700 µm² dropped
    np.testing.assert_allclose(areas, DISCS_UM2[1:4], rtol=0.2)
    custom = ClassicalParams(min_area_um2=30.0, max_area_um2=100.0)
    areas = kept_areas(segment_nuclei(rgb, mpp=mpp, params=custom), mpp)
    assert len(areas) == 1 and abs(areas[0] - 40.0) < 8.0


@pytest.mark.parametrize("mpp", [0.5, 0.25])
def test_touching_nuclei_are_split_and_single_ones_are_not(mpp: float) -> None:
    pair = [(30.0, 30.0, 3.0), (30.0, 35.0, 3.0)]  # centres 5 µm apart, overlapping
    labels = segment_nuclei(disc_tile(pair, mpp=mpp, size_um=64.0), mpp=mpp)
    assert labels.max() == 2
    big = [(30.0, 30.0, 6.0)]
    assert segment_nuclei(disc_tile(big, mpp=mpp, size_um=64.0), mpp=mpp).max() == 1


def test_fixed_threshold() -> None:
    rgb = disc_tile(disc_layout(), mpp=0.5)
    assert segment_nuclei(rgb, mpp=0.5, params=ClassicalParams(threshold=0.5)).max() == 3
    assert segment_nuclei(rgb, mpp=0.5, params=ClassicalParams(threshold=5.0)).max() == 0


# --------------------------------------------------------------------------- validation


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"threshold": "triangle"}, "threshold"),
        ({"threshold": -0.1}, "threshold"),
        ({"threshold": True}, "threshold"),
        ({"min_threshold": -1}, "min_threshold"),
        ({"smooth_um": float("nan")}, "smooth_um"),
        ({"opening_um": "1"}, "opening_um"),
        ({"min_area_um2": 50.0, "max_area_um2": 40.0}, "expected less than max_area_um2"),
        ({"max_area_um2": 0}, "max_area_um2"),
        ({"split_min_distance_um": -0.5}, "split_min_distance_um"),
        ({"split_hematoxylin_um": -1}, "split_hematoxylin_um"),
        ({"fill_holes": 1}, "fill_holes"),
        ({"neutral_angle_deg": 91}, "neutral_angle_deg"),
    ],
)
def test_params_validation(kwargs: dict, match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        ClassicalParams(**kwargs)


def test_params_take_the_bounds_of_the_config_schema() -> None:
    # workflow/schemas/config.schema.yaml documents >= 0 and <= 90 for these
    p = ClassicalParams(threshold=0, split_min_distance_um=0, neutral_angle_deg=90)
    assert p.threshold == 0.0 and p.split_min_distance_um == 0.0
    assert segment_nuclei(np.zeros((8, 8, 3), np.uint8), mpp=0.5, params=p).shape == (8, 8)
    with pytest.raises(
        ConfigError, match=r"segmentation\.classical\.smooth_um=-1\.0; expected a number >= 0"
    ):
        ClassicalParams(smooth_um=-1)


def test_params_accept_integers_and_are_keyword_only() -> None:
    p = ClassicalParams(threshold=1, min_area_um2=10, max_area_um2=300)
    assert p.threshold == 1.0 and isinstance(p.min_area_um2, float)
    with pytest.raises(TypeError):
        ClassicalParams("otsu")  # type: ignore[misc]


def test_segment_nuclei_validation() -> None:
    rgb = np.zeros((8, 8, 3), np.uint8)
    with pytest.raises(ConfigError, match="mpp"):
        segment_nuclei(rgb, mpp=0)
    with pytest.raises(ConfigError, match="uint8"):
        segment_nuclei(rgb.astype(np.float32), mpp=0.5)
    with pytest.raises(ConfigError, match=r"\(H, W, 3\)"):
        segment_nuclei(rgb[..., 0], mpp=0.5)
    with pytest.raises(ConfigError, match="ClassicalParams"):
        segment_nuclei(rgb, mpp=0.5, params={"threshold": 0.5})  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="stain matrix"):
        segment_nuclei(rgb, mpp=0.5, stain_matrix=np.eye(2))
