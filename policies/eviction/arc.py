"""ARC (Megiddo & Modha, FAST'03): balance recency and frequency with a learned split.

T1 holds blocks seen once recently, T2 blocks seen at least twice; ghost lists B1 and B2
remember what each recently evicted. A miss that hits B1 means T1 was too small, so the
target size ``p`` of T1 grows; a hit in B2 shrinks it. Victims come from T1 when it is over
``p``, else from T2, each in LRU order.

One difference from the paper, forced by the engine's contract: the engine asks for a victim
before it names the block being inserted, so the adaptation of ``p`` for a ghost hit happens in
:meth:`on_insert`, one eviction later than in the paper (and the tie rule "evict from T1 when
the incoming block is in B2 and |T1| = p" is not applied). Over a long stream the effect on hit
ratio is small; the unit tests check the adaptive behaviour itself.

Prefix-awareness: as LRU within each list; serve mode's tail-first release puts a chain's tail
on the old side, so tails go first.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Container

from policies.eviction.base import EvictionPolicy, WorkloadView


class ARC(EvictionPolicy):
    def __init__(self) -> None:
        self._t1: OrderedDict[int, None] = OrderedDict()
        self._t2: OrderedDict[int, None] = OrderedDict()
        self._b1: OrderedDict[int, None] = OrderedDict()
        self._b2: OrderedDict[int, None] = OrderedDict()
        self.p = 0.0  # target size of T1

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self._c = capacity_blocks

    def on_insert(self, block: int, position: int) -> None:
        c = self._c
        b1, b2 = self._b1, self._b2
        if block in b1:
            self.p = min(float(c), self.p + max(len(b2) / len(b1), 1.0))
            del b1[block]
            self._t2[block] = None
        elif block in b2:
            self.p = max(0.0, self.p - max(len(b1) / len(b2), 1.0))
            del b2[block]
            self._t2[block] = None
        else:
            self._t1[block] = None
        # Ghost lists together remember at most c blocks, B1 at most c - |T1|.
        while b1 and len(self._t1) + len(b1) > c:
            b1.popitem(last=False)
        while b2 and len(self._t1) + len(self._t2) + len(b1) + len(b2) > 2 * c:
            b2.popitem(last=False)

    def on_access(self, block: int, position: int) -> None:
        if self._t1.pop(block, False) is None:
            self._t2[block] = None
        else:
            self._t2.move_to_end(block)

    def on_remove(self, block: int) -> None:
        if self._t1.pop(block, False) is not None:
            del self._t2[block]

    def victim(self, pinned: Container[int]) -> int:
        prefer_t1 = bool(self._t1) and len(self._t1) > self.p
        order = ((self._t1, self._b1), (self._t2, self._b2))
        for lru, ghost in order if prefer_t1 or not self._t2 else order[::-1]:
            for block in lru:
                if block not in pinned:
                    del lru[block]
                    ghost[block] = None
                    return block
        raise RuntimeError("ARC.victim called with every block pinned")
