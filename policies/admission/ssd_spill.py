"""SSD spill: write-back down the whole hierarchy, HBM -> DRAM -> SSD -> dropped."""

from __future__ import annotations

from policies.admission.base import AdmissionPolicy


class SsdSpill(AdmissionPolicy):
    """Each eviction demotes the block one tier down; blocks leave only from the last tier.

    Nothing crosses PCIe or reaches the SSD until it is evicted, but a burst of evictions then
    queues on the slowest link of the chain (the SSD's writes), and a block that finds the tier
    below still busy is dropped. The default, ``write_through_all``, copies blocks down as
    they are computed instead, as LMCache and SGLang HiCache do.
    """

    def demote_to(self, from_tier: str) -> str | None:
        return self._below(from_tier)
