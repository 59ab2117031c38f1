"""The tier bookkeeping shared by replay and serve modes."""

from __future__ import annotations

import pytest

from policies.admission.drop import Drop
from policies.admission.ssd_spill import SsdSpill
from policies.admission.write_back import WriteBack
from policies.eviction.base import WorkloadView
from policies.eviction.lru import LRU
from sim.kvcache import DROPPED, InvariantError, Move, TieredCache, build_tiers


def lru(name: str, capacity: int) -> LRU:
    policy = LRU()
    policy.bind(capacity, WorkloadView(tier=name, block_bytes=1))
    return policy


def cache(capacities: list[tuple[str, int]], admission=None) -> TieredCache:
    return TieredCache(build_tiers(capacities, lru), admission or SsdSpill())


def test_eviction_demotes_one_tier_down_and_drops_from_the_last() -> None:
    c = cache([("hbm", 2), ("dram", 2), ("ssd", 1)])
    moves: list[Move] = []
    for block in range(5):
        assert c.insert(0, block, block, moves, pin=False)
    # LRU at every tier: 0 and 1 leave HBM first, then 0 leaves DRAM for SSD,
    # then 1 pushes 0 out of the 1-block SSD.
    assert [sorted(t.blocks) for t in c.tiers] == [[3, 4], [1, 2], [0]]
    assert Move(0, 0, 1) in moves and Move(0, 1, 2) in moves


def test_write_back_never_fills_the_ssd() -> None:
    c = cache([("hbm", 1), ("dram", 1), ("ssd", 4)], WriteBack())
    moves: list[Move] = []
    for block in range(3):
        c.insert(0, block, block, moves, pin=False)
    assert c.tiers[2].blocks == {}
    assert Move(0, 1, DROPPED) in moves


def test_drop_discards_evicted_blocks() -> None:
    c = cache([("hbm", 1), ("dram", 4)], Drop())
    moves: list[Move] = []
    c.insert(0, 1, 0, moves, pin=False)
    c.insert(0, 2, 0, moves, pin=False)
    assert moves == [Move(1, 0, DROPPED)]
    assert c.tiers[1].blocks == {}


def test_demoting_a_block_whose_lower_copy_exists_moves_nothing() -> None:
    c = cache([("hbm", 1), ("dram", 4)])
    moves: list[Move] = []
    c.insert(1, 7, 0, moves, pin=False)
    c.insert(0, 7, 0, moves, pin=False)
    c.insert(0, 8, 0, moves, pin=False)
    assert moves == [Move(7, 0, DROPPED)]
    assert 7 in c.tiers[1].blocks


def test_pinned_blocks_are_never_evicted_and_full_pinning_refuses_room() -> None:
    c = cache([("hbm", 2)])
    moves: list[Move] = []
    c.insert(0, 1, 0, moves, pin=True)
    c.insert(0, 2, 1, moves, pin=False)
    assert c.insert(0, 3, 2, moves, pin=False)
    assert set(c.tiers[0].blocks) == {1, 3}
    c.pin(0, 3)
    assert not c.insert(0, 4, 3, moves, pin=False)
    assert not c.reserve(0, 1, moves)


def test_release_tells_the_policy_tail_first_so_lru_evicts_the_tail() -> None:
    c = cache([("hbm", 3)])
    moves: list[Move] = []
    for j in range(3):
        c.insert(0, 10 + j, j, moves, pin=True)
    c.release(0, [10, 11, 12], None)
    c.insert(0, 99, 0, moves, pin=False)
    assert 12 not in c.tiers[0].blocks and {10, 11} <= set(c.tiers[0].blocks)


def test_match_prefix_stops_at_the_first_block_no_tier_holds() -> None:
    c = cache([("hbm", 4), ("dram", 4)])
    moves: list[Move] = []
    c.insert(0, 1, 0, moves, pin=False)
    c.insert(1, 2, 1, moves, pin=False)
    c.insert(0, 4, 3, moves, pin=False)
    assert c.match_prefix([1, 2, 3, 4]) == [0, 1]


