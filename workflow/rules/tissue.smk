# Stage `tissue`: detect tissue on a low-resolution thumbnail of each slide.
# Writes the binary mask (at tissue.detection_mpp), an overlay for the report and
# a QC JSON (MPP used and its source, threshold, tissue area...).


rule tissue:
    input:
        slide=slide_path,
    output:
        mask="results/{slide}/tissue.png",
        overlay=report(
            "results/{slide}/tissue_overlay.png",
            caption="../report/tissue_overlay.rst",
            category="tissue",
            subcategory="{slide}",
            labels={"slide": "{slide}", "figure": "tissue overlay"},
        ),
        qc="results/{slide}/tissue.json",
    log:
        "logs/tissue/{slide}.log",
    benchmark:
        "logs/benchmarks/tissue/{slide}.tsv"
    params:
        slide=slide_args,
        options=cli_options(config["tissue"]),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe tissue run --slide {input.slide:q} {params.slide}"
        " --mask {output.mask:q} --overlay {output.overlay:q} --qc {output.qc:q}"
        " {params.options} > {log:q} 2>&1"
