# Provenance page of the report: the config used, software versions, checksums of
# the input slides (as tiling recorded them) and of the config, sheet and models,
# and the runtime of every rule (from the benchmark files). Runs last.


rule provenance:
    input:
        outputs=stage_outputs,
        stores=cohort_tile_stores,
        configfiles=list(dict.fromkeys(workflow.configfiles)),
        sheet=config["slides"],
        models=provenance_model_files,
    output:
        config=report(
            "results/cohort/provenance/config.yaml",
            caption="../report/provenance_config.rst",
            category="provenance",
            labels={"file": "config used"},
        ),
        versions=report(
            "results/cohort/provenance/versions.tsv",
            caption="../report/provenance_versions.rst",
            category="provenance",
            labels={"file": "software versions"},
        ),
        checksums=report(
            "results/cohort/provenance/checksums.tsv",
            caption="../report/provenance_checksums.rst",
            category="provenance",
            labels={"file": "input checksums"},
        ),
        runtimes=report(
            "results/cohort/provenance/runtimes.tsv",
            caption="../report/provenance_runtimes.rst",
            category="provenance",
            labels={"file": "runtime per rule"},
        ),
        jobs=report(
            "results/cohort/provenance/runtimes_jobs.tsv",
            caption="../report/provenance_runtimes.rst",
            category="provenance",
            labels={"file": "runtime per job"},
        ),
    log:
        "logs/cohort/provenance.log",
    params:
        config=lambda wildcards: shlex.quote(json.dumps(config)),
        files=provenance_file_args,
        out_dir=lambda wildcards, output: os.path.dirname(output.config),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe provenance run --config-json {params.config} --stores {input.stores:q}"
        " --benchmarks logs/benchmarks --out-dir {params.out_dir:q} {params.files}"
        " > {log:q} 2>&1"


localrules:
    provenance,
