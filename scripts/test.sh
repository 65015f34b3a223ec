#!/usr/bin/env bash
# Set up (idempotent) and run the test suite. Extra arguments go to pytest,
# e.g.  bash scripts/test.sh -m "not slow"   or   bash scripts/test.sh -k tiling
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$ROOT/scripts/setup.sh"
cd "$ROOT"
export PATH="$ROOT/.venv/bin:$PATH"
# pytest exits non-zero when a test fails (and 5 when none ran: also a failure here)
exec "$ROOT/.venv/bin/python" -m pytest "$@"
