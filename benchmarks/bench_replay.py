"""Replay speed: block accesses per second for each eviction policy on the Mooncake slice.

Target (issue #4): LRU at >= 2 M accesses/s. Prints each policy's rate and, for LRU, the ratio
to the target. Run::

    python benchmarks/bench_replay.py [--trace PATH] [--capacity 8000] [--policies lru,fifo,...]
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from policies.registry import available, resolve
from sim.replay import replay_single_tier
from traces import open_trace

DEFAULT_TRACE = (
    Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
).resolve()
LRU_TARGET = 2e6


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE)
    parser.add_argument("--capacity", type=int, default=8000)
    parser.add_argument("--policies", default=",".join(available("eviction")))
    parser.add_argument("--repeat", type=int, default=3)
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    trace = open_trace(args.trace)
    print(f"{trace.n_block_accesses:,} block accesses, capacity {args.capacity:,} blocks")
    for name in args.policies.split(","):
        rates = []
        for _ in range(args.repeat):
            policy = resolve("eviction", name)()
            start = time.perf_counter()
            hits = replay_single_tier(trace, args.capacity, policy)
            rates.append(len(hits) / (time.perf_counter() - start))
        rate = sorted(rates)[len(rates) // 2]
        note = f"   target {LRU_TARGET / 1e6:.0f} M/s: ratio {rate / LRU_TARGET:.2f}" if name == "lru" else ""
        print(f"{name:<16}{rate / 1e6:>7.2f} M accesses/s   hit ratio {hits.mean():.4f}{note}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
