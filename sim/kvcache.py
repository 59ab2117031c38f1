"""Residency of prefix blocks across memory tiers: the bookkeeping, not the timing.

:class:`TieredCache` knows which tier holds which block, which blocks are pinned, how much
space running requests hold privately, and asks each tier's eviction policy for victims and
the placement policy where victims go. Every operation that moves data appends a
:class:`Move` to a list the caller passes in; the serve engine turns moves into timed
transfers on links, the cache-only replayer just counts them. One implementation serves both
modes, so replay hit ratios and serve-mode residency follow the same rules.

Rules kept here (and checked when ``check_invariants`` is on):

* a tier never holds more than its capacity (named blocks + reserved private blocks + the
  slots of evicted blocks still being copied out, see below);
* a pinned block is never evicted (victims are verified against the pin table);
* the hierarchy is inclusive: promoting a block up leaves its lower copy in place;
* a block is told to its tier's eviction policy when it becomes a candidate: at once when
  inserted unpinned, or when its pinning request releases it (see ``policies/eviction/base``).

Timing enters in one place. In the tiers the caller names ``hold_demoted``, a victim demoted
to a lower tier keeps its slot (``Tier.leaving``) until the caller calls :meth:`vacate`, when
its copy has read it: a real offload engine (vLLM swap, LMCache) cannot reuse the memory
before its copy engine has read the old contents out, so while copies are in flight the tier
holds fewer blocks. The slot is neither evictable nor reusable meanwhile. The cache-only
replayer has no time and names none: its slots are free at once.
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Sequence
from typing import NamedTuple

from policies.admission.base import AdmissionPolicy
from policies.eviction.base import EvictionPolicy, RequestContext

DROPPED = -1  # destination tier of a block evicted from the hierarchy


class InvariantError(AssertionError):
    """The simulator broke one of its own rules; results from this run must not be used."""


class Move(NamedTuple):
    """Block ``block`` copied from tier ``src`` to tier ``dst`` (``DROPPED``: discarded)."""

    block: int
    src: int
    dst: int


# Move(...) runs NamedTuple's generated Python __new__; an eviction cascade makes one per
# victim, so _evict_one builds them from a tuple at C speed (the same Move).
_new_move = functools.partial(tuple.__new__, Move)


class Tier:
    """One level of the hierarchy: named (cached) blocks plus reserved private space."""

    __slots__ = (
        "blocks",
        "capacity",
        "evictions",
        "index",
        "leaving",
        "name",
        "pinned",
        "policy",
        "reserved",
        "untold",
    )

    def __init__(self, name: str, index: int, capacity: int, policy: EvictionPolicy) -> None:
        if capacity < 1:
            raise ValueError(f"tier {name} must hold at least one block, got capacity {capacity}")
        self.name = name
        self.index = index
        self.capacity = capacity
        self.policy = policy
        self.blocks: dict[int, int] = {}  # block id -> position in its prefix chain
        self.pinned: dict[int, int] = {}  # block id -> pin count; only resident blocks
        self.untold: set[int] = set()  # resident, pinned, not yet told to the policy
        self.reserved = 0  # private blocks of running or swapped requests
        self.leaving = 0  # slots of evicted blocks whose copy down has not read them yet
        self.evictions = 0

    @property
    def used(self) -> int:
        return len(self.blocks) + self.reserved + self.leaving

    @property
    def free(self) -> int:
        return self.capacity - len(self.blocks) - self.reserved - self.leaving

    @property
    def evictable(self) -> int:
        return len(self.blocks) - len(self.pinned)


class TieredCache:
    """Tiers top first (index 0 is HBM); see the module docstring for the rules."""

    def __init__(
        self,
        tiers: Sequence[Tier],
        admission: AdmissionPolicy,
        *,
        check_invariants: bool = True,
        hold_demoted: Sequence[int] = (),
    ) -> None:
        """``hold_demoted``: indices of the tiers whose demoted victims keep their slots until
        :meth:`vacate` (see the module docstring)."""
        self.tiers = list(tiers)
        self._hold_demoted = frozenset(hold_demoted)
        self.names = tuple(t.name for t in self.tiers)
        self.admission = admission
        admission.bind(self.names)
        self.check_invariants = check_invariants
        self._index = {t.name: t.index for t in self.tiers}
        #: Whether any tier's policy reads the request context (overrides ``on_request``): the
        #: engine builds one per admission and release only then.
        self.wants_request_context = any(type(t.policy).on_request is not EvictionPolicy.on_request for t in self.tiers)

    # ------------------------------------------------------------------ queries
    def tier_index(self, name: str) -> int:
        return self._index[name]

    def find(self, block: int) -> int:
        """Index of the highest tier holding ``block``, or ``DROPPED``."""
        for tier in self.tiers:
            if block in tier.blocks:
                return tier.index
        return DROPPED

    def match_prefix(self, blocks: Sequence[int]) -> list[int]:
        """Tier of each block of the longest prefix of ``blocks`` held anywhere.

        A prefix block is only useful if every block before it is too, so the walk stops at
        the first block no tier holds.
        """
        # find() inlined: admission walks every waiting head's prefix at every step.
        residency = [(tier.index, tier.blocks) for tier in self.tiers]
        found: list[int] = []
        for block in blocks:
            for index, resident in residency:
                if block in resident:
                    found.append(index)
                    break
            else:
                break
        return found

    def begin(self, ctx: RequestContext) -> None:
        """Tell every tier's policy which request the next touches belong to."""
        for tier in self.tiers:
            tier.policy.on_request(ctx)

    # ------------------------------------------------------------------ space
    def make_room(self, t: int, n: int, moves: list[Move]) -> bool:
        """Evict ``n`` minus the free slots from tier ``t``; ``True`` if ``n`` slots are free
        then. ``False`` if pins forbid it (evicting nothing), or if victims demoted from a
        tier in ``hold_demoted`` still hold their slots (they are evicted all the same, as an
        offload engine evicts for room it gets once their copies have read them)."""
        tier = self.tiers[t]
        free = tier.free
        if free >= n:
            return True
        if free + len(tier.blocks) - len(tier.pinned) < n:
            return False
        evict_one = self._evict_one
        for _ in range(n - free):
            evict_one(tier, moves)
        return tier.free >= n

    def reserve(self, t: int, n: int, moves: list[Move]) -> bool:
        """Hold ``n`` private (unnamed) blocks in tier ``t``, evicting to make room."""
        if not self.make_room(t, n, moves):
            return False
        self.tiers[t].reserved += n
        return True

    def holds_demoted(self, t: int) -> bool:
        """Whether tier ``t``'s demoted victims keep their slots until :meth:`vacate`."""
        return t in self._hold_demoted

    def vacate(self, t: int, n: int) -> None:
        """The copies down of ``n`` blocks evicted from tier ``t`` have read them: their slots
        are free."""
        tier = self.tiers[t]
        if self.check_invariants and n > tier.leaving:
            raise InvariantError(f"{tier.name}: vacating {n} slots but only {tier.leaving} are being copied out")
        tier.leaving -= n

    def unreserve(self, t: int, n: int) -> None:
        tier = self.tiers[t]
        if self.check_invariants and n > tier.reserved:
            raise InvariantError(f"{tier.name}: releasing {n} private blocks but only {tier.reserved} held")
        tier.reserved -= n

    def _evict_one(self, tier: Tier, moves: list[Move]) -> None:
        pinned, blocks = tier.pinned, tier.blocks
        victim = tier.policy.victim(pinned)
        if self.check_invariants:
            if victim in pinned:
                raise InvariantError(f"{tier.name}: {type(tier.policy).__name__} evicted pinned block {victim}")
            if victim not in blocks:
                raise InvariantError(f"{tier.name}: {type(tier.policy).__name__} evicted non-resident block {victim}")
        position = blocks.pop(victim)
        tier.evictions += 1
        dest_name = self.admission.demote_to(tier.name)
        if dest_name is None:
            moves.append(_new_move((victim, tier.index, DROPPED)))
            return
        dest = self._index.get(dest_name, DROPPED)
        if dest <= tier.index:
            self._checked_destination(dest_name, tier.index, "demote_to")
        lower = self.tiers[dest]
        if victim in lower.blocks:
            # The inclusive lower copy is still there: nothing to write.
            lower.policy.on_access(victim, position)
            moves.append(_new_move((victim, tier.index, DROPPED)))
            return
        if self.insert(dest, victim, position, moves, pin=False):
            moves.append(_new_move((victim, tier.index, dest)))
            if tier.index in self._hold_demoted:
                tier.leaving += 1
        else:
            moves.append(_new_move((victim, tier.index, DROPPED)))

    def _checked_destination(self, name: str, below: int, method: str) -> None:
        dest = self._index.get(name)
        if dest is None or dest <= below:
            raise ValueError(
                f"{type(self.admission).__name__}.{method} returned {name!r}; "
                f"expected a tier below {self.names[below]!r} among {self.names}"
            )

    # ------------------------------------------------------------------ residency
    def insert(self, t: int, block: int, position: int, moves: list[Move], *, pin: bool) -> bool:
        """Make ``block`` resident in tier ``t``; ``False`` if no room can be made.

        A pinned insert is not told to the policy until :meth:`release`; an unpinned insert is
        told at once.
        """
        tier = self.tiers[t]
        blocks = tier.blocks
        if self.check_invariants and block in blocks:
            raise InvariantError(f"{tier.name}: block {block} inserted twice")
        # Tier.free spelled out: this runs for every block named, loaded or demoted.
        if tier.capacity - len(blocks) - tier.reserved - tier.leaving < 1 and not self.make_room(t, 1, moves):
            return False
        blocks[block] = position
        if pin:
            tier.pinned[block] = tier.pinned.get(block, 0) + 1
            tier.untold.add(block)
        else:
            tier.policy.on_insert(block, position)
        if self.check_invariants and len(blocks) + tier.reserved + tier.leaving > tier.capacity:
            raise InvariantError(f"{tier.name}: {tier.used} blocks held, capacity {tier.capacity}")
        return True

    def pin(self, t: int, block: int) -> None:
        pinned = self.tiers[t].pinned
        pinned[block] = pinned.get(block, 0) + 1

    def unpin(self, t: int, block: int) -> None:
        """Drop one pin without telling the policy (e.g. the source of a finished copy)."""
        tier = self.tiers[t]
        count = tier.pinned.get(block, 0)
        if self.check_invariants and count == 0:
            raise InvariantError(f"{tier.name}: unpinning block {block} that is not pinned")
        if count == 1:
            del tier.pinned[block]
            if block in tier.untold:
                # Its inserter never released it through release(); tell it now so that it
                # can be evicted at all.
                tier.untold.discard(block)
                tier.policy.on_insert(block, tier.blocks[block])
            else:
                tier.policy.on_unpinned(block)
        else:
            tier.pinned[block] = count - 1

    def touch(self, t: int, block: int) -> None:
        """A use of a resident, unpinned-or-told block that the policy should see now."""
        tier = self.tiers[t]
        if block not in tier.untold:
            tier.policy.on_access(block, tier.blocks[block])

    def release(self, t: int, blocks: Sequence[int], ctx: RequestContext | None) -> None:
        """A request stops using ``blocks`` (head first as given): unpin them and tell the
        policy, tail first, as vLLM returns a finished request's blocks to its free queue."""
        tier = self.tiers[t]
        policy = tier.policy
        if ctx is not None:
            policy.on_request(ctx)
        pinned, untold, positions = tier.pinned, tier.untold, tier.blocks
        for block in reversed(blocks):
            count = pinned.get(block, 0)
            if self.check_invariants and count == 0:
                raise InvariantError(f"{tier.name}: releasing block {block} that is not pinned")
            if count == 1:
                del pinned[block]
            else:
                pinned[block] = count - 1
            if block in untold:
                untold.discard(block)
                policy.on_insert(block, positions[block])
            else:
                policy.on_access(block, positions[block])

    def occupancy(self) -> list[int]:
        return [t.used for t in self.tiers]


def build_tiers(
    capacities: Sequence[tuple[str, int]],
    make_policy: Callable[[str, int], EvictionPolicy],
) -> list[Tier]:
    """Tiers from ``(name, capacity_blocks)`` pairs, top first, each with a bound policy."""
    return [Tier(name, i, capacity, make_policy(name, capacity)) for i, (name, capacity) in enumerate(capacities)]
