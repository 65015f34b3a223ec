"""End-to-end tests of the Snakemake workflow (every stage, the report and provenance).

A tiny cohort of synthetic slides (1536² px at 0.5 µm/px, 128-px tiles) is made
with ``pathpipe synthetic slide`` in a temporary directory, and Snakemake runs on
it through ``python -m snakemake`` as a user would run it. One module-scoped full
run serves the output, rerun and params tests; the failure tests use their own
directories.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

pytestmark = [pytest.mark.workflow, pytest.mark.slow]

REPO = Path(__file__).resolve().parents[2]
SNAKEFILE = REPO / "Snakefile"
SLIDE_PX = 1536
TILE_SIZE = 128
# Synthetic slides (MPP 0.5 in their metadata): slide id -> (class, seed).
SYNTHETIC = {
    "s_low_1": ("low", 1),
    "s_high_1": ("high", 2),
    "s_low_2": ("low", 3),
    "s_high_2": ("high", 4),
}
# Sheet mpp per slide in the full run: for s_low_2 it is ignored (the file's
# metadata wins); the TCGA slide has no MPP metadata, so its sheet value is used.
TCGA = "TCGA-CR-7395-01A-01-TS1"
SHEET_MPP = {"s_low_2": 0.4, TCGA: 0.2527}
SLIDES = [*SYNTHETIC, TCGA]
PER_SLIDE = (
    "tissue.png",
    "tissue_overlay.png",
    "tissue.json",
    "tiles.zarr",
    "nuclei.zarr",
    "nuclei.parquet",
    "nuclei.geojson",
    "segmentation.png",
    "segmentation.json",
    "nuclear_features.parquet",
    "tile_features.parquet",
    "features.png",
)
# Outputs of the mil stage per slide (every slide, labelled or not) and for the cohort.
MIL_PER_SLIDE = ("heatmaps/{}.png", "galleries/{}.png", "attention/{}.parquet")
MIL_COHORT = (
    "table1.tsv", "predictions.tsv", "roc.png", "metrics.json", "model/model.safetensors",
    "shap/shap_beeswarm_train.png", "shap/shap_beeswarm_test.png", "shap/shap_waterfall.png",
    "shap/shap_importance.tsv", "shap/shap_families.tsv", "shap/shap_values.parquet",
    "shap/shap_tiles.tsv",
)  # fmt: skip
PROVENANCE = ("config.yaml", "versions.tsv", "checksums.tsv", "runtimes.tsv", "runtimes_jobs.tsv")
# A mil stage small enough for 2 + 2 labelled slides: 2 folds, no test split, few epochs.
MIL_CONFIG = {
    "n_folds": 2, "test_fraction": 0.0, "epochs": 5, "rf_n_estimators": 20, "device": "cpu",
    "explain": {"n_permutations": 1, "n_background": 20, "n_waterfall": 2},
}  # fmt: skip


# ---- helpers -----------------------------------------------------------------


@dataclass
class Run:
    returncode: int
    output: str  # stdout and stderr together

    def jobs(self) -> set[tuple[str, str | None]]:
        """(rule, slide) of every job a (dry) run listed; slide is None for cohort jobs."""
        found = set()
        for block in re.split(r"^(?=(?:local)?rule \w+:$)", self.output, flags=re.MULTILINE):
            head = re.match(r"(?:local)?rule (\w+):$", block, flags=re.MULTILINE)
            if head:
                slide = re.search(r"^\s+wildcards: slide=(\S+)$", block, flags=re.MULTILINE)
                found.add((head.group(1), slide.group(1) if slide else None))
        return found


def _env() -> dict[str, str]:
    env = dict(os.environ)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def snakemake(workdir: Path, *args: str, configfile: Path | None = None) -> Run:
    """Run the repo's workflow in workdir with workdir/config.yaml (or configfile)."""
    config = configfile or workdir / "config.yaml"
    cmd = [sys.executable, "-m", "snakemake", "-s", str(SNAKEFILE), "--directory", str(workdir)]
    cmd += ["--configfile", str(config), "--cores", "2", *args]
    proc = subprocess.run(cmd, capture_output=True, text=True, env=_env(), timeout=600, check=False)
    return Run(proc.returncode, proc.stdout + proc.stderr)


