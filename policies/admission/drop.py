"""Drop: lower tiers are never filled; HBM is the only prefix cache (plain vLLM)."""

from policies.admission.base import AdmissionPolicy


class Drop(AdmissionPolicy):
    """Evicted blocks are discarded and nothing is written below HBM."""
