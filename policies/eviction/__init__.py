"""Eviction policies, one module each; the interface is in ``base.py``."""

from policies.eviction.base import NEVER, EvictionPolicy, RequestContext, WorkloadView

__all__ = ["NEVER", "EvictionPolicy", "RequestContext", "WorkloadView"]
