"""Scale: a generated 1,000,000-request trace through replay and serve mode, with peak memory.

Target (issue #7): both modes finish without exhausting memory, peak RSS <= 2 GB. Each mode
runs in its own process so that its peak RSS is its own. Prints, per mode, the wall time and
the peak RSS with its ratio to the target. Run::

    python benchmarks/bench_scale.py [--n 1000000] [--modes replay,serve] [--block-size 256]

The trace is the default mixed workload (chat, RAG, agents) at ``--rate`` requests/s over
``--replicas`` replicas; hashed at 256-token blocks by default, so the replay stream has
~15 M accesses. Serve mode takes several minutes per million requests.
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time

TARGET_RSS_GB = 2.0


def peak_rss_gb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 / 1e9  # ru_maxrss is KiB on Linux


def child(mode: str, n: int, block_size: int, rate: float, replicas: int) -> None:
    from sim.config import HardwareConfig, SimConfig, TierConfig
    from sim.run import run
    from traces import generate

    start = time.perf_counter()
    trace = generate("mixed", 0, n_requests=n, rate=rate, block_size=block_size)
    generated = time.perf_counter() - start
    if mode == "replay":
        config = SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=200_000))
    else:
        config = SimConfig(
            hardware=HardwareConfig(n_replicas=replicas, dram_gb=256),
            routing="prefix_affinity",
            timeseries_interval_s=10.0,
        )
    start = time.perf_counter()
    result = run(config, trace, progress=sys.stderr.isatty())
    ran = time.perf_counter() - start
    s = result.summary
    print(
        json.dumps(
            {
                "mode": mode,
                "requests": len(trace),
                "block_accesses": trace.n_block_accesses,
                "generate_s": generated,
                "run_s": ran,
                "peak_rss_gb": peak_rss_gb(),
                "finished": s.get("n_finished", len(trace)),
                "block_hit_ratio": s.get("block_hit_ratio"),
            }
        )
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=1_000_000)
    parser.add_argument("--modes", default="replay,serve")
    parser.add_argument("--block-size", type=int, default=256)
    parser.add_argument("--rate", type=float, default=200.0, help="requests per second over the whole cluster")
    parser.add_argument("--replicas", type=int, default=32)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child, args.n, args.block_size, args.rate, args.replicas)
        return 0
    failed = False
    for mode in args.modes.split(","):
        cmd = [sys.executable, __file__, "--child", mode, "--n", str(args.n), "--block-size", str(args.block_size)]
        cmd += ["--rate", str(args.rate), "--replicas", str(args.replicas)]
        done = subprocess.run(cmd, capture_output=True, text=True)
        if done.returncode != 0:
            print(f"{mode}: FAILED (exit {done.returncode})\n{done.stderr[-2000:]}")
            failed = True
            continue
        r = json.loads(done.stdout.strip().splitlines()[-1])
        print(
            f"{mode:<7} {r['requests']:,} requests, {r['block_accesses']:,} block accesses: generate "
            f"{r['generate_s']:.0f} s, run {r['run_s']:.0f} s ({r['requests'] / r['run_s']:,.0f} req/s), "
            f"finished {r['finished']:,}, peak RSS {r['peak_rss_gb']:.2f} GB "
            f"(target {TARGET_RSS_GB:.0f} GB: ratio {TARGET_RSS_GB / r['peak_rss_gb']:.2f})"
        )
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
