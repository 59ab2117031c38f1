"""Write-back: a block evicted from HBM is copied to DRAM; DRAM evictions are dropped."""

from __future__ import annotations

from policies.admission.base import AdmissionPolicy


class WriteBack(AdmissionPolicy):
    """HBM -> DRAM on eviction only, so PCIe carries only blocks that were worth keeping
    long enough to be evicted. The SSD, if configured, is left unused (see ``ssd_spill``)."""

    def demote_to(self, from_tier: str) -> str | None:
        return "dram" if from_tier == "hbm" and "dram" in self.tiers else None
