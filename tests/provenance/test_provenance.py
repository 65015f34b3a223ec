"""Provenance tables: versions, checksums (from tiles.zarr), runtimes, config, CLI."""

from __future__ import annotations

import hashlib
import json
import logging
import shlex
import subprocess
import sys

import numpy as np
import pandas as pd
import pytest
import yaml
from PIL import Image

from conftest import scene, write_pyramid
from pathpipe import __version__
from pathpipe.cli import main
from pathpipe.errors import ConfigError, StorageError
from pathpipe.io.storage import file_checksum
from pathpipe.provenance import (
    config_yaml,
    file_checksums,
    input_checksums,
    rule_runtimes,
    software_versions,
    write_provenance,
)
from pathpipe.tiling.run import TilingParams, run_tiling

HEADER = "s\th:m:s\tmax_rss\tmax_vms\tmax_uss\tmax_pss\tio_in\tio_out\tmean_load\tcpu_time\n"

CONFIG = {
    "slides": "config/slides.tsv",
    "seed": 0,
    "tissue": {"threshold": "otsu", "fill_holes": True, "detection_mpp": 8.0},
    "tiling": {"mpp": 0.5, "max_tiles": None, "compression": "lz4"},
    "segmentation": {"classes": ["tumour", "lymphocyte", "other"], "model": None},
    "note": 'it\'s a "quoted" {braced} value with spaces; $HOME `x`',
}


@pytest.fixture(scope="module")
def cohort(tmp_path_factory):
    """Two slides tiled by the real tiling into results/<slide>/tiles.zarr."""
    root = tmp_path_factory.mktemp("cohort")
    mask = np.zeros((16, 16), np.uint8)
    mask[4:12, 4:12] = 255
    mask_path = root / "mask.png"
    Image.fromarray(mask).save(mask_path)
    slides, stores = {}, []
    for i, slide_id in enumerate(["slide_a", "slide_b"]):
        slide = write_pyramid(
            root / f"{slide_id}.tiff", scene(512, 512, seed=i), downsamples=(1, 4)
        )
        store = root / "results" / slide_id / "tiles.zarr"
        run_tiling(
            slide,
            mask_path=mask_path,
            out_path=store,
            params=TilingParams(mpp=0.5, tile_size=64, workers=1),
        )
        slides[slide_id] = slide
        stores.append(store)
    return slides, stores


def _benchmarks(root):
    """A benchmark folder in Snakemake's layout with the odd cases."""
    (root / "tiling").mkdir(parents=True)
    (root / "segmentation").mkdir()
    (root / "features").mkdir()
    (root / "cohort").mkdir()
    (root / "tiling" / "a.tsv").write_text(
        HEADER + "2.00\t0:00:02\t200.00\t800.00\t180.00\t190.00\t0.50\t1.00\t60.00\t1.80\n"
    )
    # not sampled: Snakemake writes "NA" (and "-" for None)
    (root / "tiling" / "b.tsv").write_text(HEADER + "4.00\t0:00:04\tNA\t-\tNA\tNA\t-\t-\tNA\tNA\n")
    # repeat("...", 2): two rows
    (root / "segmentation" / "a.tsv").write_text(
        HEADER
        + "5.00\t0:00:05\t700.00\t900.00\t1\t1\t0\t0\t100.00\t6.00\n"
        + "7.00\t0:00:07\t750.00\t900.00\t1\t1\t0\t0\t110.00\t8.00\n"
    )
    (root / "cohort" / "tiling_summary.tsv").write_text(
        HEADER + "1.50\t0:00:01\t170.00\t500.00\t1\t1\t0\t0\t34.00\t1.00\n"
    )
    (root / "features" / "a.tsv").write_text("this is\nnot a benchmark\n")
    (root / "features" / "b.tsv").write_text(HEADER + "fast\t0:00:01\t1\t1\t1\t1\t0\t0\t1\t1\n")
    # one field too many: pandas would silently take the first as an index
    (root / "features" / "c.tsv").write_text(HEADER + "9\t1.00\t0:00:01\t1\t1\t1\t1\t0\t0\t1\t1\n")
    # Snakemake writes JSON lines for a benchmark path ending in .jsonl
    (root / "tissue").mkdir()
    (root / "tissue" / "a.jsonl").write_text(
        json.dumps({"s": 0.5, "h:m:s": "0:00:00", "max_rss": "NA", "cpu_time": None}) + "\n"
    )
    (root / "features" / "README.txt").write_text("not a benchmark file, ignored\n")
    return root


