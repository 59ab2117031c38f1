"""The KV pool shared by all replicas (``hardware.remote_gb``): a prefix one replica computed
is a hit for another, read over that replica's network link and then its PCIe link; the pool
is one tier with one capacity, however many replicas use it.

Timing expectations follow the stated link model, hop after hop, as in ``test_engine_serve``:
``n x latency + bytes / bandwidth`` on PCIe, and on the network ``bytes / bandwidth`` plus one
request latency for the whole copy, which does not hold the NIC (``sim.links``).
"""

from __future__ import annotations

import re
import warnings

import pytest

from sim.build import ConfigError, build_setup
from sim.config import EngineConfig, HardwareConfig, SimConfig, TierConfig
from sim.engine import _ServeRun
from sim.report import format_summary
from sim.result import summary_json
from sim.run import run
from tests.test_engine_serve import BLOCK, PCIE_GBPS, PCIE_LATENCY_S, bytes_per_block, chain, execution, make_trace
from traces import generate
from traces.stats import reuse_ratio

NET_GBPS = 10.0
NET_LATENCY_S = 3e-5


def pool_config(
    *,
    remote_blocks: int = 1000,
    n_replicas: int = 2,
    net_gbps: float = NET_GBPS,
    pool_gbps: float | None = None,
    **tiers: int,
) -> SimConfig:
    return SimConfig(
        hardware=HardwareConfig(
            profile="datasheet", pcie_gbps=PCIE_GBPS, pcie_latency_s=PCIE_LATENCY_S, copies_per_block=1, n_replicas=n_replicas,
            net_gbps=net_gbps, net_latency_s=NET_LATENCY_S, pool_gbps=pool_gbps,
        ),
        tiers=TierConfig(remote_blocks=remote_blocks, **tiers),
        admission="write_through",
        routing="round_robin",
    )  # fmt: skip


def test_a_prefix_computed_on_one_replica_is_a_pool_hit_on_another() -> None:
    # Round robin sends A to replica 0 and its repeat to replica 1, whose own HBM is empty.
    trace = make_trace([(0.0, chain(1)), (10.0, chain(1))])
    result = run(pool_config(hbm_blocks=100), trace)
    second = result.requests.iloc[1]
    assert (result.requests["replica"].tolist()) == [0, 1]
    assert second["hbm_hit_tokens"] == 0
    assert second["remote_hit_tokens"] == 7 * BLOCK
    nbytes = 7 * bytes_per_block()
    net = NET_LATENCY_S + nbytes / (NET_GBPS * 1e9)
    pcie = 7 * PCIE_LATENCY_S + nbytes / (PCIE_GBPS * 1e9)
    assert second["kv_stall_s"] == pytest.approx(net + pcie)
    assert second["ttft_s"] == pytest.approx(net + pcie + execution().iteration_s([104], [896], 0, 0))
    s = result.summary
    # A's blocks went down once (PCIe, then the network); the repeat wrote nothing new.
    assert s["link_net_write_bytes"] == nbytes
    assert s["link_pcie_d2h_bytes"] == nbytes
    assert s["link_net_read_bytes"] == nbytes
    assert s["remote_capacity_blocks"] == 1000
    report = format_summary(s)
    assert "from remote" in report
    # The network carried 7 blocks each way, each in a small share of the run.
    links = re.search(r"link utilisation +(.*)", report).group(1)
    assert set(re.findall(r"(\w+) [\d.]+ %", links)) == {"pcie_h2d", "pcie_d2h", "net_read", "net_write"}

    without = run(SimConfig(hardware=pool_config().hardware, tiers=TierConfig(hbm_blocks=100)), trace)
    assert without.requests.iloc[1]["hbm_hit_tokens"] == 0
    assert "remote_hit_tokens" not in without.requests
    assert without.requests.iloc[1]["recomputed_tokens"] == 1000


def test_with_dram_the_pool_copy_is_written_from_dram_and_crosses_pcie_once() -> None:
    trace = make_trace([(0.0, chain(1))])
    s = run(pool_config(hbm_blocks=100, dram_blocks=100), trace).summary
    nbytes = 7 * bytes_per_block()
    assert s["link_pcie_d2h_bytes"] == nbytes
    assert s["link_net_write_bytes"] == nbytes