def test_a_policy_that_evicts_a_pinned_block_is_caught() -> None:
    class Careless(LRU):
        def victim(self, pinned):  # ignores the pins on purpose
            block = next(iter(self._order))
            del self._order[block]
            return block

    careless = Careless()
    careless.bind(2, WorkloadView(tier="hbm", block_bytes=1))
    c = TieredCache(build_tiers([("hbm", 2)], lambda name, cap: careless), Drop())
    moves: list[Move] = []
    c.insert(0, 1, 0, moves, pin=False)
    c.insert(0, 2, 1, moves, pin=False)
    c.pin(0, 1)
    with pytest.raises(InvariantError, match="pinned block 1"):
        c.insert(0, 3, 2, moves, pin=False)


def test_a_told_block_whose_last_pin_drops_is_told_as_unpinned_not_used() -> None:
    # A copy's source is pinned and unpinned around the copy: the policy hears that the pin
    # dropped (once, at the last pin), but no access, so LRU's order is unchanged.
    class Listening(LRU):
        unpinned: list[int] = []

        def on_unpinned(self, block: int) -> None:
            self.unpinned.append(block)

    policy = Listening()
    policy.bind(2, WorkloadView(tier="hbm", block_bytes=1))
    c = TieredCache(build_tiers([("hbm", 2)], lambda name, cap: policy), Drop())
    c.insert(0, 1, 0, [], pin=False)
    c.insert(0, 2, 1, [], pin=False)
    c.pin(0, 1)
    c.pin(0, 1)
    c.unpin(0, 1)
    assert policy.unpinned == []
    c.unpin(0, 1)
    assert policy.unpinned == [1]
    moves: list[Move] = []
    c.insert(0, 3, 2, moves, pin=False)
    assert Move(1, 0, DROPPED) in moves


def test_releasing_an_unpinned_block_is_caught() -> None:
    c = cache([("hbm", 2)])
    c.insert(0, 1, 0, [], pin=False)
    with pytest.raises(InvariantError, match="not pinned"):
        c.release(0, [1], None)


def test_demotion_to_a_tier_above_is_refused() -> None:
    class Upward(SsdSpill):
        def demote_to(self, from_tier: str) -> str | None:
            return "hbm"

    c = cache([("hbm", 1), ("dram", 1)], Upward())
    c.insert(0, 1, 0, [], pin=False)
    with pytest.raises(ValueError, match="expected a tier below 'hbm'"):
        c.insert(0, 2, 0, [], pin=False)


def test_a_held_tier_keeps_a_demoted_blocks_slot_until_it_is_vacated() -> None:
    # DRAM holds 2 blocks and keeps the slot of a block it demotes to the SSD until the copy
    # has read it: a third block finds no room (and is dropped on its way down from HBM)
    # until vacate() frees the slot; the cache-only replayer holds nothing.
    held = TieredCache(build_tiers([("hbm", 1), ("dram", 2), ("ssd", 4)], lru), SsdSpill(), hold_demoted=[1])
    moves: list[Move] = []
    for block in (1, 2):
        held.insert(1, block, 0, moves, pin=False)
    assert not held.insert(1, 3, 0, moves, pin=False)  # evicts 1 to the SSD, whose slot stays taken
    dram = held.tiers[1]
    assert Move(1, 1, 2) in moves and sorted(dram.blocks) == [2] and dram.leaving == 1 and dram.free == 0
    assert dram.used == dram.capacity
    held.insert(0, 4, 0, moves, pin=False)
    held.insert(0, 5, 0, moves, pin=False)  # demotes 4 from HBM: DRAM evicts 2, and still has no room
    assert Move(4, 0, DROPPED) in moves and 4 not in dram.blocks and dram.leaving == 2
    held.vacate(1, 2)
    assert dram.free == 2 and held.insert(1, 3, 0, moves, pin=False)
    with pytest.raises(InvariantError, match="vacating"):
        held.vacate(1, 1)
    unheld = cache([("hbm", 1), ("dram", 2), ("ssd", 4)])
    for block in (1, 2, 3):
        assert unheld.insert(1, block, 0, [], pin=False)
    assert sorted(unheld.tiers[1].blocks) == [2, 3] and unheld.tiers[1].leaving == 0
