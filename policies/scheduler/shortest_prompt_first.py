"""Shortest prompt first: minimises mean TTFT under load, at the risk of starving long prompts."""

from typing import Any

from policies.scheduler.base import Scheduler


class ShortestPromptFirst(Scheduler):
    """Orders by full prompt length, known on arrival before any cache lookup. Long prompts
    can wait indefinitely under sustained load: the trade-off this policy exists to show."""

    def key(self, req: Any, now: float) -> tuple:
        return (req.input_tokens, req.arrival_s, req.index)
