"""SIEVE (Zhang et al., NSDI'24): a FIFO queue, a visited bit, and a hand that sweeps from the
old end towards the new, clearing visited bits until it finds an unvisited block to evict.

New blocks go to the new end and the hand keeps its place between evictions, so survivors
stay where they are (lazy promotion) and one-hit blocks near the new end leave quickly (quick
demotion). Semantics follow libCacheSim's ``Sieve`` exactly; the test suite checks equal hit
counts. A pinned block is treated like a visited one: skipped by the hand.

Prefix-awareness: a chain's blocks are inserted head first and share one visited history, so
the hand meets (and evicts) an unused head before its tail, as FIFO does; see fifo.py.
"""

from __future__ import annotations

from collections.abc import Container

from policies.eviction.base import EvictionPolicy

_NONE = None


class SIEVE(EvictionPolicy):
    def __init__(self) -> None:
        self._newer: dict[int, int | None] = {}  # neighbour towards the new end
        self._older: dict[int, int | None] = {}  # neighbour towards the old end
        self._visited: dict[int, bool] = {}
        self._head: int | None = None  # newest
        self._tail: int | None = None  # oldest
        self._hand: int | None = None

    def on_insert(self, block: int, position: int) -> None:
        self._visited[block] = False
        self._older[block] = self._head
        self._newer[block] = _NONE
        if self._head is not None:
            self._newer[self._head] = block
        self._head = block
        if self._tail is None:
            self._tail = block

    def on_access(self, block: int, position: int) -> None:
        self._visited[block] = True

    def on_remove(self, block: int) -> None:
        if self._hand == block:
            self._hand = self._newer[block]
        self._unlink(block)

    def _unlink(self, block: int) -> None:
        newer, older = self._newer.pop(block), self._older.pop(block)
        del self._visited[block]
        if newer is None:
            self._head = older
        else:
            self._older[newer] = older
        if older is None:
            self._tail = newer
        else:
            self._newer[older] = newer

    def victim(self, pinned: Container[int]) -> int:
        visited, newer = self._visited, self._newer
        block = self._hand if self._hand is not None else self._tail
        for _ in range(2 * len(visited) + 1):
            if block is None:
                block = self._tail
            if not visited[block] and block not in pinned:
                self._hand = newer[block]
                self._unlink(block)
                return block
            visited[block] = False
            block = newer[block]
        raise RuntimeError("SIEVE.victim called with every block pinned")
