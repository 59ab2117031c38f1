"""Serve mode on small hand-built traces whose answers are worked out here.

Timing expectations come from the execution model and the configured link parameters, which
are the simulator's stated cost model: an isolated request's TTFT is one prefill step of its
uncached tokens (plus any KV load), and a PCIe copy of ``n`` blocks costs
``n x copies_per_block x latency + bytes / bandwidth``.
"""

from __future__ import annotations

import json
import re
import warnings

import numpy as np
import pytest

from hwmodels import ExecutionModel, get_model, load_profile
from policies.eviction.lru import LRU
from sim.config import EngineConfig, HardwareConfig, SimConfig, TierConfig
from sim.report import format_summary
from sim.result import summary_json
from sim.run import run
from traces import Trace, generate

BLOCK = 128
PROMPT = 1000  # 7 full blocks (896 tokens) + a 104-token unhashed tail
PCIE_GBPS = 20.0
PCIE_LATENCY_S = 1e-5


def chain(tag: int, n: int = 7) -> list[int]:
    return [tag * 1000 + j for j in range(n)]


def make_trace(rows: list[tuple[float, list[int]]], *, prompt: int = PROMPT, output: int = 1) -> Trace:
    return Trace.from_columns(
        arrival_s=[t for t, _ in rows],
        input_tokens=[prompt] * len(rows),
        output_tokens=[output] * len(rows),
        block_hashes=[h for _, h in rows],
        block_size=BLOCK,
    )


def config(**tiers: int) -> SimConfig:
    return SimConfig(
        # The datasheet roofline: its steps are what execution() prices, with no power-cap clock.
        hardware=HardwareConfig(
            profile="datasheet", pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1
        ),
        tiers=TierConfig(**tiers),
        admission="write_back",
    )


def execution() -> ExecutionModel:
    return ExecutionModel(get_model("llama-3-8b"), load_profile("h100-sxm"), 1, EngineConfig().iteration_overhead_s)


def bytes_per_block() -> int:
    return get_model("llama-3-8b").kv_bytes_per_block(BLOCK)


def test_repeated_prompt_hits_in_hbm_and_prefills_only_the_tail() -> None:
    result = run(config(hbm_blocks=100), make_trace([(0.0, chain(1)), (10.0, chain(1))]))
    second = result.requests.iloc[1]
    assert result.requests.iloc[0]["hbm_hit_tokens"] == 0
    assert second["hbm_hit_tokens"] == 7 * BLOCK
    assert second["recomputed_tokens"] == PROMPT - 7 * BLOCK
    assert second["ttft_s"] == pytest.approx(execution().iteration_s([104], [896], 0, 0))


def test_fully_cached_prompt_still_recomputes_its_last_block() -> None:
    # 896 tokens = exactly 7 blocks: vLLM recomputes the last block to produce logits.
    trace = make_trace([(0.0, chain(1)), (10.0, chain(1))], prompt=896)
    second = run(config(hbm_blocks=100), trace).requests.iloc[1]
    assert second["hbm_hit_tokens"] == 6 * BLOCK
    assert second["recomputed_tokens"] == BLOCK


def test_prompt_evicted_from_hbm_hits_in_dram_and_pays_the_pcie_load() -> None:
    # HBM holds 8 blocks: each request needs 7 named + 1 private, so B's admission pushes all
    # of A's cached blocks down to DRAM, and A's return pushes B's down while loading A's.
    trace = make_trace([(0.0, chain(1)), (10.0, chain(2)), (20.0, chain(1))])
    result = run(config(hbm_blocks=8, dram_blocks=100), trace)
    third = result.requests.iloc[2]
    assert third["hbm_hit_tokens"] == 0
    assert third["dram_hit_tokens"] == 7 * BLOCK
    load_s = 7 * PCIE_LATENCY_S + 7 * bytes_per_block() / (PCIE_GBPS * 1e9)
    # The block of its 104-token tail, taken when its prefill step is planned once the load
    # has landed, evicts B's last cached block: that step runs once the write-back has left.
    write_back_s = PCIE_LATENCY_S + bytes_per_block() / (PCIE_GBPS * 1e9)
    assert third["kv_stall_s"] == pytest.approx(load_s + write_back_s)
    assert third["ttft_s"] == pytest.approx(load_s + write_back_s + execution().iteration_s([104], [896], 0, 0))
    summary = result.summary
    assert summary["link_pcie_h2d_bytes"] == 7 * bytes_per_block()
    # Written back: A's 7 blocks when B arrived, B's 7 when A returned.
    assert summary["link_pcie_d2h_bytes"] == 14 * bytes_per_block()


