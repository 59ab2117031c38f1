"""First come, first served (vLLM's default)."""

from typing import Any

from policies.scheduler.base import Scheduler


class FCFS(Scheduler):
    def key(self, req: Any, now: float) -> tuple:
        return (req.arrival_s, req.index)
