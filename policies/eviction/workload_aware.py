"""Workload-aware eviction: evict the block with the fewest expected hits per unit of cache space.

The model
---------
KV blocks of LLM serving are reused in recognisable ways: a shared system prompt is hit by
almost every request, a conversation's history is re-sent when the user's next turn arrives
(after a think time of tens of seconds to minutes), and the last, partial block of a prompt is
almost never seen again. Recency (LRU) is a poor proxy for all three: it keeps the block just
written, which is the one least likely to be needed soon, and lets a conversation's history
age out just before its next turn.

This policy puts every block in a *class* when it is touched and learns, online and from the
trace's own past only, how blocks of each class are reused as a function of the time since
their last touch (:mod:`policies.eviction._workload_model`). From that it ranks blocks by a
hit density: the expected reuses per block-epoch of cache space, at the best holding horizon.
The victim is the resident block with the lowest density.

Signals (the class of a touch, :mod:`policies.eviction._workload_classes`) and why each is
there:

* **access count** (1, 2, 3, 4+ touches in the block's run): frequency, and in replay the
  stand-in for how many requests reference a block. Shared prefixes become hot and stay;
  one-hit wonders stay at 1, whose class learns a low reuse chance, so a block just inserted in
  it is evicted first (the admission filter of S3-FIFO / TinyLFU, learned).
* **previous reuse interval** (none, or under 1, 1-3, 4-15, 16+ epochs since the touch before):
  the block's own inter-arrival time. A block that came back quickly last time tends to come
  back quickly again (an agent loop, an active user); one that took long is a slow
  conversation. This is per block what the class averages cannot tell apart.
* **what a new block extends**: a block's first touch has count 1 and no gap; it is classed
  instead by the access count of the nearest block before it in its request that had been seen
  before (none, 2, 3, 4+). A conversation's next turn appends new blocks to a history that has
  come back at least once; a RAG document or a one-off question appends them to a hot shared
  prompt, or to nothing cached; the first are reused when the conversation goes on, the others
  seldom. Where no request has a prefix seen before, every first touch is in the same class as
  without this signal. Per block against the same policy without it: RAG at 10-40 % of its
  blocks +0.003 to +0.006 (at 40 % it is what puts the policy above LRU), Mooncake at 8,000
  blocks +0.005, elsewhere (three seeds of each synthetic kind) within -0.004..+0.005.
* **last block of the request**: a prompt's final block is usually partial, and the next turn
  of the conversation extends it into a different block, so it is almost never reused. The
  model learns whether that holds (it does not in traces that hash only full blocks).
* **chain position is deliberately not a class**, though heads of chains (system prompts,
  tool definitions, shared documents) are shared far more than deep blocks. That already shows
  in the access count, since every request sharing a head touches it. Classes by position (0,
  1-15, 16+) rank a chain's blocks apart and evict heads before tails. A prefix cache (vLLM,
  SGLang) uses a prompt's cached blocks only up to its first miss, so the tails left behind
  are dead weight. Position classes were tried: per block they gained only on the Mooncake
  slice at 8,000 blocks (+0.005), but counted as a prefix cache uses them they lost hits
  everywhere, up to half (shared_prompt at 1 % of its blocks: 0.33 against 0.66 without).
  Position enters through the last-block signal, through the order inside a group (below),
  which gives a chain up tail first, and through the *chain floor*: a block is filed no higher
  than the block before it in its request (touched in the same epoch). A prefix cache can use
  a deep block only while every block before it is cached, so it is worth no more than its
  parent; filed under the parent's group when its own class ranks higher, it goes before the
  parent, not after. The model still learns from the block's own class.
* **conversation turn** (1, 2-3, 4+) where the trace has one: conversations that have gone on
  for several turns are more likely to go on again.
* **request category** where the trace has one (text, image, search, file, api, agent...):
  categories differ in reuse (the KVCache-in-the-wild study), one class set each.
* **time since the last touch** (the age): for a conversation's blocks, the time since the
  session's last turn. The learned hazard by age captures think time (reuse is unlikely just
  after a turn, likely a minute later, unlikely again after a long silence), which is what
  lets the policy keep a history through a pause that LRU would not survive.

Time is the policy's own touch clock (one tick per ``on_insert``/``on_access``), in epochs of
a quarter of the capacity: what a block costs is the cache space it holds while other blocks
stream through, so counting touches makes the model independent of the request rate and of
the engine mode. Ages past the horizon (16 capacities) rank lowest, and a block untouched for
a horizon is forgotten. Before the model has data every index is 0 and ties go to the oldest
epoch, so a cold policy behaves like LRU at the resolution of an epoch.

Cost
----
Blocks are kept in groups of equal (class, epoch of last touch): all blocks of a group share
one index, so ranking is per group, once an epoch, and a victim is popped from the
lowest-ranked group (the newest block in it). Touches are filed at the policy's next decision,
a request's head first whatever order the engine told them in, so the newest block of a group
is a chain's deepest and a group gives up a chain from its tail. A group is a list that is
never searched: a block touched again is appended to its new group and its old entry goes
stale, to be skipped when popped (``_where`` names each resident block's live group). A pinned
block met while looking for a victim is set aside, out of its group, until its pin drops: its
request's release is a touch, which files it anew; a pin that drops without a use (the source
of a finished copy) files it with the current epoch's blocks of its class, as LRU moves a
pinned block to the recent end, since it was in use until now. Left in its group, it would be
walked past at every eviction while its request runs (a serve-mode tier holds thousands).

Every signal is a function of the access stream's past alone, so the cache-only replay
(:meth:`WorkloadAware.replay_trace`) computes the classes of a chunk of accesses with NumPy and
runs only residency and eviction per access (over 1 M accesses/s on the Mooncake slice; the
hooks manage about 0.4 M). The model learns from a spatial sample of the blocks (ids divisible
by ``sample_one_in``, unrelated to a block's class).
"""

