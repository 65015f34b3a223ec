"""Stage `features`: the feature registry and dictionary, robustness on degenerate
tiles, and the path-level run on generated slides whose classes differ."""

from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from pathpipe.errors import ConfigError
from pathpipe.features.dictionary import feature_dictionary
from pathpipe.features.registry import FAMILIES
from pathpipe.features.run import (
    FeatureParams,
    feature_specs,
    nuclear_features,
    run_features,
)
from pathpipe.stain import RUIFROK_HE

REPO = Path(__file__).resolve().parents[2]


def test_at_least_200_documented_features_in_six_families() -> None:
    specs = feature_specs()
    assert len(specs) >= 200
    names = [s.name for s in specs]
    assert len(set(names)) == len(names), "duplicate feature names"
    assert {s.family for s in specs} == set(FAMILIES)
    for s in specs:
        assert re.fullmatch(r"[a-z0-9_]+", s.name), s.name
        assert s.definition.strip(), f"{s.name} has no definition"
        assert s.unit.strip(), f"{s.name} has no unit"


def test_docs_feature_dictionary_is_current() -> None:
    doc = (REPO / "docs" / "features.md").read_text(encoding="utf-8")
    assert doc == feature_dictionary() + "\n", (
        "docs/features.md is out of date: pathpipe features dictionary --out docs/features.md"
    )


def _disc(labels: np.ndarray, cy: int, cx: int, r: float, value: int) -> None:
    yy, xx = np.mgrid[: labels.shape[0], : labels.shape[1]]
    labels[(yy - cy) ** 2 + (xx - cx) ** 2 <= r * r] = value


@pytest.mark.parametrize("case", ["none", "one", "two", "one_pixel", "constant"])
def test_degenerate_tiles_give_defined_values(case: str) -> None:
    rng = np.random.default_rng(0)
    rgb = rng.integers(150, 230, (64, 64, 3), dtype=np.uint8)
    labels = np.zeros((64, 64), np.int32)
    if case in ("one", "two", "constant"):
        _disc(labels, 20, 20, 6, 1)
    if case == "two":
        _disc(labels, 44, 40, 5, 2)
    if case == "one_pixel":
        labels[10, 10] = 1
    if case == "constant":
        rgb[:] = (120, 60, 160)
    ids = np.unique(labels)[1:]
    out = nuclear_features(rgb, labels, ids, mpp=0.5, stain_matrix=RUIFROK_HE)
    assert set(out) == {s.name for s in feature_specs()}
    for name, v in out.items():
        assert v.shape == (len(ids),), name
        assert not np.isinf(v).any(), name
    if case in ("one", "two"):
        area = out[next(n for n in out if n.endswith("area_um2"))]
        assert np.all(area > 0)


def test_params_are_validated() -> None:
    with pytest.raises(ConfigError, match="families"):
        FeatureParams(families=("geometry", "colour"))
    with pytest.raises(ConfigError, match=r"bin_width\.h"):
        FeatureParams(bin_width={"grey": 8.0})
    assert FeatureParams(bin_width={"grey": 8.0}, bin_count={"h": 16}).binning() == {
        "bin_width": {"grey": 8.0},
        "bin_count": {"h": 16},
    }


@pytest.fixture(scope="module")
def segmented(tmp_path_factory: pytest.TempPathFactory):
    """A low and a high generated slide, tiled and segmented."""
    from pathpipe.segmentation.run import SegmentationParams, run_segmentation
    from pathpipe.synthetic.generate import SyntheticSlideSpec, write_slide
    from pathpipe.tiling.run import TilingParams, run_tiling
    from pathpipe.tissue import run_tissue

    out = {}
    for cls, seed in (("low", 3), ("high", 4)):
        d = tmp_path_factory.mktemp(cls)
        spec = SyntheticSlideSpec(width=2048, height=2048, slide_class=cls, seed=seed)
        path = write_slide(d / "s.tiff", spec, workers=1)
        run_tissue(path, mask_path=d / "m.png", overlay_path=d / "o.png", qc_path=d / "q.json")
        run_tiling(
            path,
            mask_path=d / "m.png",
            out_path=d / "tiles.zarr",
            params=TilingParams(max_tiles=6, workers=1),
        )
        run_segmentation(
            d / "tiles.zarr",
            labels_path=d / "nuclei.zarr",
            table_path=d / "nuclei.parquet",
            geojson_path=d / "nuclei.geojson",
            params=SegmentationParams(workers=1),
        )
        out[cls] = d
    return out


def _features(d: Path, **params) -> tuple[pd.DataFrame, pd.DataFrame, dict]:
    rec = run_features(
        d / "tiles.zarr",
        d / "nuclei.zarr",
        d / "nuclei.parquet",
        nuclear_out=d / "nuclear_features.parquet",
        tile_out=d / "tile_features.parquet",
        figure_path=d / "features.png",
        params=FeatureParams(**params),
    )
    return (
        pd.read_parquet(d / "nuclear_features.parquet"),
        pd.read_parquet(d / "tile_features.parquet"),
        rec,
    )


def test_run_features_on_generated_slides(segmented) -> None:
    results = {
        cls: _features(d, workers=2, per_phenotype=("lymphocyte",)) for cls, d in segmented.items()
    }
    for cls, (nuc, tiles, rec) in results.items():
        nuclei = pd.read_parquet(segmented[cls] / "nuclei.parquet")
        assert len(nuc) == len(nuclei) and list(nuc["nucleus_id"]) == list(nuclei["nucleus_id"])
        assert len(tiles) == 6 and list(tiles["tile"]) == list(range(6))
        assert rec["n_nuclear_features"] >= 200
        for col in ("n_nuclei", "density_per_mm2", "n_tumour", "graph_degree_mean",
                    "nn_dist_tumour_to_lymphocyte_um_mean"):  # fmt: skip
            assert col in tiles.columns, col
        med = [c for c in tiles.columns if c.endswith("_lymphocyte_med")]
        assert len(med) >= 200
        assert (segmented[cls] / "features.png").stat().st_size > 5000
        import json

        import pyarrow.parquet as pq

        for name in ("nuclear_features.parquet", "tile_features.parquet"):
            meta = pq.read_metadata(segmented[cls] / name).metadata[b"pathpipe"]
            assert json.loads(meta)["n_nuclei"] == len(nuclei), name
    # The generated classes differ as designed: "high" nuclei are larger (counts per
    # tile vary too much over 6 small tiles to compare).
    low, high = results["low"][1], results["high"][1]
    assert high["area_um2_med"].median() > 1.2 * low["area_um2_med"].median()
    assert high["perimeter_um_med"].median() > low["perimeter_um_med"].median()


def test_mismatched_inputs_are_named(segmented, tmp_path) -> None:
    from pathpipe.tiling.run import TilingParams, run_tiling

    d = segmented["low"]
    kw = {"nuclear_out": tmp_path / "n.parquet", "tile_out": tmp_path / "t.parquet"}
    with pytest.raises(ConfigError, match="per_phenotype"):
        run_features(
            d / "tiles.zarr",
            d / "nuclei.zarr",
            d / "nuclei.parquet",
            params=FeatureParams(per_phenotype=("macrophage",)),
            **kw,
        )
    other = tmp_path / "tiles4.zarr"
    run_tiling(
        d / "s.tiff", mask_path=d / "m.png", out_path=other, params=TilingParams(max_tiles=4)
    )
    with pytest.raises(ConfigError, match=r"6 label maps but .* has 4 tiles"):
        run_features(other, d / "nuclei.zarr", d / "nuclei.parquet", **kw)
    assert not (tmp_path / "n.parquet").exists()
