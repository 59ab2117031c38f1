"""Prefetch: move KV up the hierarchy before a request needs it, to hide transfer time.

A policy is told of arrivals, of the waiting queue after each admission round, and of
finished requests, and answers with orders the engine carries out:

* :class:`Stage` — copy the blocks of ``request``'s cached prefix that sit below ``to_tier``
  up into it (SSD -> DRAM -> HBM as needed). With ``evict=False`` only free slots are used.
* :class:`Hold` — keep ``request``'s HBM blocks pinned for ``seconds`` after it finishes
  (protecting a conversation's context until its next turn); the engine caps the blocks
  held this way at ``PrefetchPolicy.max_hold_fraction`` of HBM and ignores orders beyond it.

What the engine guarantees: orders are carried out in the order given, at the current
simulated time, on the same links as demand loads (so prefetch competes with them); staged
blocks are pinned while in flight and become ordinary cached blocks on arrival; a request
that is admitted while its staged blocks are in flight waits only for the rest of the copy.
:class:`CacheView` is a read-only view of one replica's hierarchy.
"""

from __future__ import annotations

from abc import ABC
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Protocol


@dataclass(frozen=True)
class Stage:
    request: Any
    to_tier: str = "hbm"
    evict: bool = True


@dataclass(frozen=True)
class Hold:
    request: Any
    seconds: float


Order = Stage | Hold


class CacheView(Protocol):
    def free_blocks(self, tier: str) -> int:
        """Slots free now in ``tier`` without evicting anything."""

    def blocks_below(self, request: Any, tier: str) -> int:
        """Blocks of ``request``'s cached prefix that are held only below ``tier``."""

    def has_tier(self, tier: str) -> bool: ...


class PrefetchPolicy(ABC):
    max_hold_fraction: float = 0.2
    #: True for a policy that acts only on requests of a session (their next turn): on a trace
    #: without sessions it does nothing, which a run warns of.
    acts_on_sessions: bool = False

    def on_arrival(self, request: Any, cache: CacheView) -> Sequence[Order]:
        return ()

    def on_queue_change(self, waiting: Sequence[Any], cache: CacheView) -> Sequence[Order]:
        """``waiting`` is in the scheduler's order, head first."""
        return ()

    def on_finish(self, request: Any, cache: CacheView) -> Sequence[Order]:
        return ()


BASE_CLASS = PrefetchPolicy