def write_cohort(workdir: Path, rows: list[dict]) -> Path:
    """Write workdir/slides.tsv (rows) and workdir/config.yaml (the repo's, made small)."""
    workdir.mkdir(parents=True, exist_ok=True)
    columns = list(dict.fromkeys(key for row in rows for key in row))
    lines = ["\t".join(columns)] + ["\t".join(str(row.get(c, "")) for c in columns) for row in rows]
    (workdir / "slides.tsv").write_text("\n".join(lines) + "\n", encoding="utf-8")
    with open(REPO / "config" / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["slides"] = "slides.tsv"
    config["tiling"].update(tile_size=TILE_SIZE, workers=1)
    # The mil stage needs labels; cohorts without them run the other stages only.
    config["mil"].update(MIL_CONFIG, enabled=any(row.get("label") for row in rows))
    (workdir / "config.yaml").write_text(yaml.safe_dump(config), encoding="utf-8")
    return workdir / "config.yaml"


def outputs_of(workdir: Path, slide: str) -> list[Path]:
    return [workdir / "results" / slide / name for name in PER_SLIDE]


def mtimes(workdir: Path) -> dict[str, int]:
    return {
        str(p.relative_to(workdir)): p.stat().st_mtime_ns
        for p in sorted((workdir / "results").glob("*/*"))
    }


# ---- fixtures ----------------------------------------------------------------


@pytest.fixture(scope="module")
def slide_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """The synthetic slides, plus "corrupt": a truncated copy of one of them."""
    folder = tmp_path_factory.mktemp("slides")
    paths = {}
    for slide_id, (cls, seed) in SYNTHETIC.items():
        paths[slide_id] = folder / f"{slide_id}.tiff"
        out = ["--out", str(paths[slide_id]), "--class", cls, "--seed", str(seed)]
        size = ["--width", str(SLIDE_PX), "--height", str(SLIDE_PX), "--mpp", "0.5"]
        subprocess.run(
            ["pathpipe", "synthetic", "slide", *out, *size],
            check=True,
            env=_env(),
            capture_output=True,
            text=True,
            timeout=300,
        )
    data = paths["s_low_1"].read_bytes()
    paths["corrupt"] = folder / "corrupt.tiff"
    paths["corrupt"].write_bytes(data[: min(40_000, len(data) // 2)])
    paths[TCGA] = REPO / "resources" / "slides" / f"{TCGA}.svs"
    return paths


@pytest.fixture(scope="module")
def full_run(tmp_path_factory: pytest.TempPathFactory, slide_files: dict[str, Path]):
    """A complete run of the three good slides: (workdir, Run)."""
    workdir = tmp_path_factory.mktemp("cohort")
    rows = [
        {
            "slide_id": s,
            "path": slide_files[s],
            "label": SYNTHETIC[s][0] if s in SYNTHETIC else "",  # TCGA: unlabelled
            "mpp": SHEET_MPP.get(s, ""),
        }
        for s in SLIDES
    ]
    write_cohort(workdir, rows)
    return workdir, snakemake(workdir, "--printshellcmds")


# ---- a full run and reruns ---------------------------------------------------


def test_full_run_produces_every_output(full_run) -> None:
    workdir, run = full_run
    assert run.returncode == 0, run.output
    for slide in SLIDES:
        for path in outputs_of(workdir, slide):
            assert path.exists(), f"missing {path}"
        assert (workdir / "logs" / "tissue" / f"{slide}.log").exists()
        assert (workdir / "logs" / "benchmarks" / "tiling" / f"{slide}.tsv").exists()

    import zarr

    for slide in SLIDES:
        store = zarr.open_group(str(workdir / "results" / slide / "tiles.zarr"), mode="r")
        assert store["tiles"].shape[0] > 0, f"{slide}: no tiles"
        assert store["tiles"].shape[1:] == (TILE_SIZE, TILE_SIZE, 3)

    summary = (workdir / "results" / "cohort" / "tiling_summary.tsv").read_text().splitlines()
    assert len(summary) == 1 + len(SLIDES)

    # Segmentation: every tile has a label map; the synthetic slides' nuclei were found.
    for slide in SLIDES:
        tiles = zarr.open_group(str(workdir / "results" / slide / "tiles.zarr"), mode="r")
        labels = zarr.open_group(str(workdir / "results" / slide / "nuclei.zarr"), mode="r")
        assert labels["labels"].shape == tiles["tiles"].shape[:3]
        nuclei = pd.read_parquet(workdir / "results" / slide / "nuclei.parquet")
        geo = json.loads((workdir / "results" / slide / "nuclei.geojson").read_text())
        assert len(geo["features"]) == len(nuclei)
        if slide in SYNTHETIC:
            assert len(nuclei) > 50, slide
    seg = pd.read_csv(workdir / "results" / "cohort" / "segmentation_summary.tsv", sep="\t")
    assert list(seg["slide"]) == SLIDES

    # Features: one row per nucleus and per tile.
    for slide in SLIDES:
        nuclei = pd.read_parquet(workdir / "results" / slide / "nuclei.parquet")
        nuc = pd.read_parquet(workdir / "results" / slide / "nuclear_features.parquet")
        tiles = pd.read_parquet(workdir / "results" / slide / "tile_features.parquet")
        assert len(nuc) == len(nuclei) and nuc.shape[1] > 200
        n_tiles = zarr.open_group(str(workdir / "results" / slide / "tiles.zarr"), mode="r")
        assert len(tiles) == n_tiles["tiles"].shape[0]

    # mil: the labelled slides are the cohort; every slide gets a heatmap and gallery.
    mil = workdir / "results" / "cohort" / "mil"
    for name in MIL_COHORT:
        assert (mil / name).is_file(), f"missing {mil / name}"
    for slide in SLIDES:
        for pattern in MIL_PER_SLIDE:
            assert (mil / pattern.format(slide)).is_file(), pattern.format(slide)
    pred = pd.read_csv(mil / "predictions.tsv", sep="\t")
    assert set(pred["slide_id"]) == set(SYNTHETIC)
    table1 = pd.read_csv(mil / "table1.tsv", sep="\t")
    assert len(table1) == 2 and table1["test_auc"].isna().all()  # no test split here
    shap_values = pd.read_parquet(mil / "shap" / "shap_values.parquet")
    assert shap_values.set_index("slide_id").loc[TCGA, "role"] == "unlabelled"

    # Provenance: the config used, versions, the slides' checksums, every rule's runtime.
    prov = workdir / "results" / "cohort" / "provenance"
    for name in PROVENANCE:
        assert (prov / name).is_file(), name
    sums = pd.read_csv(prov / "checksums.tsv", sep="\t")
    assert set(SLIDES) <= set(sums["slide_id"].dropna())
    assert {"config", "sheet"} <= set(sums["kind"])
    runtimes = pd.read_csv(prov / "runtimes.tsv", sep="\t")
    assert {"tissue", "tiling", "segmentation", "features", "mil", "mil_attention"} <= set(
        runtimes["rule"]
    )
    assert yaml.safe_load((prov / "config.yaml").read_text())["mil"]["n_folds"] == 2


def test_rerun_does_nothing(full_run) -> None:
    workdir, run = full_run
    assert run.returncode == 0, run.output
    dry = snakemake(workdir, "--dry-run")
    assert dry.returncode == 0, dry.output
    assert "Nothing to be done" in dry.output
    assert dry.jobs() == set()


def test_removed_slide_output_redoes_only_that_slide(full_run) -> None:
    workdir, run = full_run
    assert run.returncode == 0, run.output
    shutil.rmtree(workdir / "results" / "s_high_1")
    before = mtimes(workdir)

    dry = snakemake(workdir, "--dry-run")
    assert dry.returncode == 0, dry.output
    # That slide's jobs, the cohort summaries and the cohort model (its input changed), so
    # every slide's heatmap; nothing else of the other slides.
    assert dry.jobs() == {
        ("tissue", "s_high_1"),
        ("tiling", "s_high_1"),
        ("segmentation", "s_high_1"),
        ("features", "s_high_1"),
        ("tiling_summary", None),
        ("segmentation_summary", None),
        ("mil", None),
        ("mil_explain", None),
        *(("mil_attention", s) for s in SLIDES),
        ("provenance", None),
        ("all", None),
    }

    rerun = snakemake(workdir)
    assert rerun.returncode == 0, rerun.output
    after = mtimes(workdir)
    for path in outputs_of(workdir, "s_high_1"):
        assert path.exists()
    unchanged = {p: t for p, t in before.items() if "cohort" not in p}
    assert unchanged and all(after[p] == t for p, t in unchanged.items())


def test_mpp_flow_and_params_change(full_run) -> None:
    """Sheet mpp -> CLI only where given; metadata wins; config slide.mpp reaches the rest."""
    workdir, run = full_run
    assert run.returncode == 0, run.output
    # The full run gave --slide-mpp (source sheet) exactly to the slides with a sheet mpp.
    flagged = [
        line
        for line in run.output.splitlines()
        if "pathpipe tissue " in line and "--slide-mpp" in line
    ]
    assert len(flagged) == len(SHEET_MPP)
    for slide, mpp in SHEET_MPP.items():
        assert any(f"--slide-mpp {mpp} --slide-mpp-source sheet" in c for c in flagged), slide
    # What the library used and recorded: metadata first, then the sheet.
    for slide, (value, source) in {
        "s_low_1": (0.5, "metadata"),
        "s_low_2": (0.5, "metadata"),
        TCGA: (0.2527, "sheet"),
    }.items():
        qc = json.loads((workdir / "results" / slide / "tissue.json").read_text())
        assert (qc["mpp"]["x"], qc["mpp"]["source"]) == pytest.approx((value, source)), slide

    # A cohort-wide slide.mpp reaches the slides without a sheet mpp, and only their
    # jobs are redone (their params changed); the others are untouched.
    with open(workdir / "config.yaml", encoding="utf-8") as f:
        config = yaml.safe_load(f)
    config["slide"]["mpp"] = 0.5
    changed = workdir / "config_slide_mpp.yaml"
    changed.write_text(yaml.safe_dump(config), encoding="utf-8")
    dry = snakemake(workdir, "--dry-run", "--printshellcmds", configfile=changed)
    assert dry.returncode == 0, dry.output
    others = [s for s in SLIDES if s not in SHEET_MPP]
    per_slide = {(rule, s) for rule, s in dry.jobs() if s is not None}
    assert per_slide == {
        (rule, s) for rule in ("tissue", "tiling", "segmentation", "features") for s in others
    } | {("mil_attention", s) for s in SLIDES}  # the cohort model is retrained
    commands = [line for line in dry.output.splitlines() if "pathpipe tissue " in line]
    assert len(commands) == len(others)
    assert all("--slide-mpp 0.5 --slide-mpp-source config" in c for c in commands)


def test_report_has_overlays_and_summary(full_run) -> None:
    workdir, run = full_run
    assert run.returncode == 0, run.output
    report = snakemake(workdir, "--report", "report.html")
    assert report.returncode == 0, report.output
    assert "ERROR/" not in report.output, report.output  # captions are valid reStructuredText
    html = (workdir / "report.html").read_text(encoding="utf-8")
    for slide in SLIDES:
        assert f"results/{slide}/tissue_overlay.png" in html
    assert "results/cohort/tiling_summary.tsv" in html
    for slide in SLIDES:
        assert f"results/{slide}/segmentation.png" in html
    assert "results/cohort/segmentation_summary.tsv" in html
    for slide in SLIDES:
        assert f"results/{slide}/features.png" in html
        assert f"results/cohort/mil/heatmaps/{slide}.png" in html
        assert f"results/cohort/mil/galleries/{slide}.png" in html
    for name in ("table1.tsv", "roc.png", "shap/shap_beeswarm_train.png",
                 "shap/shap_waterfall.png", "shap/shap_importance.tsv"):  # fmt: skip
        assert f"results/cohort/mil/{name}" in html, name
    for name in PROVENANCE:
        assert f"results/cohort/provenance/{name}" in html, name
    assert "pathpipe turns a cohort" in html  # workflow/report/workflow.rst


# ---- failures ----------------------------------------------------------------


def test_corrupt_slide_fails_alone_with_keep_going(tmp_path: Path, slide_files) -> None:
    good = ["s_low_1", "s_high_1"]
    write_cohort(tmp_path, [{"slide_id": s, "path": slide_files[s]} for s in [*good, "corrupt"]])

    run = snakemake(tmp_path, "--keep-going")
    assert run.returncode != 0, run.output
    log = (tmp_path / "logs" / "tissue" / "corrupt.log").read_text()
    assert "ERROR:" in log and "corrupt.tiff" in log, log
    assert "Traceback" not in log
    assert not (tmp_path / "results" / "corrupt" / "tissue.png").exists()
    for slide in good:
        for path in outputs_of(tmp_path, slide):
            assert path.exists(), f"missing {path}"

    # A rerun would redo only what failed (and what waits on it).
    dry = snakemake(tmp_path, "--dry-run")
    assert dry.jobs() == {
        ("tissue", "corrupt"),
        ("tiling", "corrupt"),
        ("segmentation", "corrupt"),
        ("features", "corrupt"),
        ("tiling_summary", None),
        ("segmentation_summary", None),
        ("provenance", None),
        ("all", None),
    }


def _assert_failed_before_any_job(run: Run, workdir: Path, *names: str) -> None:
    assert run.returncode != 0, run.output
    for name in names:
        assert name in run.output, f"{name!r} not named in:\n{run.output}"
    assert not (workdir / "results").exists()
    assert not (workdir / "logs").exists()


@pytest.mark.parametrize(
    ("patch", "key"),
    [({"tilling": {"mpp": 0.5}}, "tilling"), ({"tiling": {"tile_sise": 64}}, "tile_sise")],
)
def test_unknown_config_key_fails_before_any_job(tmp_path: Path, patch: dict, key: str) -> None:
    (tmp_path / "a.svs").touch()
    config = write_cohort(tmp_path, [{"slide_id": "a", "path": "a.svs"}])
    with open(config, encoding="utf-8") as f:
        data = yaml.safe_load(f)
    for block, values in patch.items():
        data.setdefault(block, {}).update(values)
    config.write_text(yaml.safe_dump(data), encoding="utf-8")

    run = snakemake(tmp_path)
    _assert_failed_before_any_job(run, tmp_path, f"'{key}' was unexpected")


@pytest.mark.parametrize(
    ("rows", "named"),
    [
        (
            [{"slide_id": "ok", "path": "a.svs"}, {"slide_id": "bad id!", "path": "a.svs"}],
            ["bad id!"],
        ),
        (
            [{"slide_id": "a", "path": "a.svs"}, {"slide_id": "a", "path": "a.svs"}],
            ["unique", "'a'"],
        ),
        ([{"slide_id": "a", "path": "a.svs", "scanner": "x"}], ["unknown column", "scanner"]),
        ([{"slide_id": "a", "path": "a.svs", "split": "training"}], ["training"]),
        (
            [
                {"slide_id": "a", "path": "a.svs"},
                {"slide_id": "gone_1", "path": "missing/one.svs"},
                {"slide_id": "gone_2", "path": "missing/two.svs"},
            ],
            ["2 slide file(s)", "gone_1: missing/one.svs", "gone_2: missing/two.svs"],
        ),
        (
            [
                {"slide_id": "a", "path": "a.svs", "block": "b1", "section": 0},
                {"slide_id": "c", "path": "a.svs", "block": "b1", "section": ""},
            ],
            ["['c'] have a block but no section"],
        ),
        (
            [
                {"slide_id": "a", "path": "a.svs", "block": "b1", "section": 0},
                {"slide_id": "c", "path": "a.svs", "block": "", "section": 1},
            ],
            ["['c'] have a section but no block"],
        ),
        (
            [
                {"slide_id": "a", "path": "a.svs", "block": "b1", "section": 2},
                {"slide_id": "c", "path": "a.svs", "block": "b1", "section": 2},
                {"slide_id": "d", "path": "a.svs", "block": "b2", "section": 2},
            ],
            ["['a', 'c'] share block 'b1' section 2"],
        ),
    ],
    ids=[
        "bad-slide-id",
        "duplicate-id",
        "unknown-column",
        "bad-split",
        "missing-files",
        "block-without-section",
        "section-without-block",
        "duplicate-section",
    ],
)
def test_bad_sheet_fails_before_any_job(tmp_path: Path, rows: list[dict], named: list[str]) -> None:
    (tmp_path / "a.svs").touch()  # exists, so a job would start (and fail) if not stopped
    write_cohort(tmp_path, rows)
    run = snakemake(tmp_path)
    _assert_failed_before_any_job(run, tmp_path, *named)


def test_mil_without_two_labelled_classes_fails_before_any_job(tmp_path: Path) -> None:
    (tmp_path / "a.svs").touch()
    rows = [{"slide_id": "a", "path": "a.svs", "label": "tumour"},
            {"slide_id": "b", "path": "a.svs", "label": "tumour"}]  # fmt: skip
    write_cohort(tmp_path, rows)
    run = snakemake(tmp_path)
    _assert_failed_before_any_job(run, tmp_path, "mil.enabled", "1 class(es) ['tumour']")


# ---- lint ----------------------------------------------------------------------


def test_lint_is_clean_on_the_repo_config() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "snakemake", "--lint"],
        cwd=REPO,
        capture_output=True,
        text=True,
        env=_env(),
        timeout=300,
        check=False,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, output
    assert "Lints for" not in output, output
