"""Nuclear intensity + texture features: pathpipe's vectorised extractor vs PyRadiomics.

On real nuclei (the 640 NuCLS nuclei of ``tests/data/nucls``, optionally plus
nuclei of generated tiles), in one run:

1. **PyRadiomics** — the loop a user would write: per nucleus, crop the tile to
   the nucleus' bounding box plus 1 px, build SimpleITK image and mask with
   spacing (mpp, mpp), and call ``RadiomicsFeatureExtractor.execute`` with the
   2D feature classes firstorder, GLCM, GLDM, GLRLM, GLSZM and shape2D (97
   features; one extractor built once, ``binWidth`` 25). It is timed twice: all
   six classes, and without shape2D (88 features, exactly the ones pathpipe's
   intensity and texture families share with it).
2. **pathpipe** — ``pathpipe.features.intensity.compute`` +
   ``pathpipe.features.texture.family.compute``
   per tile (all nuclei of the tile at once), same channel and settings: the 88
   shared features. Numba kernels are compiled (or loaded from cache) before
   timing.

The channel is grey = 0.299 R + 0.587 G + 0.114 B on 0-255, as the features
stage uses it. The PyRadiomics images are 2D, so ``force2D`` stays False: with a
2D image PyRadiomics' ``force2D=True`` would drop the row axis and keep only
the horizontal GLCM/GLRLM direction. Both sides see the same float64 arrays,
and the run checks that their 88 values agree.

Prints CPU and wall ms/nucleus (CPU time is the steadier on a shared
machine) and the ratios and writes ``benchmarks/out/features.json``.

    python benchmarks/bench_features.py                 # NuCLS nuclei only
    python benchmarks/bench_features.py --synthetic 20  # plus 20 generated tiles
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
import warnings
from pathlib import Path

import numpy as np

from machine import describe

REPO = Path(__file__).resolve().parents[1]
OUT = REPO / "benchmarks" / "out"
PYRADIOMICS_CLASSES = ("firstorder", "glcm", "gldm", "glrlm", "glszm")


def machine() -> str:
    return describe()


def load_tiles(n_synthetic: int) -> list[tuple[str, np.ndarray, np.ndarray, float]]:
    """``(name, grey, labels, mpp)`` of the NuCLS tiles and ``n_synthetic`` generated ones."""
    from pathpipe.segmentation.annotations import read_annotated_dir
    from pathpipe.synthetic.tiles import synthetic_annotated_tiles

    def grey(rgb: np.ndarray) -> np.ndarray:
        return rgb.astype(np.float64) @ np.array([0.299, 0.587, 0.114])

    ds = read_annotated_dir(REPO / "tests" / "data" / "nucls")
    out = [(t.name, grey(t.rgb), t.inst_map.astype(np.int32), float(ds.mpp)) for t in ds.tiles]
    if n_synthetic:
        for t in synthetic_annotated_tiles(n_tiles=n_synthetic, mpp=0.25, seed=1):
            out.append((t.name, grey(t.rgb), t.inst_map.astype(np.int32), 0.25))
    return out


def run_pyradiomics(tiles, *, shape: bool) -> tuple[float, float, int, dict]:
    """CPU and wall seconds, nuclei and ``{(tile, label): features}`` of the per-nucleus loop."""
    import SimpleITK as sitk
    from radiomics import featureextractor

    logging.getLogger("radiomics").setLevel(logging.ERROR)
    ex = featureextractor.RadiomicsFeatureExtractor(binWidth=25, label=1)
    ex.disableAllFeatures()
    for name in PYRADIOMICS_CLASSES + (("shape2D",) if shape else ()):
        ex.enableFeatureClassByName(name)
    values: dict = {}
    n = 0
    cpu0, t0 = time.process_time(), time.perf_counter()
    for name, img, labels, mpp in tiles:
        for lab in np.unique(labels)[1:]:
            rr, cc = np.nonzero(labels == lab)
            if rr.min() == rr.max() or cc.min() == cc.max():  # PyRadiomics refuses 0-D/1-D masks
                continue
            r0, c0 = max(rr.min() - 1, 0), max(cc.min() - 1, 0)
            r1, c1 = rr.max() + 2, cc.max() + 2
            image = sitk.GetImageFromArray(img[r0:r1, c0:c1])
            mask = sitk.GetImageFromArray((labels[r0:r1, c0:c1] == lab).astype(np.uint8))
            image.SetSpacing((mpp, mpp))
            mask.SetSpacing((mpp, mpp))
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                values[name, int(lab)] = ex.execute(image, mask)
            n += 1
    return time.process_time() - cpu0, time.perf_counter() - t0, n, values


def run_pathpipe(tiles, repeats: int) -> tuple[float, float, int, dict]:
    """Best-of-``repeats`` CPU and wall seconds, nuclei and ``{(tile, label): features}``."""
    from pathpipe.features import intensity as _features_intensity
    from pathpipe.features.registry import NucleusBatch
    from pathpipe.features.texture import family as _features_texture

    batches = [
        (
            name,
            NucleusBatch(labels=labels, ids=np.unique(labels)[1:], channels={"grey": img}, mpp=mpp),
        )
        for name, img, labels, mpp in tiles
    ]
    settings = {"bin_width": {"grey": 25.0}}
    _features_texture.compute(batches[0][1], **settings)  # compile / load numba kernels
    best_cpu = best_wall = np.inf
    for _ in range(repeats):
        c0, t0 = time.process_time(), time.perf_counter()
        results = [
            (
                name,
                b,
                {
                    **_features_intensity.compute(b, **settings),
                    **_features_texture.compute(b, **settings),
                },
            )
            for name, b in batches
        ]
        best_cpu = min(best_cpu, time.process_time() - c0)
        best_wall = min(best_wall, time.perf_counter() - t0)
    values = {}
    for name, b, res in results:
        for k, lab in enumerate(b.ids):
            values[name, int(lab)] = {key: v[k] for key, v in res.items()}
    return best_cpu, best_wall, sum(b.ids.size for _, b in batches), values


def max_rel_error(ours: dict, ref: dict) -> tuple[float, int]:
    """Largest relative difference (floor 1e-9) over the shared features and nuclei compared."""
    from pathpipe.features import intensity as _features_intensity
    from pathpipe.features.texture import family as _features_texture

    specs = _features_intensity.feature_specs(["grey"]) + _features_texture.feature_specs(["grey"])
    worst = 0.0
    for key, r in ref.items():
        for s in specs:
            a, b = float(ours[key][s.name]), float(r[s.pyradiomics])
            if np.isnan(a) and np.isnan(b):
                continue
            worst = max(worst, abs(a - b) / max(abs(b), 1e-9))
    return worst, len(specs)


def main() -> None:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--synthetic", type=int, default=0, help="generated tiles to add (0.25 µm/px)")
    ap.add_argument("--repeats", type=int, default=5, help="pathpipe repetitions (best is kept)")
    args = ap.parse_args()

    tiles = load_tiles(args.synthetic)
    print(f"machine: {machine()}")
    print(f"tiles: {len(tiles)}, nuclei: {sum(np.unique(t[2]).size - 1 for t in tiles)}")

    cpu_pp, wall_pp, n_pp, ours = run_pathpipe(tiles, args.repeats)
    cpu_full, wall_full, n_full, _ = run_pyradiomics(tiles, shape=True)
    cpu_shared, wall_shared, n_shared, ref = run_pyradiomics(tiles, shape=False)
    err, n_features = max_rel_error(ours, ref)

    ms = {  # (CPU, wall) ms per nucleus
        "pyradiomics_97": (1e3 * cpu_full / n_full, 1e3 * wall_full / n_full),
        "pyradiomics_shared": (1e3 * cpu_shared / n_shared, 1e3 * wall_shared / n_shared),
        "pathpipe": (1e3 * cpu_pp / n_pp, 1e3 * wall_pp / n_pp),
    }
    labels = {
        "pyradiomics_97": "PyRadiomics, 97 features (with shape2D)",
        "pyradiomics_shared": f"PyRadiomics, the {n_features} shared features",
        "pathpipe": f"pathpipe intensity + texture ({n_features} features)",
    }
    nuclei = {"pyradiomics_97": n_full, "pyradiomics_shared": n_shared, "pathpipe": n_pp}
    print(f"\n{'method':52s} {'CPU ms/nucleus':>15s} {'wall ms/nucleus':>16s} {'nuclei':>7s}")
    for key, label in labels.items():
        print(f"{label:52s} {ms[key][0]:15.3f} {ms[key][1]:16.3f} {nuclei[key]:7d}")
    speedup = {
        f"vs_{key[12:]}": (ms[key][0] / ms["pathpipe"][0], ms[key][1] / ms["pathpipe"][1])
        for key in ("pyradiomics_97", "pyradiomics_shared")
    }
    print(
        f"\nspeed-up (CPU, wall) vs PyRadiomics 97 features:     "
        f"{speedup['vs_97'][0]:6.1f}x {speedup['vs_97'][1]:6.1f}x"
    )
    print(
        f"speed-up (CPU, wall) vs PyRadiomics shared features: "
        f"{speedup['vs_shared'][0]:6.1f}x {speedup['vs_shared'][1]:6.1f}x"
    )
    print(f"largest relative difference, {n_features} features x {len(ref)} nuclei: {err:.1e}")

    OUT.mkdir(parents=True, exist_ok=True)
    record = {
        "machine": machine(),
        "tiles": len(tiles),
        "ms_per_nucleus_cpu_wall": ms,
        "nuclei": nuclei,
        "speedup_cpu_wall": speedup,
        "max_rel_error": err,
    }
    (OUT / "features.json").write_text(json.dumps(record, indent=2))


if __name__ == "__main__":
    sys.exit(main())
