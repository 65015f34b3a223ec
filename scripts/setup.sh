#!/usr/bin/env bash
# One-time, idempotent set-up of pathpipe on a fresh Debian/Ubuntu machine.
#
#   bash scripts/setup.sh          # creates .venv and installs everything
#
# What it does (each step is skipped when already done):
#   1. Debian packages: libusb-1.0-0 (open3d needs it) when running as root;
#      otherwise it only warns.
#   2. A virtual environment in .venv (Python >= 3.11; PYTHON=... to choose).
#   3. pip installs, in the order their build quirks need:
#      - numpy and versioneer first, then pyradiomics with --no-build-isolation
#        (its build imports both);
#      - torch==2.13.0 (on these machines the CPU build lies on local disk; a
#        plain "torch" would pull a multi-GB CUDA build; TORCH_SPEC=... overrides);
#      - pathpipe itself, editable, with the workflow and test extras.
#   A stamp (.venv/.pathpipe-setup) records a hash of this script and
#   pyproject.toml; when neither changed, step 3 is skipped.
set -euo pipefail

ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
PYTHON="${PYTHON:-python3}"
VENV="${VENV:-$ROOT/.venv}"
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"

say() { printf '[setup] %s\n' "$*" >&2; }

# 1. Debian packages --------------------------------------------------------
need_deb=()
for pkg in libusb-1.0-0; do
    dpkg -s "$pkg" >/dev/null 2>&1 || need_deb+=("$pkg")
done
if ((${#need_deb[@]})); then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        say "installing Debian packages: ${need_deb[*]}"
        export DEBIAN_FRONTEND=noninteractive
        apt-get update -qq >/dev/null || say "apt-get update failed; trying the install anyway"
        apt-get install -y -qq "${need_deb[@]}" >/dev/null
    else
        say "WARNING: Debian packages missing and not root: ${need_deb[*]} (open3d needs libusb-1.0-0)"
    fi
fi

# 2. virtual environment ----------------------------------------------------
if [ ! -x "$VENV/bin/python" ]; then
    "$PYTHON" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
        say "ERROR: $PYTHON is $("$PYTHON" --version 2>&1); pathpipe needs Python >= 3.11"
        exit 1
    }
    say "creating $VENV"
    "$PYTHON" -m venv "$VENV"
fi
PY="$VENV/bin/python"

# 3. Python packages --------------------------------------------------------
stamp_file="$VENV/.pathpipe-setup"
stamp="$(cat "$ROOT/scripts/setup.sh" "$ROOT/pyproject.toml" | sha256sum | cut -d' ' -f1) $TORCH_SPEC"
if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$stamp" ]; then
    say "Python packages up to date"
    exit 0
fi
# Some machines' pip config lists local indexes that do not exist; pip warns once
# per package about them. Drop those lines only (the exit status is pip's own).
pip_install() {
    "$PY" -m pip install --disable-pip-version-check -q "$@" \
        2> >(grep -v "is ignored: it is neither a file nor a directory" >&2)
}
say "installing Python packages (first run takes a few minutes)"
pip_install --upgrade pip wheel setuptools
pip_install numpy versioneer
pip_install "$TORCH_SPEC"
# pyradiomics 3.1.0 ships only an sdist whose versioneer metadata says 3.0.1a1,
# so it is not pinned (a ">=3.1" pin fails the version check).
pip_install --no-build-isolation pyradiomics
pip_install -e "$ROOT[workflow,full,test]"
"$PY" -c 'import pathpipe, openslide, tiffslide, zarr, snakemake' >/dev/null
echo "$stamp" >"$stamp_file"
say "done: $("$PY" -c 'import pathpipe; print("pathpipe", pathpipe.__version__)')"
