"""Priority classes with preemption: interactive traffic ahead of batch traffic."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from policies.params import integer, integer_mapping
from policies.scheduler.base import Scheduler

# Categories a user waits on at the keyboard are latency-critical; api, file and agent
# traffic tolerates delay (the split used by Alibaba's Bailian trace study). The bundled
# generators' categories follow the same split: chat and RAG answers are read as they come,
# agent loops and long-document jobs run unattended.
DEFAULT_CLASSES: Mapping[str, int] = {
    "text": 0,
    "search": 0,
    "image": 0,
    "chat": 0,
    "rag": 0,
    "api": 1,
    "file": 1,
    "agent": 1,
    "long_context": 1,
}


class Priority(Scheduler):
    """Lower class number = more urgent; FCFS within a class.

    A request's class comes from its category through ``classes``; requests without a known
    category get ``default_class``. When an urgent request heads the queue and does not fit,
    the least urgent, most recently admitted running request is preempted for it.
    """

    def __init__(self, classes: Mapping[str, int] | None = None, default_class: int = 1) -> None:
        # Class numbers are compared with each other when the queue is sorted; a name among
        # them would fail there, mid-run.
        self.classes = integer_mapping("classes", DEFAULT_CLASSES if classes is None else classes)
        self.default_class = integer("default_class", default_class)

    def bind(self, categories: tuple[str, ...]) -> None:
        super().bind(categories)
        self._class_of_code = [self.classes.get(c, self.default_class) for c in categories]

    def class_of(self, req: Any) -> int:
        return self.default_class if req.category < 0 else self._class_of_code[req.category]

    def key(self, req: Any, now: float) -> tuple:
        return (self.class_of(req), req.arrival_s, req.index)

    def preemption_victim(self, running: Sequence[Any]) -> Any:
        # Least urgent first; among equals the most recently admitted.
        return max(reversed(running), key=self.class_of)

    def preempt_for(self, candidate: Any, running: Sequence[Any]) -> Any | None:
        victim = self.preemption_victim(running)
        return victim if self.class_of(victim) > self.class_of(candidate) else None