from __future__ import annotations

import bisect
from collections.abc import Container, Iterator
from operator import itemgetter

import numpy as np

from policies.eviction._workload_classes import (
    BlockHistory,
    ChunkClasses,
    ClassLayout,
    StreamClassifier,
)
from policies.eviction._workload_model import HORIZON_EPOCHS, ReuseModel
from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView
from policies.params import integer, number

REFRESH_MIN_TOUCHES = 8192  # a refit costs about a millisecond, some 0.1 us per touch this often
_FAST_CHUNK = 1 << 16  # accesses classified at a time by the replay fast path


def rank_by_value(values: list[float]) -> np.ndarray:
    """Rank of each value among the distinct values (equal values, equal ranks)."""
    array = np.asarray(values)
    return np.searchsorted(np.unique(array), array)


def chain_floor(
    classes: np.ndarray, chain_starts: np.ndarray, rank_of_class: np.ndarray, carried: int | None
) -> np.ndarray:
    """The classes a run of accesses in one epoch is filed under: each access's own, unless the
    access before it in its request was filed under a class that ranks strictly lower, which it
    then takes (see the module docstring). ``chain_starts`` marks first accesses of requests;
    ``carried`` is the class the access before the run was filed under, if in the same epoch.

    The rule is a running minimum of rank within each request, the latest holder winning ties:
    ranks are offset so that each request's lie below all earlier ones, which lets one
    ``minimum.accumulate`` serve every request at once."""
    starts = chain_starts.copy()
    if carried is not None:
        classes = np.concatenate(([carried], classes))
        starts = np.concatenate(([True], starts))
    starts[0] = True
    request = np.cumsum(starts)
    key = rank_of_class[classes] - request * (len(rank_of_class) + 1)
    leads = starts.copy()
    leads[1:] |= key[1:] <= np.minimum.accumulate(key)[:-1]
    latest_lead = np.maximum.accumulate(np.where(leads, np.arange(len(classes)), 0))
    filed = classes[latest_lead]
    return filed[1:] if carried is not None else filed


