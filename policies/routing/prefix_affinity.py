"""Prefix affinity with a load cap: send a request where its prefix is cached (Preble, Mooncake)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from policies.params import integer, number
from policies.routing.base import ReplicaView, Router


class PrefixAffinity(Router):
    """Pick the replica holding the longest prefix of the request, unless that replica's
    outstanding tokens exceed ``load_cap`` times the least loaded one's (plus a slack of
    ``slack_tokens`` so that idle clusters do not bounce on small differences); then fall back to
    the least loaded. Pure affinity piles a popular prefix onto one replica; the cap trades
    some hits for balance, as Preble's and Mooncake's schedulers do."""

    def __init__(self, load_cap: float = 1.5, slack_tokens: int = 8192) -> None:
        self.load_cap = number("load_cap", load_cap, at_least=1)
        self.slack_tokens = integer("slack_tokens", slack_tokens, least=0)

    def route(self, request: Any, replicas: Sequence[ReplicaView]) -> int:
        loads = [r.outstanding_tokens() for r in replicas]
        least = min(range(len(replicas)), key=lambda i: (loads[i], i))
        limit = self.load_cap * loads[least] + self.slack_tokens
        best = max(
            range(len(replicas)),
            key=lambda i: (replicas[i].cached_prefix_blocks(request), -loads[i], -i),
        )
        if replicas[best].cached_prefix_blocks(request) > 0 and loads[best] <= limit:
            return best
        return least