def test_a_pool_block_another_replica_is_still_writing_is_read_only_once_it_has_landed() -> None:
    # A slow network. Round robin: C and A go to replica 0, whose network link writes C's
    # blocks to the pool and then A's; D and B go to replica 1. A's blocks are in the pool
    # (their slots taken) as soon as their write is queued, but their bytes land only after
    # C's and their own: B, A's repeat, must wait for that, not only for its own read.
    slow_gbps = 0.05
    trace = make_trace([(0.0, chain(2)), (0.001, chain(3)), (0.002, chain(1)), (0.5, chain(1))])
    result = run(pool_config(hbm_blocks=100, net_gbps=slow_gbps), trace)
    assert result.requests["replica"].tolist() == [0, 1, 0, 1]
    repeat = result.requests.iloc[3]
    assert repeat["remote_hit_tokens"] == 7 * BLOCK
    a_landed_by = 14 * bytes_per_block() / (slow_gbps * 1e9)  # C's 7 blocks and A's 7
    read_s = 7 * bytes_per_block() / (slow_gbps * 1e9)
    assert repeat["arrival_s"] + repeat["ttft_s"] > a_landed_by + read_s
    assert repeat["kv_stall_s"] > a_landed_by - repeat["arrival_s"]


def _inserts_and_evictions(n_replicas: int, remote_blocks: int) -> tuple[int, int, int]:
    config = pool_config(n_replicas=n_replicas, remote_blocks=remote_blocks, hbm_blocks=60, dram_blocks=40)
    config.admission = "ssd_spill"
    trace = generate("multi_turn", seed=4, n_requests=400)
    serve = _ServeRun(config, trace, build_setup(config, trace), progress=False)
    result = serve.run()
    written = result.summary["link_net_write_bytes"] // serve.setup.bytes_per_block
    assert serve.pool is not None and all(r.cache.tiers[-1] is serve.pool for r in serve.replicas)
    return written, result.summary["remote_evictions"], len(serve.pool.blocks)


@pytest.mark.parametrize("n_replicas", [1, 3])
def test_the_pool_is_one_tier_whose_blocks_are_counted_once(n_replicas: int) -> None:
    # Every block enters the pool by a network write and leaves it only by eviction, so what
    # is left at the end is what was written less what was evicted, whatever the replicas.
    # (A small pool: DRAM, which spills to it, keeps a slot until its copy has read it, and
    # drops what finds no room meanwhile, so fewer blocks reach the pool than DRAM evicts.)
    written, evicted, left = _inserts_and_evictions(n_replicas, remote_blocks=60)
    assert evicted > 0, "the pool should have filled for this to test anything"
    assert left == written - evicted
    assert left <= 60


def test_same_config_with_a_pool_gives_byte_identical_results() -> None:
    trace = generate("multi_turn", seed=2, n_requests=300)
    config = pool_config(n_replicas=3, remote_blocks=200, hbm_blocks=80, dram_blocks=50)
    first, second = run(config, trace), run(config, trace)
    assert summary_json(first.summary) == summary_json(second.summary)
    assert first.requests.equals(second.requests)


def test_the_pool_turns_cross_replica_reuse_into_hits() -> None:
    # Conversations scattered by round robin: each replica's own HBM rarely holds a session's
    # history, the pool does.
    trace = generate("multi_turn", seed=1, n_requests=600)
    engine = EngineConfig(max_num_seqs=64)
    base = SimConfig(hardware=HardwareConfig(n_replicas=4, hbm_gb=2.0), engine=engine, routing="round_robin")
    pooled = SimConfig(
        hardware=HardwareConfig(n_replicas=4, hbm_gb=2.0, remote_gb=200.0), engine=engine, routing="round_robin",
        admission="write_through",
    )  # fmt: skip
    without, with_pool = run(base, trace).summary, run(pooled, trace).summary
    assert with_pool["token_hit_ratio_remote"] > 0.1
    assert with_pool["token_hit_ratio"] > without["token_hit_ratio"] + 0.1


def test_replay_mode_takes_the_pool_as_its_last_tier() -> None:
    trace = generate("multi_turn", seed=3, n_requests=300)
    config = SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=50, remote_blocks=10**7))
    s = run(config, trace).summary
    assert s["remote_blocks"] == 10**7
    assert s["remote_hit_ratio"] > 0
    assert s["block_hit_ratio"] == pytest.approx(reuse_ratio(trace.block_hashes))
    assert s["hbm_hit_ratio"] + s["remote_hit_ratio"] == pytest.approx(s["block_hit_ratio"])
    assert re.search(r"capacity \(blocks\) +hbm 50, remote 10,000,000", format_summary(s))


@pytest.mark.parametrize(
    ("hardware", "key"),
    [
        ({"remote_gb": -1.0}, "hardware.remote_gb"),
        ({"remote_gb": 10.0, "net_gbps": 0.0}, "hardware.net_gbps"),
        ({"remote_gb": 10.0, "net_latency_s": -1e-6}, "hardware.net_latency_s"),
        ({"remote_gb": 1e-6}, "hardware.remote_gb"),
    ],
)
def test_an_impossible_pool_is_a_config_error_naming_its_key(hardware: dict, key: str) -> None:
    trace = make_trace([(0.0, chain(1))])
    with pytest.raises(ConfigError) as info:
        run(SimConfig(hardware=HardwareConfig(**hardware)), trace)
    assert info.value.key == key


