"""Scheduling: which waiting requests join the next batch, and who is preempted.

The engine (an iteration-level scheduler in the style of vLLM) builds each step from the
running decodes first, then running prefills, then new admissions taken from the waiting
queue in the order of :meth:`Scheduler.key` while the token budget, the sequence limit and
KV memory allow. Admission stops at the first request that does not fit (no skipping ahead),
as vLLM's FCFS does, so the key alone decides the order.

What the engine guarantees
--------------------------
* ``key(req, now)`` is asked when a request enters the waiting queue (arrival or preemption)
  for static schedulers; when ``dynamic`` is true it is asked again before each admission
  round for the first ``window`` waiting requests in arrival order (the rest keep FCFS order,
  as SGLang does past 128 waiting requests), after the engine refreshed
  ``req.cached_tokens`` (prompt tokens found in HBM).
* ``preemption_victim(running)`` is asked when a running request needs KV memory that cannot
  be freed by eviction; ``running`` is in admission order and never empty.
* ``preempt_for(candidate, running)`` is asked when ``candidate`` heads the queue but does
  not fit and ``running`` (the preemptable requests, in admission order) is not empty;
  returning one of them preempts it to make room (priority scheduling).

The request objects expose ``index, arrival_s, input_tokens, output_tokens, category,
session_id, turn, priority, cached_tokens, admitted_s``; schedulers must not modify them.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar


class Scheduler(ABC):
    dynamic: ClassVar[bool] = False
    window: ClassVar[int] = 128

    def bind(self, categories: tuple[str, ...]) -> None:
        """Called once with the trace's category labels (codes index into them)."""
        self.categories = categories

    @abstractmethod
    def key(self, req: Any, now: float) -> tuple:
        """Sort key: lower is admitted sooner. Include ``req.arrival_s`` to break ties."""

    def preemption_victim(self, running: Sequence[Any]) -> Any:
        """The request to preempt; by default the most recently admitted (vLLM's choice)."""
        return running[-1]

    def preempt_for(self, candidate: Any, running: Sequence[Any]) -> Any | None:
        """A running request to preempt so that ``candidate`` can start; none by default."""
        return None


BASE_CLASS = Scheduler
