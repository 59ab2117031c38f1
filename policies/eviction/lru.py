"""LRU: evict the block used least recently (vLLM, SGLang and LMCache default)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Iterable

from policies.eviction.base import EvictionPolicy


class LRU(EvictionPolicy):
    """An ordered dict from least to most recently used; O(1) amortised per operation.

    A pinned block met at the old end is moved to the recent end rather than skipped: it is in
    use right now, which is the most recent use there is, and leaving it in place would make
    every later ``victim`` call walk past it again (a long-running request pins its prefix for
    thousands of evictions).
    """

    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, block: int, position: int) -> None:
        self._order[block] = None

    def on_access(self, block: int, position: int) -> None:
        self._order.move_to_end(block)

    def on_remove(self, block: int) -> None:
        del self._order[block]

    def victim(self, pinned: Container[int]) -> int:
        # One walk from the old end; the pinned blocks met before the victim then go to the
        # recent end in the order met, which is where moving each as it is met puts them.
        order = self._order
        skipped = []
        for block in order:
            if block not in pinned:
                break
            skipped.append(block)
        else:
            raise RuntimeError("LRU.victim called with every block pinned")
        del order[block]
        move = order.move_to_end
        for kept in skipped:
            move(kept)
        return block

    @staticmethod
    def replay_hits(keys: Iterable[int], n_keys: int, capacity_blocks: int) -> bytearray:
        """The cache-only replay of ``keys`` in one tight loop (see the base module)."""
        order: OrderedDict[int, None] = OrderedDict()
        move, evict = order.move_to_end, order.popitem
        hits = bytearray(n_keys)
        for g, block in enumerate(keys):
            if block in order:
                move(block)
                hits[g] = 1
            else:
                if len(order) >= capacity_blocks:
                    evict(last=False)
                order[block] = None
        return hits
