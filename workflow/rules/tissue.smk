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
            category="Tissue",
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
        detection_mpp=config["tissue"]["detection_mpp"],
        threshold=config["tissue"]["threshold"],
        median_um=config["tissue"]["median_um"],
        closing_um=config["tissue"]["closing_um"],
        min_region_um2=config["tissue"]["min_region_um2"],
        fill_holes="" if config["tissue"]["fill_holes"] else "--no-fill-holes",
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe tissue --slide {input.slide:q} {params.slide}"
        " --mask {output.mask:q} --overlay {output.overlay:q} --qc {output.qc:q}"
        " --detection-mpp {params.detection_mpp} --threshold {params.threshold}"
        " --median-um {params.median_um} --closing-um {params.closing_um}"
        " --min-region-um2 {params.min_region_um2} {params.fill_holes}"
        " > {log:q} 2>&1"
