# Stage `segmentation`: nuclei of every tile of a slide, with phenotypes.
# Writes instance labels per tile (nuclei.zarr, in the order of tiles.zarr), one
# row per nucleus (nuclei.parquet), QuPath detections (nuclei.geojson), a report
# figure of example tiles with outlines coloured by phenotype and a summary JSON.


rule segmentation:
    input:
        tiles="results/{slide}/tiles.zarr",
        models=segmentation_model_files,
    output:
        labels=directory("results/{slide}/nuclei.zarr"),
        table="results/{slide}/nuclei.parquet",
        geojson="results/{slide}/nuclei.geojson",
        figure=report(
            "results/{slide}/segmentation.png",
            caption="../report/segmentation.rst",
            category="segmentation",
            subcategory="{slide}",
            labels={"slide": "{slide}", "figure": "nuclei"},
        ),
        summary="results/{slide}/segmentation.json",
    log:
        "logs/segmentation/{slide}.log",
    benchmark:
        "logs/benchmarks/segmentation/{slide}.tsv"
    threads: config["segmentation"]["workers"]
    resources:
        gpu=segmentation_gpus,
    params:
        options=cli_options(config["segmentation"], skip=["classical", "workers"]),
        classical=cli_options(config["segmentation"]["classical"]),
        seed=config["seed"],
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe segmentation run --tiles {input.tiles:q}"
        " --labels {output.labels:q} --table {output.table:q} --geojson {output.geojson:q}"
        " --figure {output.figure:q} --summary {output.summary:q}"
        " {params.options} {params.classical}"
        " --seed {params.seed} --workers {threads}"
        " > {log:q} 2>&1"


rule segmentation_summary:
    input:
        stores=cohort_nuclei_stores,
    output:
        summary=report(
            "results/cohort/segmentation_summary.tsv",
            caption="../report/segmentation_summary.rst",
            category="segmentation",
            labels={"table": "segmentation summary"},
        ),
    log:
        "logs/cohort/segmentation_summary.log",
    benchmark:
        "logs/benchmarks/cohort/segmentation_summary.tsv"
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe segmentation summary --stores {input.stores:q} --out {output.summary:q}"
        " > {log:q} 2>&1"


localrules:
    segmentation_summary,
