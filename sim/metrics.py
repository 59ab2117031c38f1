"""Per-request measurements in flat arrays, and the summary statistics built from them.

Definitions (DESIGN.md, after the survey's benchmarking checklist):

* TTFT = first token time - arrival; TPOT = (finish - first token) / (output tokens - 1),
  for requests with at least two output tokens; E2E = finish - arrival;
  queueing delay = first admission - arrival; KV stall = time admitted but waiting on KV copies.
* SLO attainment = share of *all* requests (rejected ones fail) whose TTFT <= ``slo.ttft_s``
  and TPOT <= ``slo.tpot_s`` (TPOT is not required of requests with fewer than two tokens);
  goodput = such requests per second of the run (first arrival to last completion).
* Token hit ratio of a tier = prompt tokens served from that tier at the request's first
  lookup / all prompt tokens; recompute ratio = prompt tokens prefilled / all prompt tokens.
  Block hit ratios count named (hashed) prefix blocks the same way.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from hwmodels.gpus import GpuSpec
from sim.config import PowerConfig
from sim.links import SERVER_SIDE
from traces.schema import NO_SESSION, NO_TURN, Trace

PERCENTILES = (50, 90, 95, 99)

REJECT_REASONS = (
    "",
    "kv_exceeds_hbm",  # the request's prompt + output KV can never fit in HBM
    "unfinished",  # the simulation ended with the request still in the system (an engine bug)
    "exceeds_context",  # prompt + output are longer than the model serves (vLLM's max_model_len)
)


class RequestLog:
    """One slot per trace row, filled as requests progress; NaN where not (yet) known."""

    def __init__(self, n: int, tiers: tuple[str, ...]) -> None:
        self.tiers = tiers
        nan = np.full(n, np.nan)
        self.replica = np.full(n, -1, dtype=np.int32)
        self.finished = np.zeros(n, dtype=bool)
        self.reject_reason = np.zeros(n, dtype=np.int8)
        self.first_scheduled_s = nan.copy()
        self.first_token_s = nan.copy()
        self.finish_s = nan.copy()
        self.stall_s = np.zeros(n)
        self.hit_tokens = np.zeros((len(tiers), n), dtype=np.int64)
        self.hit_blocks = np.zeros((len(tiers), n), dtype=np.int64)
        self.named_blocks = np.zeros(n, dtype=np.int64)
        self.recomputed_tokens = np.zeros(n, dtype=np.int64)
        self.preempt_recomputed_tokens = np.zeros(n, dtype=np.int64)
        self.preemptions = np.zeros(n, dtype=np.int32)
        self.generated = np.zeros(n, dtype=np.int64)


@dataclass(frozen=True)
class GpuPower:
    """Watts per GPU by what it is doing (see :class:`sim.config.PowerConfig`), resolved."""

    idle_w: float
    active_w: float  # steps with prefill work
    decode_w: float  # decode-only steps
    joules_per_byte_moved: float

    @classmethod
    def resolve(cls, config: PowerConfig, gpu: GpuSpec) -> GpuPower:
        """The config's figures, the GPU's where the config leaves them ``None``."""
        active = gpu.power_limit_w if config.gpu_active_w is None else config.gpu_active_w
        if config.gpu_decode_w is not None:
            decode = config.gpu_decode_w
        else:
            decode = gpu.decode_power_w if gpu.decode_power_w is not None else gpu.power_limit_w
        return cls(config.gpu_idle_w, active, decode, config.joules_per_byte_moved)


@dataclass(frozen=True)
class RunTotals:
    """Engine-wide quantities the summary needs besides the per-request log."""

    makespan_s: float
    # From the first arrival until the last request finished or the last copy landed, if
    # later: copies queued on a slow link drain after the requests that caused them.
    link_span_s: float
    gpu_busy_s: float  # summed over replicas
    gpu_prefill_busy_s: float  # of gpu_busy_s, in steps with prefill work
    gpu_full_clock_busy_s: float  # what gpu_busy_s would be had every step run at full clock
    gpu_allreduce_busy_s: float  # of gpu_busy_s, in tensor-parallel all-reduces
    # Sequences in each step times its seconds, summed as gpu_busy_s is: over gpu_busy_s, the
    # mean batch a busy GPU ran.
    gpu_sequence_busy_s: float
    n_gpus: int
    link_bytes: dict[str, int]
    link_busy_s: dict[str, float]
    link_transfers: dict[str, int]
    tier_capacity_blocks: dict[str, int]
    tier_peak_blocks: dict[str, int]
    evictions: dict[str, int]
    preemptions_recompute: int
    preemptions_swap: int
    swap_fallbacks: int
    loads_declined_blocks: int  # lower-tier hits recomputed because that was faster (kv_load=if_faster)
    prefetch_staged_blocks: int  # blocks prefetch orders copied up a tier
    prefetch_used_blocks: int  # of those, found there by a request's lookup
    prefetch_wasted_blocks: int  # of those, evicted from there before any lookup found them
    bytes_per_block: int


def request_labels(trace: Trace) -> dict[str, Any]:
    """Each request's category, session and turn from the trace, as nullable columns (a trace
    without them gives nulls): tail latency and hit ratio are read per category and per turn
    in a notebook (``requests.groupby("category").ttft_s.quantile(0.99)``), which the request
    rows alone could not give without joining the trace back."""
    return {
        "category": pd.Categorical.from_codes(trace.category_code, categories=list(trace.categories)),
        "session_id": pd.array(np.where(trace.session_id == NO_SESSION, None, trace.session_id), dtype="Int64"),
        "turn": pd.array(np.where(trace.turn == NO_TURN, None, trace.turn), dtype="Int32"),
    }


def requests_frame(trace_columns: dict[str, Any], log: RequestLog) -> pd.DataFrame:
    """One row per request: ``trace_columns`` (its id, arrival, token counts and
    :func:`request_labels`) and what the run measured of it."""
    arrival = trace_columns["arrival_s"]
    output = trace_columns["output_tokens"]
    ttft = log.first_token_s - arrival
    e2e = log.finish_s - arrival
    with np.errstate(invalid="ignore", divide="ignore"):
        tpot = np.where(output >= 2, (log.finish_s - log.first_token_s) / (output - 1), np.nan)
    frame = pd.DataFrame(
        {
            "request_id": trace_columns["request_id"],
            "arrival_s": arrival,
            "input_tokens": trace_columns["input_tokens"],
            "output_tokens": output,
            "category": trace_columns["category"],
            "session_id": trace_columns["session_id"],
            "turn": trace_columns["turn"],
            "replica": log.replica,
            "finished": log.finished,
            "reject_reason": pd.Categorical.from_codes(log.reject_reason, categories=list(REJECT_REASONS)),
            "queue_s": log.first_scheduled_s - arrival,
            "ttft_s": ttft,
            "tpot_s": tpot,
            "e2e_s": e2e,
            "kv_stall_s": log.stall_s,
            "recomputed_tokens": log.recomputed_tokens,
            "preempt_recomputed_tokens": log.preempt_recomputed_tokens,
            "preemptions": log.preemptions,
        }
    )
    for i, tier in enumerate(log.tiers):
        frame[f"{tier}_hit_tokens"] = log.hit_tokens[i]
    return frame


def _distribution(prefix: str, values: np.ndarray) -> dict[str, float]:
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {
            f"{prefix}_mean": float("nan"),
            **{f"{prefix}_p{p}": float("nan") for p in PERCENTILES},
        }
    out = {f"{prefix}_mean": float(values.mean())}
    for p, v in zip(PERCENTILES, np.percentile(values, PERCENTILES), strict=True):
        out[f"{prefix}_p{p}"] = float(v)
    return out


def summarise(
    frame: pd.DataFrame,
    log: RequestLog,
    totals: RunTotals,
    *,
    ttft_slo_s: float,
    tpot_slo_s: float,
    power: GpuPower,
) -> dict[str, Any]:
    n = len(frame)
    finished = frame["finished"].to_numpy()
    summary: dict[str, Any] = {
        "n_requests": n,
        "n_finished": int(finished.sum()),
        "n_rejected": int((log.reject_reason > 0).sum()),
        "rejected_by_reason": {
            reason: int((log.reject_reason == code).sum()) for code, reason in enumerate(REJECT_REASONS) if code
        },
        "makespan_s": totals.makespan_s,
    }
    for column, prefix in (
        ("ttft_s", "ttft_s"),
        ("tpot_s", "tpot_s"),
        ("e2e_s", "e2e_s"),
        ("queue_s", "queue_s"),
        ("kv_stall_s", "kv_stall_s"),
    ):
        summary.update(_distribution(prefix, frame[column].to_numpy(dtype=float)))
    summary["kv_stall_s_total"] = float(frame["kv_stall_s"].sum())
    ttft_ok = frame["ttft_s"].to_numpy() <= ttft_slo_s
    tpot = frame["tpot_s"].to_numpy()
    tpot_ok = np.isnan(tpot) | (tpot <= tpot_slo_s)
    meets = finished & ttft_ok & tpot_ok
    span = totals.makespan_s if totals.makespan_s > 0 else float("nan")
    output_tokens = int(log.generated.sum())
    input_tokens = int(frame["input_tokens"].to_numpy()[finished].sum())
    summary.update(
        {
            "slo_ttft_s": ttft_slo_s,
            "slo_tpot_s": tpot_slo_s,
            "slo_attainment": float(meets.mean()) if n else float("nan"),
            "goodput_rps": float(meets.sum() / span),
            "throughput_rps": float(finished.sum() / span),
            "output_tokens_per_s": float(output_tokens / span),
            "total_tokens_per_s": float((output_tokens + input_tokens) / span),
            "output_tokens": output_tokens,
        }
    )
    # Over the prompts looked up in the cache, tokens and blocks alike: a request rejected
    # before admission never reached the cache, and counting its prompt as missed would
    # lower the token ratios (and not the block ratios) by the rejection rate.
    prompt_tokens = int(log.hit_tokens.sum() + log.recomputed_tokens.sum())
    named = int(log.named_blocks.sum())
    for i, tier in enumerate(log.tiers):
        summary[f"token_hit_ratio_{tier}"] = float(log.hit_tokens[i].sum() / prompt_tokens) if prompt_tokens else 0.0
        summary[f"block_hit_ratio_{tier}"] = float(log.hit_blocks[i].sum() / named) if named else 0.0
    summary["token_hit_ratio"] = float(log.hit_tokens.sum() / prompt_tokens) if prompt_tokens else 0.0
    summary["block_hit_ratio"] = float(log.hit_blocks.sum() / named) if named else 0.0
    summary["recompute_ratio"] = float(log.recomputed_tokens.sum() / prompt_tokens) if prompt_tokens else 0.0
    summary["preempt_recomputed_tokens"] = int(log.preempt_recomputed_tokens.sum())
    for name, nbytes in totals.link_bytes.items():
        summary[f"link_{name}_bytes"] = nbytes
        summary[f"link_{name}_transfers"] = totals.link_transfers[name]
        link_span = totals.link_span_s if totals.link_span_s > 0 else float("nan")
        summary[f"link_{name}_utilisation"] = float(totals.link_busy_s[name] / link_span)
    for tier, capacity in totals.tier_capacity_blocks.items():
        summary[f"{tier}_capacity_blocks"] = capacity
        summary[f"{tier}_peak_blocks"] = totals.tier_peak_blocks[tier]
        summary[f"{tier}_evictions"] = totals.evictions[tier]
    summary["bytes_per_block"] = totals.bytes_per_block
    summary["preemptions_recompute"] = totals.preemptions_recompute
    summary["preemptions_swap"] = totals.preemptions_swap
    summary["swap_fallbacks_to_recompute"] = totals.swap_fallbacks
    summary["loads_declined_blocks"] = totals.loads_declined_blocks
    summary["prefetch_staged_blocks"] = totals.prefetch_staged_blocks
    summary["prefetch_used_blocks"] = totals.prefetch_used_blocks
    summary["prefetch_wasted_blocks"] = totals.prefetch_wasted_blocks
    decode_busy_s = totals.gpu_busy_s - totals.gpu_prefill_busy_s
    gpu_energy = (
        totals.n_gpus * power.idle_w * totals.makespan_s
        + (power.active_w - power.idle_w) * totals.gpu_prefill_busy_s
        + (power.decode_w - power.idle_w) * decode_busy_s
    )
    # the pool servers' port carries the same bytes as the replica's network link (SERVER_SIDE)
    moved = sum(nbytes for name, nbytes in totals.link_bytes.items() if name not in SERVER_SIDE.values())
    transfer_energy = power.joules_per_byte_moved * moved
    summary["energy_j"] = float(gpu_energy + transfer_energy)
    summary["energy_per_output_token_j"] = (
        float((gpu_energy + transfer_energy) / output_tokens) if output_tokens else float("nan")
    )
    summary["gpu_busy_fraction"] = float(totals.gpu_busy_s / (totals.n_gpus * span)) if totals.n_gpus else float("nan")
    summary["gpu_prefill_busy_fraction"] = (
        float(totals.gpu_prefill_busy_s / (totals.n_gpus * span)) if totals.n_gpus else float("nan")
    )
    # A GPU "busy" all the time may be decoding one sequence or three hundred: the mean batch
    # says which (a step with prefill counts each request it prefills).
    summary["mean_batch_size"] = (
        float(totals.gpu_sequence_busy_s / totals.gpu_busy_s) if totals.gpu_busy_s else float("nan")
    )
    # What tensor parallelism costs in communication: the share of the GPUs' busy time spent
    # in all-reduces (0 without it).
    summary["gpu_allreduce_share"] = (
        float(totals.gpu_allreduce_busy_s / totals.gpu_busy_s) if totals.gpu_busy_s else 0.0
    )
    # How much longer the GPUs computed than at full clock: the power cap's toll (hwmodels.clock).
    summary["power_cap_slowdown"] = (
        float(totals.gpu_busy_s / totals.gpu_full_clock_busy_s - 1.0) if totals.gpu_full_clock_busy_s else 0.0
    )
    return summary
