"""The workflow's JSON schemas, config/config.yaml and config/slides.tsv.

Fast checks without running Snakemake: the schemas are strict (unknown keys are
errors at every level, every property is described), the shipped config and sheet
validate, the schema defaults equal the shipped config and the CLI defaults, and
every config key carries a comment.
"""

from __future__ import annotations

import copy
import re
from pathlib import Path

import pandas as pd
import pytest
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate

REPO = Path(__file__).resolve().parents[2]
CONFIG_SCHEMA = REPO / "workflow" / "schemas" / "config.schema.yaml"
SLIDES_SCHEMA = REPO / "workflow" / "schemas" / "slides.schema.yaml"
CONFIG = REPO / "config" / "config.yaml"
SHEET = REPO / "config" / "slides.tsv"


def _load(path: Path) -> dict:
    with open(path, encoding="utf-8") as f:
        return yaml.safe_load(f)


def _validate_config(config: dict) -> dict:
    """Validate a copy of config as the Snakefile does; return it with defaults filled."""
    config = copy.deepcopy(config)
    validate(config, str(CONFIG_SCHEMA))
    return config


def _objects(schema: dict, where: str = "$"):
    """Yield (location, subschema) for every object-typed subschema."""
    if schema.get("type") == "object":
        yield where, schema
    for name, sub in schema.get("properties", {}).items():
        yield from _objects(sub, f"{where}.{name}")


def _properties(schema: dict, where: str = "$"):
    for name, sub in schema.get("properties", {}).items():
        yield f"{where}.{name}", sub
        yield from _properties(sub, f"{where}.{name}")


@pytest.mark.parametrize("schema_path", [CONFIG_SCHEMA, SLIDES_SCHEMA], ids=lambda p: p.name)
def test_schema_is_strict_and_described(schema_path: Path) -> None:
    schema = _load(schema_path)
    assert schema["$schema"] == "https://json-schema.org/draft/2020-12/schema"
    for where, sub in _objects(schema):
        assert sub.get("additionalProperties") is False, (
            f"{where}: additionalProperties is not false"
        )
    for where, sub in _properties(schema):
        assert sub.get("description"), f"{where} has no description"


def test_config_schema_has_a_default_for_every_key() -> None:
    for where, sub in _properties(_load(CONFIG_SCHEMA)):
        if where.startswith("$.features.bin_count."):
            continue  # a bin count set for a channel switches it from bin width: no default
        assert "default" in sub, f"{where} has no default"


def test_shipped_config_validates_and_equals_schema_defaults() -> None:
    shipped = _load(CONFIG)
    assert _validate_config(shipped) == shipped
    assert _validate_config({}) == shipped, "schema defaults differ from config/config.yaml"


def test_every_config_key_has_a_comment() -> None:
    lines = CONFIG.read_text(encoding="utf-8").splitlines()
    uncommented = []
    for i, line in enumerate(lines):
        match = re.match(r"^\s*([A-Za-z_][A-Za-z0-9_]*):", line)
        if not match:
            continue
        previous = next((p.strip() for p in reversed(lines[:i]) if p.strip()), "")
        if "#" not in line and not previous.startswith("#"):
            uncommented.append(f"line {i + 1}: {match.group(1)}")
    assert not uncommented, f"config keys without a comment: {uncommented}"


@pytest.mark.parametrize(
    ("patch", "key"),
    [
        ({"tilling": {}}, "tilling"),
        ({"tiling": {"tile_sise": 128}}, "tile_sise"),
        ({"tissue": {"median": 3}}, "median"),
        ({"slide": {"backend": "auto", "mmp": 0.5}}, "mmp"),
    ],
)
def test_unknown_config_key_is_named(patch: dict, key: str) -> None:
    with pytest.raises(WorkflowError, match=f"'{key}' was unexpected"):
        _validate_config(patch)


@pytest.mark.parametrize(
    "patch",
    [
        {"slide": {"backend": "bioformats"}},
        {"slide": {"mpp": 0}},
        {"tissue": {"threshold": "triangle"}},
        {"tissue": {"threshold": 1.5}},
        {"tiling": {"tile_size": 0}},
        {"tiling": {"min_tissue_fraction": 2}},
        {"tiling": {"max_tiles": 0}},
        {"tiling": {"workers": "many"}},
        {"seed": -1},
    ],
)
def test_bad_config_values_are_rejected(patch: dict) -> None:
    with pytest.raises(WorkflowError):
        _validate_config(patch)


def test_config_accepts_cellfinet_setting_and_fixed_threshold() -> None:
    config = _validate_config(
        {"tiling": {"mpp": 0.25, "tile_size": 1024, "max_tiles": 30}, "tissue": {"threshold": 0.08}}
    )
    assert config["tiling"]["max_tiles"] == 30
    assert config["tiling"]["overlap"] == 0  # default filled in
    assert config["tissue"]["threshold"] == 0.08


