#!/usr/bin/env bash
# Set up (idempotent), generate the synthetic part of the demo cohort, run the
# workflow on the bundled demo cohort (config/config.yaml + config/slides.tsv)
# and build the HTML report at results/report.html.
#
# Extra arguments go to snakemake, e.g.  bash scripts/demo.sh --cores 1
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# Synthetic slides with known nuclei (seeded, skipped when already there).
pathpipe synthetic cohort --out-dir resources/demo --n-per-class 6 --size 4096 --mpp 0.25 --seed 0
# profiles/default (cores, rerun triggers...) is Snakemake's workflow profile: it
# applies to every run from this directory without being named.
snakemake "$@"
snakemake --report results/report.html
echo "Report: $ROOT/results/report.html"
