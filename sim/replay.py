"""Cache-only replay: a trace's block-access stream through a cache, with no timing.

Every prefix block of every request, in trace order and head first, is one access; a miss
inserts the block (evicting first when full). This is the semantics of a cache simulator such
as libCacheSim, so hit ratios here are directly comparable with one.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable

import numpy as np
import pandas as pd

from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView
from policies.registry import policy_label, resolve
from sim.blocks import next_use, remap_blocks
from sim.config import SimConfig
from sim.result import Result
from traces.schema import Trace

_NO_PINS: frozenset[int] = frozenset()
_FAST_CHUNK = 1 << 16


def replay_single_tier(
    trace: Trace,
    capacity_blocks: int,
    policy: EvictionPolicy,
    *,
    block_tokens: int | None = None,
    block_bytes: int = 0,
) -> np.ndarray:
    """Replay ``trace`` through one tier of ``capacity_blocks``; a hit flag per access."""
    if capacity_blocks < 1:
        raise ValueError(f"capacity must be at least one block, got {capacity_blocks}")
    offsets, keys = remap_blocks(trace, block_tokens)
    # Only the class that defines the fast path may use it: a subclass overriding a hook
    # (a user's MRU built on LRU) must be replayed through its hooks.
    fast = type(policy).__dict__.get("replay_hits")
    if fast is not None:
        fast = policy.replay_hits
        policy.bind(capacity_blocks, WorkloadView(tier="hbm", block_bytes=block_bytes, categories=trace.categories))
        return _replay_in_chunks(fast, keys, capacity_blocks)
    workload = WorkloadView(
        tier="hbm",
        block_bytes=block_bytes,
        categories=trace.categories,
        next_use=next_use(keys) if policy.offline else None,
    )
    policy.bind(capacity_blocks, workload)
    hits = np.zeros(len(keys), dtype=bool)
    resident: set[int] = set()
    on_request, on_access, on_insert, victim = (
        policy.on_request,
        policy.on_access,
        policy.on_insert,
        policy.victim,
    )
    for r in range(len(trace)):
        start, end = int(offsets[r]), int(offsets[r + 1])
        on_request(
            RequestContext(
                request_index=r,
                now_s=float(trace.arrival_s[r]),
                arrival_s=float(trace.arrival_s[r]),
                session_id=int(trace.session_id[r]),
                turn=int(trace.turn[r]),
                category=int(trace.category_code[r]),
                n_blocks=end - start,
                access_offset=start,
            )
        )
        # Python ints: hashing NumPy scalars is several times slower. Converting one request
        # at a time keeps memory flat on traces of a hundred million accesses.
        for position, block in enumerate(keys[start:end].tolist()):
            if block in resident:
                hits[start + position] = True
                on_access(block, position)
            else:
                if len(resident) >= capacity_blocks:
                    resident.remove(victim(_NO_PINS))
                resident.add(block)
                on_insert(block, position)
    return hits


def _replay_in_chunks(fast: Callable[..., bytearray], keys: np.ndarray, capacity_blocks: int) -> np.ndarray:
    """A policy's whole-stream fast path, fed Python ints converted a chunk at a time so that
    a hundred-million-access stream never exists as one list of Python objects."""
    chunks = (keys[i : i + _FAST_CHUNK].tolist() for i in range(0, len(keys), _FAST_CHUNK))
    hits = fast(itertools.chain.from_iterable(chunks), len(keys), capacity_blocks)
    return np.frombuffer(hits, dtype=np.uint8).astype(bool)


def run_replay(config: SimConfig, trace: Trace) -> Result:
    """Replay mode of :func:`sim.run`: single-tier hit ratios at ``config.tiers.hbm_blocks``."""
    capacity = config.tiers.hbm_blocks
    if capacity is None:
        raise ValueError("replay mode needs tiers.hbm_blocks (the cache capacity in blocks)")
    factory = resolve("eviction", config.eviction)
    policy = factory()
    hits = replay_single_tier(trace, capacity, policy, block_tokens=config.tiers.block_tokens)
    offsets, _ = remap_blocks(trace, config.tiers.block_tokens)
    per_request_hits = (
        np.add.reduceat(hits.astype(np.int64), offsets[:-1]) if len(hits) else np.zeros(len(trace), np.int64)
    )
    per_request_hits[np.diff(offsets) == 0] = 0
    requests = pd.DataFrame(
        {
            "request_id": trace.request_id,
            "blocks": np.diff(offsets),
            "hbm_hit_blocks": per_request_hits,
        }
    )
    summary = {
        "mode": "replay",
        "eviction": policy_label(factory),
        "hbm_blocks": capacity,
        "n_requests": len(trace),
        "n_accesses": int(len(hits)),
        "block_hit_ratio": float(hits.mean()) if len(hits) else 0.0,
    }
    return Result(summary, requests)
