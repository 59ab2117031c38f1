"""On-arrival: start loading a request's lower-tier prefix into HBM as soon as it queues."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.params import boolean
from policies.prefetch.base import CacheView, Order, PrefetchPolicy, Stage


class OnArrival(PrefetchPolicy):
    """The time a request waits in the queue is free time for PCIe: if its prefix sits in
    DRAM or on SSD, copying it up while it waits turns load time at admission into a hit."""

    def __init__(self, evict: bool = True) -> None:
        self.evict = boolean("evict", evict)

    def on_arrival(self, request: Any, cache: CacheView) -> Sequence[Order]:
        if cache.blocks_below(request, "hbm") == 0:
            return ()
        return (Stage(request, "hbm", self.evict),)
