"""Real serial sections of different stains: the ANHIR Flagship pairs, a qualitative check.

Images are the pyImSegm JPEGs downscaled 4× (``tests/data/serial/flagship/``): a rat
kidney (sections 02, 04, 06: H&E, Podocin, PanCytokeratin) and Case001 (H&E,
Cytokeratin, Ki67). They have no landmarks, so the check is the overlap of the
sections' tissue masks (:func:`~pathpipe.reconstruction.masks.grey_tissue_mask`)
before and after registering each consecutive pair; one full-size pixel is taken as
1 "µm", so the masks are at 4 µm/px. ``scripts/reconstruction_flagship.py`` draws
the registered images over each other (``docs/figures/reconstruction_flagship.png``).

Measured (default parameters but ``max_correspondence_um=16``; Dice before -> after,
fitness): kidney H&E -> Podocin 0.956 -> 0.971 (0.99), Podocin -> PanCK 0.903 ->
0.952 (0.98), Case001 H&E -> CK 0.918 -> 0.927 (0.97), CK -> Ki67 0.973 -> 0.979
(0.99). The tissue stage's own saturation mask misses most of the pale Podocin and
Ki67 sections (Dice 0.10 and 0.14 before registration), hence the grey mask.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from pathpipe.reconstruction import ReconstructionParams, layer_points
from pathpipe.reconstruction.masks import grey_tissue_mask
from pathpipe.reconstruction.register import register_pair
from pathpipe.reconstruction.transforms import RigidTransform2D

DATA = Path(__file__).resolve().parents[1] / "data" / "serial" / "flagship"
MPP = 4.0
PAIRS = [
    ("Rat_Kidney_Section02_HE", "Rat_Kidney_Section04_Podocin"),
    ("Rat_Kidney_Section04_Podocin", "Rat_Kidney_Section06_PanCytokeratin"),
    ("Case001_HE", "Case001_Cytokeratin"),
    ("Case001_Cytokeratin", "Case001_Ki67"),
]
PARAMS = ReconstructionParams(working_mpp=8.0, max_correspondence_um=16.0)


def _dice_in_fixed(fixed: np.ndarray, moving: np.ndarray, t: RigidTransform2D) -> float:
    """Dice of ``fixed`` and ``moving`` pulled into the fixed frame by ``t`` (moving -> fixed)."""
    h, w = fixed.shape
    r, c = np.mgrid[:h, :w]
    xy = np.column_stack([(c.ravel() + 0.5) * MPP, (r.ravel() + 0.5) * MPP])
    q = t.inverse().apply(xy) / MPP - 0.5
    col, row = np.rint(q[:, 0]).astype(int), np.rint(q[:, 1]).astype(int)
    ok = (row >= 0) & (row < moving.shape[0]) & (col >= 0) & (col < moving.shape[1])
    pulled = np.zeros(h * w, dtype=bool)
    pulled[ok] = moving[row[ok], col[ok]]
    pulled = pulled.reshape(h, w)
    return 2.0 * float((pulled & fixed).sum()) / float(pulled.sum() + fixed.sum())


@pytest.mark.parametrize("fixed_name, moving_name", PAIRS, ids=[m for _, m in PAIRS])
def test_consecutive_stains_overlap_better_after_registration(fixed_name, moving_name) -> None:
    images = [
        np.asarray(Image.open(DATA / f"{n}.jpg").convert("RGB")) for n in (fixed_name, moving_name)
    ]
    masks = [grey_tissue_mask(rgb, MPP) for rgb in images]
    fixed, moving = (
        layer_points(m, (MPP, MPP), PARAMS.working_mpp, rgb=rgb)
        for m, rgb in zip(masks, images, strict=True)
    )
    result = register_pair(fixed, moving, PARAMS)
    before = _dice_in_fixed(masks[0], masks[1], RigidTransform2D())
    after = _dice_in_fixed(masks[0], masks[1], result.transform)
    assert not result.transform.mirrored  # mounted the same way up
    assert result.fitness >= 0.9
    assert after >= 0.92
    assert after >= before
