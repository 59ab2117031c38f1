"""A one-screen text summary of a run, for the CLI's last words and for notebooks."""

from __future__ import annotations

import math
from typing import Any

from sim.config import TIER_NAMES


def _fmt(value: Any, unit: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"  # no finished request to take it over, say
    if isinstance(value, float):
        if unit == "%":
            return f"{100 * value:.1f} %"
        if unit == "s":
            return f"{value * 1000:.1f} ms" if abs(value) < 1 else f"{value:.2f} s"
        return f"{value:,.3f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def format_summary(summary: dict[str, Any]) -> str:
    """The headline numbers of a serve or replay summary as an aligned table."""
    get = summary.get
    eviction = ", ".join(
        [str(get("eviction"))] + [f"{t}: {get(f'eviction_{t}')}" for t in TIER_NAMES if f"eviction_{t}" in summary]
    )
    if get("mode") == "replay":
        rows = [
            ("policy", eviction),
            ("capacity (blocks)", _capacities(summary)),
            ("requests", _fmt(get("n_requests"))),
            ("block accesses", _fmt(get("n_accesses"))),
            ("block hit ratio", _fmt(get("block_hit_ratio"), "%")),
            ("  usable as prefix", _fmt(get("prefix_hit_ratio"), "%")),
        ]
        rows += [
            (f"  {t} hit ratio", _fmt(get(f"{t}_hit_ratio"), "%")) for t in TIER_NAMES if f"{t}_hit_ratio" in summary
        ]
    else:
        policies = ", ".join(
            [f"eviction={eviction}"] + [f"{f}={get(f)}" for f in ("prefetch", "admission", "scheduler", "routing")]
        )
        requests = (
            f"{_fmt(get('n_finished'))} finished, {_fmt(get('n_rejected'))} rejected of {_fmt(get('n_requests'))}"
        )
        reasons = {reason: n for reason, n in (get("rejected_by_reason") or {}).items() if n}
        if reasons:
            requests += " (" + ", ".join(f"{reason}: {_fmt(n)}" for reason, n in reasons.items()) + ")"
        rows = [
            ("model / gpu", f"{get('model')} on {_gpus(summary)}, {get('profile')}"),
            ("policies", policies),
            ("requests", requests),
            ("TTFT p50 / p99", f"{_fmt(get('ttft_s_p50'), 's')} / {_fmt(get('ttft_s_p99'), 's')}"),
            ("TPOT p50 / p99", f"{_fmt(get('tpot_s_p50'), 's')} / {_fmt(get('tpot_s_p99'), 's')}"),
            ("E2E p50 / p99", f"{_fmt(get('e2e_s_p50'), 's')} / {_fmt(get('e2e_s_p99'), 's')}"),
            ("queueing p99", _fmt(get("queue_s_p99"), "s")),
            ("KV stall p99", _fmt(get("kv_stall_s_p99"), "s")),
            (
                f"SLO attainment (TTFT {get('slo_ttft_s')} s, TPOT {get('slo_tpot_s')} s)",
                f"{_fmt(get('slo_attainment'), '%')}, goodput {_fmt(get('goodput_rps'))} req/s",
            ),
            ("throughput", f"{_fmt(get('throughput_rps'))} req/s, {_fmt(get('output_tokens_per_s'))} output tok/s"),
            ("token hit ratio", _fmt(get("token_hit_ratio"), "%")),
        ]
        for tier in TIER_NAMES:
            if f"token_hit_ratio_{tier}" in summary:
                rows.append((f"  from {tier}", _fmt(get(f"token_hit_ratio_{tier}"), "%")))
        rows.append(("recompute ratio", _fmt(get("recompute_ratio"), "%")))
        if get("loads_declined_blocks"):
            rows.append(
                ("  lower-tier hits recomputed", f"{_fmt(get('loads_declined_blocks'))} blocks (faster than loading)")
            )
        if get("prefetch_staged_blocks"):
            staged = get("prefetch_staged_blocks")
            rows.append(
                (
                    "prefetched blocks",
                    f"{_fmt(staged)}: {_fmt(get('prefetch_used_blocks') / staged, '%')} used, "
                    f"{_fmt(get('prefetch_wasted_blocks') / staged, '%')} evicted unused",
                )
            )
        links = _link_utilisation(summary)
        if links:
            rows.append(("link utilisation", links))
        rows.append(
            ("preemptions", f"{_fmt(get('preemptions_recompute'))} recompute, {_fmt(get('preemptions_swap'))} swap")
        )
        if get("gpu_busy_fraction") is not None:
            busy = f"{_fmt(get('gpu_busy_fraction'), '%')} of the time"
            batch = get("mean_batch_size")
            if batch is not None and not math.isnan(batch):
                busy += f" (mean batch {batch:,.1f} sequences)"
            if get("gpu_prefill_busy_fraction") is not None:
                busy += f", {_fmt(get('gpu_prefill_busy_fraction'), '%')} in steps with prefill"
            if get("gpu_allreduce_share"):
                busy += f"; {_fmt(get('gpu_allreduce_share'), '%')} of it in all-reduces (tensor parallel)"
            if get("power_cap_slowdown"):
                busy += f"; {_fmt(get('power_cap_slowdown'), '%')} longer than at full clock (power cap)"
            rows.append(("GPU busy", busy))
        if get("energy_per_output_token_j") is not None:
            rows.append(("energy / output token", f"{_fmt(get('energy_per_output_token_j'))} J"))
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k:<{width}}  {v}" for k, v in rows)


def _gpus(summary: dict[str, Any]) -> str:
    """``8 x h100-sxm (4 replicas x tp 2)``: every GPU counted, then how they are grouped."""
    replicas, tp = summary.get("n_replicas"), summary.get("tensor_parallel")
    if not isinstance(replicas, int) or not isinstance(tp, int):
        return f"{replicas} x {summary.get('gpu')} (tp {tp})"
    grouping = f"{replicas} replica{'s' if replicas != 1 else ''} x tp {tp}"
    return f"{replicas * tp} x {summary.get('gpu')} ({grouping})"


def _capacities(summary: dict[str, Any]) -> str:
    """A replay's tier capacities: the HBM alone, or each tier by name."""
    tiers = [t for t in TIER_NAMES if f"{t}_blocks" in summary]
    if tiers == ["hbm"]:
        return _fmt(summary["hbm_blocks"])
    return ", ".join(f"{t} {_fmt(summary[f'{t}_blocks'])}" for t in tiers)


def _link_utilisation(summary: dict[str, Any]) -> str:
    """Each link's share of the run it was busy (mean over replicas), where it moved anything:
    which path a hierarchy leans on, and how close it is to its limit."""
    parts = []
    for key, value in summary.items():
        if (
            key.startswith("link_")
            and key.endswith("_utilisation")
            and summary.get(key.replace("_utilisation", "_bytes"))
        ):
            parts.append(f"{key.removeprefix('link_').removesuffix('_utilisation')} {_fmt(value, '%')}")
    return ", ".join(parts)
