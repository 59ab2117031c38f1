"""Summary statistics of a trace: what ``kvsim-trace stats`` prints and notebooks tabulate."""

from __future__ import annotations

from typing import Any

import numpy as np

from traces.schema import NO_CATEGORY, NO_SESSION, Trace


def distinct_count(values: np.ndarray) -> int:
    """How many distinct values: by sorting, since ``np.unique`` without ``return_index``
    (hash-based in NumPy 2.3+) took 9 s for the 6.6 M block hashes that a sort counts in 0.5."""
    if len(values) == 0:
        return 0
    ordered = np.sort(values)
    return 1 + int(np.count_nonzero(ordered[1:] != ordered[:-1]))


def reuse_ratio(hashes: np.ndarray) -> float:
    """Share of block accesses that repeat an earlier block: the hit ratio of an infinite cache."""
    if len(hashes) == 0:
        return 0.0
    return 1.0 - distinct_count(hashes) / len(hashes)


def _lengths(values: np.ndarray) -> dict[str, float]:
    if len(values) == 0:
        return {"mean": 0.0, "p50": 0.0, "p90": 0.0, "p99": 0.0}
    p50, p90, p99 = np.percentile(values, [50, 90, 99])
    return {"mean": float(values.mean()), "p50": float(p50), "p90": float(p90), "p99": float(p99)}


def trace_stats(trace: Trace) -> dict[str, Any]:
    """Requests, duration, length percentiles, unique blocks, reuse ratio; also per category."""
    n = len(trace)
    stats: dict[str, Any] = {
        "source": trace.source,
        "requests": n,
        "duration_s": float(trace.arrival_s[-1] - trace.arrival_s[0]) if n else 0.0,
        "block_size": trace.block_size,
        "input_tokens": _lengths(trace.input_tokens),
        "output_tokens": _lengths(trace.output_tokens),
        "block_accesses": trace.n_block_accesses,
        "unique_blocks": distinct_count(trace.block_hashes),
        "reuse_ratio": reuse_ratio(trace.block_hashes),
        "sessions": distinct_count(trace.session_id[trace.session_id != NO_SESSION]),
        "categories": {},
    }
    if not trace.categories:
        return stats
    # A category's reuse counts repeats of blocks seen earlier anywhere in the trace.
    access_category = np.repeat(trace.category_code, trace.blocks_per_request())
    _, first = np.unique(trace.block_hashes, return_index=True)
    repeat = np.ones(trace.n_block_accesses, dtype=bool)
    repeat[first] = False
    labels = [*enumerate(trace.categories), (NO_CATEGORY, "(none)")]
    for code, name in labels:
        rows = np.flatnonzero(trace.category_code == code)
        if len(rows):
            stats["categories"][name] = _category(trace, rows, repeat[access_category == code])
    return stats


def _category(trace: Trace, rows: np.ndarray, repeats: np.ndarray) -> dict[str, Any]:
    accesses = len(repeats)
    return {
        "requests": int(len(rows)),
        "mean_input_tokens": float(trace.input_tokens[rows].mean()) if len(rows) else 0.0,
        "mean_output_tokens": float(trace.output_tokens[rows].mean()) if len(rows) else 0.0,
        "block_accesses": accesses,
        "reuse_ratio": float(repeats.mean()) if accesses else 0.0,
    }


def format_stats(stats: dict[str, Any]) -> str:
    """A one-screen text table of :func:`trace_stats`."""
    lines = [
        f"source          {stats['source']}",
        f"requests        {stats['requests']:,}",
        f"duration        {stats['duration_s']:,.1f} s",
        f"block size      {stats['block_size']} tokens",
    ]
    for key in ("input_tokens", "output_tokens"):
        s = stats[key]
        lines.append(f"{key:<15} mean {s['mean']:,.1f}  p50 {s['p50']:,.0f}  p90 {s['p90']:,.0f}  p99 {s['p99']:,.0f}")
    lines += [
        f"block accesses  {stats['block_accesses']:,}",
        f"unique blocks   {stats['unique_blocks']:,}",
        f"reuse ratio     {stats['reuse_ratio']:.4f}",
        f"sessions        {stats['sessions']:,}",
    ]
    if stats["categories"]:
        width = max(16, 2 + max(len(name) for name in stats["categories"]))  # BurstGPT's are long
        lines.append(f"{'category':<{width}}{'requests':>10}{'mean in':>10}{'mean out':>10}{'reuse':>8}")
        for name, c in stats["categories"].items():
            lines.append(
                f"{name:<{width}}{c['requests']:>10,}{c['mean_input_tokens']:>10,.0f}"
                f"{c['mean_output_tokens']:>10,.0f}{c['reuse_ratio']:>8.3f}"
            )
    return "\n".join(lines)
