"""``kvsim-collect SWEEP_DIR [-o table.parquet] [--rank METRIC ...]``: every run of a sweep in
one Parquet table, and optionally the runs ranked by what matters.

One row per run: its overrides (``override.<key>`` columns), ``status`` (ok, failed,
incomplete), the error of a failed run, and the summary metrics. Failed and interrupted runs
are listed, never dropped. The table is written atomically. ``--rank token_hit_ratio
ttft_s_p99`` also prints the completed runs best first by the first metric (hit ratios,
attainment and throughput higher, everything else lower), with the overrides that differ.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from sim.results import check_metrics, higher_is_better, load_sweep, rank_runs
from traces.atomic import atomic_path, unwritable_file


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsim-collect", description=__doc__.splitlines()[0])
    parser.add_argument("sweep_dir", type=Path)
    parser.add_argument("-o", "--output", type=Path, default=None, help="default: SWEEP_DIR/collected.parquet")
    parser.add_argument(
        "--rank", nargs="+", metavar="METRIC", default=None,
        help="print the completed runs best first by these summary metrics (e.g. token_hit_ratio ttft_s_p99)",
    )  # fmt: skip
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
    if args.rank:
        try:  # before anything is written: a misspelt metric is the user's to fix first
            check_metrics(table, args.rank)
        except KeyError as exc:
            print(f"kvsim-collect: error: {exc.args[0]}", file=sys.stderr)
            return 2
    out = args.output or args.sweep_dir / "collected.parquet"
    reason = unwritable_file(out)
    if reason is not None:
        print(f"kvsim-collect: error: {out}: cannot be written: {reason}", file=sys.stderr)
        return 2
    with atomic_path(out) as tmp:
        table.to_parquet(tmp, index=False)
    counts = table["status"].value_counts().to_dict()
    print(f"kvsim-collect: {len(table)} runs ({', '.join(f'{v} {k}' for k, v in sorted(counts.items()))}) -> {out}")
    failed = table[table["status"] == "failed"]
    for _, row in failed.iterrows():
        print(f"  failed: {row['run_dir']}: {row['error']}")
    if args.rank:
        ranked = rank_runs(table, args.rank)
        order = ", ".join(f"{m} ({'higher' if higher_is_better(m) else 'lower'} is better)" for m in args.rank)
        print(f"\nranked by {order}:")
        print(ranked.to_string(float_format=lambda v: f"{v:.4g}"))
    return 0


if __name__ == "__main__":
    sys.exit(main())
