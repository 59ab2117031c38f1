"""The classes of :mod:`policies.eviction.workload_aware`: what a touch of a block looks like.

A touch's class combines five buckets (the policy's docstring says why each is there, and
why chain position is not one of them): access count, the gap since the block's previous
touch, whether the block is its request's last, the request's turn, and its category. A first
touch has count 1 and no gap, so its count bucket holds something else: the count bucket of the
block before it in its request, or, where that block is new too, the one that block carries (0
at a request's head). That is the count of the nearest block before it that had been seen
before, which tells a new block extending a chain that came back (a conversation's history)
from one after a fresh or a hot shared prefix.

Every bucket is a function of the access stream's past alone (no cache decision enters), so a
cache-only replay may compute the classes of a whole chunk of accesses at once with NumPy
(:class:`StreamClassifier`) while the hooks compute them one touch at a time
(:class:`BlockHistory`); the two agree exactly.

A block's *run* is its sequence of touches, each less than a horizon after the one before: a
touch a horizon or more after the previous one starts a new run (the block is forgotten, as a
cache forgets a ghost), with count 1 and no gap.
"""

from __future__ import annotations

import bisect
from dataclasses import dataclass
from functools import cached_property

import numpy as np

from policies.eviction._workload_model import BUCKET_OF_AGE, HORIZON_EPOCHS, N_BUCKETS, RING_EPOCHS

#: Upper edges of the access-count buckets: counts 1, 2, 3 and 4 or more.
COUNT_EDGES: tuple[int, ...] = (1, 2, 3)
N_COUNT = len(COUNT_EDGES) + 1
N_GAP = 5  # epochs since the previous touch: none (first in its run), <1, 1-3, 4-15, 16+
N_TAIL = 2  # the last block of its request or not
N_TURN = 3  # turn 1 (or unknown), 2-3, 4+
TURN_EDGES: tuple[int, ...] = (1, 3)  # upper edges of the first two turn buckets
GAP_OF_AGE: tuple[int, ...] = (1,) + (2,) * 3 + (3,) * 12 + (4,) * (HORIZON_EPOCHS - 16) + (0,)
_GAP_OF_AGE = np.asarray(GAP_OF_AGE)
COUNT_LABELS = ("1", "2", "3", "4+")
EXTENDS_LABELS = ("", "extends a count 2 block", "extends a count 3 block", "extends a count 4+ block")
GAP_LABELS = ("first in run", "gap < 1 epoch", "gap 1-3 epochs", "gap 4-15 epochs", "gap 16+ epochs")
TURN_LABELS = ("1 or unknown", "2-3", "4+")
_BUCKET_OF_AGE = np.asarray(BUCKET_OF_AGE)


def count_buckets(counts: np.ndarray) -> np.ndarray:
    """Bucket of each access count (1-based)."""
    return np.searchsorted(np.asarray(COUNT_EDGES), counts, side="left")


def turn_buckets(turns: np.ndarray) -> np.ndarray:
    """Bucket of each conversation turn; unknown (< 1) is taken as a first turn."""
    return np.searchsorted(np.asarray(TURN_EDGES), turns, side="left")


@dataclass(frozen=True)
class ClassLayout:
    """How the buckets combine into one class number: each bucket times its unit, summed.
    The units are computed once (the hooks ask for them at every touch)."""

    n_categories: int  # the trace's categories plus one for unknown

    @cached_property
    def tail_unit(self) -> int:
        return self.n_categories

    @cached_property
    def turn_unit(self) -> int:
        return self.tail_unit * N_TAIL

    @cached_property
    def gap_unit(self) -> int:
        return self.turn_unit * N_TURN

    @cached_property
    def count_unit(self) -> int:
        return self.gap_unit * N_GAP

    @cached_property
    def n_classes(self) -> int:
        return self.count_unit * N_COUNT

    def describe(self, cls: int, categories: tuple[str, ...] = ()) -> str:
        """The buckets of class ``cls`` in words (``categories``: the trace's category names)."""
        cls, category = divmod(cls, self.n_categories)
        cls, tail = divmod(cls, N_TAIL)
        cls, turn = divmod(cls, N_TURN)
        count, gap = divmod(cls, N_GAP)
        if gap == 0:  # a first touch: count 1, its count bucket says what it extends
            words = ["count 1", GAP_LABELS[gap]] + ([EXTENDS_LABELS[count]] if count else [])
        else:
            words = [f"count {COUNT_LABELS[count]}", GAP_LABELS[gap]]
        words.append(f"turn {TURN_LABELS[turn]}")
        if tail:
            words.append("last block")
        if category:
            name = categories[category - 1] if category <= len(categories) else str(category - 1)
            words.append(f"category {name}")
        return ", ".join(words)

    def request_codes(self, turns: np.ndarray, categories: np.ndarray) -> np.ndarray:
        """Turn and category part of each request's classes (``categories`` -1 when unknown)."""
        return turn_buckets(turns) * self.turn_unit + categories + 1

    def request_code(self, turn: int, category: int) -> int:
        """:meth:`request_codes` of one request, in plain ints: serve mode asks once a request,
        where NumPy's per-call overhead on scalars was most of the cost."""
        return bisect.bisect_left(TURN_EDGES, turn) * self.turn_unit + category + 1

    def tail_codes(self, positions: np.ndarray, n_blocks: np.ndarray) -> np.ndarray:
        """Tail part of the class of each access at ``positions`` of a chain of ``n_blocks``."""
        return np.where(positions == n_blocks - 1, self.tail_unit, 0)

    def count_part(self, classes: np.ndarray | int) -> np.ndarray | int:
        """The count bucket's part of classes: for a first touch, what it passes on to the
        first touches after it in its request."""
        return classes // self.count_unit * self.count_unit

    def history_codes(self, counts: np.ndarray, ages: np.ndarray) -> np.ndarray:
        """Count and gap part of touches that continue a run (``ages`` epochs after the last)."""
        return count_buckets(counts) * self.count_unit + _GAP_OF_AGE[ages] * self.gap_unit


