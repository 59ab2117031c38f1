"""GDSF-style cost-aware eviction: evict the lowest ``L + frequency x cost / size``.

GreedyDual-Size-Frequency (Cherkasova) keeps what is expensive to refetch per byte it
occupies. For KV blocks the refetch is a recompute: a block deep in a chain attends to a long
prefix, so it costs more GPU time to rebuild than a block near the head
(``WorkloadView.recompute_s_by_position``, from the execution model in serve mode). Size is the
block's bytes, equal for every block of a tier, so it only scales the values. Without a cost
model (replay mode) the cost is taken as growing linearly with position, which is what
attention over a longer prefix costs to first order. Aging by ``L`` as in LFU-DA.

Prefix-awareness: deeper blocks are worth more per hit but are hit at most as often as their
prefix; when frequencies tie, GDSF keeps tails over heads, the opposite of the leaf-first rule.
That is the cost-aware trade-off this policy exists to show; compare it with LRU in a sweep.
"""

from __future__ import annotations

from policies.eviction._priority import AgingPriorityPolicy
from policies.eviction.base import WorkloadView


class GDSF(AgingPriorityPolicy):
    def bind(self, capacity_blocks: int, workload: WorkloadView) -> None:
        super().bind(capacity_blocks, workload)
        self._cost = workload.recompute_s_by_position
        self._size = float(workload.block_bytes or 1)

    def hit_worth(self, position: int) -> float:
        cost = self._cost
        if cost is not None and len(cost):
            seconds = float(cost[min(position, len(cost) - 1)])
            return seconds / self._size
        return (position + 1) / self._size