def test_an_ssd_hit_of_many_blocks_pays_the_ssd_latency_once_not_per_block() -> None:
    # An NVMe drive serves a load's block reads at once (deep queues): they stream at its
    # rated bandwidth and the load lands one request latency after its bytes (sim.links), not
    # one latency per block queued behind each other's.
    ssd_gbps, ssd_latency = 2.0, 1e-3
    trace = make_trace([(0.0, chain(1)), (10.0, chain(2)), (20.0, chain(1))])
    hardware = HardwareConfig(
        profile="datasheet", pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
        ssd_read_gbps=ssd_gbps, ssd_latency_s=ssd_latency,
    )  # fmt: skip
    result = run(SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=8), admission="ssd_spill"), trace)
    third = result.requests.iloc[2]
    assert third["ssd_hit_tokens"] == 7 * BLOCK
    nbytes = 7 * bytes_per_block()
    ssd = ssd_latency + nbytes / (ssd_gbps * 1e9)
    pcie = 7 * PCIE_LATENCY_S + nbytes / (PCIE_GBPS * 1e9)
    # Its tail block, taken once the load has landed, evicts one of B's: the step runs once
    # that write-back has left HBM (test_prompt_evicted_from_hbm_hits_in_dram...).
    write_back = PCIE_LATENCY_S + bytes_per_block() / (PCIE_GBPS * 1e9)
    assert third["kv_stall_s"] == pytest.approx(ssd + pcie + write_back)


def test_a_block_still_on_its_way_down_is_read_back_only_once_it_has_landed() -> None:
    # HBM -> SSD crosses PCIe, then a slow SSD write: A's blocks leave HBM as soon as PCIe has
    # carried them (B takes their slots), but they are on the SSD only when the write lands.
    # A's return finds them there, and must not read them back before then.
    ssd_write_gbps = 0.05
    trace = make_trace([(0.0, chain(1)), (0.3, chain(2)), (1.0, chain(1))])
    hardware = HardwareConfig(
        pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
        ssd_write_gbps=ssd_write_gbps,
    )  # fmt: skip
    result = run(SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=8), admission="ssd_spill"), trace)
    third = result.requests.iloc[2]
    assert third["ssd_hit_tokens"] == 7 * BLOCK
    written_by = 0.3 + 7 * bytes_per_block() / (ssd_write_gbps * 1e9)  # not before B arrived
    assert third["arrival_s"] + third["ttft_s"] > written_by
    assert result.summary["link_ssd_write_utilisation"] <= 1.0  # over the span the copies drained in


def test_a_dram_slot_is_not_reused_until_its_copy_down_has_read_it() -> None:
    # HBM holds one request's KV, DRAM one request's cached blocks, and the SSD is written
    # slowly. B pushes A's blocks down to DRAM; C pushes B's down, and DRAM evicts A's to the
    # SSD to make room. A's slots hold A's data until the SSD write has read it, so B's blocks
    # cannot have them: with no room, they are dropped. Once the write has read A's blocks,
    # the slots are free again, and C's blocks, pushed down by B's return, take them.
    ssd_write_gbps = 0.05
    copy_s = 7 * bytes_per_block() / (ssd_write_gbps * 1e9)
    written_at = 0.6 + copy_s  # C evicts B's blocks from HBM at its arrival
    hardware = HardwareConfig(
        pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
        ssd_write_gbps=ssd_write_gbps,
    )  # fmt: skip
    cfg = SimConfig(
        hardware=hardware,
        tiers=TierConfig(hbm_blocks=8, dram_blocks=7),
        admission="ssd_spill",
        timeseries_interval_s=0.1,
    )
    rows = [
        (0.0, chain(1)),
        (0.3, chain(2)),
        (0.6, chain(3)),
        (written_at + 0.5, chain(2)),
        (written_at + 1.0, chain(3)),
    ]
    result = run(cfg, make_trace(rows))
    b_again, c_again = result.requests.iloc[3], result.requests.iloc[4]
    assert b_again["dram_hit_tokens"] == b_again["ssd_hit_tokens"] == 0 and b_again["recomputed_tokens"] == PROMPT
    assert c_again["dram_hit_tokens"] == 7 * BLOCK
    # Inside the copy DRAM is full: the 7 slots it is reading count against the capacity.
    series = result.timeseries
    during = series[(series["time_s"] > 0.6) & (series["time_s"] < written_at)]
    assert len(during) and (during["dram_used_blocks"] == 7).all()
    # Nothing of B's was written to DRAM while the copy ran: PCIe D2H carried A's and C's blocks.
    assert result.summary["link_pcie_d2h_bytes"] == 14 * bytes_per_block()


