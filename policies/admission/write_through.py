"""Write-through: every computed block is copied to DRAM, and to the shared pool where there is
one, at once (LMCache's store path puts to each configured backend; SGLang HiCache writes
through to its shared storage)."""

from __future__ import annotations

from policies.admission.base import AdmissionPolicy


class WriteThrough(AdmissionPolicy):
    """Computed blocks go to DRAM immediately, so an HBM eviction never waits for a copy;
    PCIe carries every block once. DRAM evictions spill to the SSD when one is configured.
    With a shared pool, every block is also put there (from DRAM where there is DRAM), so
    that another replica can use it at once, not only once it has been evicted here."""

    def write_through_tiers(self, position: int) -> tuple[str, ...]:
        return tuple(tier for tier in ("dram", "remote") if tier in self.tiers)

    def demote_to(self, from_tier: str) -> str | None:
        if from_tier == "hbm":
            return "dram" if "dram" in self.tiers else None
        return self._below(from_tier)
