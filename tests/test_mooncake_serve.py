"""The real Mooncake conversation slice end to end in serve mode (skipped where absent)."""

from __future__ import annotations

from pathlib import Path

import pytest

from sim.config import HardwareConfig, SimConfig
from sim.run import run
from traces import open_trace
from traces.stats import reuse_ratio

MOONCAKE = Path(__file__).resolve().parents[1] / ".." / "shared" / "traces" / "mooncake_conversation_trace.jsonl"


@pytest.mark.skipif(not MOONCAKE.exists(), reason="../shared/traces/ not present")
def test_mooncake_slice_runs_through_hbm_dram_and_ssd_with_every_request_accounted_for() -> None:
    trace = open_trace(MOONCAKE, "mooncake")
    config = SimConfig(hardware=HardwareConfig(dram_gb=200, ssd_gb=2000, n_replicas=4), routing="prefix_affinity")
    result = run(config, trace)
    s = result.summary
    assert s["n_finished"] + s["n_rejected"] == len(trace) == 12_031
    assert set(result.requests.loc[~result.requests["finished"], "reject_reason"]) <= {"kv_exceeds_hbm"}
    # Every tier serves some of the reuse, and the per-tier shares add up to the whole.
    for tier in ("hbm", "dram", "ssd"):
        assert s[f"token_hit_ratio_{tier}"] > 0
    assert s["token_hit_ratio"] == pytest.approx(sum(s[f"token_hit_ratio_{t}"] for t in ("hbm", "dram", "ssd")))
    assert s["token_hit_ratio"] + s["recompute_ratio"] == pytest.approx(1.0)
    # The trace's infinite-cache reuse bounds what any hierarchy can hit.
    assert s["block_hit_ratio"] <= reuse_ratio(trace.block_hashes) + 1e-9
    for key in ("ttft_s_p99", "tpot_s_p99", "e2e_s_p99", "slo_attainment", "goodput_rps", "kv_stall_s_mean",
                "link_pcie_h2d_bytes", "link_ssd_read_utilisation", "energy_per_output_token_j"):  # fmt: skip
        assert s[key] is not None and s[key] >= 0, key