def test_by_default_a_computed_block_is_written_to_every_lower_tier_before_any_eviction() -> None:
    # LMCache puts each stored chunk to every configured backend, SGLang HiCache writes
    # through by default, vLLM's offloading connector stores every computed block: the default
    # placement copies A's blocks down (HBM -> DRAM over PCIe, DRAM -> SSD) as they are
    # computed, although HBM has room to spare and never evicts them.
    hardware = HardwareConfig(
        pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
    )  # fmt: skip
    result = run(
        SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=100, dram_blocks=100)), make_trace([(0.0, chain(1))])
    )
    assert result.summary["link_pcie_d2h_bytes"] == 7 * bytes_per_block()
    assert result.summary["link_ssd_write_bytes"] == 7 * bytes_per_block()


def test_by_default_a_burst_of_evictions_behind_a_slow_ssd_loses_no_block() -> None:
    # The scenario of the test above this one's neighbour (a DRAM slot is not reused until its
    # copy down has read it), under the default placement: every block is on the SSD from the
    # moment its write was queued, so DRAM's victims need no copy and free their slots at
    # once, and B's blocks, pushed out of HBM by C, have room. B's return finds all of them.
    ssd_write_gbps = 0.05
    copy_s = 7 * bytes_per_block() / (ssd_write_gbps * 1e9)
    hardware = HardwareConfig(
        pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
        ssd_write_gbps=ssd_write_gbps,
    )  # fmt: skip
    cfg = SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=8, dram_blocks=7))
    rows = [(0.0, chain(1)), (0.3, chain(2)), (0.6, chain(3)), (0.6 + 3 * copy_s + 0.5, chain(2))]
    b_again = run(cfg, make_trace(rows)).requests.iloc[3]
    assert b_again["dram_hit_tokens"] + b_again["ssd_hit_tokens"] == 7 * BLOCK
    assert b_again["recomputed_tokens"] == PROMPT - 7 * BLOCK


def test_a_write_through_copy_holds_its_hbm_slots_until_it_has_read_them() -> None:
    # HBM holds one request's KV (7 named blocks and a private one). A's blocks are written
    # through to DRAM over a slow PCIe as its prefill ends; B, queued behind A, needs their
    # slots, and may take them only once the copy has read them out of HBM.
    slow = 0.2
    cfg = config(hbm_blocks=8, dram_blocks=100)
    cfg.admission = "write_through"
    cfg.hardware.pcie_gbps = slow
    result = run(cfg, make_trace([(0.0, chain(1)), (0.001, chain(2))]))
    first, second = result.requests.iloc[0], result.requests.iloc[1]
    copy_s = 7 * PCIE_LATENCY_S + 7 * bytes_per_block() / (slow * 1e9)
    read_out_at = first["ttft_s"] + copy_s  # A's one-token answer ends its prefill step
    assert second["arrival_s"] + second["queue_s"] == pytest.approx(read_out_at)
    assert second["dram_hit_tokens"] == 0 and result.summary["link_pcie_d2h_bytes"] == 14 * bytes_per_block()


