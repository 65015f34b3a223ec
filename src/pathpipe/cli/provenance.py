"""``pathpipe provenance run``: provenance tables of a run for the report (private).

Writes ``config.yaml``, ``versions.tsv``, ``checksums.tsv``, ``runtimes.tsv`` and
``runtimes_jobs.tsv`` into ``--out-dir`` (see :mod:`pathpipe.provenance`).

``--config-json`` takes the config either inline, as a JSON object, or as
``@path`` to a JSON (``.json``) or YAML file. A Snakemake rule passes its
``config`` inline, quoted for the shell (or, equivalently, ``json.dumps(config)``
as the param and ``{params.config:q}`` in the command)::

    rule provenance:
        input:
            stores=expand("results/{slide}/tiles.zarr", slide=SLIDES),
            done=...,  # every other final output, so that this rule runs last
        output:
            versions=report("results/cohort/provenance/versions.tsv", category="Provenance"),
            ...  # config.yaml, checksums.tsv, runtimes.tsv, runtimes_jobs.tsv alike
        params:
            config=lambda wildcards: shlex.quote(json.dumps(config)),
        log:
            "logs/cohort/provenance.log",
        shell:
            "pathpipe provenance run --config-json {params.config}"
            " --stores {input.stores} --benchmarks logs/benchmarks"
            " --out-dir results/cohort/provenance"
            " --file config=config/config.yaml --file sheet={config[slides]} 2> {log}"

The rule itself should have no ``benchmark:``: its file is written only after
the rule ran, so the table would show the previous run's.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

from pathpipe.cli.options import add_stage, add_verb
from pathpipe.errors import ConfigError

__all__ = ["add_parser"]


def _kind_path(value: str) -> tuple[str, Path]:
    kind, sep, path = value.partition("=")
    if not sep or not kind.strip() or not path:
        raise argparse.ArgumentTypeError(
            f"expected KIND=PATH such as 'config=config/config.yaml', got {value!r}"
        )
    return kind.strip(), Path(path)


def add_parser(sub: Any) -> None:
    """Add ``pathpipe provenance run``."""
    verbs = add_stage(sub, "provenance", "provenance of a run: the report's tables")
    p = add_verb(
        verbs,
        "run",
        "write config.yaml, versions.tsv, checksums.tsv, runtimes.tsv and runtimes_jobs.tsv "
        "into --out-dir (config used, software versions, input checksums, rule runtimes)",
        _cmd_run,
    )
    p.add_argument(
        "--config-json",
        required=True,
        metavar="JSON|@FILE",
        help="the config used: a JSON object, or @path to a JSON or YAML file",
    )
    p.add_argument(
        "--stores",
        nargs="+",
        required=True,
        type=Path,
        metavar="STORE",
        help="results/<slide>/tiles.zarr of every slide (slide checksums, as tiling recorded them)",
    )
    p.add_argument(
        "--benchmarks",
        required=True,
        type=Path,
        metavar="DIR",
        help="folder of the rules' benchmark files, e.g. logs/benchmarks",
    )
    p.add_argument("--out-dir", required=True, type=Path, metavar="DIR", help="output folder")
    p.add_argument(
        "--file",
        dest="files",
        action="append",
        type=_kind_path,
        default=[],
        metavar="KIND=PATH",
        help="extra input to checksum, e.g. config=config/config.yaml, sheet=config/slides.tsv, "
        "model=models/unet (a folder: every file in it); repeat for several",
    )


def _config_from_arg(value: str) -> dict[str, Any]:
    """The config of ``--config-json``: inline JSON or ``@path`` (JSON or YAML)."""
    if value.startswith("@"):
        path = Path(value[1:])
        try:
            text = path.read_text(encoding="utf-8")
        except OSError as exc:
            raise ConfigError(
                f"--config-json {value!r}: cannot read {str(path)!r} ({exc}); expected "
                "@path to a JSON or YAML file"
            ) from exc
        if path.suffix.lower() == ".json":
            config = _json(text, what=f"file {str(path)!r}")
        else:
            import yaml

            try:
                config = yaml.safe_load(text)
            except yaml.YAMLError as exc:
                raise ConfigError(
                    f"--config-json: file {str(path)!r} is not valid YAML ({exc})"
                ) from exc
        where = f"file {str(path)!r}"
    else:
        config = _json(value, what=_abbrev(value))
        where = _abbrev(value)
    if not isinstance(config, dict):
        raise ConfigError(
            f"--config-json: {where} holds a {type(config).__name__}, expected a JSON/YAML "
            "object (mapping of config keys)"
        )
    return config


def _json(text: str, *, what: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ConfigError(
            f"--config-json: received {what}, which is not valid JSON ({exc}); expected a "
            "JSON object or @path to a JSON or YAML file"
        ) from exc


def _abbrev(text: str, limit: int = 80) -> str:
    return repr(text if len(text) <= limit else text[:limit] + "...")


def _cmd_run(args: argparse.Namespace) -> None:
    from pathpipe.provenance import write_provenance

    config = _config_from_arg(args.config_json)
    files: dict[str, Path] = {}
    for kind, path in args.files:
        if kind in files:
            raise ConfigError(
                f"--file {kind}= given twice ({files[kind]} and {path}); expected one path "
                "per kind (a folder is hashed file by file)"
            )
        files[kind] = path
    write_provenance(
        args.out_dir,
        config=config,
        stores=args.stores,
        benchmark_dir=args.benchmarks,
        extra_files=files,
    )