class BlockHistory:
    """One touch at a time: the class of a touch, and the lives it opens and closes.

    ``touch`` returns the class; a sampled block's touch appends to ``starts``, ``ends`` and
    ``reuses`` in the encoding of :class:`~policies.eviction._workload_model.ReuseModel`. The
    caller passes ``extends``, the :meth:`ClassLayout.count_part` of the class of the block
    before it in its request (0 at the head), which a first touch takes as its count part.
    """

    def __init__(self, layout: ClassLayout, sample_one_in: int) -> None:
        self.layout = layout
        self.sample_one_in = sample_one_in
        # block -> (epoch, count, class) of its last touch, while its run lasts
        self.last: dict[int, tuple[int, int, int]] = {}
        self.starts: list[int] = []
        self.ends: list[int] = []
        self.reuses: list[int] = []
        # [count][age] for counts up to the first of the last bucket, which stands for all above
        self._top_count = COUNT_EDGES[-1] + 1
        counts, ages = np.meshgrid(np.arange(self._top_count + 1), np.arange(HORIZON_EPOCHS), indexing="ij")
        self._history_code = layout.history_codes(counts, ages).tolist()

    def touch(self, block: int, epoch: int, request_and_tail: int, extends: int = 0) -> int:
        previous = self.last.get(block)
        if previous is not None and epoch - previous[0] < HORIZON_EPOCHS:
            age = epoch - previous[0]
            count = previous[1] + 1
            cls = request_and_tail + self._history_code[min(count, self._top_count)][age]
            if block % self.sample_one_in == 0:
                self.ends.append(previous[2] * RING_EPOCHS + previous[0] % RING_EPOCHS)
                self.reuses.append(previous[2] * N_BUCKETS + BUCKET_OF_AGE[age])
        else:
            count, cls = 1, request_and_tail + extends
        self.last[block] = (epoch, count, cls)
        if block % self.sample_one_in == 0:
            self.starts.append(cls * RING_EPOCHS + epoch % RING_EPOCHS)
        return cls

    def forget(self, epoch: int) -> None:
        """Drop blocks whose run has ended (bounded memory; changes no class)."""
        oldest = epoch - HORIZON_EPOCHS
        self.last = {b: h for b, h in self.last.items() if h[0] > oldest}


@dataclass
class ChunkClasses:
    """Classes of a chunk of accesses and the model events they cause, by access index."""

    classes: list[int]
    start_at: np.ndarray  # access index of each life start, ascending
    start_code: np.ndarray
    end_at: np.ndarray  # access index of each life end (a reuse), ascending
    end_code: np.ndarray
    reuse_code: np.ndarray


