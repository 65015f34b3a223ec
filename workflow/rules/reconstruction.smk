# Stage `reconstruction` (per block): the serial sections of each block of the
# slide sheet (`block`, `section`) registered into one 3D model from their tissue
# masks. Writes results/reconstruction/{block}/: registration.tsv, transforms.json,
# points.ply, volume.zarr (OME-Zarr), mesh.ply, summary.json; then the report's
# figures and a self-contained 3D viewer, and (reconstruction.cells) every nucleus
# of the block in 3D. Blocks come from blocks() in common.smk.


rule reconstruction:
    input:
        sheet=ancient(config["slides"]),
        masks=block_mask_files,
    output:
        registration=report(
            "results/reconstruction/{block}/registration.tsv",
            caption="../report/reconstruction_registration.rst",
            category="reconstruction",
            subcategory="{block}",
            labels={"block": "{block}", "figure": "registration table"},
        ),
        transforms="results/reconstruction/{block}/transforms.json",
        points="results/reconstruction/{block}/points.ply",
        volume=directory("results/reconstruction/{block}/volume.zarr"),
        mesh="results/reconstruction/{block}/mesh.ply",
        summary="results/reconstruction/{block}/summary.json",
    log:
        "logs/reconstruction/{block}.log",
    benchmark:
        "logs/benchmarks/reconstruction/{block}.tsv"
    threads: 1
    params:
        options=cli_options(config["reconstruction"], skip=["enabled", "cells"]),
        sections=block_sections,
        out_dir=lambda wildcards, output: os.path.dirname(output.summary),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        # {params.sections} is not passed: it is there so a new section order reruns the block.
        "pathpipe reconstruction run --sheet {input.sheet:q} --block {wildcards.block}"
        " --results results --out-dir {params.out_dir:q} {params.options}"
        " > {log:q} 2>&1"


rule reconstruction_figures:
    input:
        sheet=ancient(config["slides"]),
        tissue=block_tissue_files,
        registration="results/reconstruction/{block}/registration.tsv",
        transforms="results/reconstruction/{block}/transforms.json",
        points="results/reconstruction/{block}/points.ply",
        volume="results/reconstruction/{block}/volume.zarr",
        mesh="results/reconstruction/{block}/mesh.ply",
        summary="results/reconstruction/{block}/summary.json",
    output:
        pairs=report(
            "results/reconstruction/{block}/figures/pairs.png",
            caption="../report/reconstruction_pairs.rst",
            category="reconstruction",
            subcategory="{block}",
            labels={"block": "{block}", "figure": "consecutive sections before/after"},
        ),
        slices=report(
            "results/reconstruction/{block}/figures/slices.png",
            caption="../report/reconstruction_slices.rst",
            category="reconstruction",
            subcategory="{block}",
            labels={"block": "{block}", "figure": "orthogonal slices"},
        ),
        view=report(
            "results/reconstruction/{block}/figures/view3d.png",
            caption="../report/reconstruction_view3d.rst",
            category="reconstruction",
            subcategory="{block}",
            labels={"block": "{block}", "figure": "3D view"},
        ),
        viewer=report(
            "results/reconstruction/{block}/viewer.html",
            caption="../report/reconstruction_viewer.rst",
            category="reconstruction",
            subcategory="{block}",
            labels={"block": "{block}", "figure": "interactive 3D viewer"},
        ),
    log:
        "logs/reconstruction/{block}_figures.log",
    benchmark:
        "logs/benchmarks/reconstruction/{block}_figures.tsv"
    params:
        dir=lambda wildcards, input: os.path.dirname(input.summary),
        out_dir=lambda wildcards, output: os.path.dirname(output.pairs),
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe reconstruction figures --dir {params.dir:q} --sheet {input.sheet:q}"
        " --block {wildcards.block} --results results --out-dir {params.out_dir:q}"
        " --viewer {output.viewer:q} > {log:q} 2>&1"


# Every nucleus of the block (the segmentation stage's nuclei.parquet of its slides)
# in block µm, with its phenotype: the block's transforms applied to the nuclei.
rule reconstruction_cells:
    input:
        sheet=ancient(config["slides"]),
        transforms="results/reconstruction/{block}/transforms.json",
        nuclei=block_nuclei_tables,
    output:
        cells="results/reconstruction/{block}/cells.parquet",
    log:
        "logs/reconstruction/{block}_cells.log",
    benchmark:
        "logs/benchmarks/reconstruction/{block}_cells.tsv"
    conda:
        "../../envs/pathpipe.yaml"
    shell:
        "pathpipe reconstruction cells --transforms {input.transforms:q} --sheet {input.sheet:q}"
        " --block {wildcards.block} --results results --out {output.cells:q}"
        " > {log:q} 2>&1"
