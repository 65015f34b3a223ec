"""Real serial sections: ANHIR CIMA lung lesions 1 and 3, three consecutive stains each.

Images are the pyImSegm 1200-px JPEGs downscaled 4× (``tests/data/serial/cima/``);
landmarks are the dataset's, placed at 50 % of full scale and rescaled here to
the 1200-px frame by 1200 / (width at 50 %) (``shared/data/README.md``). One
1200-px pixel is taken as 1 "µm" (the images carry no MPP), so the masks have
(x, y) µm/px = (1200 / 300, H1200 / H300).

The layer mask is the lesion: optical density summed over RGB, Gaussian-smoothed
(σ = 12 µm) and thresholded at Otsu. The tissue itself fills the images (lung
parenchyma to every border), so its mask has no usable outline; the lesion is
the shape the sections share. rTRE is the median landmark distance after
registration over the fixed image's diagonal, as ANHIR reports it.

Measured (2-core AMD EPYC, this test's parameters): median rTRE per pair, identity
-> registered (best rigid fit of the landmarks themselves):

==================  ========  ==========  ==========
pair                identity  registered  best rigid
==================  ========  ==========  ==========
les1 CD31 -> H&E    0.0689    0.0065      0.0052
les1 H&E -> proSPC  0.0573    0.0053      0.0051
les3 CD31 -> H&E    0.0655    0.0085      0.0081
les3 H&E -> proSPC  0.0428    0.0118      0.0109
==================  ========  ==========  ==========
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathpipe.reconstruction import ReconstructionParams, layer_points
from pathpipe.reconstruction.register import register_pair

DATA = Path(__file__).resolve().parents[1] / "data" / "serial" / "cima"
FULL_WIDTH = 1200
# width at 50 % of full scale, per lesion and stain (shared/data/README.md)
WIDTH_50PC = {
    "les1": {"CD31-3": 8900, "He": 8900, "proSPC-4": 8900},
    "les3": {"CD31-3": 8950, "He": 8920, "proSPC-4": 8920},
}
FULL_HEIGHT = {
    "les1": {"CD31-3": 989, "He": 988, "proSPC-4": 989},
    "les3": {"CD31-3": 884, "He": 889, "proSPC-4": 887},
}
PAIRS = [
    ("les1", "CD31-3", "He"),
    ("les1", "He", "proSPC-4"),
    ("les3", "CD31-3", "He"),
    ("les3", "He", "proSPC-4"),
]
PARAMS = ReconstructionParams(working_mpp=8.0, max_correspondence_um=16.0)
# the goal of issue 12, met with margin on every pair (worst measured: 0.0118)
MAX_RTRE = 0.015


def _section(lesion: str, stain: str) -> tuple[np.ndarray, tuple[float, float], np.ndarray]:
    """(image, (x, y) µm/px, landmarks (N, 2) in the 1200-px frame)."""
    stem = f"29-041-Izd2-w35-{stain}-{lesion}"
    rgb = np.asarray(Image.open(DATA / f"{stem}.jpg").convert("RGB"))
    mpp = (FULL_WIDTH / rgb.shape[1], FULL_HEIGHT[lesion][stain] / rgb.shape[0])
    xy = np.loadtxt(DATA / f"{stem}.csv", delimiter=",", skiprows=1)[:, 1:]
    return rgb, mpp, xy * FULL_WIDTH / WIDTH_50PC[lesion][stain]


def _lesion_mask(rgb: np.ndarray, mpp: tuple[float, float], sigma_um: float = 12.0) -> np.ndarray:
    from scipy import ndimage as ndi
    from skimage.filters import threshold_otsu

    od = -np.log(np.clip(rgb.astype(float) / 255.0, 1 / 255, 1.0)).sum(axis=-1)
    od = ndi.gaussian_filter(od, (sigma_um / mpp[1], sigma_um / mpp[0]))
    return od > threshold_otsu(od)


def _rtre(lesion: str, fixed: str, moving: str, *, turn: int = 0, mirror: bool = False):
    """Median rTRE (identity, registered) of one pair; the moving section may be turned/flipped."""
    f_rgb, f_mpp, f_xy = _section(lesion, fixed)
    m_rgb, m_mpp, m_xy = _section(lesion, moving)
    mask = _lesion_mask(m_rgb, m_mpp)
    width_um = mask.shape[1] * m_mpp[0]
    if mirror:  # flip the section left-right (and its landmarks)
        mask, m_xy = mask[:, ::-1], np.column_stack([width_um - m_xy[:, 0], m_xy[:, 1]])
    for _ in range(turn):  # np.rot90: counter-clockwise on screen, (x, y) -> (y, W - x)
        width_um = mask.shape[1] * m_mpp[0]
        mask, m_mpp = np.rot90(mask), (m_mpp[1], m_mpp[0])
        m_xy = np.column_stack([m_xy[:, 1], width_um - m_xy[:, 0]])
    fixed_layer = layer_points(_lesion_mask(f_rgb, f_mpp), f_mpp, PARAMS.working_mpp)
    moving_layer = layer_points(np.ascontiguousarray(mask), m_mpp, PARAMS.working_mpp)
    result = register_pair(fixed_layer, moving_layer, PARAMS)
    diagonal = float(np.hypot(f_rgb.shape[1] * f_mpp[0], f_rgb.shape[0] * f_mpp[1]))
    identity = np.median(np.linalg.norm(m_xy - f_xy, axis=1)) / diagonal
    registered = np.median(np.linalg.norm(result.transform.apply(m_xy) - f_xy, axis=1)) / diagonal
    return float(identity), float(registered), result


def _best_rigid(lesion: str, fixed: str, moving: str) -> float:
    """Median rTRE of the least-squares rigid fit of the landmarks themselves (the floor)."""
    f_rgb, f_mpp, f_xy = _section(lesion, fixed)
    _, _, m_xy = _section(lesion, moving)
    cf, cm = f_xy.mean(axis=0), m_xy.mean(axis=0)
    u, _, vt = np.linalg.svd((m_xy - cm).T @ (f_xy - cf))
    d = np.sign(np.linalg.det(vt.T @ u.T))
    rot = vt.T @ np.diag([1.0, d]) @ u.T
    fitted = (m_xy - cm) @ rot.T + cf
    diagonal = float(np.hypot(f_rgb.shape[1] * f_mpp[0], f_rgb.shape[0] * f_mpp[1]))
    return float(np.median(np.linalg.norm(fitted - f_xy, axis=1)) / diagonal)


@pytest.mark.parametrize(("lesion", "fixed", "moving"), PAIRS, ids=["-".join(p) for p in PAIRS])
def test_consecutive_pairs_reach_the_rtre_goal(lesion: str, fixed: str, moving: str) -> None:
    identity, registered, result = _rtre(lesion, fixed, moving)
    best = _best_rigid(lesion, fixed, moving)
    print(f"{lesion} {fixed}->{moving}: rTRE identity {identity:.4f} registered {registered:.4f} "
          f"best rigid {best:.4f}; {result.transform}")  # fmt: skip
    assert 0.04 < identity < 0.07  # the data as the issue describes it
    assert registered <= MAX_RTRE
    assert registered <= best + 0.003  # within 0.3 % of the diagonal of what rigid allows
    assert not result.transform.mirrored
    assert result.fitness >= PARAMS.min_fitness  # a good pair is not flagged


def test_a_turned_and_mirrored_real_section_is_registered() -> None:
    """The same pair with the moving section turned 90° and mirrored: the coarse search finds it."""
    _, plain, _ = _rtre("les1", "CD31-3", "He")
    _, turned, result = _rtre("les1", "CD31-3", "He", turn=1, mirror=True)
    assert result.transform.mirrored
    assert turned <= MAX_RTRE
    assert abs(turned - plain) < 0.002
