"""Provenance of a run: config used, software versions, input checksums, runtimes.

The workflow's cohort-level rule ``provenance`` (after every other rule) writes
these tables for the Snakemake HTML report. Nothing is recomputed that the
stages already recorded: slide checksums come from the provenance that tiling
stored in each ``tiles.zarr`` (``attrs["pathpipe"]["source"]``), runtimes from
the files of Snakemake's ``benchmark:`` directive.

Pure-ish functions each return one table (or text); :func:`write_provenance`
writes them all, atomically, into one folder::

    config.yaml         the config used, in its own key order, with a header comment
    versions.tsv        package, version
    checksums.tsv       one row per input file: slides (from tiles.zarr), config, sheet, models
    runtimes.tsv        one row per rule: jobs, total/mean/max seconds, peak RSS
    runtimes_jobs.tsv   one row per benchmarked job, including skipped (malformed) files

Checksums are SHA-256 hex digests as printed by ``sha256sum``.
"""

from __future__ import annotations

import datetime
import json
import logging
import os
import platform
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from pathpipe.errors import ConfigError, StorageError

__all__ = [
    "DEFAULT_PACKAGES",
    "config_yaml",
    "file_checksums",
    "input_checksums",
    "rule_runtimes",
    "software_versions",
    "write_provenance",
]

log = logging.getLogger(__name__)

NOT_INSTALLED = "not installed"

#: Distributions whose versions :func:`software_versions` reports, in this order:
#: the core stack, then the libraries of the later stages, then the workflow.
DEFAULT_PACKAGES: tuple[str, ...] = (
    "numpy",
    "pandas",
    "pyarrow",
    "zarr",
    "numcodecs",
    "dask",
    "scikit-image",
    "scikit-learn",
    "scipy",
    "numba",
    "openslide-python",
    "openslide-bin",
    "tiffslide",
    "tifffile",
    "imagecodecs",
    "pillow",
    "opencv-python-headless",
    "pyradiomics",
    "igraph",
    "torch",
    "diffusers",
    "safetensors",
    "shap",
    "open3d",
    "matplotlib",
    "jsonschema",
    "pyyaml",
    "psutil",
    "snakemake",
    "snakemake-executor-plugin-slurm",
)

#: Columns of :func:`input_checksums`, :func:`file_checksums` and their union.
SLIDE_COLUMNS = (
    "slide_id",
    "path",
    "size_bytes",
    "mtime",
    "sha256",
    "backend",
    "mpp",
    "mpp_source",
    "pathpipe_version",
    "created",
)
FILE_COLUMNS = ("kind", "path", "size_bytes", "mtime", "sha256")
JOB_COLUMNS = (
    "rule",
    "job",
    "repeats",
    "seconds",
    "max_rss_mb",
    "cpu_seconds",
    "mean_load",
    "note",
)
RULE_COLUMNS = ("rule", "jobs", "total_seconds", "mean_seconds", "max_seconds", "max_rss_mb")

# Snakemake writes "NA" for statistics it could not sample and "-" for None.
_BENCHMARK_NA = ("-", "NA", "")


# ---------------------------------------------------------------------------
# software
# ---------------------------------------------------------------------------


def software_versions(packages: Sequence[str] = DEFAULT_PACKAGES, *, libraries: bool = True) -> Any:
    """Versions of Python, the platform, pathpipe and ``packages``.

    Parameters
    ----------
    packages : sequence of str
        Distribution names as pip knows them (``scikit-image``, not ``skimage``),
        looked up with :func:`importlib.metadata.version`; absent ones are
        reported as ``"not installed"``.
    libraries : bool
        Also report what only an import can tell: the OpenSlide C library
        (``openslide.__library_version__``) and torch's CUDA build and whether a
        CUDA device is visible. The latter describes the process that writes the
        provenance, which need not be the node the GPU jobs ran on. Importing
        torch takes a few seconds.

    Returns
    -------
    pandas.DataFrame
        Columns ``package``, ``version`` (both str), one row per entry.

    Raises
    ------
    ConfigError
        ``packages`` is a string or holds something other than non-empty strings.
    """
    import pandas as pd

    from pathpipe import __version__

    if isinstance(packages, str):
        raise ConfigError(
            f"packages: received the string {packages!r}, expected a sequence of "
            "distribution names such as ('numpy', 'zarr')"
        )
    bad = [p for p in packages if not isinstance(p, str) or not p.strip()]
    if bad:
        raise ConfigError(
            f"packages: received {bad!r}, expected non-empty distribution names (str)"
        )
    rows = [
        ("python", f"{platform.python_version()} ({platform.python_implementation()})"),
        ("platform", platform.platform()),
        ("pathpipe", __version__),
    ]
    rows += [(name, _dist_version(name)) for name in packages]
    if libraries:
        rows += [
            ("openslide (C library)", _openslide_library_version()),
            ("torch CUDA", _torch_cuda()),
        ]
    return pd.DataFrame(rows, columns=["package", "version"])


