"""Data paths between tiers as contended resources.

A :class:`Link` is one direction of one path (PCIe host-to-device, PCIe device-to-host, SSD
read, SSD write, a replica's network link to the shared pool, the pool servers' port).
Transfers on a link are served **first come, first served**, one at a time: a DMA copy engine
processes the copies queued to it in order, and each direction of PCIe has its own engine, so
FIFO per direction is how the hardware behaves. A transfer's duration is ``n_copies x per-copy
latency + bytes / bandwidth`` (or a calibrated profile's copy model), which is why many small
block copies are slower than one large copy.

Because service is FIFO and durations are known when a transfer is queued, its completion
time is exact at issue: :meth:`Link.transfer` returns a SimPy event that fires then. Bytes,
copies and busy time are accounted per link, and busy time per time bucket gives utilisation
over time.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import simpy

DurationModel = Callable[[int, int], float]  # (nbytes, n_copies) -> seconds

#: A copy over a replica's network link also passes the pool servers' port, where the hardware
#: names its bandwidth: both links are busy with it at once (so the hop ends when the later one
#: is done), but it is one transfer, whose bytes are moved once.
SERVER_SIDE = {"net_read": "pool_read", "net_write": "pool_write"}


def linear_duration(latency_s: float, bandwidth_bps: float) -> DurationModel:
    """``n_copies x latency + nbytes / bandwidth``: the classic alpha-beta model."""
    if bandwidth_bps <= 0:
        raise ValueError(f"bandwidth must be > 0, got {bandwidth_bps}")

    def duration(nbytes: int, n_copies: int) -> float:
        return n_copies * latency_s + nbytes / bandwidth_bps

    return duration


class Link:
    def __init__(self, env: simpy.Environment, name: str, duration: DurationModel, bucket_s: float) -> None:
        self.env = env
        self.name = name
        self._duration = duration
        self._bucket_s = bucket_s
        self.free_at = 0.0
        self.bytes_moved = 0
        self.copies = 0
        self.transfers = 0
        self.busy_s = 0.0
        self.busy_by_bucket: dict[int, float] = {}

    def reserve(self, nbytes: int, n_copies: int) -> float:
        """Queue a transfer now; return its completion time (FIFO behind earlier ones)."""
        if nbytes <= 0:
            return self.env.now
        start = max(self.env.now, self.free_at)
        duration = self._duration(nbytes, n_copies)
        end = start + duration
        self.free_at = end
        self.bytes_moved += nbytes
        self.copies += n_copies
        self.transfers += 1
        self.busy_s += duration
        self._account_busy(start, end)
        return end

    def completion_if_queued(self, nbytes: int, n_copies: int, ready_at: float) -> float:
        """When a transfer queued at ``ready_at`` (now or later) would complete, reserving
        nothing: what a load-or-recompute decision weighs against recomputing."""
        if nbytes <= 0:
            return ready_at
        return max(ready_at, self.free_at) + self._duration(nbytes, n_copies)

    def transfer(self, nbytes: int, n_copies: int) -> simpy.Event:
        """Queue a transfer now; the returned event fires when it completes."""
        return self.env.timeout(self.reserve(nbytes, n_copies) - self.env.now)

    def _account_busy(self, start: float, end: float) -> None:
        width = self._bucket_s
        first, last = int(start // width), int(math.ceil(end / width))
        for bucket in range(first, max(last, first + 1)):
            lo, hi = max(start, bucket * width), min(end, (bucket + 1) * width)
            if hi > lo:
                self.busy_by_bucket[bucket] = self.busy_by_bucket.get(bucket, 0.0) + (hi - lo)

    def utilisation(self, bucket: int) -> float:
        return self.busy_by_bucket.get(bucket, 0.0) / self._bucket_s