class _Group(list):
    """Blocks filed under one (class, epoch), oldest first; entries of blocks filed elsewhere
    since (or evicted) are stale."""

    __slots__ = ("cls", "epoch")

    def __init__(self, cls: int, epoch: int) -> None:
        super().__init__()
        self.cls = cls
        self.epoch = epoch


class WorkloadAware(EvictionPolicy):
    """Evicts the block with the lowest learned hit density; see the module docstring.

    ``epochs_per_capacity`` sets the age resolution (an epoch is ``capacity /
    epochs_per_capacity`` touches); ``sample_one_in`` the share of blocks the model learns from;
    ``prior_lives`` how many pseudo-lives of the pooled behaviour a class starts with;
    ``half_life_horizons`` how fast old observations fade, in horizons (16 capacities).
    """

    def __init__(
        self,
        epochs_per_capacity: int = 4,
        sample_one_in: int = 4,
        prior_lives: float = 4.0,
        half_life_horizons: float = 4.0,
    ) -> None:
        self.epochs_per_capacity = integer("epochs_per_capacity", epochs_per_capacity, least=1)
        self.sample_one_in = integer("sample_one_in", sample_one_in, least=1)
        self.prior_lives = number("prior_lives", prior_lives, at_least=0)
        self.half_life_horizons = number("half_life_horizons", half_life_horizons, above=0)

    # ------------------------------------------------------------------ setup
    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self._layout = ClassLayout(len(workload.categories) + 1)
        self.n_classes = self._layout.n_classes
        self._history = BlockHistory(self._layout, self.sample_one_in)
        self._tail_unit = self._layout.tail_unit
        self._touches_per_epoch = max(1, capacity_blocks // self.epochs_per_capacity)
        self._model = ReuseModel(
            self.n_classes,
            prior_lives=self.prior_lives,
            half_life_epochs=self.half_life_horizons * HORIZON_EPOCHS,
        )
        self._index = [[0.0] * (HORIZON_EPOCHS + 1) for _ in range(self.n_classes)]
        self._index_now = [0.0] * self.n_classes  # index at age 0, by class
        self._refresh_every = min(HORIZON_EPOCHS, -(-REFRESH_MIN_TOUCHES // self._touches_per_epoch))
        self._refresh_gap = 1
        self._next_refresh = 1
        self._where: dict[int, _Group] = {}  # resident block -> the group it is live in
        # pinned blocks taken out of their group by victim(), with that group; an entry is spent
        # once the block is filed anew (``_where`` names another group)
        self._aside: dict[int, _Group] = {}
        self._epoch = 0
        self._left_in_epoch = self._touches_per_epoch
        self._current: list[_Group | None] = [None] * self.n_classes  # this epoch's, by class
        self._current_made: list[_Group] = []  # the same, by index at age 0
        self._current_keys: list[float] = []
        self._by_epoch: list[_Group] = []  # past epochs' groups, oldest first
        self._ranked: list[_Group] = []  # the same, by index (ties: oldest first)
        self._ranked_keys: list[float] = []
        self._ranked_ptr = 0  # groups before it are empty
        self._lowest: _Group | None = None  # cached victim group, with its index
        self._lowest_key = 0.0
        self._request_code = 0
        self._tail_position = -1  # position of the current request's last block
        self._told: list[tuple[int, int]] = []  # (position, block) touches not yet filed
        # (class, epoch, position) the current request's last block was filed under
        self._floor: tuple[int, int, int] | None = None
        # (position, own class) of the current request's last block classed
        self._chain: tuple[int, int] | None = None

    # ------------------------------------------------------------------ engine calls
    def on_request(self, ctx: RequestContext) -> None:
        self._file_told()
        layout = self._layout
        self._request_code = layout.request_code(int(ctx.turn), int(ctx.category))
        self._tail_position = ctx.n_blocks - 1
        self._floor = None
        self._chain = None

    def on_insert(self, block: int, position: int) -> None:
        self._told.append((position, block))

    on_access = on_insert  # the touch files the block anew; its old entry goes stale

    def _file_told(self) -> None:
        """File the touches told since the last decision, head of the chain first. A group gives
        up its newest block first, which must be a chain's deepest; the engine tells a released
        request's blocks tail first (as vLLM frees them), the replay head first. A block that
        follows its predecessor in the same epoch is filed no higher than it (the chain floor)."""
        told = self._told
        if not told:
            return
        self._told = []
        if len(told) > 1:
            told.sort(key=itemgetter(0))
        floor, index_now = self._floor, self._index_now
        for position, block in told:
            cls = self._touch_class(block, position)
            if floor is not None and floor[1] == self._epoch and floor[2] == position - 1:
                if index_now[floor[0]] < index_now[cls]:
                    cls = floor[0]
            floor = (cls, self._epoch, position)
            self._file(block, cls)  # may close the epoch (and refresh the index)
            index_now = self._index_now
        self._floor = floor

    def _touch_class(self, block: int, position: int) -> int:
        """The class of this touch (and the model events it causes). A first touch extends the
        block before it in the request, when that one was classed just before."""
        code = self._request_code + (self._tail_unit if position == self._tail_position else 0)
        chain = self._chain
        extends = self._layout.count_part(chain[1]) if chain is not None and chain[0] == position - 1 else 0
        cls = self._history.touch(block, self._epoch, code, extends)
        self._chain = (position, cls)
        return cls

    def on_remove(self, block: int) -> None:
        self._file_told()
        del self._where[block]
        self._aside.pop(block, None)

    def on_unpinned(self, block: int) -> None:
        self._file_told()
        group = self._aside.pop(block, None)
        if group is not None and self._where.get(block) is group:
            self._place(block, group.cls)  # in use until now: no touch, nothing learned

    def victim(self, pinned: Container[int]) -> int:
        self._file_told()
        return self._pop_victim(pinned)

    # ------------------------------------------------------------------ groups
    def _file(self, block: int, cls: int) -> None:
        """A touch: file the block in this epoch's group of its class; close the epoch when due."""
        self._place(block, cls)
        self._left_in_epoch -= 1
        if not self._left_in_epoch:
            self._feed_model()
            self._next_epoch()

    def _place(self, block: int, cls: int) -> None:
        group = self._current[cls]
        if group is None:
            group = self._current[cls] = self._new_group(cls)
        group.append(block)
        self._where[block] = group
        if self._index_now[cls] < self._lowest_key:
            # lower than the lowest non-empty group was: this one is the lowest now
            self._lowest, self._lowest_key = group, self._index_now[cls]

    def _new_group(self, cls: int) -> _Group:
        """This epoch's group of ``cls``, listed among the others by index (ties: the first
        made first)."""
        group = _Group(cls, self._epoch)
        key = self._index_now[cls]
        at = bisect.bisect_right(self._current_keys, key)
        self._current_keys.insert(at, key)
        self._current_made.insert(at, group)
        return group

    def _feed_model(self) -> None:
        history = self._history
        self._model.add(np.asarray(history.starts), np.asarray(history.ends), np.asarray(history.reuses))
        history.starts, history.ends, history.reuses = [], [], []

    def _pop_victim(self, pinned: Container[int] = ()) -> int:
        """The newest live block of the lowest-ranked group that is not pinned. A pinned one met
        on the way is set aside until its pin drops (see the module docstring)."""
        where, aside = self._where, self._aside
        group = self._lowest or self._find_lowest()
        while True:
            while group:
                block = group.pop()
                if where.get(block) is not group:
                    continue  # stale: filed elsewhere since, or evicted
                if block not in pinned:
                    del where[block]
                    return block
                aside[block] = group
            group = self._find_lowest()

    def _find_lowest(self) -> _Group:
        """The non-empty group with the lowest index (ties: the older one), cached with its
        index until it empties; a block filed in a lower group makes that one the cached one."""
        ranked, i, n = self._ranked, self._ranked_ptr, len(self._ranked)
        while i < n and not ranked[i]:
            i += 1
        self._ranked_ptr = i
        best, best_key = (ranked[i], self._ranked_keys[i]) if i < n else (None, float("inf"))
        for k, group in enumerate(self._current_made):
            if group:
                if self._current_keys[k] < best_key:
                    best, best_key = group, self._current_keys[k]
                break
        if best is None:
            raise RuntimeError("WorkloadAware.victim called with every block pinned (or none resident)")
        self._lowest, self._lowest_key = best, best_key
        return best

    # ------------------------------------------------------------------ epochs
    def _next_epoch(self) -> None:
        """Close the epoch: refit the model when due, re-rank every group by its index at its
        new age, forget blocks whose run has ended."""
        groups = [g for g in self._by_epoch if g]
        groups += [g for g in self._current_made if g]
        self._by_epoch = groups
        if self._aside:  # drop the spent entries: blocks filed anew, or evicted, since
            where = self._where
            self._aside = {b: g for b, g in self._aside.items() if where.get(b) is g}
        epoch = self._epoch = self._epoch + 1
        self._left_in_epoch = self._touches_per_epoch
        if epoch >= self._next_refresh:
            self._index = self._model.refresh(epoch)
            self._index_now = [row[0] for row in self._index]
            self._refresh_gap = min(2 * self._refresh_gap, self._refresh_every)
            self._next_refresh = epoch + self._refresh_gap
        if epoch % HORIZON_EPOCHS == 0:
            self._history.forget(epoch)
        index, horizon = self._index, HORIZON_EPOCHS
        keys = [index[g.cls][epoch - g.epoch if epoch - g.epoch < horizon else horizon] for g in groups]
        order = sorted(range(len(groups)), key=keys.__getitem__)  # stable: ties stay oldest first
        self._ranked = [groups[k] for k in order]
        self._ranked_keys = [keys[k] for k in order]
        self._ranked_ptr = 0
        self._current = [None] * self.n_classes
        self._current_made, self._current_keys = [], []
        self._lowest = None
        self._lowest_key = 0.0

    # ------------------------------------------------------------------ replay fast path
    def replay_trace(self, trace: object, offsets: np.ndarray, keys: np.ndarray, capacity_blocks: int) -> bytearray:
        """The cache-only replay of the whole trace (see the base module): the decisions of
        :meth:`on_request`, the touch hooks and :meth:`victim` with nothing pinned. Classes and
        model events come a chunk at a time from :class:`StreamClassifier`; the loop does
        residency and eviction, an epoch at a time. ``trace`` supplies the per-request ``turn``
        and ``category_code`` columns."""
        hits = bytearray(len(keys))
        # Residency by dense block number, a list where the hooks keep a dict: a list index is
        # cheaper than a hash lookup, and this loop is the replay's cost. The groups hold dense
        # numbers too, so a policy that replayed a trace must be bound anew before other use.
        distinct, dense = np.unique(keys, return_inverse=True)
        where: list[_Group | None] = [None] * len(distinct)
        resident, g, new_group = 0, 0, self._new_group
        per_epoch = self._touches_per_epoch
        # Classes to file under (the chain floor), worked out for a span of epochs over which
        # the index does not change: from ``span_start`` (an access index) to ``span_end``.
        filing: list[int] = []
        span_start = span_end = 0
        ranked_for: list[float] | None = None
        for chunk_start, stop, chunk, chain_starts in self._classified_chunks(trace, offsets, keys):
            blocks, classes = dense[chunk_start:stop].tolist(), np.asarray(chunk.classes, dtype=np.int64)
            fed_starts = fed_ends = 0
            while g < stop:
                end = min(stop, g + self._left_in_epoch)
                current, index_now = self._current, self._index_now
                lowest, lowest_key = self._lowest, self._lowest_key
                if g >= span_end or ranked_for is not index_now:
                    # the class the access before was filed under, if in this epoch
                    within_epoch = self._left_in_epoch < per_epoch and span_start < g <= span_end
                    carried = filing[g - span_start - 1] if within_epoch else None
                    ranked_for = index_now
                    epochs = max(1, self._next_refresh - self._epoch)
                    span_start, span_end = g, min(stop, g + self._left_in_epoch + (epochs - 1) * per_epoch)
                    starts = chain_starts[span_start - chunk_start : span_end - chunk_start].copy()
                    starts[self._left_in_epoch :: per_epoch] = True  # epochs begin anew
                    classes_of_span = classes[span_start - chunk_start : span_end - chunk_start]
                    filing = chain_floor(classes_of_span, starts, rank_by_value(index_now), carried).tolist()
                lo, hi = g - chunk_start, end - chunk_start
                filed = filing[g - span_start : end - span_start]
                for i, block, cls in zip(range(g, end), blocks[lo:hi], filed, strict=True):
                    if where[block] is not None:
                        hits[i] = 1
                    elif resident < capacity_blocks:
                        resident += 1
                    else:
                        while True:
                            if not lowest:
                                lowest = self._find_lowest()
                                lowest_key = self._lowest_key
                            victim = lowest.pop()
                            if where[victim] is lowest:
                                where[victim] = None
                                break
                    group = current[cls]
                    if group is None:
                        group = current[cls] = new_group(cls)
                    group.append(block)
                    where[block] = group
                    if index_now[cls] < lowest_key:
                        lowest, lowest_key = group, index_now[cls]
                self._lowest, self._lowest_key = lowest, lowest_key
                self._left_in_epoch -= end - g
                g = end
                if not self._left_in_epoch:
                    fed_starts, fed_ends = self._feed_chunk(chunk, fed_starts, fed_ends, g)
                    self._next_epoch()
            self._feed_chunk(chunk, fed_starts, fed_ends, stop)
        return hits

    def _classified_chunks(
        self, trace: object, offsets: np.ndarray, keys: np.ndarray
    ) -> Iterator[tuple[int, int, ChunkClasses, np.ndarray]]:
        """``(start, stop, classes, chain_starts)`` of the access stream a chunk at a time: the
        classes as the hooks would class each touch (they depend on the stream alone, never on
        what is cached), and which accesses are the first of their request."""
        layout = self._layout
        classifier = StreamClassifier(layout, self.sample_one_in, self._touches_per_epoch)
        lengths = np.diff(offsets)
        request_codes = layout.request_codes(np.asarray(trace.turn), np.asarray(trace.category_code))  # type: ignore[attr-defined]
        for start in range(0, len(keys), _FAST_CHUNK):
            stop = min(start + _FAST_CHUNK, len(keys))
            request = np.searchsorted(offsets, np.arange(start, stop), side="right") - 1
            positions = np.arange(start, stop) - offsets[request]
            tail_codes = layout.tail_codes(positions, lengths[request])
            chain_starts = positions == 0
            chunk = classifier.classify(keys[start:stop], start, request_codes[request], tail_codes, chain_starts)
            yield start, stop, chunk, chain_starts

    def access_classes(self, trace: object, offsets: np.ndarray, keys: np.ndarray) -> np.ndarray:
        """The class of every access of the stream, as this (bound) policy classes each touch
        (its own class, which the model learns from; the chain floor may file it lower): for
        diagnostics, such as which classes of blocks it evicts that another policy keeps.
        :meth:`describe_class` names a class."""
        chunks = self._classified_chunks(trace, offsets, keys)
        return np.concatenate(
            [np.asarray(chunk.classes, dtype=np.int64) for _, _, chunk, _ in chunks] or [np.zeros(0, dtype=np.int64)]
        )

    def describe_class(self, cls: int) -> str:
        """A class in words (its buckets; see :mod:`policies.eviction._workload_classes`)."""
        return self._layout.describe(cls, self.workload.categories)

    def _feed_chunk(self, chunk: ChunkClasses, fed_starts: int, fed_ends: int, until: int) -> tuple[int, int]:
        """Report the chunk's model events of accesses before ``until`` not yet reported."""
        starts = int(np.searchsorted(chunk.start_at, until))
        ends = int(np.searchsorted(chunk.end_at, until))
        self._model.add(
            chunk.start_code[fed_starts:starts], chunk.end_code[fed_ends:ends], chunk.reuse_code[fed_ends:ends]
        )
        return starts, ends
