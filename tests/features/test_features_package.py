"""Stage `features`: the package's structure -- one family table, one registry, one
pixel grouping shared by the families, families that import only shared modules --
and the stage's parameters on the command line."""

from __future__ import annotations

import argparse
import ast
from pathlib import Path

import numpy as np
import pytest

from pathpipe.errors import ConfigError
from pathpipe.features import pixels
from pathpipe.features.registry import FAMILIES, NucleusBatch
from pathpipe.features.run import FeatureParams, family_modules, feature_specs
from pathpipe.params import add_options, params_from_args

SRC = Path(__file__).resolve().parents[2] / "src" / "pathpipe" / "features"


def test_family_table_lists_the_registry_families_in_order() -> None:
    modules = family_modules()
    assert list(modules) == list(FAMILIES)
    specs = feature_specs()
    for name, module in modules.items():
        assert module.FAMILY == name
        assert callable(module.compute) and callable(module.feature_specs)
        own = module.feature_specs(("h", "grey"))
        assert own and {s.family for s in own} == {name}
        assert [s.name for s in specs if s.family == name] == [s.name for s in own]


def _family_files() -> dict[str, list[Path]]:
    files = {name: [SRC / f"{name}.py"] for name in FAMILIES if name != "texture"}
    files["texture"] = sorted((SRC / "texture").glob("*.py"))
    return files


def _imported_modules(path: Path) -> set[str]:
    out = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom) and node.module:
            out.add(node.module)
            out.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return out


def test_families_import_shared_modules_not_each_other() -> None:
    files = _family_files()
    for name, paths in files.items():
        others = {f"pathpipe.features.{o}" for o in FAMILIES if o != name}
        for path in paths:
            imported = _imported_modules(path)
            reached = {m for m in imported for o in others if m == o or m.startswith(o + ".")}
            assert not reached, f"{path.name} ({name}) imports {sorted(reached)}"


def test_one_pixel_grouping_per_tile_for_all_families(monkeypatch) -> None:
    calls = []
    group = pixels._group

    def counting(batch):
        calls.append(1)
        return group(batch)

    monkeypatch.setattr(pixels, "_group", counting)
    pixels._LAST.clear()
    rng = np.random.default_rng(1)
    labels = np.zeros((32, 32), np.int32)
    labels[4:12, 5:14] = 1
    labels[18:28, 16:25] = 2
    channels = {"h": rng.uniform(0, 50, labels.shape), "grey": rng.uniform(0, 255, labels.shape)}
    batch = NucleusBatch(labels=labels, ids=np.array([1, 2]), channels=channels, mpp=0.5)
    settings = {"bin_width": {"h": 10.0, "grey": 8.0}}
    for name, module in family_modules().items():
        out = module.compute(batch, **(settings if name in ("intensity", "texture") else {}))
        assert all(v.shape == (2,) for v in out.values())
    assert len(calls) == 1


def _parse(argv: list[str]) -> FeatureParams:
    parser = argparse.ArgumentParser()
    add_options(parser, FeatureParams)
    return params_from_args(FeatureParams, parser.parse_args(argv))


def test_command_line_options_are_the_parameters() -> None:
    assert _parse([]) == FeatureParams()
    got = _parse(
        ["--families", "geometry,texture", "--bin-count", "h=16", "--bin-width", "grey=4",
         "--per-phenotype", "tumour", "--aggregate-border-nuclei", "--graph", "delaunay",
         "--graph-k", "3", "--workers", "2"]
    )  # fmt: skip
    assert got == FeatureParams(
        families=("geometry", "texture"), bin_count={"h": 16}, bin_width={"grey": 4.0},
        per_phenotype=("tumour",), aggregate_border_nuclei=True, graph="delaunay",
        graph_k=3, workers=2,
    )  # fmt: skip
    assert isinstance(got.bin_count["h"], int)
    with pytest.raises(SystemExit):
        _parse(["--bin-count", "h=2.5"])
    with pytest.raises(SystemExit):
        _parse(["--graph", "mst"])


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"families": ()}, r"features\.families=\[\]"),
        ({"channels": ("h", "red")}, r"features\.channels="),
        ({"bin_count": {"h": 2.5}}, r"features\.bin_count=.*integers >= 1"),
        ({"bin_width": {"h": -1.0, "grey": 8.0}}, r"features\.bin_width="),
        ({"graph_k": 0}, r"features\.graph_k=0"),
        ({"workers": 0}, r"features\.workers=0"),
    ],
)
def test_bad_parameters_name_the_key(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        FeatureParams(**kwargs)
