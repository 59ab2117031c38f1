"""LFU with dynamic aging (LFU-DA, Arlitt et al.): evict the lowest ``L + frequency``.

Plain LFU keeps blocks that were hot once forever (a system prompt retired an hour ago). Aging
by the inflation value ``L`` (the priority of the last eviction) lets a once-hot block fall
behind blocks being used now, with no parameter to tune. Ties go to the older touch.

Prefix-awareness: a chain's head is touched by every request sharing it and so always has at
least the frequency of its tail; tails therefore go first, as the leaf-first rule wants.
"""

from __future__ import annotations

from policies.eviction._priority import AgingPriorityPolicy


class LFU(AgingPriorityPolicy):
    def hit_worth(self, position: int) -> float:
        return 1.0
