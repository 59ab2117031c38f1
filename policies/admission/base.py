"""Admission / placement: where blocks go below HBM.

The hierarchy is inclusive: a block promoted from DRAM or SSD into HBM keeps its lower copy
(as LMCache's CPU and disk stores do), so evicting it from HBM later costs no copy if that
lower copy still exists. A placement policy decides the rest:

* :meth:`AdmissionPolicy.write_through_tiers` — lower tiers a block is copied to as soon as it
  is computed (write-through, as LMCache and SGLang HiCache's default do);
* :meth:`AdmissionPolicy.demote_to` — where a block evicted from a tier goes (write-back /
  spill), or ``None`` to drop it.

What the engine guarantees: :meth:`bind` is called once with the tiers present, top first
(some of ``("hbm", "dram", "ssd", "remote")`` in that order, HBM always; "remote" is the
pool all replicas share); answers naming a tier that is absent or not
below ``from_tier`` are refused with an error; a demotion into a tier that already holds the
block costs nothing.
"""

from __future__ import annotations

from abc import ABC


class AdmissionPolicy(ABC):
    """Default behaviour: no write-through, and evicted blocks are dropped."""

    def bind(self, tiers: tuple[str, ...]) -> None:
        self.tiers = tiers
        self._next_below = {upper: lower for upper, lower in zip(tiers, tiers[1:], strict=False)}

    def write_through_tiers(self, position: int) -> tuple[str, ...]:
        """Lower tiers that receive a copy of a newly computed block at chain ``position``."""
        return ()

    def demote_to(self, from_tier: str) -> str | None:
        """Tier that receives a block evicted from ``from_tier``; ``None`` drops it."""
        return None

    def _below(self, tier: str) -> str | None:
        """The next tier present below ``tier``, if any."""
        return self._next_below.get(tier)


BASE_CLASS = AdmissionPolicy
