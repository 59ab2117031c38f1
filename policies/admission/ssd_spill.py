"""SSD spill: write-back down the whole hierarchy, HBM -> DRAM -> SSD -> dropped."""

from __future__ import annotations

from policies.admission.base import AdmissionPolicy


class SsdSpill(AdmissionPolicy):
    """Each eviction demotes the block one tier down; blocks leave only from the last tier.

    The default placement: a configured DRAM or SSD tier is used without further settings.
    """

    def demote_to(self, from_tier: str) -> str | None:
        return self._below(from_tier)