def _dist_version(name: str) -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(name)
    except PackageNotFoundError:
        return NOT_INSTALLED


def _openslide_library_version() -> str:
    try:
        import openslide
    except Exception as exc:  # missing package, or the C library failed to load
        return f"{NOT_INSTALLED} ({type(exc).__name__}: {exc})"
    return str(getattr(openslide, "__library_version__", "unknown"))


def _torch_cuda() -> str:
    from importlib.util import find_spec

    if find_spec("torch") is None:
        return NOT_INSTALLED + " (torch)"
    try:
        import torch
    except Exception as exc:  # a broken install should not fail the provenance page
        return f"torch does not import ({type(exc).__name__}: {exc})"
    built = torch.version.cuda
    if built is None:
        return "CPU-only build of torch"
    if not torch.cuda.is_available():
        return f"CUDA {built} build; no CUDA device visible here"
    names = sorted({torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())})
    cudnn = torch.backends.cudnn.version()
    return (
        f"CUDA {built} build, cuDNN {cudnn}; {torch.cuda.device_count()} device(s) visible: "
        + ", ".join(names)
    )


# ---------------------------------------------------------------------------
# input checksums
# ---------------------------------------------------------------------------


def input_checksums(stores: Iterable[str | os.PathLike[str]]) -> Any:
    """The slide files a cohort was made from, as tiling recorded them.

    Nothing is re-hashed: path, size, mtime and checksum are read from
    ``attrs["pathpipe"]["source"]`` of each ``tiles.zarr``, written when the
    slide was tiled.

    Parameters
    ----------
    stores : iterable of path-like
        ``results/<slide>/tiles.zarr`` stores; the slide id is the folder name.

    Returns
    -------
    pandas.DataFrame
        One row per store, columns ``slide_id``, ``path`` (absolute, at tiling
        time), ``size_bytes``, ``mtime`` (ISO 8601, UTC), ``sha256`` (hex digest;
        empty where tiling ran with ``--no-checksum``), ``backend``, ``mpp``
        (level-0 µm/px along x), ``mpp_source``, ``pathpipe_version`` and
        ``created`` (of the store).

    Raises
    ------
    StorageError
        A store is missing, incomplete or not written by tiling.
    ConfigError
        Two stores have the same slide id.
    """
    import pandas as pd

    from pathpipe.io.storage import open_store, slide_id_of

    rows = []
    seen: dict[str, Path] = {}
    for store in stores:
        store = Path(store)
        slide_id = slide_id_of(store)
        if slide_id in seen:
            raise ConfigError(
                f"two stores for slide {slide_id!r}: {seen[slide_id]} and {store}; expected "
                "results/<slide>/tiles.zarr, one per slide"
            )
        seen[slide_id] = store
        meta = open_store(store, stage="tiling").attrs["pathpipe"]
        source = meta.get("source")
        if not isinstance(source, dict) or "path" not in source:
            raise StorageError(
                f"store {str(store)!r} has no attrs['pathpipe']['source'] record of its slide "
                f"(received {source!r}); expected one written by 'pathpipe tiling'"
            )
        mpp = meta.get("mpp") or {}
        rows.append(
            {
                "slide_id": slide_id,
                "path": source["path"],
                "size_bytes": source.get("size"),
                "mtime": _iso_utc(source.get("mtime")),
                "sha256": _sha256_hex(source.get("checksum"), where=str(store)),
                "backend": meta.get("backend"),
                "mpp": mpp.get("x"),
                "mpp_source": mpp.get("source"),
                "pathpipe_version": meta.get("pathpipe_version"),
                "created": meta.get("created"),
            }
        )
    df = pd.DataFrame(rows, columns=list(SLIDE_COLUMNS))
    df["size_bytes"] = df["size_bytes"].astype("Int64")
    return df


