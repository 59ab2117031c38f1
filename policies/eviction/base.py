"""Eviction: which unpinned block of a full tier makes room.

One policy instance manages one tier of one replica. The engine (the serve-mode KV manager or
the cache-only replayer) owns residency; the policy owns only its ordering state and answers
:meth:`EvictionPolicy.victim`.

What the engine guarantees
--------------------------
* :meth:`~EvictionPolicy.bind` is called once, before any other call.
* :meth:`~EvictionPolicy.on_request` precedes the ``on_insert`` / ``on_access`` calls that
  a request causes, so a policy may read the request's category, session, turn and time.
* ``on_insert(block, position)`` is called only for a block not resident in this tier;
  ``on_access(block, position)`` only for a resident one. ``position`` is the block's index in
  its request's prefix chain (0 = first block, usually a shared system prompt).
* ``on_remove(block)`` tells of a block leaving the tier for a reason other than
  :meth:`victim` (promotion out of an exclusive tier, invalidation). After ``victim`` returns a
  block, the engine removes it and does *not* call ``on_remove`` for it.
* ``victim(pinned)`` is called only when the tier is full and at least one block the policy
  was told of is not in ``pinned``. It must return such a block, forget it, and never return a
  block in ``pinned`` (blocks used by running requests, and sources of in-flight copies); the
  engine checks this and fails loudly otherwise.
* A told block's pins drop in one of two ways, both told: its request releases it (an
  ``on_access``), or, for the source of a finished copy, ``on_unpinned(block)`` when its last
  pin drops. A policy may therefore set aside a pinned block that ``victim`` meets until one of
  the two, rather than meet it again at every eviction.
* Serve mode tells the policy about a request's blocks when the request *releases* them
  (finishes or is preempted), tail block first: the same order in which vLLM returns blocks to
  its free queue. Until then the blocks are pinned, so the policy need not know them yet.
  Recency policies therefore evict a chain's tail before its head (the leaf-first rule of
  vLLM and SGLang's radix tree) without the engine walking the tree. Replay mode presents the
  trace's key stream as it is, head first, as a cache simulator such as libCacheSim does.

Replay fast path
----------------
A policy whose decisions depend on nothing but the key stream (LRU, FIFO) may define
``replay_hits(keys, n_keys, capacity_blocks) -> bytearray`` (``keys`` an iterable of
``n_keys`` block ids; one byte per access, 1 for a hit): the cache-only replayer then hands
it the whole stream at once and skips the per-access hooks. It must give exactly what the
hooks would (the test suite compares the two). Subclasses do not inherit it: one that overrides a hook is
replayed through its hooks.

A policy that also reads the request structure (positions, request boundaries, turns,
categories) may instead define ``replay_trace(trace, offsets, keys, capacity_blocks) ->
bytearray``: the replayer binds it and hands it the trace with its engine-block CSR
(``offsets``, ``keys``) to replay in one loop, with the same rule of giving exactly what
``on_request`` and the hooks would, and the same non-inheritance.

Offline knowledge
-----------------
:class:`WorkloadView` carries ``next_use``, the future of the access stream. Only offline
policies (Belady/OPT) may read it; online policies must decide from the past alone.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Container
from dataclasses import dataclass

import numpy as np

NEVER = np.iinfo(np.int64).max  # next_use of an access that is never repeated


@dataclass(frozen=True, slots=True)
class RequestContext:
    """What a serving system knows about the request whose blocks are about to be touched."""

    request_index: int  # row of the request in the trace (arrival order)
    now_s: float  # simulated time of the touch (replay mode: the request's arrival time)
    arrival_s: float
    session_id: int  # -1 where the trace has no sessions
    turn: int  # -1 where unknown
    category: int  # code into WorkloadView.categories, -1 where unknown
    n_blocks: int  # length of the request's prefix chain
    access_offset: int  # flat index of this request's first block in the access stream


@dataclass(frozen=True)
class WorkloadView:
    """Facts about the workload and hardware a policy may use when it is bound to a tier.

    ``next_use[g]`` is the flat access index at which the block accessed at ``g`` is accessed
    next (:data:`NEVER` if never): flat index ``g = ctx.access_offset + position``.
    ``next_access(block, g)`` is the first flat index after ``g`` at which ``block`` is
    accessed; in serve mode a lower tier receives evicted blocks outside their own accesses,
    and only this form answers for those. Both are the future, for offline policies only.
    ``recompute_s_by_position[p]`` is the time the GPU
    spends recomputing the block at chain position ``p`` (longer for deeper blocks, which attend
    to a longer prefix); positions past the end use the last entry.
    """

    tier: str
    block_bytes: int
    categories: tuple[str, ...] = ()
    next_use: np.ndarray | None = None
    next_access: Callable[[int, int], int] | None = None
    recompute_s_by_position: np.ndarray | None = None


class EvictionPolicy(ABC):
    """Base class of every eviction policy; see the module docstring for the contract."""

    #: Offline policies read ``WorkloadView.next_use``; reports label them as bounds.
    offline: bool = False

    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        """Called once with the tier's capacity and what is known of the workload."""
        self.capacity_blocks = capacity_blocks
        self.workload = workload

    def on_request(self, ctx: RequestContext) -> None:  # noqa: B027 - optional hook
        """A request's blocks are about to be inserted or accessed."""

    @abstractmethod
    def on_insert(self, block: int, position: int) -> None:
        """``block`` became resident in this tier."""

    @abstractmethod
    def on_access(self, block: int, position: int) -> None:
        """``block``, already resident, was used again."""

    @abstractmethod
    def on_remove(self, block: int) -> None:
        """``block`` left this tier for a reason other than :meth:`victim`."""

    def on_unpinned(self, block: int) -> None:  # noqa: B027 - optional hook
        """``block``'s last pin dropped without a use (the source of a finished copy).

        A block's request releasing it is told as an access or insert instead. Only policies
        that set pinned blocks aside in :meth:`victim` need this, to take them back.
        """

    @abstractmethod
    def victim(self, pinned: Container[int]) -> int:
        """Choose, forget and return a resident block that is not in ``pinned``."""


BASE_CLASS = EvictionPolicy
