"""run_reconstruction's memory is bounded by one layer pair, not by the block.

The same phantom section (:mod:`pathpipe.reconstruction.phantom`), turned a
little more per section, stacked 4 and 12 times: the peak of Python's traced
allocations (``tracemalloc``; NumPy's arrays included) of the 12-section run
stays within a small factor of the 4-section run's. Holding every layer, the
mask stack or the points would triple it.

Measured (2-core AMD EPYC): peak 4 sections 6.0 MB, 12 sections 8.0 MB (×1.33; the
mesh, an output, grows with the block).
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from pathpipe.reconstruction import ReconstructionParams
from pathpipe.reconstruction.phantom import Phantom, canvas_transform
from pathpipe.reconstruction.run import SectionInput, run_reconstruction

pytestmark = pytest.mark.slow

SIZE, MASK_MPP = 3000.0, 8.0
PARAMS = ReconstructionParams(section_spacing=50.0, working_mpp=16.0)


def _peak(root, n: int, *, trace: bool = True) -> float:
    from PIL import Image

    phantom = Phantom(SIZE, 3)
    sections = []
    for k in range(n):
        path = root / f"s{k}.png"
        mask = phantom.mask(MASK_MPP, canvas_transform(SIZE, 5.0 * k, (10.0 * k, 0.0)))
        Image.fromarray(mask.astype(np.uint8) * 255).save(path)
        sections.append(SectionInput(k, f"s{k}", path, MASK_MPP))
    if not trace:  # the first run imports Open3D, zarr, SciPy: not the block's memory
        run_reconstruction(sections, root / "out", params=PARAMS, block="mem")
        return 0.0
    tracemalloc.start()
    try:
        summary = run_reconstruction(sections, root / "out", params=PARAMS, block="mem")
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert summary["sections_registered"] == n
    return peak / 1e6


def test_peak_memory_does_not_grow_with_the_block(tmp_path) -> None:
    for name in "wab":
        (tmp_path / name).mkdir()
    _peak(tmp_path / "w", 2, trace=False)
    small, large = _peak(tmp_path / "a", 4), _peak(tmp_path / "b", 12)
    print(f"peak traced memory: 4 sections {small:.1f} MB, 12 sections {large:.1f} MB")
    assert large <= 1.5 * small
