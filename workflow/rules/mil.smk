# Stage `mil` (cohort): AMIL slide classification from the tile features of the
# labelled slides, cross-validated against a random-forest baseline (and AMIL on
# user tile embeddings when configured); then SHAP explanations of the final
# model (cohort) and an attention heatmap and tile gallery for every slide.


rule mil:
    input:
        tables=mil_tables,
        sheet=config["slides"],
        embeddings=mil_embedding_files,
    output:
        table1=report(
            "results/cohort/mil/table1.tsv",
            caption="../report/mil_table1.rst",
            category="mil",
            labels={"table": "Table 1 (ROC AUC per method)"},
        ),
        predictions=report(
            "results/cohort/mil/predictions.tsv",
            caption="../report/mil_predictions.rst",
            category="mil",
            labels={"table": "predictions per slide"},
        ),
        roc=report(
            "results/cohort/mil/roc.png",
            caption="../report/mil_roc.rst",
            category="mil",
            labels={"figure": "ROC curves"},
        ),
        metrics="results/cohort/mil/metrics.json",
        model=directory("results/cohort/mil/model"),
    log:
        "logs/cohort/mil.log",
    benchmark:
        "logs/benchmarks/cohort/mil.tsv"
    threads: 2
    resources:
        gpu=mil_gpus,
    params:
        options=cli_options(config["mil"], skip=["enabled", "preprocessing", "explain", "heatmap"]),
        preprocessing=cli_options(config["mil"]["preprocessing"]),
        seed=config["seed"],
        out_dir=lambda wildcards, output: os.path.dirname(output.table1),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe mil train --tables {input.tables:q} --sheet {input.sheet:q}"
        " --out-dir {params.out_dir:q} {params.options} {params.preprocessing}"
        " --seed {params.seed} > {log:q} 2>&1"


rule mil_explain:
    input:
        model="results/cohort/mil/model",
        tables=all_tile_tables,
    output:
        beeswarm_train=report(
            "results/cohort/mil/shap/shap_beeswarm_train.png",
            caption="../report/mil_shap_beeswarm.rst",
            category="mil",
            subcategory="SHAP",
            labels={"figure": "slide-level SHAP, training slides"},
        ),
        beeswarm_test=report(
            "results/cohort/mil/shap/shap_beeswarm_test.png",
            caption="../report/mil_shap_beeswarm.rst",
            category="mil",
            subcategory="SHAP",
            labels={"figure": "slide-level SHAP, test slides"},
        ),
        waterfall=report(
            "results/cohort/mil/shap/shap_waterfall.png",
            caption="../report/mil_shap_waterfall.rst",
            category="mil",
            subcategory="SHAP",
            labels={"figure": "tile-level SHAP waterfalls"},
        ),
        importance=report(
            "results/cohort/mil/shap/shap_importance.tsv",
            caption="../report/mil_shap_importance.rst",
            category="mil",
            subcategory="SHAP",
            labels={"table": "mean |SHAP| per feature"},
        ),
        families=report(
            "results/cohort/mil/shap/shap_families.tsv",
            caption="../report/mil_shap_families.rst",
            category="mil",
            subcategory="SHAP",
            labels={"table": "mean |SHAP| per feature family"},
        ),
        values="results/cohort/mil/shap/shap_values.parquet",
        tiles="results/cohort/mil/shap/shap_tiles.tsv",
    log:
        "logs/cohort/mil_explain.log",
    benchmark:
        "logs/benchmarks/cohort/mil_explain.tsv"
    threads: 2
    resources:
        gpu=mil_gpus,
    params:
        options=cli_options(config["mil"]["explain"]),
        seed=config["seed"],
        device=config["mil"]["device"],
        out_dir=lambda wildcards, output: os.path.dirname(output.values),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe mil explain --model {input.model:q} --tables {input.tables:q}"
        " --out-dir {params.out_dir:q} {params.options}"
        " --seed {params.seed} --device {params.device} > {log:q} 2>&1"


rule mil_attention:
    input:
        model="results/cohort/mil/model",
        table="results/{slide}/tile_features.parquet",
        tiles="results/{slide}/tiles.zarr",
        slide=slide_path,
    output:
        heatmap=report(
            "results/cohort/mil/heatmaps/{slide}.png",
            caption="../report/mil_heatmap.rst",
            category="mil",
            subcategory="{slide}",
            labels={"slide": "{slide}", "figure": "attention heatmap"},
        ),
        gallery=report(
            "results/cohort/mil/galleries/{slide}.png",
            caption="../report/mil_gallery.rst",
            category="mil",
            subcategory="{slide}",
            labels={"slide": "{slide}", "figure": "top and bottom attention tiles"},
        ),
        table="results/cohort/mil/attention/{slide}.parquet",
    log:
        "logs/mil_attention/{slide}.log",
    benchmark:
        "logs/benchmarks/mil_attention/{slide}.tsv"
    params:
        slide=slide_args,
        options=cli_options(config["mil"]["heatmap"]),
        device=config["mil"]["device"],
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe mil attention --model {input.model:q} --table {input.table:q}"
        " --tiles {input.tiles:q} --slide {input.slide:q} {params.slide}"
        " --heatmap {output.heatmap:q} --gallery {output.gallery:q} --out {output.table:q}"
        " {params.options} --device {params.device} > {log:q} 2>&1"
