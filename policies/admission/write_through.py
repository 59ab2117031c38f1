"""Write-through: every computed block is copied to DRAM at once (LMCache's store path)."""

from __future__ import annotations

from policies.admission.base import AdmissionPolicy


class WriteThrough(AdmissionPolicy):
    """Computed blocks go to DRAM immediately, so an HBM eviction never waits for a copy;
    PCIe carries every block once. DRAM evictions spill to the SSD when one is configured."""

    def write_through_tiers(self, position: int) -> tuple[str, ...]:
        return ("dram",) if "dram" in self.tiers else ()

    def demote_to(self, from_tier: str) -> str | None:
        if from_tier == "hbm":
            return "dram" if "dram" in self.tiers else None
        return self._below(from_tier)
