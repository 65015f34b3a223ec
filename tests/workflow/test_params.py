"""One source per parameter: the config schema and the CLI agree with each stage's dataclass.

Every parameter dataclass declares its fields with :func:`pathpipe.params.param`
(default, bounds, help). These tests fail when ``workflow/schemas/config.schema.yaml``
disagrees with a dataclass on a default, a type, a bound or the allowed values,
when a config key has no field (or is not listed as workflow-only below), when a
field has no config key (so a new parameter cannot miss the workflow), and when
a generated command-line option does not default to the field's default.
"""

from __future__ import annotations

import argparse
import dataclasses
import importlib
from pathlib import Path

import pytest
import yaml

from pathpipe.errors import ConfigError
from pathpipe.params import add_options, check_params, param, params_from_args, schema_properties

REPO = Path(__file__).resolve().parents[2]
SCHEMA = yaml.safe_load((REPO / "workflow" / "schemas" / "config.schema.yaml").read_text())

# config block (path in config.yaml) -> (module, dataclass, keys of the block the
# workflow reads itself: nested blocks, paths, and `workers`, which is the rule's
# threads in the config and the CPU count on the command line)
BLOCKS = {
    ("tissue",): ("pathpipe.tissue", "TissueParams", ()),
    ("tiling",): ("pathpipe.tiling.params", "TilingParams", ("workers",)),
    ("segmentation",): (
        "pathpipe.segmentation.params",
        "SegmentationParams",
        ("classical", "workers"),
    ),
    ("segmentation", "classical"): ("pathpipe.segmentation.classical", "ClassicalParams", ()),
    ("features",): ("pathpipe.features.params", "FeatureParams", ("workers",)),
    ("mil",): (
        "pathpipe.mil.params",
        "MILParams",
        ("enabled", "embeddings", "preprocessing", "explain", "heatmap"),
    ),
    ("mil", "preprocessing"): ("pathpipe.mil.preprocessing", "PreprocessingParams", ()),
    ("mil", "explain"): ("pathpipe.mil.params", "ExplainParams", ()),
    ("mil", "heatmap"): ("pathpipe.mil.params", "HeatmapParams", ()),
    ("reconstruction",): (
        "pathpipe.reconstruction.params",
        "ReconstructionParams",
        ("enabled", "cells"),
    ),
}

# Fields no config block sets: the workflow passes the top-level `seed` itself.
NOT_IN_BLOCK = {"seed"}

# The keys the comparison reads; descriptions are free text.
COMPARED = (
    "type",
    "default",
    "minimum",
    "maximum",
    "exclusiveMinimum",
    "exclusiveMaximum",
    "enum",
    "items",
    "oneOf",
    "additionalProperties",
    "properties",
)


def _schema_block(path: tuple[str, ...]) -> dict:
    node = SCHEMA
    for key in path:
        node = node["properties"][key]
    return node["properties"]


def _cls(path: tuple[str, ...]) -> type:
    module, name, _ = BLOCKS[path]
    return getattr(importlib.import_module(module), name)


def _comparable(prop: dict) -> dict:
    out = {}
    for key in COMPARED:
        if key not in prop:
            continue
        value = prop[key]
        if key == "oneOf":
            value = [_comparable(p) for p in value]
        elif key == "properties":
            value = {k: _comparable(v) for k, v in value.items()}
        elif key in ("items", "additionalProperties") and isinstance(value, dict):
            value = _comparable(value)
        elif key == "type" and isinstance(value, list):
            value = sorted(value)
        elif isinstance(value, float) and value.is_integer() and key != "default":
            value = int(value)
        out[key] = value
    return out


@pytest.mark.parametrize("path", list(BLOCKS), ids=".".join)
def test_schema_block_equals_the_dataclass(path: tuple[str, ...]) -> None:
    cls = _cls(path)
    schema = _schema_block(path)
    derived = schema_properties(cls)
    extra = BLOCKS[path][2]
    assert set(schema) - set(extra) <= set(derived), (
        f"config keys {sorted(set(schema) - set(extra) - set(derived))} of {'.'.join(path)} "
        f"have no field in {cls.__name__}"
    )
    missing = sorted(set(derived) - set(schema) - NOT_IN_BLOCK)
    assert not missing, f"fields {missing} of {cls.__name__} have no key in {'.'.join(path)}"
    for name, prop in derived.items():
        if name not in schema or name in extra:
            continue  # a field the config does not set here (the top-level seed)
        assert _comparable(schema[name]) == _comparable(prop), f"{'.'.join(path)}.{name}"


