"""FIFO: evict the block resident longest, whatever its use (libCacheSim's FIFO).

Prefix-awareness: a request's blocks are inserted head first, so FIFO evicts a chain's head
before its tail and strands the tail (useless without its prefix) until it ages out too. Kept
as the baseline that S3-FIFO and SIEVE improve on; the engine never evicts a pinned block, so
this costs hit ratio, never correctness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container, Iterable

from policies.eviction.base import EvictionPolicy


class FIFO(EvictionPolicy):
    def __init__(self) -> None:
        self._order: OrderedDict[int, None] = OrderedDict()

    def on_insert(self, block: int, position: int) -> None:
        self._order[block] = None

    def on_access(self, block: int, position: int) -> None:
        pass  # a hit does not change insertion order

    def on_remove(self, block: int) -> None:
        del self._order[block]

    def victim(self, pinned: Container[int]) -> int:
        order = self._order
        for _ in range(len(order)):
            block = next(iter(order))
            if block not in pinned:
                del order[block]
                return block
            order.move_to_end(block)  # in use: give it the time a re-insert would
        raise RuntimeError("FIFO.victim called with every block pinned")

    @staticmethod
    def replay_hits(keys: Iterable[int], n_keys: int, capacity_blocks: int) -> bytearray:
        """The cache-only replay of ``keys`` in one tight loop (see the base module)."""
        order: OrderedDict[int, None] = OrderedDict()
        evict = order.popitem
        hits = bytearray(n_keys)
        for g, block in enumerate(keys):
            if block in order:
                hits[g] = 1
            else:
                if len(order) >= capacity_blocks:
                    evict(last=False)
                order[block] = None
        return hits