# ---------------------------------------------------------------------------
# versions
# ---------------------------------------------------------------------------


def test_software_versions_lists_pathpipe_and_marks_missing_packages():
    df = software_versions(["numpy", "pathpipe-no-such-package"], libraries=False)
    assert list(df.columns) == ["package", "version"]
    versions = dict(zip(df["package"], df["version"], strict=True))
    assert list(versions)[:3] == ["python", "platform", "pathpipe"]
    assert versions["pathpipe"] == __version__
    assert versions["numpy"] == np.__version__
    assert versions["pathpipe-no-such-package"] == "not installed"
    assert len(df) == 5


def test_software_versions_probes_libraries():
    import openslide

    versions = dict(software_versions((), libraries=True).itertuples(index=False))
    assert versions["openslide (C library)"] == openslide.__library_version__
    assert versions["torch CUDA"]  # CPU-only build, a CUDA build, or not installed


@pytest.mark.parametrize("packages", ["numpy", ["numpy", ""], [None]])
def test_software_versions_rejects_bad_package_lists(packages):
    with pytest.raises(ConfigError, match="packages: received"):
        software_versions(packages, libraries=False)


# ---------------------------------------------------------------------------
# checksums
# ---------------------------------------------------------------------------


def test_input_checksums_reads_what_tiling_recorded(cohort):
    slides, stores = cohort
    df = input_checksums(stores)
    assert list(df["slide_id"]) == ["slide_a", "slide_b"]
    for row in df.itertuples(index=False):
        slide = slides[row.slide_id]
        assert "sha256:" + row.sha256 == file_checksum(slide)
        assert row.path == str(slide.resolve())
        assert row.size_bytes == slide.stat().st_size
        assert row.mpp == 0.25 and row.mpp_source == "metadata"
        assert row.backend in ("openslide", "tiffslide")
        assert row.pathpipe_version == __version__ and row.created and row.mtime


def test_input_checksums_does_not_rehash(cohort, monkeypatch):
    import pathpipe.io.storage

    def fail(*args, **kwargs):
        raise AssertionError("input_checksums must not hash the slides again")

    monkeypatch.setattr(pathpipe.io.storage, "file_checksum", fail)
    assert len(input_checksums(cohort[1])) == 2


def test_input_checksums_errors(cohort, tmp_path):
    _, stores = cohort
    with pytest.raises(ConfigError, match="two stores for slide 'slide_a'"):
        input_checksums([stores[0], stores[0]])
    with pytest.raises(StorageError, match="does not exist"):
        input_checksums([tmp_path / "missing" / "tiles.zarr"])


def test_file_checksums_of_files_and_folders(tmp_path):
    (tmp_path / "config.yaml").write_bytes(b"abc")
    model = tmp_path / "model"
    (model / "sub").mkdir(parents=True)
    (model / "weights.bin").write_bytes(b"\x00" * 10)
    (model / "sub" / "meta.json").write_bytes(b"{}")
    df = file_checksums({"config": tmp_path / "config.yaml", "model": model})
    assert list(df.columns) == ["kind", "path", "size_bytes", "mtime", "sha256"]
    assert list(df["kind"]) == ["config", "model", "model"]
    assert df["sha256"].iloc[0] == (
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"  # SHA-256("abc")
    )
    assert df["path"].tolist()[1:] == [
        str((model / "sub" / "meta.json").resolve()),
        str((model / "weights.bin").resolve()),
    ]
    assert df["size_bytes"].tolist() == [3, 2, 10]
    assert df["sha256"].iloc[2] == hashlib.sha256(b"\x00" * 10).hexdigest()
    with pytest.raises(StorageError, match=r"sheet file .* does not exist"):
        file_checksums({"sheet": tmp_path / "nope.tsv"})


# ---------------------------------------------------------------------------
# runtimes
# ---------------------------------------------------------------------------


