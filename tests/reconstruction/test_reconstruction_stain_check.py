"""The ``stain`` flag: a section stained differently from the rest of its block."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathpipe.reconstruction.masks import grey_tissue_mask
from pathpipe.reconstruction.stain_check import STAIN_ANGLE_DEG, stain_angles, stain_direction

FLAGSHIP = Path(__file__).resolve().parents[1] / "data" / "serial" / "flagship"


def _direction(name: str) -> np.ndarray:
    rgb = np.asarray(Image.open(FLAGSHIP / f"{name}.jpg").convert("RGB"))
    direction = stain_direction(rgb[grey_tissue_mask(rgb, 4.0)])
    assert direction is not None
    return direction


def test_the_h_and_e_section_of_an_immunostained_block_is_flagged() -> None:
    """Rat kidney 02 (H&E) among 04 (Podocin) and 06 (PanCytokeratin): measured 14.0°
    against 1.1° and 1.5°."""
    names = ["Rat_Kidney_Section02_HE", "Rat_Kidney_Section04_Podocin",
             "Rat_Kidney_Section06_PanCytokeratin"]  # fmt: skip
    angles = stain_angles({k: _direction(n) for k, n in enumerate(names)})
    assert angles[0] > 2 * STAIN_ANGLE_DEG
    assert angles[1] < STAIN_ANGLE_DEG / 2 and angles[2] < STAIN_ANGLE_DEG / 2


def test_stain_strength_does_not_turn_the_direction() -> None:
    rng = np.random.default_rng(0)
    od = np.array([0.65, 0.70, 0.29]) * rng.uniform(0.2, 1.5, (500, 1))  # haematoxylin-like
    rgb = 255.0 * np.exp(-od)
    weak, strong = stain_direction(rgb), stain_direction(255.0 * np.exp(-2.0 * od))
    assert weak is not None and strong is not None
    np.testing.assert_allclose(weak, strong, atol=1e-12)
    angles = stain_angles({0: weak, 1: strong, 2: weak})
    assert max(angles.values()) < 1e-6


def test_glass_has_no_stain() -> None:
    assert stain_direction(np.full((10, 3), 250.0)) is None
    assert stain_angles({}) == {}


@pytest.mark.parametrize("angle", [3.0, 9.0])
def test_the_threshold_separates_turned_directions(angle: float) -> None:
    base = np.array([1.0, 0.0, 0.0])
    t = np.radians(angle)
    turned = np.array([np.cos(t), np.sin(t), 0.0])
    angles = stain_angles({0: base, 1: base, 2: base, 3: turned})
    assert (angles[3] > STAIN_ANGLE_DEG) == (angle > STAIN_ANGLE_DEG)
    assert angles[0] == pytest.approx(0.0, abs=1e-9)
