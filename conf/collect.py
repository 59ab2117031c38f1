"""``kvsim-collect SWEEP_DIR [-o table.parquet]``: every run of a sweep in one Parquet table.

One row per run: its overrides (``override.<key>`` columns), ``status`` (ok, failed,
incomplete), the error of a failed run, and the summary metrics. Failed and interrupted runs
are listed, never dropped. The table is written atomically.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.results import load_sweep
from traces.atomic import atomic_path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsim-collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=None, help="default: SWEEP_DIR/collected.parquet")
    args = parser.parse_args(argv)
    try:
        table = load_sweep(args.sweep_dir)
    except FileNotFoundError as exc:
        print(f"kvsim-collect: error: {exc}", file=sys.stderr)
        return 2
    if not len(table):
        found = "no summary.json, error.json or overrides.json"
        print(f"kvsim-collect: error: {args.sweep_dir}: no kvsim runs in it ({found})", file=sys.stderr)
        return 2
    out = args.output or args.sweep_dir / "collected.parquet"
    if out.is_dir():
        print(f"kvsim-collect: error: {out} is a directory; give -o a file name", file=sys.stderr)
        return 2
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    print(f"kvsim-collect: {len(table)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}) -> {out}")
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"  failed: {row['run_dir']}: {row['error']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