def test_rule_runtimes(tmp_path, caplog):
    bench = _benchmarks(tmp_path / "benchmarks")
    with caplog.at_level(logging.WARNING, logger="pathpipe"):
        per_job, per_rule = rule_runtimes(bench)
    # malformed files are named in the warnings and listed, not fatal
    warned = " ".join(r.getMessage() for r in caplog.records)
    assert str(bench / "features" / "a.tsv") in warned
    assert str(bench / "features" / "b.tsv") in warned
    assert str(bench / "features" / "c.tsv") in warned

    assert list(per_job.columns) == [
        "rule",
        "job",
        "repeats",
        "seconds",
        "max_rss_mb",
        "cpu_seconds",
        "mean_load",
        "note",
    ]
    jobs = per_job.set_index(["rule", "job"])
    assert list(jobs.index) == [
        ("features", "a"),
        ("features", "b"),
        ("features", "c"),
        ("segmentation", "a"),
        ("tiling", "a"),
        ("tiling", "b"),
        ("tiling_summary", "cohort"),
        ("tissue", "a"),
    ]
    assert jobs.loc[("features", "a"), "note"].startswith("skipped:")
    assert "'fast'" in jobs.loc[("features", "b"), "note"]
    assert "line 2 has 11 fields, expected 10" in jobs.loc[("features", "c"), "note"]
    tissue = jobs.loc[("tissue", "a")]
    assert tissue["seconds"] == 0.5 and pd.isna(tissue["max_rss_mb"]) and tissue["repeats"] == 1
    assert pd.isna(jobs.loc[("features", "a"), "seconds"])
    seg = jobs.loc[("segmentation", "a")]
    assert seg["repeats"] == 2 and seg["seconds"] == 6.0 and seg["max_rss_mb"] == 750.0
    assert seg["cpu_seconds"] == 7.0 and seg["mean_load"] == 105.0 and seg["note"] == ""
    na = jobs.loc[("tiling", "b")]
    assert na["seconds"] == 4.0 and pd.isna(na["max_rss_mb"]) and pd.isna(na["cpu_seconds"])

    assert list(per_rule.columns) == [
        "rule",
        "jobs",
        "total_seconds",
        "mean_seconds",
        "max_seconds",
        "max_rss_mb",
    ]
    # largest total first
    assert per_rule["rule"].tolist() == ["segmentation", "tiling", "tiling_summary", "tissue"]
    tiling = per_rule.set_index("rule").loc["tiling"]
    assert tiling["jobs"] == 2 and tiling["total_seconds"] == 6.0
    assert tiling["mean_seconds"] == 3.0 and tiling["max_seconds"] == 4.0
    assert tiling["max_rss_mb"] == 200.0  # the NA job does not count


def test_rule_runtimes_of_an_empty_or_missing_folder(tmp_path):
    per_job, per_rule = rule_runtimes(tmp_path)
    assert per_job.empty and per_rule.empty and "rule" in per_rule.columns
    with pytest.raises(StorageError, match="benchmark folder"):
        rule_runtimes(tmp_path / "missing")


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def test_config_yaml_round_trips_in_order():
    cfg = {"zeta": 1, "alpha": {"b": [1, 2.5], "a": None}, "flag": "yes", "mu": "µm", **CONFIG}
    text = config_yaml(cfg)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and any(f"pathpipe {__version__}" in line for line in header)
    loaded = yaml.safe_load(text)
    assert loaded == cfg
    assert list(loaded) == list(cfg) and list(loaded["alpha"]) == ["b", "a"]
    assert "µm" in text  # readable, not escaped


def test_config_yaml_rejects_what_yaml_cannot_hold():
    with pytest.raises(ConfigError, match="expected a mapping"):
        config_yaml(["not", "a", "mapping"])
    with pytest.raises(ConfigError, match="cannot represent"):
        config_yaml({"x": object()})


# ---------------------------------------------------------------------------
# path level and CLI
# ---------------------------------------------------------------------------


def _check_outputs(out, cohort_slides, cfg):
    assert sorted(p.name for p in out.iterdir()) == [
        "checksums.tsv",
        "config.yaml",
        "runtimes.tsv",
        "runtimes_jobs.tsv",
        "versions.tsv",
    ]
    assert yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) == cfg
    sums = pd.read_csv(out / "checksums.tsv", sep="\t", dtype={"sha256": str})
    slides = sums[sums["kind"] == "slide"].set_index("slide_id")
    for slide_id, path in cohort_slides.items():
        assert "sha256:" + slides.loc[slide_id, "sha256"] == file_checksum(path)
    versions = pd.read_csv(out / "versions.tsv", sep="\t", dtype=str)
    assert versions.set_index("package").loc["pathpipe", "version"] == __version__
    rules = pd.read_csv(out / "runtimes.tsv", sep="\t")
    assert set(rules["rule"]) == {"segmentation", "tiling", "tiling_summary", "tissue"}
    jobs = pd.read_csv(out / "runtimes_jobs.tsv", sep="\t", keep_default_na=False)
    assert (jobs["note"] != "").sum() == 3
    return sums


