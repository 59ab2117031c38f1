"""A different eviction policy per tier (``SimConfig.tier_eviction``), in serve and replay mode."""

from __future__ import annotations

import numpy as np
import pytest

from policies.eviction.lru import LRU
from sim.build import ConfigError
from sim.config import HardwareConfig, SimConfig, TierConfig
from sim.run import run
from traces import generate


class TierRecordingLRU(LRU):
    """LRU that notes which tier it was bound to."""

    bound: list[str] = []

    def bind(self, capacity_blocks, workload) -> None:
        super().bind(capacity_blocks, workload)
        TierRecordingLRU.bound.append(workload.tier)


@pytest.fixture
def trace():
    return generate("multi_turn", seed=0, n_requests=300)


@pytest.fixture(autouse=True)
def _fresh_record():
    TierRecordingLRU.bound = []


def test_serve_mode_builds_the_override_for_its_tier_only(trace) -> None:
    config = SimConfig(
        hardware=HardwareConfig(n_replicas=2, hbm_gb=1, dram_gb=8),
        eviction="fifo",
        tier_eviction={"dram": TierRecordingLRU},
    )
    summary = run(config, trace).summary
    assert TierRecordingLRU.bound == ["dram", "dram"]  # one per replica, none for HBM
    assert summary["eviction"] == "fifo" and summary["eviction_dram"] == "TierRecordingLRU"


def test_replay_mode_builds_the_override_for_its_tier_only(trace) -> None:
    config = SimConfig(
        mode="replay",
        tiers=TierConfig(hbm_blocks=200, ssd_blocks=2000),
        tier_eviction={"ssd": TierRecordingLRU},
    )
    summary = run(config, trace).summary
    assert TierRecordingLRU.bound == ["ssd"]
    assert summary["eviction_ssd"] == "TierRecordingLRU"


def test_an_override_of_the_only_tier_is_that_tiers_policy(trace) -> None:
    tiers = TierConfig(hbm_blocks=300)
    overridden = run(SimConfig(mode="replay", tiers=tiers, eviction="lru", tier_eviction={"hbm": "fifo"}), trace)
    plain = run(SimConfig(mode="replay", tiers=tiers, eviction="fifo"), trace)
    assert np.array_equal(overridden.requests["hbm_hit_blocks"], plain.requests["hbm_hit_blocks"])
    lru = run(SimConfig(mode="replay", tiers=tiers, eviction="lru"), trace)
    assert not np.array_equal(lru.requests["hbm_hit_blocks"], plain.requests["hbm_hit_blocks"])


@pytest.mark.parametrize(
    ("tier_eviction", "message"),
    [
        ({"dram ": "lru"}, "unknown tier"),
        ({"ssd": "lru"}, "no ssd tier"),
        ({"dram": "lruu"}, "choose one of"),
    ],
)
def test_bad_overrides_name_the_key(trace, tier_eviction: dict, message: str) -> None:
    config = SimConfig(hardware=HardwareConfig(dram_gb=8), tier_eviction=tier_eviction)
    with pytest.raises(ConfigError, match=message) as info:
        run(config, trace)
    assert f"tier_eviction.{next(iter(tier_eviction))}" in str(info.value)