def file_checksums(paths: Mapping[str, str | os.PathLike[str]]) -> Any:
    """SHA-256 of small extra inputs: config file, slide sheet, model files.

    Parameters
    ----------
    paths : mapping of str to path-like
        Kind (``"config"``, ``"sheet"``, ``"model"``, ...) to file. A directory
        (e.g. a model folder) gives one row per file in it, recursively, sorted.

    Returns
    -------
    pandas.DataFrame
        Columns ``kind``, ``path`` (absolute), ``size_bytes``, ``mtime`` (ISO
        8601, UTC) and ``sha256`` (hex digest).

    Raises
    ------
    StorageError
        A path does not exist or cannot be read.
    ConfigError
        A kind is not a non-empty string.
    """
    import pandas as pd

    from pathpipe.io.storage import source_record

    rows = []
    for kind, path in paths.items():
        if not isinstance(kind, str) or not kind.strip():
            raise ConfigError(
                f"file kind: received {kind!r}, expected a non-empty name such as 'config'"
            )
        p = Path(path)
        if p.is_dir():
            files = sorted(f for f in p.rglob("*") if f.is_file())
        elif p.is_file():
            files = [p]
        else:
            raise StorageError(
                f"{kind} file {str(p)!r} does not exist; expected an existing file or folder"
            )
        for f in files:
            try:
                rec = source_record(f)
            except OSError as exc:
                raise StorageError(f"{kind} file {str(f)!r} cannot be read: {exc}") from exc
            rows.append(
                {
                    "kind": kind,
                    "path": rec["path"],
                    "size_bytes": rec["size"],
                    "mtime": _iso_utc(rec["mtime"]),
                    "sha256": _sha256_hex(rec["checksum"], where=str(f)),
                }
            )
    df = pd.DataFrame(rows, columns=list(FILE_COLUMNS))
    df["size_bytes"] = df["size_bytes"].astype("Int64")
    return df


def _sha256_hex(checksum: Any, *, where: str) -> str | None:
    """``"sha256:<hex>"`` (as :func:`pathpipe.io.storage.file_checksum` writes) -> ``<hex>``."""
    if checksum is None:
        return None
    algorithm, sep, digest = str(checksum).partition(":")
    if sep and algorithm == "sha256":
        return digest
    log.warning("%s: checksum %r is not 'sha256:<hex>'; left out", where, checksum)
    return None


def _iso_utc(timestamp: Any) -> str | None:
    if timestamp is None:
        return None
    return datetime.datetime.fromtimestamp(float(timestamp), tz=datetime.UTC).isoformat(
        timespec="seconds"
    )


# ---------------------------------------------------------------------------
# runtimes
# ---------------------------------------------------------------------------


def rule_runtimes(benchmark_dir: str | os.PathLike[str]) -> tuple[Any, Any]:
    """Per-job and per-rule runtimes from Snakemake ``benchmark:`` files.

    Files are found recursively (``*.tsv`` and ``*.jsonl``) and named by the
    workflow's layout: ``<rule>/<wildcards>.tsv`` is rule ``<rule>``, job
    ``<wildcards>`` (deeper folders are kept in the job name, joined by ``/``);
    ``cohort/<rule>.tsv`` is a cohort-level rule, job ``cohort``; a file at the
    top is rule ``<stem>`` with an empty job.

    A file has one row per run (several with ``repeat("...", n)``); columns are
    Snakemake's ``s  h:m:s  max_rss  max_vms  max_uss  max_pss  io_in  io_out
    mean_load  cpu_time`` (plus more with ``--benchmark-extended``), where
    ``-`` or ``NA`` mark a statistic that was not sampled (a job faster than the
    sampling interval). A file that cannot be read as such is skipped with a
    warning and listed in the per-job table with the reason in ``note``: a
    provenance page must not fail because one benchmark file is odd.

    Parameters
    ----------
    benchmark_dir : path-like
        The benchmark folder, e.g. ``logs/benchmarks``.

    Returns
    -------
    per_job : pandas.DataFrame
        Sorted by rule and job; columns ``rule``, ``job``, ``repeats`` (rows in
        the file), ``seconds`` (mean wall-clock over repeats), ``max_rss_mb``
        (peak resident memory over repeats, MiB), ``cpu_seconds`` (mean CPU
        time), ``mean_load`` (mean CPU load, %), ``note`` (empty, or why the file
        was skipped; its statistics are then empty).
    per_rule : pandas.DataFrame
        From the jobs that were not skipped, sorted by ``total_seconds``,
        largest first; columns ``rule``, ``jobs``, ``total_seconds``,
        ``mean_seconds``, ``max_seconds`` (over the rule's jobs) and
        ``max_rss_mb``.

    Raises
    ------
    StorageError
        ``benchmark_dir`` is not a folder.
    """
    import pandas as pd

    root = Path(benchmark_dir)
    if not root.is_dir():
        raise StorageError(
            f"benchmark folder {str(root)!r} does not exist or is not a folder; expected "
            "the folder of the rules' benchmark: files, e.g. logs/benchmarks"
        )
    files = sorted(f for f in root.rglob("*") if f.is_file() and f.suffix in (".tsv", ".jsonl"))
    jobs = []
    for f in files:
        rule, job = _rule_and_job(f.relative_to(root))
        try:
            stats = _read_benchmark(f)
        except _MalformedBenchmark as exc:
            log.warning("benchmark file %s skipped: %s", f, exc)
            jobs.append({"rule": rule, "job": job, "note": f"skipped: {exc}"})
            continue
        jobs.append({"rule": rule, "job": job, **stats, "note": ""})
    per_job = pd.DataFrame(jobs, columns=list(JOB_COLUMNS))
    per_job["repeats"] = per_job["repeats"].astype("Int64")
    for col in ("seconds", "max_rss_mb", "cpu_seconds", "mean_load"):
        per_job[col] = per_job[col].astype(float).round(3)
    per_job = per_job.sort_values(["rule", "job"], kind="stable").reset_index(drop=True)

    ok = per_job[per_job["note"] == ""]
    per_rule = (
        ok.groupby("rule", sort=True)
        .agg(
            jobs=("job", "size"),
            total_seconds=("seconds", "sum"),
            mean_seconds=("seconds", "mean"),
            max_seconds=("seconds", "max"),
            max_rss_mb=("max_rss_mb", "max"),
        )
        .reset_index()
    )
    per_rule = per_rule.reindex(columns=list(RULE_COLUMNS))
    per_rule["jobs"] = per_rule["jobs"].astype("Int64")
    for col in RULE_COLUMNS[2:]:
        per_rule[col] = per_rule[col].astype(float).round(3)
    per_rule = per_rule.sort_values("total_seconds", ascending=False, kind="stable").reset_index(
        drop=True
    )
    return per_job, per_rule


