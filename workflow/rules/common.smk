# Helpers shared by the stage files (tissue.smk, tiling.smk): reading the slide
# sheet, input functions, and the command-line arguments derived from config.
# Only functions live here, no rules.

import json
import os
import shlex
from pathlib import Path

import pandas as pd
import yaml
from snakemake.exceptions import WorkflowError
from snakemake.utils import validate


# Absolute path of the sheet schema, resolved now (relative to this file) because
# load_slides() is called from the Snakefile, whose directory is the repo root.
SLIDE_SCHEMA = os.path.normpath(
    workflow.current_basedir.join("../schemas/slides.schema.yaml").get_path_or_uri(
        secret_free=True
    )
)

# envs/pathpipe.yaml installs pathpipe with `pip install -e ${PATHPIPE_SOURCE}`:
# point it at this checkout (see the comment there).
os.environ.setdefault("PATHPIPE_SOURCE", str(workflow.basedir))

wildcard_constraints:
    slide=r"[A-Za-z0-9_-]+",
    block=r"[A-Za-z0-9_-]+",

# Sheet columns that hold text even when every value looks like a number
# (patient "007" must stay "007"). mpp and section are parsed as numbers.
TEXT_COLUMNS = ["slide_id", "path", "label", "patient", "split", "block"]


def load_slides(sheet_path):
    """Read, validate and index the slide sheet; return a DataFrame indexed by slide_id.

    Raises WorkflowError naming the offending column, slide id or row: unknown
    columns, schema violations (missing slide_id/path, bad slide id, bad split or
    mpp), duplicate slide ids, and blocks of serial sections that are not well
    formed (a block without a section, a section without a block, two slides of
    one block and section) are all reported before any job is scheduled.
    """
    sheet_path = Path(sheet_path)
    if not sheet_path.is_file():
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r} (config key 'slides') not found; "
            f"expected a tab-separated file relative to the working directory {str(Path.cwd())!r}"
        )
    try:
        slides = pd.read_csv(
            sheet_path,
            sep="\t",
            dtype={column: str for column in [*TEXT_COLUMNS, "annotations"]},
            keep_default_na=False,
            na_values=[""],
            skip_blank_lines=True,
        )
    except (pd.errors.ParserError, pd.errors.EmptyDataError, ValueError) as e:
        raise WorkflowError(f"slide sheet {str(sheet_path)!r} is not a readable TSV file", e)
    if slides.empty:
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r} lists no slides; expected a header row "
            "and one row per slide"
        )
    with open(SLIDE_SCHEMA) as f:
        known = list(yaml.safe_load(f)["properties"])
    unknown = [column for column in slides.columns if column not in known]
    if unknown:
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r} has unknown column(s) {unknown}; "
            f"expected only {known}"
        )
    try:
        validate(slides, schema=SLIDE_SCHEMA)
    except WorkflowError as e:
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r} is invalid (rows are counted from 0 "
            f"below the header; columns are described in {SLIDE_SCHEMA})",
            e,
        )
    duplicated = sorted(set(slides.loc[slides["slide_id"].duplicated(), "slide_id"]))
    if duplicated:
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r}: slide_id must be unique, "
            f"but {duplicated} appear more than once"
        )
    # Blocks of serial sections (the reconstruction stage; the same rules as
    # pathpipe.reconstruction.inputs.check_sheet_sections on the command line).
    block = slides["block"] if "block" in slides.columns else pd.Series(pd.NA, slides.index)
    section = slides["section"] if "section" in slides.columns else pd.Series(pd.NA, slides.index)
    problems = []
    no_section = slides.loc[block.notna() & section.isna(), "slide_id"].tolist()
    if no_section:
        problems.append(f"slides {no_section} have a block but no section")
    no_block = slides.loc[block.isna() & section.notna(), "slide_id"].tolist()
    if no_block:
        problems.append(f"slides {no_block} have a section but no block")
    both = block.notna() & section.notna()
    for (b, k), rows in slides[both].groupby([block[both], section[both]]):
        if len(rows) > 1:
            problems.append(f"{rows['slide_id'].tolist()} share block {b!r} section {k:g}")
    if problems:
        raise WorkflowError(
            f"slide sheet {str(sheet_path)!r}: {'; '.join(problems)}; expected every slide "
            "of a block to have its own section number (and a section only with a block)"
        )
    return slides.set_index("slide_id", drop=False)