def test_a_decode_held_up_by_write_backs_is_charged_the_wait_as_kv_stall() -> None:
    # HBM holds 16 blocks: A's 7 stay cached after it, B takes 7 named and 1 private, then
    # grows into the last free one. Its third and fourth private blocks (tokens 1152 and 1280)
    # each evict one of A's, written back over a slow PCIe: the decode step that takes the
    # block runs once the copy has left HBM (its new KV is written into that slot), so B waits
    # for both copies whole.
    slow = 0.05
    cfg = config(hbm_blocks=16, dram_blocks=100)
    cfg.hardware.pcie_gbps = slow
    result = run(cfg, make_trace([(0.0, chain(1)), (1.0, chain(2))], output=300))
    decoder = result.requests.iloc[1]
    copy_s = PCIE_LATENCY_S + bytes_per_block() / (slow * 1e9)
    steps = execution().decode_steps_s(1, PROMPT + 1, 299)  # step j writes token PROMPT + j
    assert result.summary["link_pcie_d2h_bytes"] == 2 * bytes_per_block()
    assert decoder["kv_stall_s"] == pytest.approx(2 * copy_s)
    # Nothing else held it: its decode took its steps and that wait.
    assert decoder["e2e_s"] - decoder["ttft_s"] == pytest.approx(steps.sum() + decoder["kv_stall_s"])


def test_a_step_that_swaps_a_request_out_runs_once_the_swap_out_has_left_hbm() -> None:
    # An agent decodes alone; an urgent chat prompt that does not fit beside it arrives, and
    # the step that admits the chat swaps the agent out over a slow PCIe. The chat's prefill
    # writes its KV into the slots the agent's KV is being copied out of, so that step runs
    # only once the swap-out has left HBM: the chat waits for it, as KV stall.
    slow = 1.0
    cfg = config(hbm_blocks=16, dram_blocks=100)
    cfg.hardware.pcie_gbps = slow
    cfg.engine.preemption = "swap"
    cfg.scheduler = "priority"
    cfg.admission = "drop"  # evictions write nothing back: PCIe D2H carries the swap alone
    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0],
        input_tokens=[PROMPT, PROMPT],
        output_tokens=[300, 1],
        block_hashes=[chain(1), chain(2)],
        block_size=BLOCK,
        categories=["agent", "chat"],
    )
    with pytest.warns(UserWarning, match="never writes a block to the dram tier"):
        result = run(cfg, trace)
    agent, chat = result.requests.iloc[0], result.requests.iloc[1]
    assert agent["preemptions"] == 1 and chat["preemptions"] == 0
    swapped = result.summary["link_pcie_d2h_bytes"] // bytes_per_block()
    swap_s = swapped * PCIE_LATENCY_S + swapped * bytes_per_block() / (slow * 1e9)
    assert swapped >= 8
    assert chat["kv_stall_s"] == pytest.approx(swap_s)
    prefill_s = execution().iteration_s([PROMPT], [0], 0, 0)
    decode_step_s = float(execution().decode_steps_s(1, 2 * PROMPT, 1)[0])  # at most one step to the boundary
    assert swap_s + prefill_s - 1e-9 <= chat["ttft_s"] <= swap_s + prefill_s + decode_step_s


def test_isolated_request_decodes_at_the_models_step_times() -> None:
    output = 50
    result = run(config(hbm_blocks=100), make_trace([(0.0, chain(1))], output=output))
    row = result.requests.iloc[0]
    model = execution()
    # After prefill the context holds the prompt; decode step j attends to PROMPT + 1 + j tokens.
    steps = model.decode_steps_s(1, PROMPT + 1, output - 1)
    assert row["ttft_s"] == pytest.approx(model.iteration_s([PROMPT], [0], 0, 0))
    assert row["e2e_s"] - row["ttft_s"] == pytest.approx(steps.sum())
    assert row["tpot_s"] == pytest.approx(steps.sum() / (output - 1))


@pytest.mark.parametrize(
    ("gpu", "active_w", "decode_w"),
    [("h100-sxm", 700.0, 590.0), ("h200", 700.0, 645.0), ("a100-80gb", 400.0, 400.0)],
)
def test_energy_is_idle_power_plus_prefill_and_decode_steps_at_their_own_draw(
    gpu: str, active_w: float, decode_w: float
) -> None:
    """One request on an idle GPU: a prefill step at the board's power limit, then decode steps
    at their lower measured draw (the limit where none was measured), idle power throughout."""
    output = 50
    cfg = config(hbm_blocks=100)
    cfg.hardware.gpu = gpu
    cfg.hardware.pcie_gbps = None  # the GPU's own copy model (none are made here)
    result = run(cfg, make_trace([(0.0, chain(1))], output=output))
    summary, row = result.summary, result.requests.iloc[0]
    idle_w = cfg.power.gpu_idle_w
    prefill_s = row["ttft_s"]
    decode_s = row["e2e_s"] - row["ttft_s"]
    expected = idle_w * row["e2e_s"] + (active_w - idle_w) * prefill_s + (decode_w - idle_w) * decode_s
    assert summary["energy_j"] == pytest.approx(expected)
    assert summary["gpu_prefill_busy_fraction"] == pytest.approx(prefill_s / row["e2e_s"])
    share = f"{100 * prefill_s / row['e2e_s']:.1f} %"
    assert re.search(
        rf"GPU busy +100\.0 % of the time \(mean batch 1\.0 sequences\), {re.escape(share)} in steps with prefill",
        format_summary(summary),
    )
    cfg.power.gpu_decode_w = 300.0  # an explicit figure overrides the GPU's
    assert run(cfg, make_trace([(0.0, chain(1))], output=output)).summary["energy_j"] == pytest.approx(
        expected + (300.0 - decode_w) * decode_s
    )


