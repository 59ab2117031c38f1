"""Belady / OPT: evict the block whose next use is farthest in the future (offline).

It reads the trace's future (``WorkloadView.next_use`` / ``next_access``), so it is an upper
bound, not a deployable policy: reports label it as such, and every online policy's hit ratio
is at most Belady's on the same stream (checked by a property test). In replay mode the key
stream is the access stream and this is exactly MIN. In serve mode a tier is told of blocks
when requests release them or when an upper tier demotes them; the next use is then the first
access after the touch, looked up in the trace.

Prefix-awareness: a tail's next use is never earlier than its head's (a request that reuses the
tail reuses the head too), so OPT evicts tails first by construction.
"""

from __future__ import annotations

import heapq
from collections.abc import Container

from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView


class Belady(EvictionPolicy):
    offline = True

    def __init__(self) -> None:
        self._heap: list[tuple[int, int]] = []  # (-next_use, block); lazy deletion
        self._next: dict[int, int] = {}
        self._offset = 0
        # Pinned blocks victim() met, set aside until their pin drops: block -> heap entry.
        self._parked: dict[int, tuple[int, int]] = {}

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        if workload.next_use is None and workload.next_access is None:
            raise ValueError(
                "belady is offline: it needs the trace's future (next_use), which this engine did not give"
            )

    def on_request(self, ctx: RequestContext) -> None:
        self._offset = ctx.access_offset

    def _next_use(self, block: int, position: int) -> int:
        g = self._offset + position
        find = self.workload.next_access
        if find is None:  # replay: touches are the accesses themselves
            return int(self.workload.next_use[g])
        first = find(block, self._offset - 1)
        if first == g and self.workload.next_use is not None:
            return int(self.workload.next_use[g])  # the current request's own use: look past it
        return first

    def _touch(self, block: int, position: int) -> None:
        nxt = self._next_use(block, position)
        self._parked.pop(block, None)
        self._next[block] = nxt
        heapq.heappush(self._heap, (-nxt, block))

    on_insert = _touch
    on_access = _touch

    def on_remove(self, block: int) -> None:
        del self._next[block]
        self._parked.pop(block, None)

    def on_unpinned(self, block: int) -> None:
        entry = self._parked.pop(block, None)
        if entry is not None:
            heapq.heappush(self._heap, entry)

    def victim(self, pinned: Container[int]) -> int:
        heap, nxt = self._heap, self._next
        while heap:
            entry = heapq.heappop(heap)
            neg, block = entry
            if nxt.get(block) != -neg:
                continue
            if block in pinned:
                # In use now: set aside until its request releases it (a fresh touch) or its
                # last pin drops (on_unpinned). Pushed back, it would surface again at every
                # eviction while its request runs: thousands of pins made each eviction pop
                # them all.
                self._parked[block] = entry
                continue
            del nxt[block]
            return block
        raise RuntimeError("Belady.victim called with every block pinned")
