"""S3-FIFO (Yang et al., SOSP'23): a small FIFO (10 %) that filters one-hit blocks, a main
FIFO with a 2-bit reuse counter (CLOCK-like reinsertion), and a ghost FIFO (90 % of the
capacity, ids only) that sends a block evicted from the small queue straight to main if it
comes back soon.

Semantics follow libCacheSim's ``S3FIFO`` (small = int(0.1 c), main = c - small, ghost =
int(0.9 c), move-to-main threshold 2; before the first eviction, inserts overflow from a full
small queue into main); the test suite checks equal hit counts. libCacheSim looks the incoming
block up in the ghost before evicting; here the eviction comes first, so a ghost entry pushed
out by that eviction is only trimmed in :meth:`on_insert`, after the lookup, which gives the
same result.

Pinned blocks are treated as reused: moved from small to main, or reinserted in main.

Prefix-awareness: a KV chain's tail is usually its one-hit part (the next turn extends it into
new blocks), and the small queue is exactly where one-hit blocks leave from, so S3-FIFO evicts
tails early without walking the chain.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from policies.eviction.base import EvictionPolicy, WorkloadView
from policies.params import integer, number


class S3FIFO(EvictionPolicy):
    def __init__(self, small_ratio: float = 0.1, ghost_ratio: float = 0.9, move_to_main_threshold: int = 2) -> None:
        self.small_ratio = number("small_ratio", small_ratio, above=0, below=1)
        # A negative ghost would be trimmed below empty at the first insert.
        self.ghost_ratio = number("ghost_ratio", ghost_ratio, at_least=0)
        self.threshold = integer("move_to_main_threshold", move_to_main_threshold, least=1)
        self._small: OrderedDict[int, None] = OrderedDict()
        self._main: OrderedDict[int, None] = OrderedDict()
        self._ghost: OrderedDict[int, None] = OrderedDict()
        self._freq: dict[int, int] = {}
        self._has_evicted = False

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self._small_size = int(capacity_blocks * self.small_ratio)
        self._main_size = capacity_blocks - self._small_size
        self._ghost_size = int(capacity_blocks * self.ghost_ratio)

    def on_insert(self, block: int, position: int) -> None:
        in_ghost = self._ghost.pop(block, False) is None
        while len(self._ghost) > self._ghost_size:
            self._ghost.popitem(last=False)
        if in_ghost or (not self._has_evicted and len(self._small) >= self._small_size):
            self._main[block] = None
        else:
            self._small[block] = None
        self._freq[block] = 0

    def on_access(self, block: int, position: int) -> None:
        self._freq[block] += 1

    def on_remove(self, block: int) -> None:
        if self._small.pop(block, False) is not None:
            del self._main[block]
        del self._freq[block]

    def victim(self, pinned: Container[int]) -> int:
        self._has_evicted = True
        if len(self._main) > self._main_size or not self._small:
            found = self._evict_main(pinned)
            if found is None:
                found = self._evict_small(pinned)
        else:
            found = self._evict_small(pinned)
            if found is None:
                found = self._evict_main(pinned)
        if found is None:
            raise RuntimeError("S3FIFO.victim called with every block pinned")
        del self._freq[found]
        return found

    def _evict_small(self, pinned: Container[int]) -> int | None:
        small, freq = self._small, self._freq
        while small:
            block, _ = small.popitem(last=False)
            if freq[block] >= self.threshold or block in pinned:
                self._main[block] = None
                freq[block] = 0
            else:
                self._ghost[block] = None  # trimmed to size by the next insert
                return block
        return None

    def _evict_main(self, pinned: Container[int]) -> int | None:
        main, freq = self._main, self._freq
        for _ in range(4 * len(main) + 1):  # each pass lowers every counter; pins cycle once
            if not main:
                return None
            block, _ = main.popitem(last=False)
            if freq[block] >= 1 or block in pinned:
                main[block] = None
                freq[block] = max(min(freq[block], 3) - 1, 0)
            else:
                return block
        for block in main:  # only pinned blocks are left in main
            if block not in pinned:
                del main[block]
                return block
        return None
