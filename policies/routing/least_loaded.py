"""Least outstanding tokens: balance work, blind to cache contents."""

from collections.abc import Sequence
from typing import Any

from policies.routing.base import ReplicaView, Router


class LeastLoaded(Router):
    """Outstanding tokens (prefill still to do plus decode still to generate) track both queue
    length and request size, which request counts alone miss for long prompts."""

    def route(self, request: Any, replicas: Sequence[ReplicaView]) -> int:
        return min(replicas, key=lambda r: (r.outstanding_tokens(), r.index)).index