@pytest.mark.parametrize("path", list(BLOCKS), ids=".".join)
def test_cli_options_default_to_the_dataclass(path: tuple[str, ...]) -> None:
    cls = _cls(path)
    parser = argparse.ArgumentParser()
    add_options(parser, cls)
    args = parser.parse_args([])
    built = params_from_args(cls, args)
    for f in dataclasses.fields(cls):
        if f.metadata.get("cli", False):
            assert getattr(built, f.name) == getattr(cls(), f.name), f.name


def test_shipped_config_builds_every_dataclass() -> None:
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    for path in BLOCKS:
        block = config
        for key in path:
            block = block[key]
        fields = {f.name for f in dataclasses.fields(_cls(path))} - set(BLOCKS[path][2])
        _cls(path)(**{k: v for k, v in block.items() if k in fields})


# ---- the machinery on a toy dataclass ---------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Toy:
    size: int = param(256, "edge", ge=16)
    ratio: float = param(0.5, "a fraction", ge=0, le=1)
    cap: int | None = param(None, "a cap", kind="int", ge=1)
    codec: str = param("lz4", "codec", choices=("lz4", "zstd"))
    names: tuple[str, ...] = param(("a", "b"), "names", choices=("a", "b", "c"))
    widths: dict = param({"h": 10.0}, "widths", gt=0, items=("h", "grey"))
    threshold: str | float = param("otsu", "threshold", kind="threshold", ge=0, le=1)
    fill: bool = param(True, "fill")

    def __post_init__(self) -> None:
        check_params(self, "toy")


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"size": 8}, "toy.size=8; expected an integer >= 16"),
        ({"size": 16.0}, "toy.size=16.0; expected an integer >= 16"),
        ({"ratio": 1.5}, "toy.ratio=1.5; expected a number >= 0 and <= 1"),
        ({"ratio": float("nan")}, "toy.ratio=nan"),
        ({"cap": 0}, "toy.cap=0; expected an integer >= 1, or null"),
        ({"codec": "gzip"}, "toy.codec='gzip'; expected a string (one of ['lz4', 'zstd'])"),
        ({"names": ("a", "x")}, "each one of ['a', 'b', 'c']"),
        ({"widths": {"r": 1.0}}, "with keys among ['h', 'grey']"),
        ({"widths": {"h": 0}}, "toy.widths={'h': 0}"),
        ({"threshold": "mean"}, "toy.threshold='mean'; expected 'otsu' or a number"),
        ({"fill": 1}, "toy.fill=1; expected true or false"),
    ],
)
def test_bad_values_name_the_parameter_and_the_expectation(kwargs: dict, message: str) -> None:
    with pytest.raises(ConfigError, match=message.replace("(", r"\(").replace(")", r"\)")
                       .replace("[", r"\[").replace("]", r"\]")):  # fmt: skip
        _Toy(**kwargs)


def test_good_values_are_normalised() -> None:
    toy = _Toy(ratio=1, names=["c"], cap=3, threshold=0.2)
    assert toy.ratio == 1.0 and isinstance(toy.ratio, float)
    assert toy.names == ("c",)
    assert toy.cap == 3 and toy.threshold == 0.2


def test_generated_options_parse_every_kind() -> None:
    parser = argparse.ArgumentParser()
    add_options(parser, _Toy)
    args = parser.parse_args(
        ["--size", "32", "--cap", "none", "--names", "a,c", "--widths", "h=2,grey=3.5",
         "--threshold", "0.3", "--no-fill", "--codec", "zstd"]
    )  # fmt: skip
    toy = params_from_args(_Toy, args)
    assert toy == _Toy(
        size=32, cap=None, names=("a", "c"), widths={"h": 2.0, "grey": 3.5},
        threshold=0.3, fill=False, codec="zstd",
    )  # fmt: skip
    with pytest.raises(SystemExit):
        parser.parse_args(["--codec", "gzip"])
    with pytest.raises(SystemExit):
        parser.parse_args(["--widths", "h"])


