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
# A block of 8 serial sections (one lost, so 7 slides: demo_block_s00..s07 in
# config/slides.tsv) for the reconstruction stage: 2 mm slides at 0.5 µm/px, the
# resolution the demo tiles at, 4 µm apart as config reconstruction.section_spacing
# says. Seeded; skipped when already there.
if [ ! -f resources/demo_block/truth.json ]; then
  pathpipe synthetic serial --out-dir resources/demo_block --block demo_block --sections 8 \
    --size 4096 --mpp 0.5 --spacing-um 4 --seed 0
fi
# profiles/default (cores, rerun triggers...) is Snakemake's workflow profile: it
# applies to every run from this directory without being named.
snakemake "$@"
snakemake --report results/report.html
echo "Report: $ROOT/results/report.html"
