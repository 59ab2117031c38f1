"""Session-aware: keep a conversation's context close until its likely next turn."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.params import number
from policies.prefetch.base import CacheView, Hold, Order, PrefetchPolicy, Stage


class SessionAware(PrefetchPolicy):
    """After a turn of a multi-turn session finishes, its whole context is the prefix of the
    next turn, which typically arrives after a think time of tens of seconds (users read the
    answer, agents run tools). The policy holds that context in HBM for ``hold_s`` and
    stages it into DRAM so that, if HBM must let it go, the next turn loads it over PCIe
    instead of recomputing it. When the next turn arrives, its lower-tier prefix is staged
    back into HBM at once, as on-arrival prefetch does. Requests without a session are left
    to the eviction policy."""

    max_hold_fraction = 0.25
    acts_on_sessions = True

    def __init__(self, hold_s: float = 30.0) -> None:
        self.hold_s = number("hold_s", hold_s, at_least=0)  # finite: the engine times the hold

    def on_arrival(self, request: Any, cache: CacheView) -> Sequence[Order]:
        if request.session_id < 0 or cache.blocks_below(request, "hbm") == 0:
            return ()
        return (Stage(request, "hbm", evict=True),)

    def on_finish(self, request: Any, cache: CacheView) -> Sequence[Order]:
        if request.session_id < 0:
            return ()
        orders: list[Order] = [Hold(request, self.hold_s)]
        if cache.has_tier("dram"):
            orders.append(Stage(request, "dram", evict=True))
        return orders
