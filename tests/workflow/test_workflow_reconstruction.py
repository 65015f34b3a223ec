"""The reconstruction stage in the workflow: which jobs a sheet with blocks schedules.

Dry runs (``snakemake -n``) only, on empty slide files (a dry run opens none), so
these are quick; the full demo run (``scripts/demo.sh``) runs the rules for real.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

pytestmark = pytest.mark.workflow

REPO = Path(__file__).resolve().parents[2]
BLOCK_FILES = (
    "registration.tsv", "transforms.json", "points.ply", "volume.zarr", "mesh.ply",
    "summary.json", "figures/pairs.png", "figures/slices.png", "figures/view3d.png",
    "viewer.html", "cells.parquet",
)  # fmt: skip
RULES = {"reconstruction", "reconstruction_figures", "reconstruction_cells"}


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def _workdir(tmp_path: Path, rows: list[dict], **reconstruction) -> Path:
    """slides.tsv (rows; every path an empty file) and config.yaml (mil off) in tmp_path."""
    tmp_path.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["\t".join(columns)] + ["\t".join(str(r.get(c, "")) for c in columns) for r in rows]
    (tmp_path / "slides.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    for row in rows:
        (tmp_path / row["path"]).touch()
    config = yaml.safe_load((REPO / "config" / "config.yaml").read_text(encoding="utf-8"))
    config["slides"] = "slides.tsv"
    config["mil"]["enabled"] = False
    config["reconstruction"].update(reconstruction)
    (tmp_path / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return tmp_path


def _dry_run(workdir: Path) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    cmd += ["--cores", "2", "--dry-run", "--printshellcmds"]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=300, check=False)
    return proc.returncode, proc.stdout + proc.stderr


def _jobs(output: str) -> dict[str, list[str]]:
    """rule -> the text of each of its jobs in a dry run's listing."""
    jobs: dict[str, list[str]] = {}
    for text in re.split(r"^(?=(?:local)?rule \w+:$)", output, flags=re.MULTILINE):
        head = re.match(r"(?:local)?rule (\w+):$", text, flags=re.MULTILINE)
        if head:
            jobs.setdefault(head.group(1), []).append(text)
    return jobs


def _block(text: str) -> str | None:
    match = re.search(r"^\s+wildcards: block=(\S+)$", text, flags=re.MULTILINE)
    return match.group(1) if match else None


SHEET = [
    {"slide_id": "b1_s0", "path": "b1_s0.tiff", "block": "b1", "section": 0},
    {"slide_id": "b1_s1", "path": "b1_s1.tiff", "block": "b1", "section": 1},
    {"slide_id": "b1_s3", "path": "b1_s3.tiff", "block": "b1", "section": 3},
    {"slide_id": "b2_s0", "path": "b2_s0.tiff", "block": "b2", "section": 0},
    {"slide_id": "b2_s1", "path": "b2_s1.tiff", "block": "b2", "section": 1},
    {"slide_id": "loose", "path": "loose.tiff"},  # no block: not reconstructed
]


def test_one_reconstruction_job_per_block(tmp_path: Path) -> None:
    code, output = _dry_run(_workdir(tmp_path, SHEET))
    assert code == 0, output
    jobs = _jobs(output)
    for rule in RULES:
        assert sorted(_block(t) for t in jobs.get(rule, [])) == ["b1", "b2"], rule
    (b1,) = [t for t in jobs["reconstruction"] if _block(t) == "b1"]
    # Inputs: the tissue outputs of the block's slides only; outputs in its folder.
    inputs = re.search(r"^\s+input: (.*)$", b1, flags=re.MULTILINE).group(1)
    for slide in ("b1_s0", "b1_s1", "b1_s3"):
        assert f"results/{slide}/tissue.png" in inputs and f"results/{slide}/tissue.json" in inputs
    assert "b2_s0" not in inputs and "loose" not in inputs
    assert "results/reconstruction/b1/volume.zarr" in b1
    assert "logs/reconstruction/b1.log" in b1
    # The command: the block, the results folder and every option of the config block.
    command = next(line for line in b1.splitlines() if "pathpipe reconstruction run" in line)
    assert "--block b1" in command and "--out-dir results/reconstruction/b1" in command
    for option in ("--section-spacing 4.0", "--working-mpp 16.0", "--subset contour",
                   "--voxel-sizes 128.0,64.0", "--mirror-search", "--reference bottom"):  # fmt: skip
        assert option in command, option
    assert "--enabled" not in command and "--cells" not in command
    (cells,) = [t for t in jobs["reconstruction_cells"] if _block(t) == "b2"]
    assert "results/b2_s0/nuclei.parquet" in cells and "results/b1_s0" not in cells
    # `all` asks for every file of both blocks.
    (target,) = jobs["all"]
    for block in ("b1", "b2"):
        for name in BLOCK_FILES:
            assert f"results/reconstruction/{block}/{name}" in target, (block, name)


@pytest.mark.parametrize(
    "sheet",
    [
        [{k: v for k, v in row.items() if k not in ("block", "section")} for row in SHEET],
        [{**row, "block": "", "section": ""} for row in SHEET],
    ],
    ids=["no-block-column", "empty-blocks"],
)
def test_sheet_without_blocks_schedules_no_reconstruction(tmp_path: Path, sheet) -> None:
    code, output = _dry_run(_workdir(tmp_path, sheet))
    assert code == 0, output
    assert not RULES & set(_jobs(output)), output
    assert "results/reconstruction" not in output


