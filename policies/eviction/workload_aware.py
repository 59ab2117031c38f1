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

Signals (the class of a touch) and why each is there:

* **access count** (1, 2, 3, 4+ touches while remembered): frequency. Shared prefixes become
  hot and stay; one-hit wonders stay at 1, whose class learns a low reuse chance, so a block
  just inserted in it is evicted first (the admission filter of S3-FIFO / TinyLFU, learned).
* **previous reuse interval** (none, or under 1, 1-3, 4-15, 16+ epochs since the touch before):
  the block's own inter-arrival time. A block that came back quickly last time tends to come
  back quickly again (an agent loop, an active user); one that took long is a slow
  conversation. This is per block what the class averages cannot tell apart.
* **last block of the request**: a prompt's final block is usually partial, and the next turn
  of the conversation extends it into a different block, so it is almost never reused. The
  model learns whether that holds (it does not in traces that hash only full blocks).
* **chain position** (0, 1-15, 16+): heads of chains (system prompts, tool definitions, shared
  documents) are shared by many requests; deep blocks belong to one conversation.
* **conversation turn** (1, 2-3, 4+): conversations that have gone on for several turns are
  more likely to go on again. The trace's turn is used where it has one; otherwise a request
  is taken to continue a conversation when it touches the second-to-last block of an earlier
  request (whose turn it then exceeds by one), since the next turn re-sends the whole prompt.
  The inference is best-effort: blocks touched before that evidence (the tail-first release
  of serve mode) are classed as a first turn.
* **request category** where the trace has one (text, image, search, file, api, agent...):
  categories differ in reuse (the KVCache-in-the-wild study), one class set each.
* **time since the last touch** (the age): for a conversation's blocks, the time since the
  session's last turn. The learned hazard by age captures think time (reuse is unlikely just
  after a turn, likely a minute later, unlikely again after a long silence), which is what
  lets the policy keep a history through a pause that LRU would not survive.

Time is the policy's own touch clock (one tick per ``on_insert``/``on_access``), in epochs of
a quarter of the capacity: what a block costs is the cache space it holds while other blocks
stream through, so counting touches makes the model independent of the request rate and of
the engine mode. Ages past the horizon (16 capacities) rank lowest. Before the model has data
every index is 0 and ties go to the oldest epoch, so a cold policy behaves like LRU.

