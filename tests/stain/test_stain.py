"""Stain separation: optical density, Macenko estimation with fallback, deconvolution."""

from __future__ import annotations

import math

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.stain import (
    RUIFROK_HE,
    StainEstimate,
    StainEstimationError,
    deconvolve,
    estimate_stain_matrix,
    hematoxylin_channel,
    macenko_stain_matrix,
    optical_density,
)

# Macenko et al.'s reference H&E vectors (their published code), unit rows.
MACENKO_REF = np.array([[0.5626, 0.7201, 0.4062], [0.2159, 0.8012, 0.5581]])
MACENKO_REF /= np.linalg.norm(MACENKO_REF, axis=1, keepdims=True)


def angle_deg(a: np.ndarray, b: np.ndarray) -> float:
    cos = a @ b / (np.linalg.norm(a) * np.linalg.norm(b))
    return math.degrees(math.acos(min(1.0, max(-1.0, float(cos)))))


def render(conc: np.ndarray, vectors: np.ndarray) -> np.ndarray:
    """Beer-Lambert image with the OD convention of ``optical_density``.

    ``conc`` (..., k) concentrations, ``vectors`` (k, 3) OD rows.
    """
    od = conc @ vectors
    return np.clip(np.round(256.0 * np.exp(-od) - 1.0), 0, 255).astype(np.uint8)


def two_stain_image(vectors: np.ndarray, *, seed: int = 0, size: int = 160) -> np.ndarray:
    """Pixels of pure stain 1, pure stain 2, mixtures and glass; (size, size, 3) uint8."""
    rng = np.random.default_rng(seed)
    n = size * size
    kind = rng.choice(4, size=n, p=[0.25, 0.35, 0.3, 0.1])
    c1 = rng.uniform(0.3, 1.5, n) * np.isin(kind, [0, 2])
    c2 = rng.uniform(0.3, 1.2, n) * np.isin(kind, [1, 2])
    conc = np.stack([c1, c2], axis=1)
    conc += rng.normal(0.0, 0.01, conc.shape)  # a little stain noise
    return render(np.clip(conc, 0, None), vectors).reshape(size, size, 3)


# --------------------------------------------------------------------------- optical density


def test_ruifrok_matches_skimage_rows() -> None:
    from skimage.color import rgb_from_hed

    expected = rgb_from_hed / np.linalg.norm(rgb_from_hed, axis=1, keepdims=True)
    np.testing.assert_allclose(RUIFROK_HE, expected)
    assert RUIFROK_HE.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(RUIFROK_HE, axis=1), 1.0)


def test_optical_density_values() -> None:
    rgb = np.array([[[255, 255, 255], [0, 0, 0], [127, 63, 255]]], np.uint8)
    od = optical_density(rgb)
    assert od.dtype == np.float32 and od.shape == (1, 3, 3)
    np.testing.assert_allclose(od[0, 0], 0.0)
    np.testing.assert_allclose(od[0, 1], math.log(256.0), rtol=1e-6)
    np.testing.assert_allclose(od[0, 2], [math.log(2.0), math.log(4.0), 0.0], rtol=1e-6)
    # float input takes the formula path and agrees with the look-up table
    np.testing.assert_allclose(optical_density(rgb.astype(np.float64)), od, rtol=1e-6)
    # brighter than the background clips to 0
    assert optical_density(rgb, background=200.0)[0, 0].max() == 0.0


def test_optical_density_rejects_bad_input() -> None:
    with pytest.raises(ConfigError, match="last axis 3"):
        optical_density(np.zeros((4, 4), np.uint8))
    with pytest.raises(ConfigError, match="background"):
        optical_density(np.zeros((4, 4, 3), np.uint8), background=0)


# --------------------------------------------------------------------------- deconvolution