def test_shipped_sheet_validates() -> None:
    known = list(_load(SLIDES_SCHEMA)["properties"])
    sheet = pd.read_csv(SHEET, sep="\t", dtype=str, keep_default_na=False, na_values=[""])
    assert set(sheet.columns) <= set(known)
    sheet["mpp"] = sheet["mpp"].astype(float)
    sheet["section"] = pd.to_numeric(sheet["section"]).astype("Int64")
    validate(sheet, str(SLIDES_SCHEMA))
    assert sheet["slide_id"].is_unique
    generated = sheet["path"].str.startswith(("resources/demo/", "resources/demo_block/"))
    real = sheet[~generated]
    for path in real["path"]:
        assert (REPO / path).is_file(), f"{path} is listed in config/slides.tsv but not in the repo"
    synthetic = sheet[sheet["path"].str.startswith("resources/demo/")]
    assert sorted(synthetic["slide_id"]) == sorted(
        f"synth_{cls}_{n:02d}" for cls in ("low", "high") for n in range(1, 7)
    )
    assert (synthetic["label"] == synthetic["slide_id"].str.split("_").str[1]).all()
    # The demo block (scripts/demo.sh: 8 sections, section 6 lost): unlabelled, in order.
    block = sheet[sheet["path"].str.startswith("resources/demo_block/")]
    assert set(block["block"]) == {"demo_block"} and block["label"].isna().all()
    assert list(block["section"]) == [0, 1, 2, 3, 4, 5, 7]
    assert list(block["slide_id"]) == [f"demo_block_s{int(n):02d}" for n in block["section"]]
    assert sheet.loc[~sheet["path"].str.startswith("resources/demo_block/"), "block"].isna().all()


@pytest.mark.parametrize(
    ("row", "message"),
    [
        ({"slide_id": "bad id!", "path": "a.svs"}, "does not match"),
        ({"slide_id": "cohort", "path": "a.svs"}, "should not be valid"),
        ({"slide_id": "reconstruction", "path": "a.svs"}, "should not be valid"),
        ({"slide_id": "a", "path": "a.svs", "block": "b 1"}, "does not match"),
        ({"slide_id": "a", "path": "a.svs", "split": "training"}, "is not one of"),
        ({"slide_id": "a", "path": "a.svs", "mpp": 0.0}, "less than or equal"),
        ({"slide_id": "a", "path": "a.svs", "section": 1.5}, "is not of type 'integer'"),
        ({"slide_id": "a", "path": "a.svs", "scanner": "x"}, "'scanner' was unexpected"),
        ({"slide_id": "a"}, "'path' is a required property"),
    ],
)
def test_bad_sheet_rows_are_rejected(row: dict, message: str) -> None:
    with pytest.raises(WorkflowError, match=message):
        validate(pd.DataFrame([row]), str(SLIDES_SCHEMA))


@pytest.mark.slow
def test_demo_sheet_rows_match_the_synthetic_cohort(tmp_path: Path) -> None:
    """The sheet's synthetic rows name exactly the files `pathpipe synthetic cohort` writes."""
    synthetic = pytest.importorskip("pathpipe.synthetic.generate")
    generated = synthetic.write_cohort(tmp_path, n_per_class=6, size=1024, seed=0)
    sheet = pd.read_csv(SHEET, sep="\t", dtype=str, keep_default_na=False)
    demo = sheet[sheet["path"].str.startswith("resources/demo/")]
    assert sorted(Path(p).name for p in demo["path"]) == sorted(
        Path(p).name for p in generated["path"]
    )
    assert sorted(zip(demo["slide_id"], demo["label"], strict=True)) == sorted(
        zip(generated["slide_id"], generated["label"], strict=True)
    )


@pytest.mark.slow
def test_demo_sheet_block_rows_match_the_synthetic_block(tmp_path: Path) -> None:
    """The sheet's block rows are what scripts/demo.sh's `pathpipe synthetic serial` writes."""
    serial = pytest.importorskip("pathpipe.synthetic.serial")
    from pathpipe.synthetic.serial_spec import SerialBlockSpec

    demo = (REPO / "scripts" / "demo.sh").read_text(encoding="utf-8")
    for option in ("--block demo_block", "--sections 8", "--spacing-um 4", "--seed 0"):
        assert option in demo, option
    # The lost section and the slide ids depend on the seed and the count, not the size.
    spec = SerialBlockSpec(
        block="demo_block", sections=8, spacing_um=4.0, size=512, mpp=4.0, seed=0
    )
    generated = serial.write_serial_block(tmp_path / "demo_block", spec, workers=1)
    sheet = pd.read_csv(SHEET, sep="\t", dtype=str, keep_default_na=False)
    rows = sheet[sheet["block"] == "demo_block"]
    assert list(rows["slide_id"]) == list(generated["slide_id"])
    assert list(rows["section"].astype(int)) == list(generated["section"].astype(int))
    assert [Path(p).name for p in rows["path"]] == [Path(p).name for p in generated["path"]]
