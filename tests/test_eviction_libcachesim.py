"""Agreement with an independent implementation: for LRU, FIFO, S3-FIFO and SIEVE, kvsim's
replay gives exactly libCacheSim's hit count on the same key stream and capacity."""

from __future__ import annotations

import functools

import numpy as np
import pytest

from policies.registry import resolve
from sim.replay import replay_single_tier
from traces import Trace

lcs = pytest.importorskip("libcachesim", reason="libcachesim (PyPI) is not installable on this platform")

POLICIES = {"lru": "LRU", "fifo": "FIFO", "s3fifo": "S3FIFO", "sieve": "Sieve"}


@functools.cache
def streams() -> dict[str, np.ndarray]:
    rng = np.random.default_rng(7)
    zipf = rng.zipf(1.2, 20_000) % 5_000
    loop = np.tile(np.arange(700), 20)
    scan_mix = np.where(rng.random(15_000) < 0.3, rng.integers(0, 300, 15_000), 10_000 + np.arange(15_000))
    bursty = np.concatenate([rng.integers(k * 200, k * 200 + 400, 2_000) for k in range(8)])
    return {"zipf": zipf, "loop": loop, "scan_mix": scan_mix, "bursty": bursty}


def one_block_per_request(keys: np.ndarray) -> Trace:
    n = len(keys)
    return Trace.from_columns(
        arrival_s=np.arange(n, dtype=float),
        input_tokens=np.full(n, 16),
        output_tokens=np.zeros(n, dtype=int),
        block_offsets=np.arange(n + 1),
        flat_hashes=keys.astype(np.uint64),
        block_size=16,
    )


def libcachesim_hits(name: str, keys: np.ndarray, capacity: int) -> int:
    cache = getattr(lcs, name)(capacity)
    # obj_id 0 is reserved in libCacheSim; shift ids by one.
    return sum(bool(cache.get(lcs.Request(obj_size=1, obj_id=int(k) + 1))) for k in keys)


@pytest.mark.parametrize("policy", sorted(POLICIES))
@pytest.mark.parametrize("stream", ["zipf", "loop", "scan_mix", "bursty"])
@pytest.mark.parametrize("capacity", [50, 500, 2_000])
def test_hit_count_equals_libcachesim(policy: str, stream: str, capacity: int) -> None:
    keys = streams()[stream]
    ours = int(replay_single_tier(one_block_per_request(keys), capacity, resolve("eviction", policy)()).sum())
    assert ours == libcachesim_hits(POLICIES[policy], keys, capacity)
