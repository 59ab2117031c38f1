"""Each eviction policy's defining behaviour on streams worked out by hand, the engine
contract for all of them (pins, residency), Belady as an upper bound, and the extension path."""

from __future__ import annotations

import textwrap
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.eviction.base import WorkloadView
from policies.registry import available, resolve
from sim.config import SimConfig, TierConfig
from sim.replay import replay_single_tier
from sim.run import run
from traces import Trace

ONLINE = [name for name in available("eviction") if not getattr(resolve("eviction", name), "offline", False)]


def stream_trace(keys: list[int] | np.ndarray, per_request: int = 1) -> Trace:
    keys = np.asarray(keys, dtype=np.uint64)
    n = -(-len(keys) // per_request)
    offsets = np.minimum(np.arange(n + 1) * per_request, len(keys))
    return Trace.from_columns(
        arrival_s=np.arange(n, dtype=float),
        input_tokens=np.diff(offsets) * 16,
        output_tokens=np.zeros(n, dtype=int),
        block_offsets=offsets,
        flat_hashes=keys,
        block_size=16,
    )


def hits(policy: str, keys: list[int], capacity: int, **params) -> list[bool]:
    return replay_single_tier(stream_trace(keys), capacity, resolve("eviction", policy)(**params)).tolist()


def resident_after(policy_name: str, keys: list[int], capacity: int) -> set[int]:
    """Replay through the hooks and return what the cache holds at the end."""
    policy = resolve("eviction", policy_name)()
    policy.bind(capacity, WorkloadView(tier="hbm", block_bytes=0, next_use=None))
    resident: set[int] = set()
    for k in keys:
        if k in resident:
            policy.on_access(k, 0)
        else:
            if len(resident) >= capacity:
                resident.remove(policy.victim(frozenset()))
            resident.add(k)
            policy.on_insert(k, 0)
    return resident


def test_lru_keeps_the_recently_used_fifo_does_not() -> None:
    keys = [1, 2, 3, 1, 4, 1]  # capacity 3: 4 evicts 2 under LRU (1 was used), 1 under FIFO
    assert hits("lru", keys, 3) == [False, False, False, True, False, True]
    assert hits("fifo", keys, 3) == [False, False, False, True, False, False]


def test_sieve_spares_a_visited_block_and_keeps_its_hand_position() -> None:
    # Capacity 3. 1 is visited; inserting 4 sweeps past 1 (clearing it) and evicts 2.
    assert resident_after("sieve", [1, 2, 3, 1, 4], 3) == {1, 3, 4}
    # The hand now sits at 3 (newer than 2): inserting 5 evicts 3, not the unvisited-again 1.
    assert resident_after("sieve", [1, 2, 3, 1, 4, 5], 3) == {1, 4, 5}


def test_s3fifo_one_hit_blocks_leave_from_the_small_queue() -> None:
    # Capacity 20: small queue 2, main 18. A hot set of 10 blocks, each used 3 times, then a
    # scan of 100 one-hit blocks: the scan churns through the small queue and never displaces
    # the hot set from main.
    hot = list(range(10))
    keys = hot * 3 + list(range(1000, 1100)) + hot
    assert all(hits("s3fifo", keys, 20)[-10:])
    assert not all(hits("lru", keys, 20)[-10:])


def test_lfu_aging_lets_a_once_hot_block_go() -> None:
    # Block 0 is hit 5 times early; then two blocks alternate with a stream of new ones.
    # Without aging 0 would stay forever; with L inflating past 5 it is evicted.
    keys = [0] * 6 + [k for i in range(40) for k in (1, 2, 100 + i)]
    assert 0 not in resident_after("lfu", keys, 3)
    assert {1, 2} <= resident_after("lfu", keys, 3)


def test_lfu_counts_a_block_in_use_at_an_eviction_as_used_then() -> None:
    # 1 (one touch) is pinned when 2 (two touches) is evicted: 1 is in use at L = 2, so it is
    # worth L + 1 = 3 from then on, and the next victim is 3 (three touches, L 0), not 1.
    policy = resolve("eviction", "lfu")()
    policy.bind(4, WorkloadView(tier="hbm", block_bytes=0, next_use=None))
    for block, touches in ((1, 1), (2, 2), (3, 3)):
        policy.on_insert(block, 0)
        for _ in range(touches - 1):
            policy.on_access(block, 0)
    assert policy.victim(frozenset({1})) == 2
    assert policy.victim(frozenset()) == 3


def test_arc_grows_its_recency_side_after_a_ghost_hit_in_b1() -> None:
    policy = resolve("eviction", "arc")()
    policy.bind(4, WorkloadView(tier="hbm", block_bytes=0))
    for block in (1, 2):
        policy.on_insert(block, 0)
        policy.on_access(block, 0)  # seen twice: T2
    policy.on_insert(3, 0)
    policy.on_insert(4, 0)
    assert policy.victim(frozenset()) == 3  # |T1| = 2 > p = 0: T1's LRU goes, remembered in B1
    policy.on_insert(5, 0)
    assert policy.victim(frozenset()) == 4
    policy.on_insert(3, 0)  # 3 comes back while remembered: T1 was too small
    assert policy.p >= 1 and 3 in policy._t2
    # With p = 1 and |T1| = 1 (block 5), the next victim comes from T2's LRU end.
    assert policy.victim(frozenset()) == 1


def test_gdsf_keeps_deeper_blocks_when_use_is_equal() -> None:
    policy = resolve("eviction", "gdsf")()
    policy.bind(2, WorkloadView(tier="hbm", block_bytes=1, recompute_s_by_position=np.array([1.0, 2.0, 3.0])))
    policy.on_insert(10, 2)  # deep: costs 3 to recompute
    policy.on_insert(11, 0)  # head: costs 1
    assert policy.victim(frozenset()) == 11


def test_belady_evicts_the_block_used_farthest_in_the_future() -> None:
    # Capacity 2, stream 1 2 3 1 2: at 3, block 2 is next used later than 1 -> evict 2? No:
    # 1 is next used at index 3, 2 at index 4, so OPT evicts 2 and then hits on 1 only.
    assert hits("belady", [1, 2, 3, 1, 2], 2) == [False, False, False, True, False]
    assert sum(hits("lru", [1, 2, 3, 1, 2], 2)) == 0


class CountingPins(frozenset):
    """A pin set that counts how often it is asked about each block."""

    def __new__(cls, blocks):
        self = super().__new__(cls, blocks)
        self.asked = {}
        return self

    def __contains__(self, block: object) -> bool:
        self.asked[block] = self.asked.get(block, 0) + 1
        return super().__contains__(block)


def test_belady_sets_a_pinned_block_aside_until_its_pin_drops() -> None:
    # Blocks 1, 2, 3 at positions 0, 1, 2 are next used at 30, 20, 10. Block 1, farthest, is
    # pinned: it is met once and set aside, not met again at the next eviction; when its pin
    # drops without a use (on_unpinned) it is again the farthest, so the next victim.
    policy = resolve("eviction", "belady")()
    policy.bind(8, WorkloadView(tier="hbm", block_bytes=0, next_use=np.array([30, 20, 10, 5])))
    for block in (1, 2, 3):
        policy.on_insert(block, block - 1)
    pins = CountingPins({1})
    assert policy.victim(pins) == 2
    policy.on_insert(4, 3)
    assert policy.victim(pins) == 3
    assert pins.asked[1] == 1
    policy.on_unpinned(1)
    assert policy.victim(frozenset()) == 1


@pytest.mark.parametrize("name", available("eviction"))
def test_victim_never_returns_a_pinned_block_and_always_a_resident_one(name: str) -> None:
    rng = np.random.default_rng(3)
    policy = resolve("eviction", name)()
    keys = rng.integers(0, 60, 3000).tolist()
    g = np.arange(len(keys))
    future = np.full(len(keys), np.iinfo(np.int64).max)
    last: dict[int, int] = {}
    for i in reversed(range(len(keys))):
        future[i] = last.get(keys[i], future[i])
        last[keys[i]] = i
    policy.bind(20, WorkloadView(tier="hbm", block_bytes=1, next_use=future))
    resident: set[int] = set()
    pinned: set[int] = set()
    from policies.eviction.base import RequestContext

    for i, k in zip(g, keys, strict=True):
        policy.on_request(RequestContext(int(i), float(i), float(i), -1, -1, -1, 1, int(i)))
        if k in resident:
            policy.on_access(k, 0)
            continue
        if len(resident) >= 20:
            was_pinned = pinned
            pinned = set(rng.choice(sorted(resident), size=int(rng.integers(0, 19)), replace=False).tolist())
            for block in sorted(was_pinned - pinned):
                if block in resident:
                    policy.on_unpinned(block)  # as the engine tells a dropped pin
            victim = policy.victim(pinned)
            assert victim in resident and victim not in pinned
            resident.remove(victim)
        resident.add(k)
        policy.on_insert(k, 0)


@pytest.mark.parametrize("name", ["lru", "fifo"])
def test_replay_fast_path_equals_the_per_access_hooks(name: str) -> None:
    keys = np.random.default_rng(5).zipf(1.3, 20_000) % 3000
    trace = stream_trace(keys, per_request=7)
    factory = resolve("eviction", name)
    hooks_only = type("HooksOnly", (factory,), {"replay_hits": None})
    for capacity in (10, 300, 2500):
        fast = replay_single_tier(trace, capacity, factory())
        slow = replay_single_tier(trace, capacity, hooks_only())
        assert np.array_equal(fast, slow)


@settings(max_examples=40, deadline=None)
@given(
    keys=st.lists(st.integers(0, 25), min_size=1, max_size=300),
    per_request=st.integers(1, 6),
    capacity=st.integers(1, 20),
)
def test_belady_hit_ratio_bounds_every_online_policy(keys: list[int], per_request: int, capacity: int) -> None:
    trace = stream_trace(keys, per_request)
    best = replay_single_tier(trace, capacity, resolve("eviction", "belady")()).sum()
    for name in ONLINE:
        assert replay_single_tier(trace, capacity, resolve("eviction", name)()).sum() <= best, name


def test_a_policy_in_a_file_outside_the_package_is_selected_by_config(tmp_path: Path) -> None:
    (tmp_path / "mru.py").write_text(
        textwrap.dedent(
            """
            from collections.abc import Container
            from policies.eviction.base import EvictionPolicy

            class MRU(EvictionPolicy):
                \"\"\"Evict the most recently used block: right for loops bigger than the cache.\"\"\"

                def __init__(self):
                    self.order = {}

                def on_insert(self, block, position):
                    self.order[block] = None

                def on_access(self, block, position):
                    del self.order[block]
                    self.order[block] = None

                def on_remove(self, block):
                    del self.order[block]

                def victim(self, pinned: Container[int]) -> int:
                    for block in reversed(self.order):
                        if block not in pinned:
                            del self.order[block]
                            return block
                    raise RuntimeError("all pinned")
            """
        )
    )
    loop = stream_trace(list(range(30)) * 10)
    mru = run(SimConfig(mode="replay", eviction=f"{tmp_path / 'mru.py'}:MRU", tiers=TierConfig(hbm_blocks=20)), loop)
    lru = run(SimConfig(mode="replay", eviction="lru", tiers=TierConfig(hbm_blocks=20)), loop)
    assert lru.summary["block_hit_ratio"] == 0.0  # a loop of 30 through 20 slots: LRU never hits
    assert mru.summary["block_hit_ratio"] > 0.5
    assert mru.summary["eviction"] == "MRU"


def test_policy_files_of_the_same_name_in_two_folders_are_two_policies(tmp_path: Path) -> None:
    """A file reference was loaded once per file name: the second folder's ``mine.py`` got the
    first's class. An edit to a file since it was loaded is loaded again, too."""
    first, second = tmp_path / "a" / "mine.py", tmp_path / "b" / "mine.py"
    for path, base in ((first, "lru import LRU"), (second, "fifo import FIFO")):
        path.parent.mkdir()
        path.write_text(f"from policies.eviction.{base} as Mine\n")
    assert resolve("eviction", f"{first}:Mine").__name__ == "LRU"
    assert resolve("eviction", f"{second}:Mine").__name__ == "FIFO"
    first.write_text("from policies.eviction.sieve import SIEVE as Mine\n")
    assert resolve("eviction", f"{first}:Mine").__name__ == "SIEVE"
