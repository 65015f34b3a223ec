# pathpipe: whole-slide images to tiles, nuclei, cellular features and slide
# classification (stages `tissue`, `tiling`, `segmentation`, `features`, `mil`),
# 3D reconstruction of blocks of serial sections (`reconstruction`), with a
# provenance page in the report.
#
#   snakemake                                       # run locally (profiles/default applies)
#   snakemake --workflow-profile profiles/slurm     # run on a SLURM cluster
#   snakemake --report results/report.html          # HTML report of the results
#
# Configure in config/config.yaml and the slide sheet (see config/README.md).
#
# This file only validates the config and the slide sheet, includes the rule
# files and declares the final targets; helpers live in workflow/rules/common.smk.

from snakemake.utils import min_version, validate

min_version("9.0")


configfile: "config/config.yaml"


validate(config, schema="workflow/schemas/config.schema.yaml")


report: "workflow/report/workflow.rst"


include: "workflow/rules/common.smk"


# The slide sheet, validated against workflow/schemas/slides.schema.yaml and
# indexed by slide_id.
SLIDES = load_slides(config["slides"])


include: "workflow/rules/tissue.smk"
include: "workflow/rules/tiling.smk"
include: "workflow/rules/segmentation.smk"
include: "workflow/rules/features.smk"
include: "workflow/rules/mil.smk"
include: "workflow/rules/reconstruction.smk"
include: "workflow/rules/provenance.smk"


rule all:
    input:
        final_outputs,
    default_target: True
