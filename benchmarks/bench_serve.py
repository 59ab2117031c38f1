"""Serve-mode speed: simulated requests per wall-clock second on the Mooncake conversation slice.

Target (issue #3): the whole 12,031-request trace on one H100-class replica with HBM, DRAM and
SSD tiers in at most 10 s on one core. Prints the wall time, requests/s and the ratio to the
target; exits non-zero only when the trace is missing. Run::

    python benchmarks/bench_serve.py [--trace PATH] [--replicas N] [--repeat K]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from sim.config import HardwareConfig, SimConfig
from sim.run import run
from traces import open_trace

DEFAULT_TRACE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"
TARGET_S = 10.0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trace", type=Path, default=DEFAULT_TRACE.resolve())
    parser.add_argument("--replicas", type=int, default=1)
    parser.add_argument("--repeat", type=int, default=3, help="runs to take the median of")
    args = parser.parse_args(argv)
    if not args.trace.exists():
        print(f"trace not found: {args.trace}", file=sys.stderr)
        return 2
    trace = open_trace(args.trace, format="mooncake")
    config = SimConfig(
        hardware=HardwareConfig(gpu="h100-sxm", dram_gb=200, ssd_gb=2000, n_replicas=args.replicas),
        routing="prefix_affinity" if args.replicas > 1 else "round_robin",
        # The placement its recorded timings were measured under (the default until
        # 2026-12-08): evictions cascade through three tiers, the engine's costliest path.
        admission="ssd_spill",
    )
    walls = []
    for _ in range(args.repeat):
        start = time.perf_counter()
        result = run(config, trace)
        walls.append(time.perf_counter() - start)
    wall = statistics.median(walls)
    s = result.summary
    print(f"trace            {args.trace.name}: {len(trace):,} requests, {args.replicas} replica(s)")
    print(f"finished         {s['n_finished']:,} (rejected {s['n_rejected']:,})")
    print(f"wall time        {wall:.2f} s (median of {len(walls)}: {', '.join(f'{w:.2f}' for w in walls)})")
    print(f"requests / s     {len(trace) / wall:,.0f}")
    print(f"target           {TARGET_S:.0f} s for the whole trace -> ratio target/actual = {TARGET_S / wall:.2f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
