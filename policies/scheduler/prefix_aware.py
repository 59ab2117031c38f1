"""Longest cached prefix first (SGLang's LPM): reuse what is in HBM before it is evicted."""

from typing import Any

from policies.scheduler.base import Scheduler


class PrefixAware(Scheduler):
    """Requests whose prompts are most cached in HBM go first. Running them while their
    prefix is resident turns would-be misses into hits and frees the prefix for eviction
    sooner; ties fall back to arrival order. Dynamic, because residency changes every step."""

    dynamic = True

    def key(self, req: Any, now: float) -> tuple:
        return (-req.cached_tokens, req.arrival_s, req.index)
