"""Shared fixtures: repository paths and a generated pyramidal TIFF."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

REPO = Path(__file__).resolve().parents[1]
DATA = REPO / "tests" / "data"
SLIDES = REPO / "resources" / "slides"
CMU = SLIDES / "CMU-1-Small-Region.svs"
TCGA = SLIDES / "TCGA-CR-7395-01A-01-TS1.svs"
KIDNEY = SLIDES / "kidney-48-5.tif"


def gpu_available() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if gpu_available():
        return
    skip = pytest.mark.skip(reason="needs a CUDA GPU")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


def scene(
    width: int,
    height: int,
    *,
    seed: int = 0,
    tissue_box: tuple[float, float, float, float] | None = None,
) -> np.ndarray:
    """An H&E-coloured textured rectangle on white glass, (height, width, 3) uint8.

    ``tissue_box`` is (x0, y0, x1, y1) as fractions of the image; default the
    central half.
    """
    rng = np.random.default_rng(seed)
    x0, y0, x1, y1 = tissue_box or (0.25, 0.25, 0.75, 0.75)
    img = np.full((height, width, 3), 245, dtype=np.uint8)
    r0, r1 = round(y0 * height), round(y1 * height)
    c0, c1 = round(x0 * width), round(x1 * width)
    yy, xx = np.mgrid[r0:r1, c0:c1]
    base = np.stack(
        [
            200 + 25 * np.sin(xx / 9.0),
            120 + 30 * np.cos(yy / 7.0),
            180 + 20 * np.sin((xx + yy) / 13.0),
        ],
        axis=-1,
    )
    noise = rng.normal(0, 6, base.shape)
    img[r0:r1, c0:c1] = np.clip(base + noise, 0, 255).astype(np.uint8)
    return img


def write_pyramid(
    path: Path,
    img: np.ndarray,
    *,
    mpp: float | None = 0.25,
    downsamples: tuple[int, ...] = (1, 4),
    tile: int = 256,
    compression: str = "jpeg",
) -> Path:
    """Write ``img`` as a pyramidal tiled TIFF (levels by block averaging)."""
    import tifffile

    with tifffile.TiffWriter(path) as tw:
        for i, d in enumerate(downsamples):
            h, w = img.shape[0] // d, img.shape[1] // d
            level = (
                img[: h * d, : w * d]
                .reshape(h, d, w, d, 3)
                .mean(axis=(1, 3))
                .round()
                .astype(np.uint8)
            )
            kw = {}
            if mpp is not None:
                kw = {
                    "resolution": (1e4 / (mpp * d), 1e4 / (mpp * d)),
                    "resolutionunit": "CENTIMETER",
                }
            tw.write(
                level,
                tile=(tile, tile),
                compression=compression,
                compressionargs={"level": 92} if compression == "jpeg" else None,
                photometric="rgb",
                subfiletype=0 if i == 0 else 1,
                metadata=None,
                **kw,
            )
    return path


@pytest.fixture(scope="session")
def pyramid(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A 2048 × 1536 JPEG pyramid at 0.25 µm/px with levels 1, 4, 16."""
    path = tmp_path_factory.mktemp("slides") / "pyramid.tiff"
    return write_pyramid(path, scene(2048, 1536, seed=1), downsamples=(1, 4, 16))


@pytest.fixture(scope="module")
def torch_one_thread() -> Iterator[None]:
    """Run torch on one thread, then restore the thread count.

    Two torch threads on a shared 2-core machine spin-wait against other work
    (up to ~20x slower); the small models of the tests need no more than one.
    """
    torch = pytest.importorskip("torch")
    old = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(old)
