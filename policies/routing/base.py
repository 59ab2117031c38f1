"""Routing: which replica serves a request.

The router is asked once per request, at its arrival, with read-only views of every replica.
What the engine guarantees: ``replicas`` is never empty and is in index order; the answer
must be an index into it (checked). Views expose the replica's load and, for cache-aware
routing, how long a prefix of the request it already holds.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from typing import Any, Protocol


class ReplicaView(Protocol):
    index: int

    def outstanding_tokens(self) -> int:
        """Prompt tokens still to prefill plus output tokens still to generate, queued or running."""

    def cached_prefix_blocks(self, request: Any) -> int:
        """Leading blocks of ``request``'s prompt held in any tier of this replica."""


class Router(ABC):
    @abstractmethod
    def route(self, request: Any, replicas: Sequence[ReplicaView]) -> int:
        """Index of the replica that gets ``request``."""


BASE_CLASS = Router