class _MalformedBenchmark(ValueError):
    """A benchmark file that cannot be read (message: why)."""


def _rule_and_job(rel: Path) -> tuple[str, str]:
    parts = rel.with_suffix("").parts
    if len(parts) == 1:
        return parts[0], ""
    if len(parts) == 2 and parts[0] == "cohort":
        return parts[1], "cohort"
    return parts[0], "/".join(parts[1:])


def _read_benchmark(path: Path) -> dict[str, Any]:
    """Mean/peak statistics of one benchmark file; raises :class:`_MalformedBenchmark`."""
    import pandas as pd

    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise _MalformedBenchmark(f"not a readable text file ({exc})") from exc
    lines = [line for line in text.splitlines() if line.strip()]
    if not lines:
        raise _MalformedBenchmark("empty file")
    if path.suffix == ".jsonl":  # Snakemake writes .jsonl benchmarks as one object per line
        try:
            records = [json.loads(line) for line in lines]
        except json.JSONDecodeError as exc:
            raise _MalformedBenchmark(f"not JSON lines ({exc})") from exc
        if not all(isinstance(r, dict) for r in records):
            raise _MalformedBenchmark("expected one JSON object per line")
        df = pd.DataFrame(records, dtype=object)
    else:
        # Split by hand: pandas would take a row with one field too many as an index.
        header = lines[0].split("\t")
        rows = [line.split("\t") for line in lines[1:]]
        for number, row in enumerate(rows, start=2):
            if len(row) != len(header):
                raise _MalformedBenchmark(
                    f"line {number} has {len(row)} fields, expected {len(header)} as in the header"
                )
        df = pd.DataFrame(rows, columns=header, dtype=object)
    if "s" not in df.columns:
        raise _MalformedBenchmark(
            f"no 's' (seconds) column; received columns {list(df.columns)[:10]}, expected "
            "Snakemake's benchmark header 's  h:m:s  max_rss ...'"
        )
    if df.empty:
        raise _MalformedBenchmark("header only, no rows")
    df = df.map(lambda v: None if isinstance(v, str) and v.strip() in _BENCHMARK_NA else v)

    def numeric(col: str) -> Any:
        if col not in df.columns:
            return pd.Series(float("nan"), index=df.index)
        values = pd.to_numeric(df[col], errors="coerce")
        bad = df[col][values.isna() & df[col].notna()]
        if len(bad):
            raise _MalformedBenchmark(
                f"column {col!r}: received {bad.iloc[0]!r}, expected a number, '-' or 'NA'"
            )
        return values.astype(float)

    seconds = numeric("s")
    if seconds.isna().any():
        raise _MalformedBenchmark("column 's' has empty values; expected seconds on every row")
    return {
        "repeats": len(df),
        "seconds": seconds.mean(),
        "max_rss_mb": numeric("max_rss").max(),
        "cpu_seconds": numeric("cpu_time").mean(),
        "mean_load": numeric("mean_load").mean(),
    }