def sessions_trace(n_sessions: int = 12, turns: int = 4, gap_s: float = 2.0) -> Trace:
    """Multi-turn sessions: turn k's prompt extends turn k-1's by two blocks."""
    rows = []
    for turn in range(turns):
        for s in range(n_sessions):
            blocks = chain(s + 1, 3 + 2 * turn)
            rows.append((turn * gap_s * n_sessions + s * gap_s, blocks, len(blocks) * BLOCK + 50))
    rows.sort(key=lambda r: r[0])
    return Trace.from_columns(
        arrival_s=[r[0] for r in rows],
        input_tokens=[r[2] for r in rows],
        output_tokens=[20] * len(rows),
        block_hashes=[r[1] for r in rows],
        block_size=BLOCK,
    )


def test_shrinking_hbm_lowers_hit_ratio_and_raises_ttft() -> None:
    trace = sessions_trace()
    large = run(config(hbm_blocks=400), trace).summary
    small = run(config(hbm_blocks=24), trace).summary
    assert small["token_hit_ratio_hbm"] < large["token_hit_ratio_hbm"]
    assert small["ttft_s_mean"] > large["ttft_s_mean"]


@pytest.mark.parametrize("preemption", ["recompute", "swap"])
def test_memory_pressure_preempts_yet_every_request_finishes(preemption: str) -> None:
    trace = sessions_trace(n_sessions=6, turns=3, gap_s=0.01)
    cfg = config(hbm_blocks=24, dram_blocks=200)
    cfg.engine.preemption = preemption
    result = run(cfg, trace)
    assert result.summary["n_finished"] == len(trace)
    assert result.summary[f"preemptions_{preemption}"] > 0
    assert result.summary["hbm_peak_blocks"] <= 24
    requests = result.requests
    hits = sum(requests[f"{t}_hit_tokens"] for t in ("hbm", "dram"))
    assert (hits + requests["recomputed_tokens"] == requests["input_tokens"]).all()


def test_request_too_large_for_hbm_is_rejected_with_a_reason() -> None:
    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0],
        input_tokens=[PROMPT, 30 * BLOCK],
        output_tokens=[1, 1],
        block_hashes=[chain(1), chain(2, 30)],
        block_size=BLOCK,
    )
    result = run(config(hbm_blocks=20), trace)
    assert result.requests["finished"].tolist() == [True, False]
    assert result.requests["reject_reason"].tolist()[1] == "kv_exceeds_hbm"
    assert result.summary["rejected_by_reason"]["kv_exceeds_hbm"] == 1
    # Hit and recompute ratios are over the one prompt that reached the cache: all recomputed.
    assert result.summary["recompute_ratio"] == 1.0 and result.summary["token_hit_ratio"] == 0.0
    assert "1 finished, 1 rejected of 2 (kv_exceeds_hbm: 1)" in format_summary(result.summary)


def test_a_run_that_finishes_nothing_says_why_and_prints_no_nan() -> None:
    trace = Trace.from_columns(
        arrival_s=[0.0], input_tokens=[30 * BLOCK], output_tokens=[1], block_hashes=[chain(2, 30)], block_size=BLOCK
    )
    report = format_summary(run(config(hbm_blocks=20), trace).summary)
    assert "0 finished, 1 rejected of 1 (kv_exceeds_hbm: 1)" in report
    assert re.search(r"TTFT p50 / p99 +- / -", report) and "nan" not in report
    assert "on 1 x h100-sxm (1 replica x tp 1)" in report


