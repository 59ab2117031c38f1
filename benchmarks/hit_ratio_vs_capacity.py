"""Hit ratio versus cache capacity for every eviction policy on a trace (single tier, replay).

Writes ``<out>/<name>_hit_ratio_vs_capacity.csv``, ``.md`` and ``.png`` (Belady, the offline
bound, drawn dashed). Run::

    python benchmarks/hit_ratio_vs_capacity.py [--trace PATH] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from policies.registry import available, resolve  # noqa: E402
from sim.replay import replay_single_tier  # noqa: E402
from traces import open_trace  # noqa: E402
from traces.atomic import atomic_path, write_text_atomic  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_TRACE = (ROOT / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl").resolve()
CAPACITIES = [500, 1000, 2000, 4000, 8000, 16000, 32000]


def sweep(trace, capacities: list[int], policies: list[str]) -> pd.DataFrame:
    rows = []
    for name in policies:
        for capacity in capacities:
            hits = replay_single_tier(trace, capacity, resolve("eviction", name)())
            rows.append({"policy": name, "capacity_blocks": capacity, "hit_ratio": float(hits.mean())})
            print(f"{name:<16}{capacity:>7}  {hits.mean():.4f}", flush=True)
    return pd.DataFrame(rows)


def markdown_table(wide: pd.DataFrame) -> str:
    columns = [str(c) for c in wide.columns]
    lines = ["| policy | " + " | ".join(columns) + " |", "|---|" + "---|" * len(columns)]
    for policy, row in wide.iterrows():
        lines.append(f"| {policy} | " + " | ".join(f"{v:.4f}" for v in row) + " |")
    return "\n".join(lines)


def plot(table: pd.DataFrame, title: str, path: Path) -> None:
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name, group in table.groupby("policy"):
        ax.plot(group["capacity_blocks"], group["hit_ratio"], marker="o", ms=3, label=name,
                ls="--" if name == "belady" else "-", color="black" if name == "belady" else None)  # fmt: skip
    ax.set_xscale("log")
    ax.set_xlabel("cache capacity (blocks)")
    ax.set_ylabel("block hit ratio")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, ncol=2)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, bbox_inches="tight", format="png")
    plt.close(fig)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--name", default="mooncake")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results")
    parser.add_argument("--policies", default=",".join(available("eviction")))
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    trace = open_trace(args.trace)
    table = sweep(trace, CAPACITIES, args.policies.split(","))
    wide = table.pivot(index="policy", columns="capacity_blocks", values="hit_ratio")
    args.out.mkdir(parents=True, exist_ok=True)
    stem = args.out / f"{args.name}_hit_ratio_vs_capacity"
    with atomic_path(stem.with_suffix(".csv")) as tmp:
        table.to_csv(tmp, index=False)
    header = f"Block hit ratio, single tier, replay mode, {args.trace.name} ({trace.n_block_accesses:,} accesses)\n\n"
    write_text_atomic(stem.with_suffix(".md"), header + markdown_table(wide) + "\n")
    plot(table, f"{args.name}: hit ratio vs capacity", stem.with_suffix(".png"))
    print(f"wrote {stem}.csv/.md/.png")
    return 0


if __name__ == "__main__":
    sys.exit(main())