Cost
----
Blocks are kept in groups of equal (class, epoch of last touch): all blocks of a group share
one index, so ranking is per group, once an epoch, and a victim is a ``dict.popitem`` from the
lowest-ranked non-empty group (the newest block in it). The model learns from a spatial sample
of the blocks (ids divisible by ``sample_one_in``): ids are unrelated to a block's class, so
the sample represents every class; per-block bookkeeping is a few dict operations.
"""

from __future__ import annotations

from collections.abc import Container

from policies.eviction._workload_model import HORIZON_EPOCHS, N_BUCKETS, ReuseModel, index_at
from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView

# Feature buckets. A class is one value of each; see the module docstring for why each is there.
N_COUNT = 4  # access count 1, 2, 3, 4+
N_GAP = 5  # epochs since the previous touch: none (first, or past the horizon), <1, 1-3, 4-15, 16+
N_TAIL = 2  # last block of its request or not
N_TURN = 3  # turn 1, 2-3, 4+
N_POSITION = 3  # chain position 0, 1-15, 16+
_GAP_OF_AGE = [1] + [2] * 3 + [3] * 12 + [4] * (HORIZON_EPOCHS - 16) + [0]
_TURN_OF = (0, 0, 1, 1)  # turn 1 | 2-3 ; 4+ -> 2
_POSITION_OF = (0,) + (1,) * 15  # 0 | 1-15 ; 16+ -> 2
REFRESH_MIN_TOUCHES = 4096  # refitting the model costs about a millisecond


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
        if epochs_per_capacity < 1 or sample_one_in < 1 or prior_lives < 0 or half_life_horizons <= 0:
            raise ValueError(
                "WorkloadAware needs epochs_per_capacity >= 1, sample_one_in >= 1, "
                f"prior_lives >= 0 and half_life_horizons > 0; got {epochs_per_capacity}, "
                f"{sample_one_in}, {prior_lives}, {half_life_horizons}"
            )
        self.epochs_per_capacity = epochs_per_capacity
        self.sample_one_in = sample_one_in
        self.prior_lives = prior_lives
        self.half_life_horizons = half_life_horizons

    # ------------------------------------------------------------------ setup
    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        n_categories = len(workload.categories) + 1  # + unknown
        # class = category + n_cat * (position + N_POSITION * (turn + N_TURN * (tail + N_TAIL *
        #         (gap + N_GAP * count)))): each feature's code is its bucket times its unit.
        position_unit = n_categories
        self._turn_unit = position_unit * N_POSITION
        self._tail_code = self._turn_unit * N_TURN
        gap_unit = self._tail_code * N_TAIL
        count_unit = gap_unit * N_GAP
        self.n_classes = count_unit * N_COUNT
        self._position_code = [b * position_unit for b in _POSITION_OF]
        self._position_far = (N_POSITION - 1) * position_unit
        self._gap_code = [b * gap_unit for b in _GAP_OF_AGE]
        self._count_code = [0] + [(k - 1) * count_unit for k in range(1, N_COUNT + 1)]
        self._touches_per_epoch = max(1, capacity_blocks // self.epochs_per_capacity)
        self._model = ReuseModel(
            self.n_classes,
            prior_lives=self.prior_lives,
            half_life_epochs=self.half_life_horizons * HORIZON_EPOCHS,
        )
        self._index = [[0.0] * (N_BUCKETS + 1) for _ in range(self.n_classes)]
        self._refresh_every = max(1, -(-REFRESH_MIN_TOUCHES // self._touches_per_epoch))
        self._refresh_gap = 1
        self._next_refresh = 1
        # block -> (class, epoch of last touch, access count, its group); kept after eviction
        # (a ghost) until the horizon passes, so counts and lives survive re-insertion.
        self._meta: dict[int, tuple[int, int, int, dict[int, None]]] = {}
        self._conversation_end: dict[int, int] = {}  # second-to-last block -> its request's turn
        self._sampled_by_slot: list[list[int]] = [[] for _ in range(HORIZON_EPOCHS)]
        self._epoch = 0
        self._left_in_epoch = self._touches_per_epoch
        # groups of the current epoch, by class, ranked by their index at age 0
        self._current: list[dict[int, None] | None] = [None] * self.n_classes
        self._current_order = list(range(self.n_classes))
        self._current_rank = list(range(self.n_classes))
        self._current_ptr = self.n_classes
        self._lowest: dict[int, None] | None = None  # cached victim group
        # groups of past epochs: (group, class, epoch), ranked once an epoch
        self._old: list[tuple[dict[int, None], int, int]] = []
        self._old_groups: list[dict[int, None]] = []
        self._old_keys: list[float] = []
        self._old_ptr = 0
        self._turn = 1
        self._infer_turn = True
        self._category = 0
        self._last = -1
        self._base = 0  # turn and category codes of the current request

    @property
    def current_turn(self) -> int:
        """The turn the policy attributes to the request being touched (given or inferred)."""
        return self._turn

    # ------------------------------------------------------------------ engine calls
    def on_request(self, ctx: RequestContext) -> None:
        self._infer_turn = ctx.turn < 0
        self._turn = ctx.turn if ctx.turn > 0 else 1
        self._category = ctx.category + 1
        self._last = ctx.n_blocks - 1
        self._base = self._turn_code(self._turn) + self._category

    def on_access(self, block: int, position: int) -> None:
        del self._meta[block][3][block]  # out of its group; the touch files it anew
        self._touch(block, position)

    def on_remove(self, block: int) -> None:
        del self._meta[block][3][block]

    def victim(self, pinned: Container[int]) -> int:
        group = self._lowest or self._find_lowest()
        if not pinned:
            return group.popitem()[0]
        for block in reversed(group):
            if block not in pinned:
                del group[block]
                return block
        return self._victim_past_pins(pinned)

    # ------------------------------------------------------------------ hot path
    def _touch(self, block: int, position: int) -> None:
        """File ``block`` in the group of its new class and this epoch; learn if sampled."""
        epoch = self._epoch
        meta = self._meta.get(block)
        if meta is None:
            count = 1
            cls = self._base
        else:
            count = meta[2] + 1
            if position and self._infer_turn:
                earlier_turn = self._conversation_end.get(block)
                if earlier_turn is not None and earlier_turn >= self._turn:
                    self._turn = earlier_turn + 1
                    self._base = self._turn_code(self._turn) + self._category
            age = epoch - meta[1]
            cls = self._base + self._gap_code[age if age < HORIZON_EPOCHS else HORIZON_EPOCHS]
        cls += self._count_code[count if count < N_COUNT else N_COUNT]
        cls += self._position_code[position] if position < 16 else self._position_far
        if position == self._last:
            cls += self._tail_code
        elif position == self._last - 1 and position and self._infer_turn:
            self._conversation_end[block] = self._turn
        group = self._current[cls]
        if group is None:
            group = self._current[cls] = {}
        group[block] = None
        self._meta[block] = (cls, epoch, count, group)
        if block % self.sample_one_in == 0:
            self._record_life(block, cls, meta)
        rank = self._current_rank[cls]
        if rank < self._current_ptr:  # may now be the lowest group
            self._current_ptr = rank
            self._lowest = None
        self._left_in_epoch -= 1
        if not self._left_in_epoch:
            self._next_epoch()

    on_insert = _touch  # a block becoming resident is a touch with nothing to unfile

    def _turn_code(self, turn: int) -> int:
        return (_TURN_OF[turn] if turn < len(_TURN_OF) else N_TURN - 1) * self._turn_unit

    def _record_life(self, block: int, cls: int, meta: tuple | None) -> None:
        """A sampled block was touched: close its previous life, start a new one."""
        model, epoch = self._model, self._epoch
        if meta is not None:
            age = epoch - meta[1]
            if age < HORIZON_EPOCHS:  # else it already expired
                model.ends.append(meta[0] * HORIZON_EPOCHS + meta[1] % HORIZON_EPOCHS)
                model.reuses.append(meta[0] * HORIZON_EPOCHS + age)
        model.starts.append(cls * HORIZON_EPOCHS + epoch % HORIZON_EPOCHS)
        self._sampled_by_slot[epoch % HORIZON_EPOCHS].append(block)

    def _find_lowest(self) -> dict[int, None]:
        """The non-empty group with the lowest index (ties: the older one); cached until an
        insert or the epoch's end may change it, or it empties."""
        old, i, n_old = self._old_groups, self._old_ptr, len(self._old_groups)
        while i < n_old and not old[i]:
            i += 1
        self._old_ptr = i
        current, order, j = self._current, self._current_order, self._current_ptr
        while j < self.n_classes and not current[order[j]]:
            j += 1
        self._current_ptr = j
        if j < self.n_classes and (i == n_old or self._index[order[j]][0] < self._old_keys[i]):
            self._lowest = current[order[j]]
        elif i < n_old:
            self._lowest = old[i]
        else:
            raise RuntimeError("WorkloadAware.victim called with no block resident")
        return self._lowest

    def _victim_past_pins(self, pinned: Container[int]) -> int:
        """Slow path: the lowest-ranked group holds only pinned blocks; walk all groups."""
        groups = [(self._old_keys[k], g) for k, g in enumerate(self._old_groups) if g]
        groups += [(self._index[c][0], g) for c, g in enumerate(self._current) if g]
        groups.sort(key=lambda kg: kg[0])
        for _, group in groups:
            for block in reversed(group):
                if block not in pinned:
                    del group[block]
                    return block
        raise RuntimeError("WorkloadAware.victim called with every block pinned")

    # ------------------------------------------------------------------ epochs
    def _next_epoch(self) -> None:
        ended = self._epoch
        groups = [entry for entry in self._old if entry[0]]
        groups += [(g, c, ended) for c, g in enumerate(self._current) if g]
        epoch = self._epoch = ended + 1
        self._left_in_epoch = self._touches_per_epoch
        self._expire_lives(epoch)
        if epoch >= self._next_refresh:
            self._index = self._model.refresh(epoch)
            self._current_order = sorted(range(self.n_classes), key=lambda c: self._index[c][0])
            for rank, cls in enumerate(self._current_order):
                self._current_rank[cls] = rank
            self._refresh_gap = min(2 * self._refresh_gap, self._refresh_every)
            self._next_refresh = epoch + self._refresh_gap
        if epoch % HORIZON_EPOCHS == 0:
            self._forget_old_ghosts(epoch)
        index = self._index
        keyed = sorted((index_at(index, c, epoch - e), e, k) for k, (_, c, e) in enumerate(groups))
        self._old = [groups[k] for _, _, k in keyed]
        self._old_groups = [entry[0] for entry in self._old]
        self._old_keys = [key for key, _, _ in keyed]
        self._old_ptr = 0
        self._current = [None] * self.n_classes
        self._current_ptr = self.n_classes
        self._lowest = None

    def _expire_lives(self, epoch: int) -> None:
        """Sampled lives that started a horizon ago and saw no reuse end now, unreused."""
        slot = epoch % HORIZON_EPOCHS
        started = epoch - HORIZON_EPOCHS
        model, meta = self._model, self._meta
        for block in dict.fromkeys(self._sampled_by_slot[slot]):
            entry = meta.get(block)
            if entry is not None and entry[1] == started:
                model.ends.append(entry[0] * HORIZON_EPOCHS + slot)
                model.expiries.append(entry[0])
        self._sampled_by_slot[slot] = []

    def _forget_old_ghosts(self, epoch: int) -> None:
        """Drop what is remembered of evicted blocks untouched for a horizon (bounded memory)."""
        oldest = epoch - HORIZON_EPOCHS
        self._meta = {b: m for b, m in self._meta.items() if m[1] >= oldest or b in m[3]}
        self._conversation_end = {b: t for b, t in self._conversation_end.items() if b in self._meta}