class StreamClassifier:
    """Many touches at a time: the classes :class:`BlockHistory` would give, for a chunk of the
    access stream, with what is carried over from earlier chunks (blocks whose run lasts)."""

    def __init__(self, layout: ClassLayout, sample_one_in: int, touches_per_epoch: int) -> None:
        self.layout = layout
        self.sample_one_in = sample_one_in
        self.touches_per_epoch = touches_per_epoch
        self._keys = np.zeros(0, dtype=np.uint64)  # sorted; with the last touch of each
        self._epoch = np.zeros(0, dtype=np.int64)
        self._count = np.zeros(0, dtype=np.int64)
        self._cls = np.zeros(0, dtype=np.int64)
        self._extends = 0  # the count part the chunk's last access passes on

    def classify(
        self,
        keys: np.ndarray,
        first_access: int,
        request_codes: np.ndarray,
        tail_codes: np.ndarray,
        chain_starts: np.ndarray,
    ) -> ChunkClasses:
        """``keys`` are accesses ``first_access, first_access + 1, ...``; ``request_codes`` and
        ``tail_codes`` are the request and tail parts of each access's class; ``chain_starts``
        marks the first access of each request (a request may go on from the chunk before)."""
        n = len(keys)
        index = np.arange(first_access, first_access + n, dtype=np.int64)
        epoch = index // self.touches_per_epoch
        order = np.argsort(keys, kind="stable")
        sorted_keys = keys[order]
        first = np.ones(n, dtype=bool)
        first[1:] = sorted_keys[1:] != sorted_keys[:-1]
        # previous touch: in this chunk, or carried over for a key's first touch here
        prev_epoch = np.full(n, -(HORIZON_EPOCHS + 1), dtype=np.int64)
        prev_count = np.zeros(n, dtype=np.int64)
        prev_cls = np.zeros(n, dtype=np.int64)
        at = np.searchsorted(self._keys, sorted_keys[first])
        known = at < len(self._keys)
        known[known] = self._keys[at[known]] == sorted_keys[first][known]
        firsts = np.flatnonzero(first)
        prev_epoch[firsts[known]] = self._epoch[at[known]]
        prev_count[firsts[known]] = self._count[at[known]]
        prev_cls[firsts[known]] = self._cls[at[known]]
        epoch_sorted = epoch[order]
        later = np.flatnonzero(~first)
        prev_epoch[later] = epoch_sorted[later - 1]
        age = epoch_sorted - prev_epoch
        continues = age < HORIZON_EPOCHS
        # count: 1 at a run's start, else one more than the touch before (a scan along runs)
        run_start = ~continues
        base = np.where(run_start, 1, 0)
        base[firsts[known]] = np.where(continues[firsts[known]], prev_count[firsts[known]] + 1, 1)
        # within a run every later touch adds one to the count at the run's first touch here
        segment = first | run_start
        seg_id = np.cumsum(segment) - 1
        seg_first = np.flatnonzero(segment)
        count = base[seg_first][seg_id] + (np.arange(n) - seg_first[seg_id])
        history = np.where(continues, self.layout.history_codes(count, np.minimum(age, HORIZON_EPOCHS)), 0)
        cls = np.empty(n, dtype=np.int64)
        cls[order] = request_codes[order] + tail_codes[order] + history
        in_order = np.empty(n, dtype=bool)
        in_order[order] = continues
        cls += self._first_touch_counts(in_order, self.layout.count_part(cls), chain_starts)
        cls_sorted = cls[order]
        prev_cls[later] = cls_sorted[later - 1]
        # model events of sampled blocks, back in access order
        sampled = sorted_keys % np.uint64(self.sample_one_in) == 0
        ending = sampled & continues
        start_at = np.sort(order[sampled]) + first_access
        start_code = (cls * RING_EPOCHS + epoch % RING_EPOCHS)[start_at - first_access]
        end_order = np.argsort(order[ending], kind="stable")
        end_at = order[ending][end_order] + first_access
        end_code = (prev_cls * RING_EPOCHS + prev_epoch % RING_EPOCHS)[ending][end_order]
        reuse_code = (prev_cls * N_BUCKETS + _BUCKET_OF_AGE[np.minimum(age, HORIZON_EPOCHS)])[ending][end_order]
        self._carry(sorted_keys, epoch_sorted, count, cls_sorted, first, epoch[-1] if n else 0)
        return ChunkClasses(cls.tolist(), start_at, start_code, end_at, end_code, reuse_code)

    def _first_touch_counts(self, continues: np.ndarray, counts: np.ndarray, chain_starts: np.ndarray) -> np.ndarray:
        """The count part each first touch takes (0 for the others), in access order:
        ``continues`` says which accesses continue a run, ``counts`` their count parts. It is the
        count part of the nearest access before it in its request that continues a run (a
        forward fill within requests), 0 where there is none."""
        # what each access passes on: its count part where it continues a run; a request's
        # head that does not, 0; any other first touch, what the access before it passes (-1)
        passes = np.where(continues, counts, -1)
        passes[chain_starts & ~continues] = 0
        carried = np.concatenate(([self._extends], passes))
        known = np.where(carried >= 0, np.arange(len(carried)), 0)
        filled = carried[np.maximum.accumulate(known)]
        before = filled[:-1].copy()  # what the access before passes on
        before[chain_starts] = 0
        self._extends = int(filled[-1])
        return np.where(continues, 0, before)

    def _carry(
        self,
        sorted_keys: np.ndarray,
        epoch: np.ndarray,
        count: np.ndarray,
        cls: np.ndarray,
        first: np.ndarray,
        now: int,
    ) -> None:
        """Keep the last touch of every block whose run may still go on."""
        last = np.ones(len(sorted_keys), dtype=bool)
        last[:-1] = first[1:]
        keys = np.concatenate([sorted_keys[last], self._keys])
        epochs = np.concatenate([epoch[last], self._epoch])
        counts = np.concatenate([count[last], self._count])
        classes = np.concatenate([cls[last], self._cls])
        # the chunk's own entry (listed first) wins over an older carried one
        _, keep = np.unique(keys, return_index=True)
        keep = keep[epochs[keep] > now - HORIZON_EPOCHS]
        self._keys, self._epoch, self._count, self._cls = keys[keep], epochs[keep], counts[keep], classes[keep]
