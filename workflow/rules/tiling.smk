# Stage `tiling`: cut each slide's tissue into tiles at tiling.mpp and store them,
# with their level-0 coordinates and provenance, in results/{slide}/tiles.zarr.
# The cohort rule tabulates every store (tile counts, MPP, QC) for the report.


rule tiling:
    input:
        slide=slide_path,
        mask="results/{slide}/tissue.png",
    output:
        tiles=directory("results/{slide}/tiles.zarr"),
    log:
        "logs/tiling/{slide}.log",
    benchmark:
        "logs/benchmarks/tiling/{slide}.tsv"
    threads: config["tiling"]["workers"]
    params:
        slide=slide_args,
        options=cli_options(config["tiling"], skip=["workers"]),
        seed=config["seed"],
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe tiling run --slide {input.slide:q} {params.slide}"
        " --tissue-mask {input.mask:q} --out {output.tiles:q}"
        " {params.options} --seed {params.seed} --workers {threads}"
        " > {log:q} 2>&1"


rule tiling_summary:
    input:
        stores=cohort_tile_stores,
    output:
        summary=report(
            "results/cohort/tiling_summary.tsv",
            caption="../report/tiling_summary.rst",
            category="tiling",
            labels={"table": "tiling summary"},
        ),
    log:
        "logs/cohort/tiling_summary.log",
    benchmark:
        "logs/benchmarks/cohort/tiling_summary.tsv"
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe tiling summary --stores {input.stores:q} --out {output.summary:q}"
        " > {log:q} 2>&1"


# Reading a few attributes per store is quick: on a cluster, run it on the
# submitting node rather than waiting in the queue.
localrules:
    tiling_summary,