def test_disabled_stage_and_cells_flag(tmp_path: Path) -> None:
    code, output = _dry_run(_workdir(tmp_path / "off", SHEET, enabled=False))
    assert code == 0, output
    assert not RULES & set(_jobs(output))

    code, output = _dry_run(_workdir(tmp_path / "nocells", SHEET, cells=False))
    assert code == 0, output
    jobs = _jobs(output)
    assert "reconstruction_cells" not in jobs and len(jobs["reconstruction"]) == 2
    assert "cells.parquet" not in output


def test_slide_named_reconstruction_is_rejected(tmp_path: Path) -> None:
    rows = [*SHEET, {"slide_id": "reconstruction", "path": "r.tiff"}]
    code, output = _dry_run(_workdir(tmp_path, rows))
    assert code != 0
    assert "reconstruction" in output and "should not be valid" in output


def test_phenotype_mask_waits_for_the_nuclei_tables(tmp_path: Path) -> None:
    code, output = _dry_run(_workdir(tmp_path, SHEET, mask="phenotype:tumour"))
    assert code == 0, output
    (b1,) = [t for t in _jobs(output)["reconstruction"] if _block(t) == "b1"]
    inputs = re.search(r"^\s+input: (.*)$", b1, flags=re.MULTILINE).group(1)
    assert "results/b1_s0/nuclei.parquet" in inputs and "results/b1_s0/tissue.png" in inputs
    assert "--mask phenotype:tumour" in b1


def test_annotation_mask_waits_for_the_annotation_files(tmp_path: Path) -> None:
    rows = [
        {**row, "annotations": f"{row['slide_id']}.geojson"} if row.get("block") == "b1" else row
        for row in SHEET
    ]
    workdir = _workdir(tmp_path, rows, mask="annotation:tumour")
    for row in rows[:3]:
        (workdir / row["annotations"]).write_text('{"type": "FeatureCollection", "features": []}')
    code, output = _dry_run(workdir)
    assert code == 0, output
    jobs = {_block(t): t for t in _jobs(output)["reconstruction"]}
    inputs = re.search(r"^\s+input: (.*)$", jobs["b1"], flags=re.MULTILINE).group(1)
    assert all(f"b1_s{k}.geojson" in inputs for k in (0, 1, 3))
    assert "geojson" not in re.search(r"^\s+input: (.*)$", jobs["b2"], flags=re.MULTILINE).group(1)
    assert "--mask annotation:tumour" in jobs["b1"]


# ---- a real run of the block's rules and the report ------------------------------------


def _snakemake(workdir: Path, *args: str) -> tuple[int, str]:
    cmd = [sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile")]
    cmd += ["--directory", str(workdir), "--configfile", str(workdir / "config.yaml")]
    cmd += ["--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, check=False)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.mark.slow
def test_block_rules_run_and_the_report_shows_them(tmp_path: Path) -> None:
    """tissue -> reconstruction -> figures on a small generated block, then the report.

    Only the block's reconstruction files are asked for (the other stages are covered by
    test_workflow.py), with cells off (its command comes with the cells work).
    """
    from pathpipe.synthetic.serial import write_serial_block
    from pathpipe.synthetic.serial_spec import SerialBlockSpec

    spec = SerialBlockSpec(block="blk", sections=5, spacing_um=4.0, size=512, mpp=4.0, seed=1)
    sheet = write_serial_block(tmp_path / "slides", spec, workers=1)
    rows = [
        {"slide_id": r.slide_id, "path": Path(r.path).relative_to(tmp_path), "block": "blk",
         "section": int(r.section)}
        for r in sheet.itertuples()
    ]  # fmt: skip
    workdir = _workdir(tmp_path, rows, cells=False)
    targets = [f"results/reconstruction/blk/{name}" for name in BLOCK_FILES[:-1]]
    code, output = _snakemake(workdir, *targets)
    assert code == 0, output
    for target in targets:
        assert (workdir / target).exists(), target
    assert (workdir / "logs" / "reconstruction" / "blk.log").is_file()
    assert (workdir / "logs" / "benchmarks" / "reconstruction" / "blk_figures.tsv").is_file()

    code, output = _snakemake(workdir, *targets, "--report", "report.html")  # their DAG only
    assert code == 0, output
    # The captions are valid reStructuredText; workflow.rst links categories this partial
    # report lacks (the full run's report has them: test_workflow.py).
    errors = re.findall(r"\(ERROR/\d\) (.*)", output)
    absent = {"tiling", "segmentation", "features", "provenance"}
    assert all(re.fullmatch(r'Unknown target name: "(\w+)"\.', e) for e in errors), errors
    assert {re.search(r'"(\w+)"', e).group(1) for e in errors} <= absent, errors
    html = (workdir / "report.html").read_text(encoding="utf-8")
    for name in ("registration.tsv", "figures/pairs.png", "figures/slices.png",
                 "figures/view3d.png", "viewer.html"):  # fmt: skip
        assert f"results/reconstruction/blk/{name}" in html, name
    assert "reconstruction" in html