def test_an_idle_stretch_is_not_sampled_interval_by_interval() -> None:
    # Two requests a simulated day apart, as in a trace whose times are Unix timestamps.
    day = 86_400.0
    trace = make_trace([(day, chain(1)), (2 * day, chain(1))])
    result = run(config(hbm_blocks=64), trace)
    assert result.requests["finished"].all() and result.summary["block_hit_ratio_hbm"] > 0
    times = result.timeseries["time_s"].to_numpy()
    interval = SimConfig().timeseries_interval_s
    assert len(times) < 20, f"{len(times)} rows for two requests"
    # Each busy stretch is still sampled: a row within an interval of each request's end.
    ends = (result.requests["arrival_s"] + result.requests["e2e_s"]).to_numpy()
    assert all(np.any(np.abs(times - end) <= interval) for end in ends)
    # and nothing is sampled before the first arrival (the trace starts idle)
    assert times.min() > day


def test_same_config_and_trace_give_byte_identical_results(tmp_path) -> None:
    trace = sessions_trace()
    first = run(config(hbm_blocks=30, dram_blocks=60), trace).save(tmp_path / "a")
    second = run(config(hbm_blocks=30, dram_blocks=60), trace).save(tmp_path / "b")
    for name in ("summary.json", "requests.parquet", "timeseries.parquet"):
        assert (first / name).read_bytes() == (second / name).read_bytes(), name


def test_summary_reports_every_metric_family() -> None:
    summary = run(config(hbm_blocks=30, dram_blocks=60), sessions_trace()).summary
    for family in ("ttft_s", "tpot_s", "e2e_s", "queue_s", "kv_stall_s"):
        for stat in ("mean", "p50", "p90", "p95", "p99"):
            assert np.isfinite(summary[f"{family}_{stat}"]), f"{family}_{stat}"
    for key in (
        "slo_attainment",
        "goodput_rps",
        "throughput_rps",
        "output_tokens_per_s",
        "token_hit_ratio_hbm",
        "token_hit_ratio_dram",
        "block_hit_ratio_hbm",
        "recompute_ratio",
        "link_pcie_h2d_bytes",
        "link_pcie_d2h_utilisation",
        "kv_stall_s_total",
        "hbm_peak_blocks",
        "preemptions_recompute",
        "energy_per_output_token_j",
    ):
        assert key in summary, key
    json.loads(summary_json(summary))


def _evicted_then_returning(kv_load: str, pcie_gbps: float) -> tuple:
    """A's prompt pushed out of HBM by B, then A again on an idle GPU. Written through to DRAM
    as they are computed, evicted blocks need no copy when A returns: its only possible wait
    is its own load."""
    cfg = config(hbm_blocks=8, dram_blocks=100)
    cfg.admission = "write_through"
    cfg.hardware.pcie_gbps = pcie_gbps
    cfg.engine.kv_load = kv_load
    result = run(cfg, make_trace([(0.0, chain(1)), (10.0, chain(2)), (20.0, chain(1))]))
    return result.requests.iloc[2], result.summary


def test_if_faster_recomputes_a_dram_hit_whose_load_would_take_longer() -> None:
    # At 0.05 GB/s the 7-block load takes ~1.2 s, recomputing 896 tokens some tens of ms.
    slow = 0.05
    load_s = 7 * PCIE_LATENCY_S + 7 * bytes_per_block() / (slow * 1e9)
    always, _ = _evicted_then_returning("always", slow)
    assert always["ttft_s"] == pytest.approx(load_s + execution().iteration_s([104], [896], 0, 0))
    faster, summary = _evicted_then_returning("if_faster", slow)
    assert faster["dram_hit_tokens"] == 0 and faster["recomputed_tokens"] == PROMPT
    assert faster["kv_stall_s"] == 0
    assert faster["ttft_s"] == pytest.approx(execution().iteration_s([PROMPT], [0], 0, 0))
    assert faster["ttft_s"] < always["ttft_s"]
    assert summary["loads_declined_blocks"] == 7
    assert summary["link_pcie_h2d_bytes"] == 0  # nothing was loaded
    assert re.search(r"lower-tier hits recomputed +7 blocks", format_summary(summary))


