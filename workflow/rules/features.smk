# Stage `features`: CellFiNet cellular features of every nucleus (six families) and
# of every tile (median and std of each nuclear feature, counts, densities,
# nearest-neighbour distances and cell-graph statistics), with a report figure of
# the feature distributions per phenotype.


rule features:
    input:
        tiles="results/{slide}/tiles.zarr",
        labels="results/{slide}/nuclei.zarr",
        nuclei="results/{slide}/nuclei.parquet",
    output:
        nuclear="results/{slide}/nuclear_features.parquet",
        tile="results/{slide}/tile_features.parquet",
        figure=report(
            "results/{slide}/features.png",
            caption="../report/features.rst",
            category="features",
            subcategory="{slide}",
            labels={"slide": "{slide}", "figure": "feature distributions"},
        ),
    log:
        "logs/features/{slide}.log",
    benchmark:
        "logs/benchmarks/features/{slide}.tsv"
    threads: config["features"]["workers"]
    params:
        options=cli_options(config["features"], skip=["workers", "preprocessing"]),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe features run --tiles {input.tiles:q} --labels {input.labels:q}"
        " --nuclei {input.nuclei:q} --nuclear-out {output.nuclear:q}"
        " --tile-out {output.tile:q} --figure {output.figure:q}"
        " {params.options} --workers {threads}"
        " > {log:q} 2>&1"
