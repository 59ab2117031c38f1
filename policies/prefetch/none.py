"""No prefetch: KV below HBM is loaded only when its request is admitted (on demand)."""

from policies.prefetch.base import PrefetchPolicy


class NoPrefetch(PrefetchPolicy):
    """The baseline every prefetcher is measured against."""