def test_if_faster_still_loads_when_the_link_beats_recomputing() -> None:
    always, _ = _evicted_then_returning("always", PCIE_GBPS)
    faster, summary = _evicted_then_returning("if_faster", PCIE_GBPS)
    assert faster["dram_hit_tokens"] == 7 * BLOCK
    assert faster["ttft_s"] == pytest.approx(always["ttft_s"])
    assert summary["loads_declined_blocks"] == 0


def test_if_faster_counts_the_wait_for_a_copy_still_landing_in_the_source_tier() -> None:
    # A's blocks are on their way to the SSD (a slow write, about 2.6 s) when A returns at 1 s.
    # The read itself is quick; what makes loading late is waiting for the write to land.
    def third(kv_load: str) -> tuple:
        hardware = HardwareConfig(
            pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=10.0,
            ssd_write_gbps=0.05,
        )  # fmt: skip
        cfg = SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=8), admission="ssd_spill")
        cfg.engine.kv_load = kv_load
        result = run(cfg, make_trace([(0.0, chain(1)), (0.3, chain(2)), (1.0, chain(1))]))
        return result.requests.iloc[2], result.summary

    always, _ = third("always")
    assert always["ssd_hit_tokens"] == 7 * BLOCK and always["ttft_s"] > 1.5
    faster, summary = third("if_faster")
    assert faster["ssd_hit_tokens"] == 0 and faster["recomputed_tokens"] == PROMPT
    assert summary["loads_declined_blocks"] == 7
    assert faster["ttft_s"] < 0.2 * always["ttft_s"]


def test_priority_serves_the_bundled_chat_traffic_ahead_of_its_agents() -> None:
    # Overloaded (30 req/s into 4 GB of KV): FCFS queues every category alike; priority puts the
    # generators' chat and RAG (a user waiting) before agent loops.
    from traces import generate

    trace = generate("default", 0, n_requests=600, rate=30.0)
    category = np.asarray(trace.categories)[trace.category_code]
    ttft = {}
    for scheduler in ("fcfs", "priority"):
        requests = run(SimConfig(scheduler=scheduler, hardware=HardwareConfig(hbm_gb=4)), trace).requests
        ttft[scheduler] = {c: float(np.median(requests["ttft_s"][category == c])) for c in ("chat", "agent")}
    assert ttft["priority"]["chat"] < 0.9 * ttft["fcfs"]["chat"]
    assert ttft["priority"]["agent"] > ttft["fcfs"]["agent"]


def test_a_request_that_does_not_fit_leaves_its_prefix_hits_and_the_policy_as_they_were() -> None:
    # A leaves its 7-block prefix cached and unpinned in 24 HBM blocks; B then holds 16 of them
    # while it decodes. C reuses A's prefix but needs 8 more blocks: it is tried while B runs
    # and does not fit until B ends. With HBM alone nothing is copied, so no pin can drop
    # without a use: a policy told so would be hearing of pins taken and given back by an
    # admission that did not go ahead.
    class Counting(LRU):
        unpinned = 0

        def on_unpinned(self, block: int) -> None:
            Counting.unpinned += 1

    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0, 1.1],
        input_tokens=[8 * BLOCK, 15 * BLOCK, 15 * BLOCK],
        output_tokens=[1, 100, 1],
        block_hashes=[chain(1), chain(2, 15), chain(1) + chain(3, 8)],
        block_size=BLOCK,
    )
    result = run(SimConfig(tiers=TierConfig(hbm_blocks=24), eviction=Counting), trace)
    assert result.summary["n_finished"] == 3
    requests = result.requests
    b_ends = requests["arrival_s"][1] + requests["e2e_s"][1]
    assert requests["arrival_s"][2] + requests["queue_s"][2] >= b_ends - 1e-9  # C waited for B
    assert requests["hbm_hit_tokens"][2] == 7 * BLOCK  # and then used A's prefix
    assert Counting.unpinned == 0


def test_an_overloaded_run_says_so_and_a_light_one_does_not() -> None:
    from dataclasses import replace as replace_columns

    from traces import generate

    light = generate("rag", seed=4, n_requests=200)
    crushed = replace_columns(light, arrival_s=np.asarray(light.arrival_s) * 0.005)  # 200 x the load
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        run(SimConfig(), light)
    with pytest.warns(UserWarning, match=r"overloaded: half the requests queued over .* \(TTFT objective 2.0 s\)"):
        summary = run(SimConfig(), crushed).summary
    assert summary["queue_s_p50"] > 2.0