def test_write_provenance(cohort, tmp_path):
    slides, stores = cohort
    (tmp_path / "config.yaml").write_text("seed: 0\n")
    out = tmp_path / "provenance"
    written = write_provenance(
        out,
        config=CONFIG,
        stores=stores,
        benchmark_dir=_benchmarks(tmp_path / "benchmarks"),
        extra_files={"config": tmp_path / "config.yaml"},
    )
    assert set(written) == {"config", "versions", "checksums", "runtimes", "runtimes_jobs"}
    sums = _check_outputs(out, slides, CONFIG)
    assert sums["kind"].tolist() == ["config", "slide", "slide"]
    assert not list(out.glob(".*"))  # no temporary files left


@pytest.mark.parametrize("form", ["json-file", "yaml-file", "inline"])
def test_cli_end_to_end(cohort, tmp_path, form):
    slides, stores = cohort
    bench = _benchmarks(tmp_path / "benchmarks")
    sheet = tmp_path / "slides.tsv"
    sheet.write_text("slide_id\tpath\nslide_a\ta.tiff\n")
    if form == "json-file":
        (tmp_path / "c.json").write_text(json.dumps(CONFIG))
        arg = f"@{tmp_path / 'c.json'}"
    elif form == "yaml-file":
        (tmp_path / "c.yaml").write_text(yaml.safe_dump(CONFIG, sort_keys=False))
        arg = f"@{tmp_path / 'c.yaml'}"
    else:
        arg = json.dumps(CONFIG)
    out = tmp_path / "out"
    argv = ["provenance", "run", "--config-json", arg, "--stores", *map(str, stores)]
    argv += ["--benchmarks", str(bench), "--out-dir", str(out), "--file", f"sheet={sheet}"]
    assert main(argv) == 0
    sums = _check_outputs(out, slides, CONFIG)
    assert sums["kind"].tolist() == ["sheet", "slide", "slide"]
    yaml_text = (out / "config.yaml").read_text(encoding="utf-8")
    assert list(yaml.safe_load(yaml_text)) == list(CONFIG)


def test_cli_through_the_shell_as_a_rule_quotes_it(cohort, tmp_path):
    """What the Snakemake rule does: json.dumps(config) through shlex.quote into a shell."""
    _, stores = cohort
    bench = _benchmarks(tmp_path / "benchmarks")
    out = tmp_path / "out"
    cmd = (
        f"{shlex.quote(sys.executable)} -m pathpipe.cli provenance run"
        f" --config-json {shlex.quote(json.dumps(CONFIG))}"
        f" --stores {' '.join(shlex.quote(str(s)) for s in stores)}"
        f" --benchmarks {shlex.quote(str(bench))} --out-dir {shlex.quote(str(out))}"
    )
    res = subprocess.run(["bash", "-c", cmd], capture_output=True, text=True, check=False)
    assert res.returncode == 0, res.stderr
    assert yaml.safe_load((out / "config.yaml").read_text(encoding="utf-8")) == CONFIG


@pytest.mark.parametrize(
    ("arg", "message"),
    [
        ("{not json", "received '{not json', which is not valid JSON"),
        ("[1, 2]", "holds a list, expected a JSON/YAML object"),
        ("@/nonexistent/config.json", "cannot read '/nonexistent/config.json'"),
    ],
)
def test_cli_rejects_bad_config(cohort, tmp_path, capsys, arg, message):
    argv = ["provenance", "run", "--config-json", arg, "--stores", str(cohort[1][0])]
    argv += ["--benchmarks", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert err.startswith("ERROR: --config-json") and message in err
    assert "Traceback" not in err
    assert not (tmp_path / "out").exists()


def test_cli_rejects_bad_files(cohort, tmp_path, capsys):
    base = ["provenance", "run", "--config-json", "{}", "--stores", str(cohort[1][0])]
    base += ["--benchmarks", str(tmp_path), "--out-dir", str(tmp_path / "out")]
    a, b = tmp_path / "a.yaml", tmp_path / "b.yaml"
    a.write_text("{}")
    b.write_text("{}")
    assert main([*base, "--file", f"config={a}", "--file", f"config={b}"]) == 1
    assert "--file config= given twice" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exc:
        main([*base, "--file", "no-equals-sign"])
    assert exc.value.code == 2
    assert "expected KIND=PATH" in capsys.readouterr().err
