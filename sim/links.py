"""Data paths between tiers as contended resources.

A :class:`Link` is one direction of one path (PCIe host-to-device, PCIe device-to-host, SSD
read, SSD write, a replica's network link to the shared pool, the pool servers' port).
Transfers on a link are served **first come, first served**, one at a time: a DMA copy engine
processes the copies queued to it in order, and each direction of PCIe has its own engine, so
FIFO per direction is how the hardware behaves. A transfer's duration is ``n_copies x per-copy
latency + bytes / bandwidth`` (or a calibrated profile's copy model), which is why many small
block copies are slower than one large copy: a DMA engine works through its copies one by one,
and the per-copy overhead measured back to back (``hwmodels/profiles/*/raw.json``, 256 copies
of 16 KiB: 3.1 us each on an H100) holds the engine.

A device that keeps many requests in flight at once (an NVMe SSD's queue pairs, an RDMA NIC's
outstanding work requests) has a **latency** that does not hold it: a transfer lands
``latency_s`` after its bytes have crossed, but the next one's bytes start as soon as the
previous one's are through. Charged on the link instead, a per-request latency would cap a
stream of back-to-back requests below the device's rated bandwidth, which real devices reach:
an NVMe drive its datasheet sequential rate at 128 KiB requests from queue depth 8 on (the
Micron 7450 MAX, rated 6.8 GB/s, read 6.46 GiB/s by fio in 2 MiB requests at QD >= 8,
NVIDIA/recsys-examples#472), a 400 Gb/s NIC 48 GB/s in a batch of 1 MB blocks (ROCm/mori#351).

Links that are two directions of one **medium** take turns on it: an SSD's reads and writes
are both served by the same flash and controller (a drive rated 7 GB/s read and 5 GB/s write
does not do both at once; NVIDIA/recsys-examples#472 names concurrent reads and writes as a
cause of lost SSD bandwidth), so its two links share one queue, each transfer priced at its
own direction's rate. PCIe and a NIC are full duplex: each direction is a medium of its own.

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


class Medium:
    """What a link's transfers take turns on: when it is next free. Two links given the same
    medium (an SSD's read and write) queue behind each other's transfers."""

    __slots__ = ("free_at",)

    def __init__(self) -> None:
        self.free_at = 0.0


class Link:
    def __init__(
        self,
        env: simpy.Environment,
        name: str,
        duration: DurationModel,
        bucket_s: float,
        *,
        latency_s: float = 0.0,
        medium: Medium | None = None,
    ) -> None:
        if latency_s < 0:
            raise ValueError(f"latency must be >= 0, got {latency_s}")
        self.env = env
        self.name = name
        self._duration = duration
        self._bucket_s = bucket_s
        #: Delay from a transfer's bytes crossing to its landing, which does not hold the link.
        self.latency_s = latency_s
        self.medium = medium if medium is not None else Medium()
        self.done_at = 0.0  # when the last transfer queued lands
        self.bytes_moved = 0
        self.copies = 0
        self.transfers = 0
        self.busy_s = 0.0
        self.busy_by_bucket: dict[int, float] = {}

    def reserve(self, nbytes: int, n_copies: int) -> float:
        """Queue a transfer now; return its completion time (FIFO behind earlier ones)."""
        if nbytes <= 0:
            return self.env.now
        start = max(self.env.now, self.medium.free_at)
        duration = self._duration(nbytes, n_copies)
        self.medium.free_at = start + duration
        end = start + duration + self.latency_s
        self.done_at = max(self.done_at, end)
        self.bytes_moved += nbytes
        self.copies += n_copies
        self.transfers += 1
        self.busy_s += duration
        self._account_busy(start, start + duration)
        return end

    def completion_if_queued(self, nbytes: int, n_copies: int, ready_at: float) -> float:
        """When a transfer queued at ``ready_at`` (now or later) would complete, reserving
        nothing: what a load-or-recompute decision weighs against recomputing."""
        if nbytes <= 0:
            return ready_at
        return max(ready_at, self.medium.free_at) + self._duration(nbytes, n_copies) + self.latency_s

    @property
    def free_at(self) -> float:
        """When the link's medium is next free to start a transfer."""
        return self.medium.free_at

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