def test_an_ssds_reads_and_writes_take_turns_on_the_drive() -> None:
    # A small HBM spilling to a slow SSD, with reuse: blocks are written to the SSD and read
    # back from it all run long. One drive serves both (a 7 GB/s-read, 5 GB/s-write NVMe does
    # not do both at once), so in no interval are its reads and writes together busy more than
    # the whole interval.
    hardware = HardwareConfig(
        profile="datasheet", pcie_gbps=1.0, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, ssd_gb=100.0,
        ssd_read_gbps=0.5, ssd_write_gbps=0.5,
    )  # fmt: skip
    trace = generate("default", seed=0, n_requests=200)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # overloaded, on purpose
        result = run(SimConfig(hardware=hardware, tiers=TierConfig(hbm_blocks=400), admission="ssd_spill"), trace)
    series = result.timeseries
    ssd = series["ssd_read_utilisation"] + series["ssd_write_utilisation"]
    assert (series["ssd_read_utilisation"] > 0).any() and (series["ssd_write_utilisation"] > 0).any()
    assert (ssd <= 1.0 + 1e-9).all()


@pytest.mark.parametrize("mode", ["serve", "replay"])
def test_each_request_row_carries_its_category_session_and_turn_from_the_trace(mode: str, tmp_path) -> None:
    # Per-category tail latency is read from the rows alone (a notebook's groupby); a trace
    # mixing labelled and unlabelled requests (RAG has no sessions) gives nulls, not -1.
    trace = generate("mixed", 3, n_requests=150)
    config = SimConfig(mode=mode, tiers=TierConfig(hbm_blocks=400) if mode == "replay" else TierConfig())
    result = run(config, trace)
    result.save(tmp_path)
    rows = type(result).load(tmp_path).requests
    assert list(rows["category"].astype(object)) == [trace.category_of(i) for i in range(len(trace))]
    sessions = rows["session_id"].to_numpy(dtype=float, na_value=np.nan)
    turns = rows["turn"].to_numpy(dtype=float, na_value=np.nan)
    labelled = trace.session_id >= 0
    assert 0 < labelled.sum() < len(trace)
    assert np.array_equal(sessions[labelled], trace.session_id[labelled])
    assert np.array_equal(turns[labelled], trace.turn[labelled])
    assert np.isnan(sessions[~labelled]).all() and np.isnan(turns[~labelled]).all()


@pytest.mark.parametrize("overlap", ["none", "layerwise"])
@pytest.mark.parametrize("pcie_gbps", [PCIE_GBPS, 2.0])  # the load shorter than the step, then longer
def test_a_dram_load_runs_before_the_prefill_or_under_it_layer_by_layer(overlap: str, pcie_gbps: float) -> None:
    # A's blocks are written through to DRAM; B's admission evicts them from HBM (no copy: DRAM
    # has them), and A's return loads them. Loaded first ("none", vLLM's offloading connector),
    # its prefill starts once the copy has landed. Layer by layer (SGLang HiCache), it runs in
    # the step that loads: layer i's attention waits for layer i's KV, so the step ends one
    # layer's share of its compute after the copy lands, or when its compute ends if later.
    cfg = config(hbm_blocks=8, dram_blocks=100)
    cfg.admission = "write_through"
    cfg.engine.kv_load_overlap = overlap
    cfg.hardware.pcie_gbps = pcie_gbps
    result = run(cfg, make_trace([(0.0, chain(1)), (10.0, chain(2)), (20.0, chain(1))]))
    third = result.requests.iloc[2]
    assert third["dram_hit_tokens"] == 7 * BLOCK
    load_s = 7 * PCIE_LATENCY_S + 7 * bytes_per_block() / (pcie_gbps * 1e9)
    step_s = execution().iteration_s([104], [896], 0, 0)
    if overlap == "none":
        expected = load_s + step_s
    else:
        expected = max(step_s, load_s + step_s / execution().model.n_layers)
    assert third["ttft_s"] == pytest.approx(expected)
    assert third["kv_stall_s"] == pytest.approx(expected - step_s)
    assert result.summary["link_pcie_h2d_bytes"] == 7 * bytes_per_block()
