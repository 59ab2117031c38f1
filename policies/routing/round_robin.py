"""Round robin: replicas in turn, blind to load and cache."""

from collections.abc import Sequence
from typing import Any

from policies.routing.base import ReplicaView, Router


class RoundRobin(Router):
    def __init__(self) -> None:
        self._next = 0

    def route(self, request: Any, replicas: Sequence[ReplicaView]) -> int:
        choice = self._next % len(replicas)
        self._next += 1
        return choice