def test_a_pool_eviction_override_needs_a_pool() -> None:
    trace = make_trace([(0.0, chain(1))])
    with pytest.raises(ConfigError, match="no remote tier"):
        run(SimConfig(tier_eviction={"remote": "lru"}), trace)
    s = run(SimConfig(hardware=HardwareConfig(remote_gb=10.0), tier_eviction={"remote": "fifo"}), trace).summary
    assert s["eviction_remote"] == "fifo"


def test_a_tier_the_placement_policy_never_fills_is_named_in_a_warning() -> None:
    """write_back demotes HBM into DRAM only: a pool configured with it stays empty, which is
    most likely a forgotten setting; ssd_spill and write_through reach it, and say nothing."""
    trace = make_trace([(0.0, chain(1))])
    hardware = HardwareConfig(dram_gb=4.0, remote_gb=10.0)
    with pytest.warns(UserWarning, match="never writes a block to the remote tier"):
        run(SimConfig(hardware=hardware, admission="write_back"), trace)
    for admission in ("ssd_spill", "write_through"):
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            run(SimConfig(hardware=hardware, admission=admission), trace)


def test_the_pool_servers_bandwidth_is_shared_by_the_replicas_first_come_first_served() -> None:
    # Three replicas each compute one prompt (round robin), then each reads another's from the
    # pool at the same moment. With the pool servers as fast as one NIC, the three reads
    # queue at the servers' port: they land one, two and three reads' worth of server time
    # after they start (the first is set by its own NIC, as it is with no server limit).
    a, b, c = chain(1), chain(2), chain(3)
    trace = make_trace([(0.0, a), (0.001, b), (0.002, c), (10.0, b), (10.0, c), (10.0, a)])
    nbytes = 7 * bytes_per_block()
    net = NET_LATENCY_S + nbytes / (NET_GBPS * 1e9)
    pcie = 7 * PCIE_LATENCY_S + nbytes / (PCIE_GBPS * 1e9)
    server = nbytes / (NET_GBPS * 1e9)
    assert 2 * server > net, "the servers' queue should be what the second read waits for"

    unlimited = run(pool_config(n_replicas=3, hbm_blocks=100), trace)
    limited = run(pool_config(n_replicas=3, hbm_blocks=100, pool_gbps=NET_GBPS), trace)
    for result in (unlimited, limited):
        repeats = result.requests.iloc[3:]
        assert repeats["remote_hit_tokens"].tolist() == [7 * BLOCK] * 3
        assert sorted(repeats["replica"]) == [0, 1, 2]
    assert unlimited.requests.iloc[3:]["kv_stall_s"].tolist() == pytest.approx([net + pcie] * 3)
    stalls = sorted(limited.requests.iloc[3:]["kv_stall_s"])
    assert stalls == pytest.approx([net + pcie, 2 * server + pcie, 3 * server + pcie])
    s = limited.summary
    # The servers' port is one link: it carried every replica's copies, counted once.
    assert s["link_pool_read_bytes"] == s["link_net_read_bytes"] == 3 * nbytes
    assert s["link_pool_write_bytes"] == s["link_net_write_bytes"] == 3 * nbytes
    assert "pool_read_bytes" not in "".join(unlimited.summary)


def test_a_pool_servers_bandwidth_that_never_binds_changes_neither_timing_nor_energy() -> None:
    """The servers' port carries the same bytes as each replica's network link: a copy is
    billed once in the energy, so a port too fast to queue anything leaves every figure but its
    own link's bytes as it was."""
    trace = generate("multi_turn", seed=1, n_requests=120, rate=4.0)
    unlimited = run(pool_config(hbm_blocks=150, dram_blocks=50), trace).summary
    fast_port = run(pool_config(hbm_blocks=150, dram_blocks=50, pool_gbps=1e6), trace).summary
    assert fast_port["link_pool_read_bytes"] + fast_port["link_pool_write_bytes"] > 0
    assert fast_port["energy_j"] == pytest.approx(unlimited["energy_j"], rel=1e-12)
    assert fast_port["ttft_s_p99"] == unlimited["ttft_s_p99"]


def test_the_pool_servers_bandwidth_must_be_positive() -> None:
    config = pool_config(hbm_blocks=100)
    config.hardware.pool_gbps = 0.0
    with pytest.raises(ConfigError, match="hardware.pool_gbps"):
        run(config, make_trace([(0.0, chain(1))]))
