"""The workload-aware eviction policy: behaviour on hand-built streams and synthetic workloads,
the replay fast path against the hooks, and the engine contract."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import yaml
from hypothesis import example, given, settings
from hypothesis import strategies as st

import policies.eviction.workload_aware as workload_aware
from policies.admission.ssd_spill import SsdSpill
from policies.eviction._workload_classes import BlockHistory, ClassLayout, StreamClassifier
from policies.eviction._workload_model import HORIZON_EPOCHS
from policies.eviction.base import RequestContext, WorkloadView
from policies.eviction.lru import LRU
from policies.eviction.workload_aware import WorkloadAware
from policies.registry import resolve
from sim.kvcache import Move, TieredCache, build_tiers
from sim.replay import replay_single_tier
from traces import generate
from traces.schema import Trace

REPO = Path(__file__).resolve().parents[1]
BLOCK = 16


def trace_of(requests: list[list[int]], turns: list[int] | None = None) -> Trace:
    """A trace whose request ``i`` touches the blocks ``requests[i]``, one second apart."""
    n = len(requests)
    return Trace.from_columns(
        arrival_s=np.arange(n, dtype=float),
        input_tokens=np.array([BLOCK * len(r) for r in requests]),
        output_tokens=np.full(n, 8),
        block_hashes=[np.array(r, dtype=np.uint64) for r in requests],
        block_size=BLOCK,
        turn=None if turns is None else np.array(turns),
    )


def context(index: int, n_blocks: int, turn: int = -1) -> RequestContext:
    return RequestContext(
        request_index=index,
        now_s=float(index),
        arrival_s=float(index),
        session_id=-1,
        turn=turn,
        category=-1,
        n_blocks=n_blocks,
        access_offset=0,
    )


def bound(capacity: int, **params: float) -> WorkloadAware:
    policy = WorkloadAware(**params)
    policy.bind(capacity, WorkloadView(tier="hbm", block_bytes=1))
    return policy


def test_keeps_a_shared_head_that_lru_loses_to_one_hit_tails() -> None:
    # Every request is the shared head block 0 followed by four blocks never seen again, and
    # the cache holds four blocks. LRU: the head is the least recent block when the fourth
    # tail block arrives, so it is evicted every time and never hits (worked through below).
    # The policy learns that the head's class is reused every request and a tail's never, so
    # after warming up it evicts tails and hits the head once a request; a tail can never hit.
    warm_up, measured, capacity = 10, 40, 4
    requests = [[0, *range(1 + 4 * r, 5 + 4 * r)] for r in range(warm_up + measured)]
    trace = trace_of(requests)
    head = trace.block_offsets[:-1]
    lru_hits = replay_single_tier(trace, capacity, LRU())
    assert lru_hits.sum() == 0
    hits = replay_single_tier(trace, capacity, WorkloadAware())
    assert hits[head[warm_up:]].all()
    assert hits[trace.block_offsets[warm_up] :].sum() == measured


@pytest.mark.parametrize("tail_first", [False, True])
def test_a_chain_touched_together_is_given_up_from_its_tail(tail_first: bool) -> None:
    # Six blocks of one request, told in one epoch head first (as the replay tells them) or
    # tail first (as the engine releases a request's blocks): all but the last share a class
    # (the last is the request's tail), so they share a group, which gives up its deepest
    # first; the chain's head is the last of them to go and no hole opens in it.
    policy = bound(40)
    policy.on_request(context(0, n_blocks=6))
    chain = list(range(100, 106))
    told = list(enumerate(chain))
    for position, block in reversed(told) if tail_first else told:
        policy.on_insert(block, position)
    victims = [policy.victim(()) for _ in chain]
    assert sorted(victims) == chain
    assert [b for b in victims if b != chain[-1]] == chain[-2::-1]


def test_a_request_released_by_the_engine_is_given_up_from_its_tail() -> None:
    # Serve mode: a request's blocks are inserted pinned while it runs and told to the policy
    # only when the engine releases them, tail first. Making room for a new request afterwards
    # must take the chain from its deep end (its last block, a class of its own, aside), so
    # that what stays is a prefix the next turn can use. (One epoch per capacity, so that the
    # six touches fall in one epoch of the six-block tier.)
    chain = list(range(100, 106))
    tiers = build_tiers([("hbm", len(chain))], lambda name, capacity: bound(capacity, epochs_per_capacity=1))
    cache = TieredCache(tiers, SsdSpill())
    ctx = context(0, n_blocks=len(chain))
    cache.begin(ctx)
    moves: list[Move] = []
    for position, block in enumerate(chain):
        assert cache.insert(0, block, position, moves, pin=True)
    cache.release(0, chain, ctx)
    for left in range(len(chain) - 1, 0, -1):
        assert cache.make_room(0, len(chain) - left, moves)
        kept = sorted(b for b in tiers[0].blocks if b != chain[-1])
        assert kept == chain[: len(kept)], f"a hole opened with {left} blocks left: {kept}"


def test_a_loop_larger_than_the_cache_hits_where_lru_never_does() -> None:
    # 30 blocks requested cyclically, one request of three blocks a time, through a 12-block
    # cache: LRU always evicts exactly the block that comes back next, so it never hits. Every
    # block is reused 30 touches after its last one, which the policy learns; blocks it has
    # kept longest are the closest to their reuse, so it keeps a fixed set and evicts newcomers.
    # The offline optimum does the same: it keeps 11 blocks for good and passes the other 19
    # through the last slot, 11 hits a lap; the policy should match it once it has learned.
    capacity, loop, laps = 12, 30, 40
    requests = [[(3 * r + j) % loop + 1 for j in range(3)] for r in range(laps * loop // 3)]
    trace = trace_of(requests)
    assert replay_single_tier(trace, capacity, LRU()).sum() == 0
    hits = replay_single_tier(trace, capacity, WorkloadAware())
    last_laps = hits[-10 * loop :].reshape(10, loop).sum(axis=1)
    assert (last_laps >= capacity - 1).all()


@pytest.mark.parametrize("kind", ["multi_turn", "rag", "agent", "shared_prompt"])
def test_beats_lru_at_several_capacities_on_every_synthetic_workload(kind: str) -> None:
    # Each synthetic workload has reuse that recency misjudges (one-hit tails, conversation
    # histories that outlive the LRU window, shared prefixes); the policy should find more hits
    # than LRU at small and middling caches, measured as capacity shares of the distinct blocks.
    trace = generate(kind, seed=0, n_requests=300)
    distinct = len(np.unique(trace.block_hashes))
    for share in (0.02, 0.05, 0.1):
        capacity = int(distinct * share)
        lru = replay_single_tier(trace, capacity, LRU()).sum()
        assert replay_single_tier(trace, capacity, WorkloadAware()).sum() > lru, (kind, capacity)


HooksOnly = type("HooksOnly", (WorkloadAware,), {"replay_trace": None})


class RecordsFiling(WorkloadAware):
    """Replayed through the hooks; notes, per touch, its request, its epoch, and the index of
    its own class and of the class it is filed under, as they stand when it is filed."""

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self.request, self.own_index, self.filings = -1, 0.0, []

    def on_request(self, ctx: RequestContext) -> None:
        super().on_request(ctx)  # files the previous request's touches first
        self.request = ctx.request_index

    def _touch_class(self, block: int, position: int) -> int:
        cls = super()._touch_class(block, position)
        self.own_index = self._index_now[cls]
        return cls

    def _file(self, block: int, cls: int) -> None:
        self.filings.append((self.request, self._epoch, self.own_index, self._index_now[cls]))
        super()._file(block, cls)


@pytest.mark.parametrize("kind", ["multi_turn", "agent"])
def test_a_block_is_filed_no_higher_than_the_block_before_it(kind: str) -> None:
    # A prefix cache uses a deep block only while its parent is cached: within a request and an
    # epoch, the index a chain's blocks are filed under never rises from head to tail, though
    # their own classes' indices do (a conversation's new blocks against its old ones).
    trace = generate(kind, seed=3, n_requests=300)
    policy = RecordsFiling()
    replay_single_tier(trace, 400, policy)
    pairs = list(zip(policy.filings, policy.filings[1:], strict=False))
    chained = [(a, b) for a, b in pairs if a[:2] == b[:2]]
    assert chained
    assert all(b[3] <= a[3] for a, b in chained)
    assert any(b[2] > a[3] for a, b in chained)  # the floor had something to do


def slow_chain_floor(classes: list[int], starts: list[bool], rank: list[int], carried: int | None) -> list[int]:
    """The chain floor one access at a time."""
    out, floor = [], carried
    for cls, start in zip(classes, starts, strict=True):
        if not start and floor is not None and rank[floor] < rank[cls]:
            cls = floor
        out.append(cls)
        floor = cls
    return out


@settings(max_examples=80, deadline=None)
@given(
    data=st.lists(st.tuples(st.integers(0, 7), st.booleans()), min_size=1, max_size=60),
    rank=st.lists(st.integers(0, 4), min_size=8, max_size=8),
    carried=st.one_of(st.none(), st.integers(0, 7)),
)
def test_chain_floor_agrees_with_the_rule_one_access_at_a_time(
    data: list[tuple[int, bool]], rank: list[int], carried: int | None
) -> None:
    classes, starts = [c for c, _ in data], [s for _, s in data]
    fast = workload_aware.chain_floor(np.array(classes), np.array(starts), np.array(rank), carried)
    assert fast.tolist() == slow_chain_floor(classes, starts, rank, carried)


@pytest.mark.parametrize("kind", ["multi_turn", "agent", "mixed"])
def test_replay_fast_path_equals_the_hooks(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # Small chunks, so that what one chunk carries to the next (runs, model events) matters;
    # capacities from a handful of blocks (an epoch of one touch) to most of the trace.
    monkeypatch.setattr(workload_aware, "_FAST_CHUNK", 997)
    trace = generate(kind, seed=2, n_requests=80)
    for capacity in (3, 60, 1500):
        fast = replay_single_tier(trace, capacity, WorkloadAware())
        assert np.array_equal(fast, replay_single_tier(trace, capacity, HooksOnly())), capacity


class RecordsClasses(WorkloadAware):
    """Replayed through the hooks; notes the class of every touch (before the chain floor)."""

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self.classed: list[int] = []

    def _touch_class(self, block: int, position: int) -> int:
        cls = super()._touch_class(block, position)
        self.classed.append(cls)
        return cls


@pytest.mark.parametrize("kind", ["multi_turn", "mixed"])
def test_access_classes_are_the_classes_the_hooks_give_touches(kind: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(workload_aware, "_FAST_CHUNK", 997)
    trace = generate(kind, seed=4, n_requests=120)
    for capacity in (5, 300):
        hooks = RecordsClasses()
        replay_single_tier(trace, capacity, hooks)
        hooks.on_request(context(len(trace), n_blocks=1))  # files the last request's touches
        classes = hooks.access_classes(trace, trace.block_offsets, trace.block_hashes)
        assert classes.tolist() == hooks.classed, capacity


def test_a_class_is_described_by_its_buckets() -> None:
    policy = WorkloadAware()
    policy.bind(100, WorkloadView(tier="hbm", block_bytes=1, categories=("text", "image")))
    layout = policy._layout
    # turn 5 of an image request; the last of 21 blocks; its second touch, 2 epochs after the first
    cls = int(
        layout.request_codes(np.asarray(5), np.asarray(1))
        + layout.tail_codes(np.asarray(20), np.asarray(21))
        + layout.history_codes(np.asarray(2), np.asarray(2))
    )
    assert policy.describe_class(cls) == "count 2, gap 1-3 epochs, turn 4+, last block, category image"
    assert policy.describe_class(0) == "count 1, first in run, turn 1 or unknown"
    extends = int(layout.count_part(layout.history_codes(np.asarray(4), np.asarray(0))))
    assert policy.describe_class(extends) == "count 1, first in run, extends a count 4+ block, turn 1 or unknown"


def test_one_request_s_code_is_the_batch_rule_s() -> None:
    # Serve mode codes a request at a time in plain ints, the replay a whole trace with NumPy:
    # unknown turns (-1, 0) go with turn 1, 2-3 together, 4 on; categories shift by one.
    layout = ClassLayout(n_categories=4)
    turns, categories = np.meshgrid(np.arange(-1, 8), np.arange(-1, 3))
    batch = layout.request_codes(turns.ravel(), categories.ravel())
    single = [layout.request_code(int(t), int(c)) for t, c in zip(turns.ravel(), categories.ravel(), strict=True)]
    assert single == batch.tolist()
    assert len(set(single)) == 3 * 4  # three turn buckets by four category codes


def test_a_new_block_is_classed_by_what_it_extends() -> None:
    # Request 1 writes blocks 1, 2; request 2 re-sends them and appends 3, 4 (a conversation's
    # next turn); request 3 is a fresh chain 5, 6. New blocks 3 and 4 extend a block seen twice,
    # so their count part is count 2's; 5 and 6 (and 1, 2 at first) extend nothing.
    layout = ClassLayout(n_categories=1)
    classifier = StreamClassifier(layout, sample_one_in=1, touches_per_epoch=100)
    keys = np.asarray([1, 2, 1, 2, 3, 4, 5, 6], dtype=np.uint64)
    heads = np.asarray([True, False, True, False, False, False, True, False])
    zeros = np.zeros(len(keys), dtype=np.int64)
    classes = classifier.classify(keys, 0, zeros, zeros, heads).classes
    count_2 = int(layout.count_part(layout.history_codes(np.asarray(2), np.asarray(0))))
    assert count_2 > 0
    assert [layout.count_part(c) for c in classes] == [0, 0, count_2, count_2, count_2, count_2, 0, 0]
    assert classes[4] == classes[5] == count_2  # first touches: no gap, no history of their own


def test_a_block_untouched_for_a_horizon_is_forgotten() -> None:
    # Touches at epochs 0 and 1 make a run (the second: count 2, a gap of one epoch); a touch
    # a horizon after the last starts a new run, classed as a first touch again.
    layout = ClassLayout(n_categories=1)
    history = BlockHistory(layout, sample_one_in=1)
    first = history.touch(7, 0, 0)
    second = history.touch(7, 1, 0)
    assert first == 0
    assert second == layout.history_codes(np.asarray(2), np.asarray(1))
    assert history.touch(7, 1 + HORIZON_EPOCHS, 0) == first


@settings(max_examples=40, deadline=None)
@example(keys=[1] + [0] * (HORIZON_EPOCHS - 1) + [1], per_epoch=1, chunk=5, request_every=3)  # a gap of a horizon
@given(
    # a few hot blocks, and blocks whose gaps often pass the horizon
    keys=st.lists(st.one_of(st.integers(0, 20), st.integers(0, 500)), min_size=1, max_size=400),
    per_epoch=st.integers(1, 9),
    chunk=st.integers(1, 120),
    request_every=st.integers(1, 12),
)
def test_stream_classifier_agrees_with_the_block_history(
    keys: list[int], per_epoch: int, chunk: int, request_every: int
) -> None:
    # The same stream one touch at a time and in chunks must give the same classes and the
    # same model events; request and tail parts are arbitrary per access here, and requests
    # (which may span chunks) start every ``request_every`` accesses.
    layout = ClassLayout(n_categories=2)
    history = BlockHistory(layout, sample_one_in=2)
    parts = [(g * 7) % 11 for g in range(len(keys))]
    heads = [g % request_every == 0 for g in range(len(keys))]
    one_by_one: list[int] = []
    for g, k in enumerate(keys):
        extends = 0 if heads[g] else layout.count_part(one_by_one[-1])
        one_by_one.append(history.touch(k, g // per_epoch, parts[g], extends))
    classifier = StreamClassifier(layout, sample_one_in=2, touches_per_epoch=per_epoch)
    chunked, starts, ends, reuses = [], [], [], []
    for first in range(0, len(keys), chunk):
        block_ids = np.asarray(keys[first : first + chunk], dtype=np.uint64)
        codes = np.asarray(parts[first : first + chunk])
        out = classifier.classify(
            block_ids, first, codes, np.zeros_like(codes), np.asarray(heads[first : first + chunk])
        )
        chunked += out.classes
        starts += out.start_code.tolist()
        ends += out.end_code.tolist()
        reuses += out.reuse_code.tolist()
    assert chunked == one_by_one
    assert (starts, ends, reuses) == (history.starts, history.ends, history.reuses)


@settings(max_examples=60, deadline=None)
@given(
    capacity=st.integers(1, 12),
    ops=st.lists(st.tuples(st.integers(0, 40), st.integers(0, 5), st.integers(0, 7)), max_size=300),
)
def test_victim_is_a_told_unpinned_resident_block(capacity: int, ops: list[tuple[int, int, int]]) -> None:
    # Drive the policy as the engine does (policies/eviction/base): touches of random blocks
    # (insert when not resident, access when resident, pinned or not), pins taken and dropped,
    # each drop told (a release is an access; a copy source's last pin, on_unpinned), evictions
    # when full and the odd removal. The victim must be resident, told and not pinned; and once
    # every pin has dropped, every resident block must still be reachable (none left aside).
    policy = bound(capacity, sample_one_in=1)
    resident: list[int] = []
    pinned: set[int] = set()
    for step, (block, position, op) in enumerate(ops):
        if step % 7 == 0:
            policy.on_request(context(step, 6))
        if block in resident:
            if op == 0 and block not in pinned:
                resident.remove(block)
                policy.on_remove(block)
            elif op in (1, 2) and block not in pinned:
                pinned.add(block)
            elif op == 1:
                pinned.discard(block)
                policy.on_unpinned(block)
            elif op == 2:
                pinned.discard(block)
                policy.on_access(block, position)  # its request releases it
            else:
                policy.on_access(block, position)
            continue
        if len(resident) == capacity:
            if len(pinned) == len(resident):
                continue
            victim = policy.victim(pinned)
            assert victim in resident and victim not in pinned
            resident.remove(victim)
        resident.append(block)
        policy.on_insert(block, position)
    for block in list(pinned):
        policy.on_unpinned(block)
    drained = [policy.victim(set()) for _ in resident]
    assert sorted(drained) == sorted(resident)


def test_same_stream_same_decisions() -> None:
    rng = np.random.default_rng(7)
    requests = [list(rng.integers(0, 400, size=rng.integers(1, 12))) for _ in range(600)]
    requests = [list(dict.fromkeys(int(b) for b in r)) for r in requests]
    trace = trace_of(requests)
    first = replay_single_tier(trace, 40, WorkloadAware())
    second = replay_single_tier(trace, 40, WorkloadAware())
    assert np.array_equal(first, second)


def test_is_found_by_name_and_its_config_matches_the_constructor() -> None:
    assert resolve("eviction", "workload_aware") is WorkloadAware
    config = yaml.safe_load((REPO / "conf" / "eviction" / "workload_aware.yaml").read_text())
    assert config.pop("_target_") == "policies.eviction.workload_aware.WorkloadAware"
    assert config.pop("_partial_") is True
    defaults = WorkloadAware()
    assert config == {name: getattr(defaults, name) for name in config}
    assert set(config) == {"epochs_per_capacity", "sample_one_in", "prior_lives", "half_life_horizons"}


def test_rejects_meaningless_parameters() -> None:
    with pytest.raises(ValueError, match="sample_one_in: must be an integer >= 1, got 0"):
        WorkloadAware(sample_one_in=0)