def test_deconvolve_round_trips_known_concentrations() -> None:
    rng = np.random.default_rng(1)
    conc = np.zeros((32, 32, 3))
    conc[..., 0] = rng.uniform(0.0, 1.5, (32, 32))
    conc[..., 1] = rng.uniform(0.0, 1.0, (32, 32))
    rgb = render(conc, RUIFROK_HE)
    out = deconvolve(rgb, RUIFROK_HE)
    assert out.dtype == np.float32 and out.shape == (32, 32, 3)
    # uint8 rounding costs at most half a grey level: ~0.5 / I in OD
    np.testing.assert_allclose(out[..., :2], conc[..., :2], atol=0.03)
    np.testing.assert_allclose(out[..., 2], 0.0, atol=0.03)
    # and re-rendering the recovered concentrations gives the image back
    assert np.abs(render(out.astype(np.float64), RUIFROK_HE).astype(int) - rgb).max() <= 1


def test_deconvolve_with_other_matrix_and_nonnegative_h() -> None:
    m = np.vstack([MACENKO_REF, np.cross(*MACENKO_REF) / np.linalg.norm(np.cross(*MACENKO_REF))])
    conc = np.array([[[0.8, 0.1, 0.0], [0.0, 0.9, 0.0]]])
    out = deconvolve(render(conc, m), m)
    np.testing.assert_allclose(out[..., :2], conc[..., :2], atol=0.03)
    # a colour the matrix cannot explain with positive H is clipped, never negative
    green = np.full((2, 2, 3), (40, 200, 40), np.uint8)
    assert (deconvolve(green, RUIFROK_HE)[..., :2] >= 0).all()


def test_hematoxylin_channel_is_first_deconvolved_channel() -> None:
    rgb = two_stain_image(RUIFROK_HE[:2], size=48)
    for m in (None, RUIFROK_HE):
        h = hematoxylin_channel(rgb, m)
        assert h.dtype == np.float32 and h.shape == rgb.shape[:2]
        np.testing.assert_allclose(h, deconvolve(rgb, RUIFROK_HE)[..., 0], atol=1e-5)


def test_deconvolve_rejects_bad_matrix() -> None:
    rgb = np.zeros((2, 2, 3), np.uint8)
    with pytest.raises(ConfigError, match=r"\(3, 3\)"):
        deconvolve(rgb, np.eye(2))
    with pytest.raises(ConfigError, match="singular"):
        deconvolve(rgb, np.array([[1.0, 0, 0], [1.0, 0, 0], [0, 0, 1.0]]))
    with pytest.raises(ConfigError, match="RGB"):
        deconvolve(np.zeros((2, 2), np.uint8), RUIFROK_HE)


# --------------------------------------------------------------------------- Macenko


@pytest.mark.parametrize(
    ("vectors", "beta"),
    # Ruifrok's eosin has red and blue OD of only 0.07 and 0.11 per unit: with
    # the paper's beta = 0.15 on every channel, pure eosin pixels are dropped.
    [(MACENKO_REF, 0.15), (RUIFROK_HE[:2], 0.02)],
    ids=["macenko-ref", "ruifrok"],
)
def test_macenko_recovers_known_stain_vectors(vectors: np.ndarray, beta: float) -> None:
    rgb = two_stain_image(vectors)
    m = macenko_stain_matrix(rgb, beta=beta)
    assert m.shape == (3, 3) and m.dtype == np.float64
    np.testing.assert_allclose(np.linalg.norm(m, axis=1), 1.0)
    assert angle_deg(m[0], vectors[0]) < 3.0  # hematoxylin first
    assert angle_deg(m[1], vectors[1]) < 3.0
    # residual: orthogonal to both stains
    assert abs(m[2] @ m[0]) < 1e-9 and abs(m[2] @ m[1]) < 1e-9


def test_macenko_is_seeded_and_subsamples() -> None:
    rgb = two_stain_image(MACENKO_REF)
    a = macenko_stain_matrix(rgb, max_pixels=5000, seed=3)
    b = macenko_stain_matrix(rgb, max_pixels=5000, seed=3)
    np.testing.assert_array_equal(a, b)
    assert angle_deg(a[0], MACENKO_REF[0]) < 4.0


def test_macenko_raises_without_tissue() -> None:
    with pytest.raises(StainEstimationError, match="tissue pixels"):
        macenko_stain_matrix(np.full((64, 64, 3), 250, np.uint8))
    with pytest.raises(StainEstimationError, match="single direction"):
        macenko_stain_matrix(np.full((64, 64, 3), 120, np.uint8))
    with pytest.raises(ConfigError, match="alpha"):
        macenko_stain_matrix(np.zeros((8, 8, 3), np.uint8), alpha=60)