def missing_slide_files():
    """Return "slide_id: path" for every sheet row whose file does not exist."""
    return [
        f"{slide_id}: {path}"
        for slide_id, path in SLIDES["path"].items()
        if not Path(path).exists()
    ]


def check_slide_files():
    """Fail with one message naming every missing slide file.

    Called while the DAG is built (from the cohort-level input functions), so the
    error comes before any job starts, yet `snakemake --lint` works on a checkout
    without the (generated) demo slides.
    """
    missing = missing_slide_files()
    if missing:
        raise WorkflowError(
            f"{len(missing)} slide file(s) listed in {config['slides']!r} not found "
            f"(relative paths are relative to the working directory {str(Path.cwd())!r}):\n  "
            + "\n  ".join(missing)
        )


# ---- input functions ---------------------------------------------------------


def slide_path(wildcards):
    """Input function: the slide file of ``wildcards.slide``."""
    if wildcards.slide not in SLIDES.index:
        raise WorkflowError(
            f"slide {wildcards.slide!r} is not in the slide sheet {config['slides']!r}"
        )
    return SLIDES.loc[wildcards.slide, "path"]


def cohort_tile_stores(wildcards):
    """Input function: every slide's tiles.zarr (after checking all slide files exist)."""
    check_slide_files()
    return expand("results/{slide}/tiles.zarr", slide=SLIDES.index)


def cohort_nuclei_stores(wildcards):
    """Input function: every slide's nuclei.zarr (after checking all slide files exist)."""
    check_slide_files()
    return expand("results/{slide}/nuclei.zarr", slide=SLIDES.index)


def final_outputs(wildcards):
    """Input function of the target `all`: every per-slide and cohort output."""
    return [*stage_outputs(wildcards), *PROVENANCE_OUTPUTS]


def stage_outputs(wildcards):
    """Input function: the outputs of every stage (all of `all` but the provenance page)."""
    check_slide_files()
    return [
        *expand(
            [
                "results/{slide}/tissue.png",
                "results/{slide}/tissue_overlay.png",
                "results/{slide}/tissue.json",
                "results/{slide}/tiles.zarr",
                "results/{slide}/nuclei.zarr",
                "results/{slide}/nuclei.parquet",
                "results/{slide}/nuclei.geojson",
                "results/{slide}/segmentation.png",
                "results/{slide}/nuclear_features.parquet",
                "results/{slide}/tile_features.parquet",
                "results/{slide}/features.png",
            ],
            slide=SLIDES.index,
        ),
        "results/cohort/tiling_summary.tsv",
        "results/cohort/segmentation_summary.tsv",
        *(mil_outputs() if config["mil"]["enabled"] else []),
        *reconstruction_outputs(),
    ]


# Files of the provenance page (rule provenance), all in the report.
PROVENANCE_OUTPUTS = [
    f"results/cohort/provenance/{name}"
    for name in ("config.yaml", "versions.tsv", "checksums.tsv", "runtimes.tsv", "runtimes_jobs.tsv")
]


# ---- stage mil -----------------------------------------------------------------


def labelled_slides():
    """Slide ids with a label in the sheet: the cohort of the mil stage.

    Raises WorkflowError (while the DAG is built) when the stage is enabled but
    the labels do not hold two classes.
    """
    if "label" in SLIDES.columns:
        labelled = SLIDES.loc[SLIDES["label"].notna(), "slide_id"].tolist()
        classes = sorted(SLIDES["label"].dropna().unique())
    else:
        labelled, classes = [], []
    if len(classes) != 2:
        raise WorkflowError(
            f"mil.enabled is true, but the slide sheet {config['slides']!r} labels "
            f"{len(labelled)} slide(s) with {len(classes)} class(es) {classes}; expected "
            "labels of exactly two classes (set mil.enabled: false to run without the mil stage)"
        )
    return labelled


def mil_outputs():
    """Every output of the mil stage: cohort model and figures, per-slide heatmaps."""
    labelled_slides()
    return [
        *[f"results/cohort/mil/{name}" for name in MIL_FILES],
        *[f"results/cohort/mil/shap/{name}" for name in MIL_SHAP_FILES],
        *expand(
            [
                "results/cohort/mil/heatmaps/{slide}.png",
                "results/cohort/mil/galleries/{slide}.png",
                "results/cohort/mil/attention/{slide}.parquet",
            ],
            slide=SLIDES.index,
        ),
    ]


