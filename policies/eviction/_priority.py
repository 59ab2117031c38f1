"""A priority queue of resident blocks with lazy deletion, shared by LFU-DA and GDSF.

Each touch pushes a fresh ``(priority, stamp, block)`` entry; stale entries (an older stamp
than the block's current one) are dropped when they surface. ``victim`` pops the lowest valid
entry that is not pinned (pinned ones it meets are re-queued as touched now), and remembers
its priority as the inflation value ``L`` that ages every later entry (the "dynamic aging" of
LFU-DA and GreedyDual): blocks that were hot long ago lose to blocks hot now without any
periodic sweep. O(log n) per touch, amortised.
"""

from __future__ import annotations

import heapq
from collections.abc import Container

from policies.eviction.base import EvictionPolicy


class AgingPriorityPolicy(EvictionPolicy):
    """Subclasses say what one hit is worth for a block at a chain position."""

    def __init__(self) -> None:
        self._heap: list[tuple[float, int, int]] = []
        self._stamp: dict[int, int] = {}
        self._freq: dict[int, int] = {}
        self._worth: dict[int, float] = {}
        self._clock = 0
        self.inflation = 0.0  # L: the priority of the last evicted block

    def hit_worth(self, position: int) -> float:
        raise NotImplementedError

    def _push(self, block: int) -> None:
        self._clock += 1
        self._stamp[block] = self._clock
        priority = self.inflation + self._freq[block] * self._worth[block]
        heapq.heappush(self._heap, (priority, self._clock, block))

    def on_insert(self, block: int, position: int) -> None:
        self._freq[block] = 1
        self._worth[block] = self.hit_worth(position)
        self._push(block)

    def on_access(self, block: int, position: int) -> None:
        self._freq[block] += 1
        self._push(block)

    def on_remove(self, block: int) -> None:
        del self._stamp[block], self._freq[block], self._worth[block]

    def victim(self, pinned: Container[int]) -> int:
        heap, stamp = self._heap, self._stamp
        skipped = []
        try:
            while heap:
                priority, when, block = heapq.heappop(heap)
                if stamp.get(block) != when:
                    continue  # stale entry
                if block in pinned:
                    skipped.append(block)
                    continue
                self.inflation = priority
                del stamp[block], self._freq[block], self._worth[block]
                return block
        finally:
            # A pinned block is in use now: it is re-queued as if touched now (same frequency,
            # today's L), as LRU moves a block in use to its recent end. Pushed back as it was,
            # it would surface at every later eviction while its request runs, and with
            # thousands of blocks pinned each eviction would pop them all again.
            for block in skipped:
                self._push(block)
        raise RuntimeError(f"{type(self).__name__}.victim called with every block pinned")
