"""Write-through to every tier: each computed block is copied at once to DRAM, the SSD and the
shared pool, whichever are configured, each copy from the nearest tier above that got one
(HBM -> DRAM over PCIe, DRAM -> SSD, DRAM -> pool), as the offloading engines do by default:

* LMCache's ``StorageManager.batched_put`` puts every stored chunk to each configured backend
  (local CPU, local disk, remote) in the same call, the disk and remote writes asynchronously;
* SGLang HiCache's default ``hicache_write_policy`` is ``write_through``: a device node is backed
  up to host memory when it is inserted, and host pages on to the storage backend;
* vLLM's ``OffloadingConnector`` stores every newly computed full block to CPU memory.

So an eviction from HBM, or from DRAM, finds the block already below and costs no copy: nothing
waits on a write-back in a burst of evictions, and no block is lost because the tier below was
still busy taking the previous burst (``ssd_spill``'s chain is SSD-write-bound there). The price
is that every computed block crosses PCIe and the SSD once, whether or not it is ever evicted.
"""

from __future__ import annotations

from policies.admission.write_through import WriteThrough


class WriteThroughAll(WriteThrough):
    """Every tier below HBM receives each new block at once; an eviction demotes the block one
    tier down (which costs nothing while that tier still holds its copy)."""

    def write_through_tiers(self, position: int) -> tuple[str, ...]:
        return tuple(tier for tier in ("dram", "ssd", "remote") if tier in self.tiers)

    def demote_to(self, from_tier: str) -> str | None:
        return self._below(from_tier)