MIL_FILES = ["table1.tsv", "predictions.tsv", "roc.png", "metrics.json", "model"]
MIL_SHAP_FILES = [
    "shap_beeswarm_train.png",
    "shap_beeswarm_test.png",
    "shap_waterfall.png",
    "shap_importance.tsv",
    "shap_families.tsv",
    "shap_values.parquet",
    "shap_tiles.tsv",
]


def mil_tables(wildcards):
    """Input function: tile features of the labelled slides (the mil cohort)."""
    check_slide_files()
    return expand("results/{slide}/tile_features.parquet", slide=labelled_slides())


def all_tile_tables(wildcards):
    """Input function: tile features of every slide (explained and predicted by mil)."""
    check_slide_files()
    return expand("results/{slide}/tile_features.parquet", slide=SLIDES.index)


def mil_embedding_files(wildcards):
    """Input function: the user's tile embeddings of the labelled slides, if configured."""
    pattern = config["mil"]["embeddings"]
    if not pattern:
        return []
    return [pattern.replace("{slide}", slide) for slide in labelled_slides()]


def mil_gpus(wildcards):
    """Resource `gpu`: 1 when mil.device names a CUDA device.

    Unlike segmentation, `auto` requests none: AMIL on tile features is small and
    trains on CPU nodes in minutes; `auto` still uses a GPU the job happens to see.
    """
    return int(config["mil"]["device"].startswith("cuda"))


# ---- stage reconstruction ------------------------------------------------------


# Files of one block in results/reconstruction/{block}/: `pathpipe reconstruction
# run`, then `pathpipe reconstruction figures` (figures/ and the 3D viewer), and
# cells.parquet when reconstruction.cells is on.
RECONSTRUCTION_FILES = [
    "registration.tsv",
    "transforms.json",
    "points.ply",
    "volume.zarr",
    "mesh.ply",
    "summary.json",
]
RECONSTRUCTION_FIGURES = ["figures/pairs.png", "figures/slices.png", "figures/view3d.png"]


def blocks():
    """Block ids of the sheet's `block` column, sorted; none when the stage is disabled.

    Slides without a block (an empty cell) belong to none and are not reconstructed.
    """
    if not config["reconstruction"]["enabled"] or "block" not in SLIDES.columns:
        return []
    return sorted(SLIDES["block"].dropna().unique())


def block_slides(block):
    """Slide ids of one block, in section order."""
    rows = SLIDES.loc[SLIDES["block"] == block]
    if rows.empty:
        raise WorkflowError(
            f"block {block!r} is not in the slide sheet {config['slides']!r}; "
            f"blocks there: {blocks()}"
        )
    return rows.sort_values("section")["slide_id"].tolist()


def reconstruction_outputs():
    """Every output of the reconstruction stage: each block's files, figures and viewer."""
    names = [*RECONSTRUCTION_FILES, *RECONSTRUCTION_FIGURES, "viewer.html"]
    if config["reconstruction"]["cells"]:
        names.append("cells.parquet")
    return expand("results/reconstruction/{block}/{name}", block=blocks(), name=names)


def block_tissue_files(wildcards):
    """Input function: tissue.png and tissue.json of each slide of ``wildcards.block``."""
    check_slide_files()
    return expand(
        ["results/{slide}/tissue.png", "results/{slide}/tissue.json"],
        slide=block_slides(wildcards.block),
    )


def block_mask_files(wildcards):
    """Input function: what the block's layers are made of.

    The tissue stage's files always (they give each mask's µm/px); the nuclei tables
    too when reconstruction.mask is ``phenotype:<class>`` (density of that class), the
    sheet's `annotations` files when it is ``annotation:<class>``.
    """
    files = block_tissue_files(wildcards)
    mask = config["reconstruction"]["mask"]
    if mask.startswith("phenotype:"):
        files += block_nuclei_tables(wildcards)
    elif mask.startswith("annotation:") and "annotations" in SLIDES.columns:
        paths = SLIDES.loc[block_slides(wildcards.block), "annotations"]
        files += [p for p in paths if isinstance(p, str) and p]
    return files