# --------------------------------------------------------------------------- estimate with fallback


def test_estimate_pools_tiles_from_an_iterable() -> None:
    rgb = two_stain_image(MACENKO_REF, size=128)
    tiles = (rgb[i : i + 64, j : j + 64] for i in (0, 64) for j in (0, 64))
    est = estimate_stain_matrix(tiles, max_pixels=10_000)
    assert isinstance(est, StainEstimate)
    assert est.method == "macenko" and est.note == ""
    assert est.n_pixels == 10_000
    assert angle_deg(est.matrix[0], MACENKO_REF[0]) < 3.0
    assert angle_deg(est.matrix[1], MACENKO_REF[1]) < 3.0
    # a stacked (N, H, W, 3) array and a single tile work too
    stacked = np.stack([rgb[:64, :64], rgb[64:, 64:]])
    assert estimate_stain_matrix(stacked).method == "macenko"
    assert estimate_stain_matrix(rgb).method == "macenko"


@pytest.mark.parametrize(
    ("rgb", "why"),
    [
        (np.full((64, 64, 3), 255, np.uint8), "tissue pixels"),
        (np.full((64, 64, 3), 150, np.uint8), "single direction"),
    ],
    ids=["white", "grey"],
)
def test_estimate_falls_back_on_blank_tiles(rgb: np.ndarray, why: str) -> None:
    est = estimate_stain_matrix([rgb, rgb])
    assert est.method == "fixed"
    np.testing.assert_array_equal(est.matrix, RUIFROK_HE)
    assert est.note.startswith("fallback:") and why in est.note


def test_estimate_falls_back_on_non_he_stain() -> None:
    # Hematoxylin + DAB (immunohistochemistry): the second stain is far from eosin.
    dab = RUIFROK_HE[2]
    est = estimate_stain_matrix(two_stain_image(np.vstack([RUIFROK_HE[0], dab])))
    assert est.method == "fixed"
    assert "eosin" in est.note and "not an H&E stain" in est.note
    # A green-pen-like colour in place of hematoxylin.
    pen = np.array([0.85, 0.35, 0.39])
    est = estimate_stain_matrix(two_stain_image(np.vstack([pen / np.linalg.norm(pen), dab])))
    assert est.method == "fixed"


def test_estimate_angle_limits_are_configurable() -> None:
    rgb = two_stain_image(MACENKO_REF)  # eosin 29 degrees from Ruifrok's
    assert estimate_stain_matrix(rgb, max_angle_deg=25.0).method == "fixed"
    assert estimate_stain_matrix(rgb, max_angle_deg=(20.0, 35.0)).method == "macenko"
    with pytest.raises(ConfigError, match="max_angle_deg"):
        estimate_stain_matrix(rgb, max_angle_deg=(10.0,))
    with pytest.raises(ConfigError, match="max_angle_deg"):
        estimate_stain_matrix(rgb, max_angle_deg=0)


def test_estimate_fixed_method_and_bad_arguments() -> None:
    est = estimate_stain_matrix(np.zeros((0, 1, 1, 3), np.uint8), method="fixed")
    assert est.method == "fixed" and est.n_pixels == 0 and est.note == ""
    np.testing.assert_array_equal(est.matrix, RUIFROK_HE)
    est.matrix[0, 0] = 0  # a copy: the module constant is unchanged
    assert RUIFROK_HE[0, 0] > 0
    with pytest.raises(ConfigError, match="'macenko' or 'fixed'"):
        estimate_stain_matrix([], method="vahadane")
    with pytest.raises(ConfigError, match="empty"):
        estimate_stain_matrix([])
    with pytest.raises(ConfigError, match=r"\(N, H, W, 3\)"):
        estimate_stain_matrix(np.zeros((2, 2, 2, 2, 3), np.uint8))
    with pytest.raises(ConfigError, match="max_pixels"):
        estimate_stain_matrix([np.zeros((4, 4, 3), np.uint8)], max_pixels=10)
