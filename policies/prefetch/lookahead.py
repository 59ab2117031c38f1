"""Lookahead: stage the prefixes of the next requests in the queue into free HBM."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.params import integer
from policies.prefetch.base import CacheView, Order, PrefetchPolicy, Stage


class Lookahead(PrefetchPolicy):
    """Walks the waiting queue in scheduling order (the order requests will be admitted in)
    and stages each prefix that still fits in *free* HBM, never evicting: it only uses memory
    that would otherwise sit idle, so it cannot hurt the hit ratio of running requests."""

    def __init__(self, depth: int = 8) -> None:
        self.depth = integer("depth", depth, least=1)  # a count of requests: it slices the queue

    def on_queue_change(self, waiting: Sequence[Any], cache: CacheView) -> Sequence[Order]:
        budget = cache.free_blocks("hbm")
        orders: list[Order] = []
        for request in waiting[: self.depth]:
            need = cache.blocks_below(request, "hbm")
            if need == 0:
                continue
            if need > budget:
                break
            budget -= need
            orders.append(Stage(request, "hbm", evict=False))
        return orders
