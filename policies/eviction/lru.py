"""LRU: evict the block used least recently (vLLM, SGLang and LMCache default)."""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from policies.eviction.base import EvictionPolicy


class LRU(EvictionPolicy):
    """An ordered dict from least to most recently used; O(1) per operation.

    Pinned blocks are skipped, not moved: in serve mode they sit near the recent end anyway,
    because a block is only told to the policy when its request releases it.
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
        for block in self._order:
            if block not in pinned:
                del self._order[block]
                return block
        raise RuntimeError("LRU.victim called with every block pinned")