# ---------------------------------------------------------------------------
# config
# ---------------------------------------------------------------------------


def config_yaml(config: Mapping[str, Any]) -> str:
    """The config used, as YAML in its own key order, under a header comment.

    Parameters
    ----------
    config : mapping
        Plain data (what ``json.loads`` or ``yaml.safe_load`` return), e.g.
        Snakemake's ``config`` after schema validation filled in defaults.

    Returns
    -------
    str
        ``# ...`` header lines (when, which pathpipe version) then the YAML
        document; ``yaml.safe_load`` of it equals ``config``.

    Raises
    ------
    ConfigError
        ``config`` is not a mapping, or holds values YAML cannot represent.
    """
    import time

    import yaml

    from pathpipe import __version__

    if not isinstance(config, Mapping):
        raise ConfigError(
            f"config: received {type(config).__name__}, expected a mapping of config keys"
        )
    try:
        body = yaml.safe_dump(
            dict(config), sort_keys=False, default_flow_style=False, allow_unicode=True
        )
    except yaml.representer.RepresenterError as exc:
        raise ConfigError(
            f"config holds a value YAML cannot represent ({exc}); expected plain data "
            "(dict, list, str, int, float, bool, None)"
        ) from exc
    header = (
        "# Config used by this pathpipe run (from the workflow: with the schema's\n"
        "# defaults filled in).\n"
        f"# Written {time.strftime('%Y-%m-%dT%H:%M:%S%z')} by pathpipe {__version__}.\n"
    )
    return header + body


# ---------------------------------------------------------------------------
# path level
# ---------------------------------------------------------------------------


def write_provenance(
    out_dir: str | os.PathLike[str],
    *,
    config: Mapping[str, Any],
    stores: Iterable[str | os.PathLike[str]],
    benchmark_dir: str | os.PathLike[str],
    extra_files: Mapping[str, str | os.PathLike[str]] | None = None,
) -> dict[str, Path]:
    """Write the provenance tables of a run into ``out_dir``, each file atomically.

    Parameters
    ----------
    out_dir : path-like
        Created if needed.
    config : mapping
        The config used (see :func:`config_yaml`).
    stores : iterable of path-like
        ``tiles.zarr`` of every slide (see :func:`input_checksums`).
    benchmark_dir : path-like
        Folder of the benchmark files (see :func:`rule_runtimes`).
    extra_files : mapping of str to path-like, optional
        Kind to file or folder hashed by :func:`file_checksums` (``config``,
        ``sheet``, ``model`` ...).

    Returns
    -------
    dict of str to Path
        The files written: ``config.yaml``, ``versions.tsv``, ``checksums.tsv``
        (column ``kind``: ``slide`` or the extra file's kind; ``slide_id`` and the
        tiling columns are empty for extra files), ``runtimes.tsv`` (per rule)
        and ``runtimes_jobs.tsv`` (per job).
    """
    import pandas as pd

    from pathpipe.io.storage import atomic_file

    out = Path(out_dir)
    text = config_yaml(config)
    slides = input_checksums(stores)
    slides.insert(0, "kind", "slide")
    files = file_checksums(extra_files or {})
    checksums = pd.concat(
        [files.reindex(columns=["kind", *SLIDE_COLUMNS]), slides], ignore_index=True
    )
    checksums["size_bytes"] = checksums["size_bytes"].astype("Int64")
    per_job, per_rule = rule_runtimes(benchmark_dir)
    versions = software_versions()

    written = {}
    with atomic_file(out / "config.yaml") as tmp:
        tmp.write_text(text, encoding="utf-8")
    written["config"] = out / "config.yaml"
    for key, name, df in (
        ("versions", "versions.tsv", versions),
        ("checksums", "checksums.tsv", checksums),
        ("runtimes", "runtimes.tsv", per_rule),
        ("runtimes_jobs", "runtimes_jobs.tsv", per_job),
    ):
        with atomic_file(out / name) as tmp:
            df.to_csv(tmp, sep="\t", index=False)
        written[key] = out / name
    skipped = int((per_job["note"] != "").sum())
    log.info(
        "provenance: %d slides, %d extra files, %d benchmarked jobs of %d rules%s -> %s",
        len(slides),
        len(files),
        len(per_job) - skipped,
        len(per_rule),
        f" ({skipped} benchmark files skipped)" if skipped else "",
        out,
    )
    return written
