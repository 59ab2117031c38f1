"""A replica's waiting queue, ordered by the scheduling policy's key.

Static schedulers (FCFS, shortest prompt first, priority) give a request its key once, when
it is queued, so a heap keeps the order in O(log n). Dynamic schedulers (prefix-aware) are
re-asked before each admission round for a window of the oldest requests, as SGLang does;
requests past the window wait in arrival order.
"""

from __future__ import annotations

import heapq
from collections.abc import Callable, Iterator

from policies.scheduler.base import Scheduler
from sim.request import Request


class WaitingQueue:
    def __init__(self, scheduler: Scheduler) -> None:
        self._scheduler = scheduler
        self._dynamic = scheduler.dynamic
        self._heap: list[tuple[tuple, int, Request]] = []
        self._fifo: list[Request] = []
        self._seq = 0

    def __len__(self) -> int:
        return len(self._fifo) if self._dynamic else len(self._heap)

    def push(self, req: Request, now: float) -> None:
        if self._dynamic:
            # Arrival order; a preempted request goes back among its contemporaries.
            self._fifo.append(req)
            if len(self._fifo) > 1 and self._fifo[-2].arrival_s > req.arrival_s:
                self._fifo.sort(key=lambda r: (r.arrival_s, r.index))
        else:
            self._seq += 1
            heapq.heappush(self._heap, (self._scheduler.key(req, now), self._seq, req))

    def candidates(self, now: float, refresh: Callable[[Request], None]) -> Iterator[Request]:
        """Requests in admission order; the caller calls :meth:`pop` on those it admits.

        For a dynamic scheduler ``refresh`` updates each windowed request before its key is
        asked. The caller must stop iterating at the first request it does not admit.
        """
        if not self._dynamic:
            while self._heap:
                yield self._heap[0][2]
            return
        # Both parts are taken now: the caller pops admitted requests from ``_fifo`` while
        # iterating, which would shift later requests into the window's slice.
        window = self._fifo[: self._scheduler.window]
        past_window = self._fifo[self._scheduler.window :]
        for req in window:
            refresh(req)
        window.sort(key=lambda r: self._scheduler.key(r, now))
        yield from window
        yield from past_window

    def pop(self, req: Request) -> None:
        if self._dynamic:
            self._fifo.remove(req)
        else:
            top = heapq.heappop(self._heap)[2]
            assert top is req, "static queue admits only its head"

    def head(self, n: int, now: float) -> list[Request]:
        """Up to ``n`` requests in admission order, without refreshing dynamic keys."""
        if self._dynamic:
            return sorted(self._fifo[: self._scheduler.window], key=lambda r: self._scheduler.key(r, now))[:n]
        # The n smallest of a heap are found by walking it from the root, smallest first,
        # in O(n log n); heapq.nsmallest would scan the whole queue, at every step of an
        # overloaded replica whose queue holds thousands.
        heap, out = self._heap, []
        frontier = [(heap[0], 0)] if heap else []
        while frontier and len(out) < n:
            entry, i = heapq.heappop(frontier)
            out.append(entry[2])
            for child in (2 * i + 1, 2 * i + 2):
                if child < len(heap):
                    heapq.heappush(frontier, (heap[child], child))
        return out

    def __iter__(self) -> Iterator[Request]:
        return iter(self._fifo) if self._dynamic else (entry[2] for entry in self._heap)
