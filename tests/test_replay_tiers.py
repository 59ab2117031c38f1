"""Multi-tier cache-only replay: worked by hand, HBM unchanged by tiers below it, capacities kept."""

from __future__ import annotations

import warnings

import numpy as np
import pytest

from policies.registry import available, resolve
from sim.config import SimConfig, TierConfig
from sim.replay import MISS, replay_single_tier, replay_tiers
from sim.run import run
from tests.test_eviction_policies import stream_trace
from traces import generate
from traces.stats import reuse_ratio


def test_a_block_evicted_from_hbm_hits_in_dram_and_comes_back_up() -> None:
    # HBM 2, DRAM 2, LRU: 3 pushes 1 down to DRAM; 1 then hits in DRAM and is promoted,
    # pushing 2 down; 2 hits in DRAM next.
    where = replay_tiers(stream_trace([1, 2, 3, 1, 2]), [2, 2], resolve("eviction", "lru"))
    assert where.tolist() == [MISS, MISS, MISS, 1, 1]


def test_the_last_tier_drops() -> None:
    # HBM 1, DRAM 1: 1, 2, 3 leaves 3 in HBM, 2 in DRAM; 1 was dropped from DRAM.
    where = replay_tiers(stream_trace([1, 2, 3, 1]), [1, 1], resolve("eviction", "lru"))
    assert where.tolist() == [MISS, MISS, MISS, MISS]


@pytest.mark.parametrize("policy", [p for p in available("eviction") if p != "belady"])
def test_hbm_hits_are_those_of_hbm_alone_and_lower_tiers_only_add(policy: str) -> None:
    trace = generate("multi_turn", 3, n_requests=250)
    alone = replay_single_tier(trace, 300, resolve("eviction", policy)())
    where = replay_tiers(trace, [300, 600, 1200], resolve("eviction", policy))
    assert np.array_equal(where == 0, alone)
    assert (where != MISS).sum() >= alone.sum()


def test_a_lower_tier_holding_everything_reaches_the_infinite_cache_hit_ratio() -> None:
    trace = generate("rag", 4, n_requests=300)
    unique = len(np.unique(trace.block_hashes))
    result = run(SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=50, dram_blocks=unique)), trace)
    s = result.summary
    assert s["block_hit_ratio"] == pytest.approx(reuse_ratio(trace.block_hashes))
    assert s["hbm_hit_ratio"] + s["dram_hit_ratio"] == pytest.approx(s["block_hit_ratio"])
    assert int(result.requests["dram_hit_blocks"].sum()) == round(s["dram_hit_ratio"] * s["n_accesses"])


def test_belady_across_tiers_is_at_least_lru() -> None:
    trace = generate("agent", 5, n_requests=200)
    best = replay_tiers(trace, [100, 200], resolve("eviction", "belady"))
    lru = replay_tiers(trace, [100, 200], resolve("eviction", "lru"))
    assert (best == 0).sum() >= (lru == 0).sum()


def test_usable_prefix_stops_each_request_at_its_first_miss() -> None:
    from sim.replay import usable_prefix

    offsets = np.array([0, 3, 5, 5, 8])  # the third request has no blocks
    hits = np.array([True, False, True, True, True, False, True, True])
    assert usable_prefix(hits, offsets).tolist() == [True, False, False, True, True, False, False, False]


def test_usable_prefix_is_the_largest_prefix_closed_subset_of_the_hits() -> None:
    from sim.replay import usable_prefix

    rng = np.random.default_rng(0)
    offsets = np.concatenate([[0], np.cumsum(rng.integers(0, 9, size=200))])
    hits = rng.random(offsets[-1]) < 0.7
    usable = usable_prefix(hits, offsets)
    assert not (usable & ~hits).any()
    for r in range(len(offsets) - 1):
        run, got = hits[offsets[r] : offsets[r + 1]], usable[offsets[r] : offsets[r + 1]]
        k = int(np.argmin(run)) if not run.all() else len(run)
        assert got[:k].all() and not got[k:].any()


def test_replay_summary_reports_the_prefix_usable_hit_ratio() -> None:
    trace = generate("rag", seed=3, n_requests=400)
    summary = run(SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=300), eviction="workload_aware"), trace).summary
    assert 0 < summary["prefix_hit_ratio"] <= summary["block_hit_ratio"]


@pytest.mark.parametrize("dram_blocks", [None, 500])
def test_the_tier_plot_counts_every_hit_of_a_replay(dram_blocks: int | None) -> None:
    from sim.plots import shares_by_source

    trace = generate("default", 0, n_requests=100)
    summary = run(SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=300, dram_blocks=dram_blocks)), trace).summary
    shares = shares_by_source(summary)
    assert shares["hbm"] > 0 and ("dram" in shares) == (dram_blocks is not None)
    assert sum(shares.values()) == pytest.approx(1.0)


@pytest.mark.parametrize(
    ("admission", "third"),
    [
        # Write-back: 2 pushes 1 down to DRAM, where 1 then hits.
        ("ssd_spill", 1),
        # Write-through: 1 and 2 are each copied to DRAM as they are computed, so DRAM holds
        # a copy of what HBM holds: 2's copy takes 1's only DRAM slot, and 1 misses.
        ("write_through_all", MISS),
        # Nothing is ever written below HBM.
        ("drop", MISS),
    ],
)
def test_a_replay_places_blocks_below_hbm_as_its_admission_policy_says(admission: str, third: int) -> None:
    config = SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=1, dram_blocks=1), admission=admission)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # drop leaves DRAM empty, and says so
        requests = run(config, stream_trace([1, 2, 1])).requests
    assert requests["dram_hit_blocks"].tolist() == [0, 0, int(third == 1)]
    assert requests["hbm_hit_blocks"].tolist() == [0, 0, 0]
