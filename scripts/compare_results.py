"""Compare two results/ folders: every table and every Zarr array must be equal.

    python scripts/compare_results.py BEFORE/results AFTER/results

For refactors that must not change outputs. Compared:

* every Parquet table (values, columns and their order, row order, dtypes);
* every TSV table except the provenance page's (versions, runtimes, checksums of
  files that embed timestamps);
* every array of every Zarr store (values, shape, dtype, chunking).

Ignored: provenance fields (timestamps, versions, paths, runtimes) in Parquet
metadata and Zarr attributes, JSON files, figures and logs. Prints one line per
difference and exits 1 when there is any.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pandas as pd
import zarr

SKIP_TSV = {"versions.tsv", "runtimes.tsv", "runtimes_jobs.tsv", "checksums.tsv"}


def _tables(root: Path) -> dict[str, Path]:
    out = {}
    for path in root.rglob("*"):
        if ".zarr" in path.parts[-1] or any(p.endswith(".zarr") for p in path.parts):
            continue
        if path.suffix == ".parquet" or (path.suffix == ".tsv" and path.name not in SKIP_TSV):
            out[str(path.relative_to(root))] = path
    return out


def _stores(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in root.rglob("*.zarr") if p.is_dir()}


def _arrays(group, prefix=""):
    for name, item in group.members():
        key = f"{prefix}{name}"
        if isinstance(item, zarr.Group):
            yield from _arrays(item, key + "/")
        else:
            yield key, item


def compare(before: Path, after: Path) -> list[str]:
    problems = []
    tb, ta = _tables(before), _tables(after)
    for missing in sorted(tb.keys() ^ ta.keys()):
        problems.append(f"table only in {'before' if missing in tb else 'after'}: {missing}")
    for key in sorted(tb.keys() & ta.keys()):
        if key.endswith(".parquet"):
            a, b = pd.read_parquet(tb[key]), pd.read_parquet(ta[key])
        else:
            a = pd.read_csv(tb[key], sep="\t", keep_default_na=False)
            b = pd.read_csv(ta[key], sep="\t", keep_default_na=False)
        try:
            pd.testing.assert_frame_equal(a, b, check_exact=True)
        except AssertionError as exc:
            problems.append(f"table differs: {key}: {str(exc).splitlines()[0:3]}")
    sb, sa = _stores(before), _stores(after)
    for missing in sorted(sb.keys() ^ sa.keys()):
        problems.append(f"store only in {'before' if missing in sb else 'after'}: {missing}")
    n_arrays = 0
    for key in sorted(sb.keys() & sa.keys()):
        ga, gb = zarr.open_group(str(sb[key]), mode="r"), zarr.open_group(str(sa[key]), mode="r")
        aa, ab = dict(_arrays(ga)), dict(_arrays(gb))
        for missing in sorted(aa.keys() ^ ab.keys()):
            problems.append(
                f"array only in {'before' if missing in aa else 'after'}: {key}/{missing}"
            )
        for name in sorted(aa.keys() & ab.keys()):
            x, y = aa[name], ab[name]
            n_arrays += 1
            if (x.shape, x.dtype, x.chunks) != (y.shape, y.dtype, y.chunks):
                problems.append(f"array layout differs: {key}/{name}")
            elif not np.array_equal(x[...], y[...], equal_nan=x.dtype.kind == "f"):
                problems.append(f"array values differ: {key}/{name}")
    print(
        f"{len(tb.keys() & ta.keys())} tables, {len(sb.keys() & sa.keys())} stores, "
        f"{n_arrays} arrays compared; {len(problems)} differences"
    )
    return problems


def main() -> int:
    if len(sys.argv) != 3:
        print(__doc__, file=sys.stderr)
        return 2
    problems = compare(Path(sys.argv[1]), Path(sys.argv[2]))
    for p in problems:
        print(p)
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
