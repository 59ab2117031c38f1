"""Policy-ranking regression: which policy wins, per workload and metric, must not drift.

Researchers use kvsim to rank policies, so a change that silently reorders them is the worst
kind of regression. :func:`compute_rankings` ranks the shipped eviction policies (replay hit
ratio at two capacities) and schedulers (serve-mode mean and P99 TTFT) on a fixed set of small
seeded workloads (plus the Mooncake slice when present); :func:`compare` checks a fresh ranking
against the stored one and explains every difference. Refresh the stored rankings on purpose
(after a deliberate behaviour change) with::

    python -m sim.rankings --refresh
"""

from __future__ import annotations

import argparse
import json
import sys
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any

import numpy as np

from policies.registry import available
from policies.scheduler.priority import DEFAULT_CLASSES
from sim.config import HardwareConfig, SimConfig, TierConfig
from sim.engine import overload_queue_s
from sim.run import run
from traces import Trace, generate, open_trace
from traces.atomic import write_text_atomic
from traces.stats import distinct_count

ROOT = Path(__file__).resolve().parents[1]
STORED = ROOT / "tests" / "rankings" / "expected.json"
MOONCAKE = (ROOT / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl").resolve()

MIN_KENDALL_TAU = 0.8  # below this the order changed in substance, not by one neighbour swap
# A policy that passes (or is passed by) two others has changed in substance even where the
# rest of a long ranking holds tau up (a policy near the bottom that breaks falls only to it).
MAX_PLACES_MOVED = 1
TIE = 1e-9
SCHEDULERS = ("fcfs", "shortest_prompt_first", "prefix_aware", "priority")


def workloads(include_mooncake: bool = True) -> dict[str, Trace]:
    loads = {
        "multi_turn": generate("multi_turn", 11, n_requests=600),
        "rag": generate("rag", 12, n_requests=600),
        "agent": generate("agent", 13, n_requests=400),
        "shared_prompt": generate("shared_prompt", 14, n_requests=600),
        # Interactive and batch traffic together: the only one where the priority scheduler
        # differs from FCFS (each kind above is one category).
        "mixed": generate("mixed", 15, n_requests=600),
    }
    if include_mooncake and MOONCAKE.exists():
        loads["mooncake"] = open_trace(MOONCAKE).select(slice(0, 3000))
    return loads


def _ranked(scores: dict[str, float], higher_is_better: bool) -> list[list[Any]]:
    order = sorted(scores, key=lambda p: (-scores[p] if higher_is_better else scores[p], p))
    return [[p, scores[p]] for p in order]


def eviction_rankings(name: str, trace: Trace) -> dict[str, list[list[Any]]]:
    unique = distinct_count(trace.block_hashes)
    out = {}
    for label, capacity in (("small", max(8, unique // 16)), ("medium", max(16, unique // 4))):
        scores = {}
        for policy in available("eviction"):
            config = SimConfig(mode="replay", eviction=policy, tiers=TierConfig(hbm_blocks=capacity))
            scores[policy] = run(config, trace).summary["block_hit_ratio"]
        out[f"{name}/eviction/hit_ratio@{label}"] = _ranked(scores, higher_is_better=True)
    return out


# Each workload's busy hour for the scheduler rankings: its arrival gaps scaled by the first
# figure, KV budget in GB the second. Busy enough that requests queue (schedulers only differ
# there), never overloaded: on a run whose backlog grows throughout, latency measures the
# backlog, not the order it is served in (the engine warns so; a refresh refuses to store it).
# Conversations under way carry long histories (multi-turn prompts average ~3.7k tokens, agent
# loops ~8.5k), so those get the larger budget.
SCHEDULER_LOAD: dict[str, tuple[float, float]] = {
    "multi_turn": (1.0, 16.0),
    "agent": (0.5, 16.0),
    "rag": (0.5, 8.0),
    "shared_prompt": (0.5, 4.0),
    "mixed": (1.1, 16.0),
}


def scheduler_rankings(name: str, trace: Trace, *, refuse_overload: bool = False) -> dict[str, list[list[Any]]]:
    """TTFT mean and P99 per scheduler in ``name``'s busy hour (:data:`SCHEDULER_LOAD`), and
    where the trace mixes urgent and batch categories (the priority scheduler's classes), the
    urgent requests' mean TTFT.
    ``refuse_overload``: an overloaded run is an error, as it is when rankings are stored; a
    check computes them regardless, and a policy change that overloads a run shows as a diff."""
    gap_scale, hbm_gb = SCHEDULER_LOAD[name]
    busy = replace(trace, arrival_s=trace.arrival_s * gap_scale).select(slice(0, 300))
    means, tails, interactive = {}, {}, {}
    for scheduler in SCHEDULERS:
        config = SimConfig(hardware=HardwareConfig(hbm_gb=hbm_gb), scheduler=scheduler)
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message="overloaded", category=UserWarning)
            result = run(config, busy)
        queued = overload_queue_s(result.requests, config.slo.ttft_s)
        if refuse_overload and queued is not None:
            raise RuntimeError(
                f"{name}: the {scheduler} run is overloaded (half its requests queued over {queued:.3g} s), "
                "which ranks backlogs, not schedulers; lighten it in SCHEDULER_LOAD"
            )
        s = result.summary
        means[scheduler], tails[scheduler] = s["ttft_s_mean"], s["ttft_s_p99"]
        classes = result.requests["category"].map(DEFAULT_CLASSES)
        if classes.nunique() > 1:  # urgent and batch traffic both: what priority is for
            interactive[scheduler] = float(result.requests["ttft_s"][classes == 0].mean())
    rankings = {
        f"{name}/scheduler/ttft_mean": _ranked(means, higher_is_better=False),
        f"{name}/scheduler/ttft_p99": _ranked(tails, higher_is_better=False),
    }
    if interactive:
        rankings[f"{name}/scheduler/interactive_ttft_mean"] = _ranked(interactive, higher_is_better=False)
    return rankings


def compute_rankings(include_mooncake: bool = True, *, refuse_overload: bool = False) -> dict[str, list[list[Any]]]:
    rankings: dict[str, list[list[Any]]] = {}
    for name, trace in workloads(include_mooncake).items():
        rankings.update(eviction_rankings(name, trace))
        if name != "mooncake":  # serve runs of the real slice are too slow for CI
            rankings.update(scheduler_rankings(name, trace, refuse_overload=refuse_overload))
    return rankings


def kendall_tau(expected: list[list[Any]], actual: list[list[Any]]) -> float:
    """Kendall's tau-b between two rankings of the same items, from their scores (ties count)."""
    e = {p: v for p, v in expected}
    a = {p: v for p, v in actual}
    items = sorted(e)
    concordant = discordant = ties_e = ties_a = 0
    for i, x in enumerate(items):
        for y in items[i + 1 :]:
            de, da = e[x] - e[y], a[x] - a[y]
            te, ta = abs(de) <= TIE, abs(da) <= TIE
            if te and ta:
                continue
            if te:
                ties_e += 1
            elif ta:
                ties_a += 1
            elif (de > 0) == (da > 0):
                concordant += 1
            else:
                discordant += 1
    denom = np.sqrt((concordant + discordant + ties_e) * (concordant + discordant + ties_a))
    return 1.0 if denom == 0 else float((concordant - discordant) / denom)


def reorders(expected: list[list[Any]], actual: list[list[Any]]) -> dict[str, list[str]]:
    """For each policy, the policies it was strictly ahead of and is now strictly behind, or the
    reverse: real passes. A tie that forms or breaks is none, so five policies tied at Belady's
    ratio, one of which slips by a hair, do not count as that one falling four places."""
    e, a = dict(expected), dict(actual)
    out: dict[str, list[str]] = {p: [] for p in e}
    for p in e:
        for q in e:
            de, da = e[p] - e[q], a[p] - a[q]
            if abs(de) > TIE and abs(da) > TIE and (de > 0) != (da > 0):
                out[p].append(q)
    return out


def compare(expected: dict[str, list[list[Any]]], actual: dict[str, list[list[Any]]]) -> list[str]:
    """Human-readable differences that matter; empty when the rankings still hold."""
    problems = []
    for key in sorted(set(expected) | set(actual)):
        if key not in actual:
            problems.append(f"{key}: ranking no longer computed")
            continue
        if key not in expected:
            problems.append(f"{key}: new ranking, not stored (refresh on purpose)")
            continue
        exp, act = expected[key], actual[key]
        if {p for p, _ in exp} != {p for p, _ in act}:
            problems.append(
                f"{key}: policies changed: stored {sorted(p for p, _ in exp)}, now {sorted(p for p, _ in act)}"
            )
            continue
        tau = kendall_tau(exp, act)
        top_changed = abs(dict(act)[exp[0][0]] - act[0][1]) > TIE
        passed = reorders(exp, act)
        mover = max(sorted(passed), key=lambda p: len(passed[p]))
        if top_changed:
            reason = f"top-1 {exp[0][0]} -> {act[0][0]}"
        elif tau < MIN_KENDALL_TAU:
            reason = f"Kendall tau {tau:.2f} < {MIN_KENDALL_TAU}"
        elif len(passed[mover]) > MAX_PLACES_MOVED:
            reason = f"{mover} changed places with {len(passed[mover])} policies ({', '.join(passed[mover])})"
        else:
            continue
        was = ", ".join(f"{p} {v:.4g}" for p, v in exp)
        now = ", ".join(f"{p} {v:.4g}" for p, v in act)
        problems.append(f"{key}: {reason}\n    stored: {was}\n    now:    {now}")
    return problems


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m sim.rankings", description="Check or refresh the stored policy rankings."
    )
    parser.add_argument("--refresh", action="store_true", help="recompute and store the rankings (a deliberate change)")
    args = parser.parse_args(argv)
    actual = compute_rankings(refuse_overload=args.refresh)
    if args.refresh:
        if not MOONCAKE.exists() and STORED.exists():
            # Without the trace its rankings cannot be recomputed; dropping them would pass
            # for a refresh and silently end their regression check.
            kept = {k: v for k, v in json.loads(STORED.read_text()).items() if k.startswith("mooncake/")}
            actual = {**kept, **actual}
            print(f"{MOONCAKE} is missing: kept the {len(kept)} stored Mooncake rankings as they were")
        write_text_atomic(STORED, json.dumps(actual, indent=1, sort_keys=True) + "\n")
        print(f"stored {len(actual)} rankings in {STORED}")
        return 0
    expected = json.loads(STORED.read_text())
    if not MOONCAKE.exists():
        # Without the trace its rankings cannot be recomputed: they are not checked (as the
        # test does), rather than failing every check as "no longer computed".
        mooncake = [k for k in expected if k.startswith("mooncake/")]
        expected = {k: v for k, v in expected.items() if k not in mooncake}
        if mooncake:
            print(f"{MOONCAKE} is missing: the {len(mooncake)} stored Mooncake rankings are not checked")
    problems = compare(expected, actual)
    print("\n".join(problems) if problems else f"all {len(actual)} rankings hold")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