def block_nuclei_tables(wildcards):
    """Input function: nuclei.parquet of each slide of ``wildcards.block``."""
    check_slide_files()
    return expand("results/{slide}/nuclei.parquet", slide=block_slides(wildcards.block))


def block_sections(wildcards):
    """Params function: the block's `slide_id:section` pairs, so a changed order reruns it."""
    rows = SLIDES.loc[block_slides(wildcards.block)]
    return " ".join(
        f"{s}:{n if pd.isna(n) else int(n)}" for s, n in zip(rows["slide_id"], rows["section"])
    )


# ---- command-line arguments --------------------------------------------------


def slide_mpp(slide_id):
    """Return ``(mpp, source)`` for a slide: the sheet's mpp, else config slide.mpp.

    ``(None, None)`` means neither gives one: the slide file must carry its own
    MPP metadata. Where the file does carry it, pathpipe uses the metadata and
    ignores the value passed here (it is a fallback).
    """
    if "mpp" in SLIDES.columns and pd.notna(SLIDES.loc[slide_id, "mpp"]):
        return float(SLIDES.loc[slide_id, "mpp"]), "sheet"
    if config["slide"]["mpp"] is not None:
        return float(config["slide"]["mpp"]), "config"
    return None, None


def slide_args(wildcards):
    """Params function: the options every stage that opens a slide passes to pathpipe.

    ``--backend B`` always; ``--slide-mpp X --slide-mpp-source sheet|config`` only
    when the sheet or config supplies an MPP for this slide.
    """
    args = ["--backend", config["slide"]["backend"]]
    mpp, source = slide_mpp(wildcards.slide)
    if mpp is not None:
        args += ["--slide-mpp", repr(mpp), "--slide-mpp-source", source]
    return " ".join(args)


def cli_options(block, *, skip=()):
    """Params helper: a config block as `pathpipe` options, one `--key value` per key.

    The conventions of `pathpipe.params` (which generates the options from each
    stage's parameter dataclass): a bool is `--key` / `--no-key`, a list is
    comma-separated, a mapping is `name=value` pairs, null is `none`; strings are
    quoted for the shell. Keys in `skip` (nested blocks, keys a rule passes itself)
    are left out.
    """
    args = []
    for key, value in block.items():
        if key in skip:
            continue
        name = key.replace("_", "-")
        if isinstance(value, bool):
            args.append(f"--{name}" if value else f"--no-{name}")
            continue
        if value is None:
            text = "none"
        elif isinstance(value, (list, tuple)):
            text = ",".join(str(v) for v in value)
        elif isinstance(value, dict):
            text = ",".join(f"{k}={v}" for k, v in value.items())
        else:
            text = str(value)
        args.append(f"--{name} {shlex.quote(text)}")
    return " ".join(args)


def segmentation_model_files(wildcards):
    """Input function: the trained model or classifier the segmentation config names.

    Listing them as inputs makes a new model rerun the stage, and a missing file an
    error before any job starts.
    """
    seg = config["segmentation"]
    if seg["method"] == "unet":
        return [seg["model"]] if seg["model"] else []
    return [seg["phenotype_model"]] if seg["phenotype_model"] else []


def segmentation_gpus(wildcards):
    """Resource `gpu`: 1 for the unet method unless it is told to run on the CPU."""
    seg = config["segmentation"]
    return int(seg["method"] == "unet" and seg["device"] != "cpu")


# ---- provenance ----------------------------------------------------------------


def provenance_model_files(wildcards):
    """Input function: user-provided models and embeddings the config names."""
    return [*segmentation_model_files(wildcards), *(
        mil_embedding_files(wildcards) if config["mil"]["enabled"] else []
    )]


def provenance_file_args(wildcards):
    """Params function: `--file KIND=PATH` of the config file, sheet and user models."""
    files = [
        ("config" if i == 0 else f"config_{i}", path)
        for i, path in enumerate(dict.fromkeys(workflow.configfiles))
    ]
    files.append(("sheet", config["slides"]))
    seg = config["segmentation"]
    for key in ("model", "phenotype_model"):
        if seg[key]:
            files.append((f"segmentation_{key}", seg[key]))
    return " ".join(f"--file {shlex.quote(f'{kind}={path}')}" for kind, path in files)