def test_schema_of_the_toy() -> None:
    props = schema_properties(_Toy)
    assert props["size"] == {"type": "integer", "minimum": 16, "default": 256}
    assert props["cap"] == {"type": ["integer", "null"], "minimum": 1, "default": None}
    assert props["names"] == {
        "type": "array",
        "items": {"type": "string", "enum": ["a", "b", "c"]},
        "default": ["a", "b"],
    }
    assert props["threshold"]["oneOf"][1] == {"type": "number", "minimum": 0, "maximum": 1}
    assert props["widths"]["additionalProperties"] is False


# ---- the workflow's side: workflow/rules/common.smk writes the options -------------------


def _cli_options():
    """``cli_options`` of common.smk, run as plain Python (it needs only shlex)."""
    import re
    import shlex

    text = (REPO / "workflow" / "rules" / "common.smk").read_text()
    source = re.search(r"^def cli_options\(.*?(?=^\S)", text, re.S | re.M).group(0)
    namespace: dict = {"shlex": shlex}
    exec(source, namespace)
    return namespace["cli_options"]


@pytest.mark.parametrize("path", list(BLOCKS), ids=".".join)
def test_workflow_options_round_trip_the_shipped_config(path: tuple[str, ...]) -> None:
    """config block -> `cli_options` -> generated parser -> the dataclass of the block."""
    import shlex

    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text())
    block = config
    for key in path:
        block = block[key]
    cls = _cls(path)
    fields = {f.name for f in dataclasses.fields(cls) if f.metadata.get("cli", False)}
    fields -= set(BLOCKS[path][2])
    parser = argparse.ArgumentParser()
    add_options(parser, cls)
    argv = shlex.split(_cli_options()({k: v for k, v in block.items() if k in fields}))
    built = params_from_args(cls, parser.parse_args(argv))
    assert built == cls(**{k: v for k, v in block.items() if k in fields})


def test_workflow_options_of_each_kind() -> None:
    options = _cli_options()(
        {"a_b": True, "c": False, "d": None, "e": ["x", "y"], "f": {"h": 10.0}, "g": "it's"}
    )
    assert options == "--a-b --no-c --d none --e x,y --f h=10.0 --g 'it'\"'\"'s'"


# ---- lists of numbers (kind "numbers") --------------------------------------------------


@dataclasses.dataclass(frozen=True, kw_only=True)
class _Sizes:
    sizes: tuple[float, ...] = param((64.0, 16.0), "sizes", gt=0)

    def __post_init__(self) -> None:
        check_params(self, "toy")


def test_numbers_kind_validates_parses_and_has_a_schema() -> None:
    import shlex

    assert _Sizes(sizes=[32, 8]).sizes == (32.0, 8.0)
    with pytest.raises(
        ConfigError,
        match=r"toy\.sizes=\(1\.0, 0\.0\); expected a non-empty list of numbers, each > 0",
    ):
        _Sizes(sizes=(1.0, 0.0))
    with pytest.raises(ConfigError, match=r"toy\.sizes=\('a',\)"):
        _Sizes(sizes=("a",))
    parser = argparse.ArgumentParser()
    add_options(parser, _Sizes)
    assert params_from_args(_Sizes, parser.parse_args(["--sizes", "128,32.5"])).sizes == (
        128.0,
        32.5,
    )
    assert "(default: 64,16)" in parser.format_help()
    with pytest.raises(SystemExit):
        parser.parse_args(["--sizes", "a,b"])
    assert schema_properties(_Sizes)["sizes"] == {
        "type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 1,
        "default": [64.0, 16.0],
    }  # fmt: skip
    # the workflow writes a list comma-separated; the parser reads it back
    options = _cli_options()({"sizes": [128.0, 32.0]})
    assert options == "--sizes 128.0,32.0"
    assert parser.parse_args(shlex.split(options)).sizes == (128.0, 32.0)
