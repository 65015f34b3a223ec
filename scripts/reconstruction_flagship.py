"""Draw the ANHIR Flagship serial sections registered onto each other (a qualitative check).

Writes ``docs/figures/reconstruction_flagship.png``: per consecutive pair, the two
sections' grey levels before and after registration (fixed in magenta, moving in
green; grey where they agree) and the registration's numbers. Same data, masks and
parameters as ``tests/reconstruction/test_reconstruction_flagship.py``.

    .venv/bin/python scripts/reconstruction_flagship.py
"""

from __future__ import annotations

import itertools
import sys
from pathlib import Path

import numpy as np
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))

from pathpipe.reconstruction import ReconstructionParams, layer_points  # noqa: E402
from pathpipe.reconstruction.masks import grey_tissue_mask  # noqa: E402
from pathpipe.reconstruction.register import register_pair  # noqa: E402
from pathpipe.reconstruction.transforms import RigidTransform2D  # noqa: E402

DATA = ROOT / "tests" / "data" / "serial" / "flagship"
OUT = ROOT / "docs" / "figures" / "reconstruction_flagship.png"
MPP = 4.0
CHAINS = [
    [
        "Rat_Kidney_Section02_HE",
        "Rat_Kidney_Section04_Podocin",
        "Rat_Kidney_Section06_PanCytokeratin",
    ],
    ["Case001_HE", "Case001_Cytokeratin", "Case001_Ki67"],
]
PARAMS = ReconstructionParams(working_mpp=8.0, max_correspondence_um=16.0)


def _pull(image: np.ndarray, shape: tuple[int, int], t: RigidTransform2D) -> np.ndarray:
    """``image`` (moving frame) resampled on a ``shape`` canvas of the fixed frame."""
    from scipy.ndimage import map_coordinates

    h, w = shape
    r, c = np.mgrid[:h, :w]
    xy = np.column_stack([(c.ravel() + 0.5) * MPP, (r.ravel() + 0.5) * MPP])
    q = t.inverse().apply(xy) / MPP - 0.5
    out = map_coordinates(image, [q[:, 1], q[:, 0]], order=1, cval=1.0)
    return out.reshape(h, w)


def _overlay(fixed: np.ndarray, moving: np.ndarray) -> np.ndarray:
    """Fixed darkness in magenta, moving darkness in green (1 - grey, grey in [0, 1])."""
    a, b = 1.0 - fixed, 1.0 - moving
    return np.clip(np.dstack([1.0 - b, 1.0 - a, 1.0 - b]), 0, 1)


def main() -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    pairs = [(a, b) for chain in CHAINS for a, b in itertools.pairwise(chain)]
    fig, axes = plt.subplots(len(pairs), 2, figsize=(8, 2.9 * len(pairs)), squeeze=False)
    for row, (a, b) in zip(axes, pairs, strict=True):
        rgb = [np.asarray(Image.open(DATA / f"{n}.jpg").convert("RGB")) for n in (a, b)]
        grey = [x.astype(np.float64).mean(axis=-1) / 255.0 for x in rgb]
        masks = [grey_tissue_mask(x, MPP) for x in rgb]
        fixed, moving = (
            layer_points(m, (MPP, MPP), PARAMS.working_mpp, rgb=x)
            for m, x in zip(masks, rgb, strict=True)
        )
        result = register_pair(fixed, moving, PARAMS)
        t = result.transform
        for ax, (name, transform) in zip(
            row, (("before", RigidTransform2D()), ("after", t)), strict=True
        ):
            ax.imshow(_overlay(grey[0], _pull(grey[1], grey[0].shape, transform)))
            ax.set_axis_off()
            title = f"{a.split('_')[-1]} (magenta) / {b.split('_')[-1]} (green): {name}"
            if name == "after":
                title += f"\n{t.rotation_deg:.1f}°, fitness {result.fitness:.2f}"
            ax.set_title(title, fontsize=8)
        print(
            f"{a} -> {b}: rotation {t.rotation_deg:.1f}°, mirrored {t.mirrored}, "
            f"fitness {result.fitness:.2f}, RMSE {result.inlier_rmse_um:.1f} µm"
        )
    fig.tight_layout()
    OUT.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(OUT, dpi=64)
    print(f"wrote {OUT}")


if __name__ == "__main__":
    main()
