"""FIFO: evict the block resident longest, whatever its use (libCacheSim's FIFO).

Prefix-awareness: a request's blocks are inserted head first, so FIFO evicts a chain's head
before its tail and strands the tail (useless without its prefix) until it ages out too. Kept
as the baseline that S3-FIFO and SIEVE improve on; the engine never evicts a pinned block, so
this costs hit ratio, never correctness.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Iterable

from policies.eviction.lru import LRU


class FIFO(LRU):
    """LRU's queue without the move on a hit: the same insert, remove and victim walk."""

    def on_access(self, block: int, position: int) -> None:
        pass  # a hit does not change insertion order

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
