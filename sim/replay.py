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

from policies.admission.base import AdmissionPolicy
from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView
from policies.registry import UnknownPolicyError, policy_label, resolve
from sim.blocks import BlockSizeError, check_block_tokens, next_use, remap_blocks
from sim.build import (
    ConfigError,
    bind_policy,
    check_policy_builds,
    check_shared_keys,
    is_integer,
    resolve_tier_eviction,
    warn_of_unfilled_tiers,
)
from sim.config import TIER_NAMES, SimConfig
from sim.metrics import request_labels
from sim.result import Result
from traces.schema import Trace

_NO_PINS: frozenset[int] = frozenset()
_FAST_CHUNK = 1 << 16


def _replay_context(trace: Trace, r: int, start: int, end: int) -> RequestContext:
    """What a policy is told of request ``r`` in replay mode, where every touch is at arrival."""
    return RequestContext(
        request_index=r,
        now_s=float(trace.arrival_s[r]),
        arrival_s=float(trace.arrival_s[r]),
        session_id=int(trace.session_id[r]),
        turn=int(trace.turn[r]),
        category=int(trace.category_code[r]),
        n_blocks=end - start,
        access_offset=start,
    )


def replay_single_tier(
    trace: Trace,
    capacity_blocks: int,
    policy: EvictionPolicy,
    *,
    block_tokens: int | None = None,
    block_bytes: int = 0,
    key: str = "eviction",
) -> np.ndarray:
    """Replay ``trace`` through one tier of ``capacity_blocks``; a hit flag per access. ``key``
    is the config key that chose ``policy``, named if it fails to bind."""
    if capacity_blocks < 1:
        raise ValueError(f"capacity must be at least one block, got {capacity_blocks}")
    offsets, keys = remap_blocks(trace, block_tokens)
    # Only the class that defines the fast path may use it: a subclass overriding a hook
    # (a user's MRU built on LRU) must be replayed through its hooks.
    fast = type(policy).__dict__.get("replay_hits")
    whole = type(policy).__dict__.get("replay_trace")
    if fast is not None or whole is not None:
        bind_policy(key, policy, capacity_blocks, WorkloadView("hbm", block_bytes, categories=trace.categories))
    if fast is not None:
        return _replay_in_chunks(policy.replay_hits, keys, capacity_blocks)
    if whole is not None:
        return np.frombuffer(policy.replay_trace(trace, offsets, keys, capacity_blocks), dtype=np.uint8).astype(bool)
    workload = WorkloadView(
        tier="hbm",
        block_bytes=block_bytes,
        categories=trace.categories,
        next_use=next_use(keys) if policy.offline else None,
    )
    bind_policy(key, policy, capacity_blocks, workload)
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
        on_request(_replay_context(trace, r, start, end))
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


MISS = -1


def replay_tiers(
    trace: Trace,
    capacities: list[int],
    make_policy: Callable[[], EvictionPolicy],
    *,
    block_tokens: int | None = None,
    check_invariants: bool = True,
    tier_policies: dict[str, Callable[[], EvictionPolicy]] | None = None,
    tier_names: list[str] | None = None,
    admission: AdmissionPolicy | None = None,
) -> np.ndarray:
    """Replay through a hierarchy (HBM first); per access the tier that hit, or :data:`MISS`.

    The hierarchy is inclusive: a block found in a lower tier is copied up to HBM and keeps its
    lower copy. A missed block is computed into HBM. Where blocks go below HBM is ``admission``'s
    (bound here to the tier names), as in serve mode: a computed block is also copied to its
    ``write_through_tiers``, and a block evicted from a tier goes to ``demote_to`` unless that
    tier already holds it, or is dropped. ``None``: write-back down the chain (``ssd_spill``),
    each eviction one tier down, the last tier dropping. Each tier has its own policy instance, from
    ``tier_policies[name]`` where given, else from ``make_policy``; tiers are named by
    ``tier_names``, by default hbm, dram, ssd, remote in order. Offline policies see the access
    stream's future through ``next_access`` (blocks also arrive by demotion).
    """
    if not capacities or any(c < 1 for c in capacities):
        raise ValueError(f"every tier needs at least one block, got {capacities}")
    offsets, keys = remap_blocks(trace, block_tokens)
    oracle = None
    names = tier_names or [TIER_NAMES[t] if t < len(TIER_NAMES) else f"tier{t}" for t in range(len(capacities))]
    if len(names) != len(capacities):
        raise ValueError(f"{len(capacities)} tier capacities but {len(names)} tier names")
    policies = [(tier_policies or {}).get(name, make_policy)() for name in names]
    if any(p.offline for p in policies):
        from sim.blocks import AccessOracle

        oracle = AccessOracle(keys)
    for tier, (policy, capacity) in enumerate(zip(policies, capacities, strict=True)):
        view = WorkloadView(
            tier=names[tier],
            block_bytes=0,
            categories=trace.categories,
            next_use=oracle.next_use if oracle else None,
            next_access=oracle.next_access if oracle else None,
        )
        key = f"tier_eviction.{names[tier]}" if names[tier] in (tier_policies or {}) else "eviction"
        bind_policy(key, policy, capacity, view)
    demote_to, write_through = _placement(admission, names)
    resident: list[dict[int, int]] = [{} for _ in capacities]  # block -> chain position
    where = np.full(len(keys), MISS, dtype=np.int8)

    def place(tier: int, block: int, position: int) -> None:
        held = resident[tier]
        if len(held) >= capacities[tier]:
            victim = policies[tier].victim(_NO_PINS)
            victim_position = held.pop(victim)
            below = demote_to[tier]
            if below is not None:
                if victim in resident[below]:
                    policies[below].on_access(victim, victim_position)
                else:
                    place(below, victim, victim_position)
        held[block] = position
        policies[tier].on_insert(block, position)
        if check_invariants and len(held) > capacities[tier]:
            raise AssertionError(f"tier {tier} holds {len(held)} blocks, capacity {capacities[tier]}")

    for r in range(len(trace)):
        start, end = int(offsets[r]), int(offsets[r + 1])
        ctx = _replay_context(trace, r, start, end)
        for policy in policies:
            policy.on_request(ctx)
        for position, block in enumerate(keys[start:end].tolist()):
            hit = next((t for t, held in enumerate(resident) if block in held), MISS)
            where[start + position] = hit
            if hit == 0:
                policies[0].on_access(block, position)
                continue
            if hit > 0:
                policies[hit].on_access(block, position)
            place(0, block, position)
            if hit == MISS and write_through is not None:
                for tier in write_through(position):
                    if block not in resident[tier]:
                        place(tier, block, position)
    return where


def _placement(
    admission: AdmissionPolicy | None, names: list[str]
) -> tuple[list[int | None], Callable[[int], list[int]] | None]:
    """Per tier, the tier its victims are demoted to (``None``: dropped), and the tiers a
    computed block at a chain position is written through to, top first (``None``: none ever),
    from ``admission`` bound to ``names``; without one, the write-back chain."""
    if admission is None:
        return [t + 1 if t + 1 < len(names) else None for t in range(len(names))], None
    admission.bind(tuple(names))
    index = {name: t for t, name in enumerate(names)}

    def below(name: str | None, upper: int, method: str) -> int | None:
        if name is None:
            return None
        if index.get(name, -1) <= upper:
            raise ValueError(
                f"{type(admission).__name__}.{method} returned {name!r}; "
                f"expected a tier below {names[upper]!r} among {names}"
            )
        return index[name]

    demote_to = [below(admission.demote_to(name), t, "demote_to") for t, name in enumerate(names)]
    if type(admission).write_through_tiers is AdmissionPolicy.write_through_tiers:
        return demote_to, None  # never overridden: nothing is written through

    def write_through(position: int) -> list[int]:
        return sorted(below(name, 0, "write_through_tiers") for name in admission.write_through_tiers(position))  # type: ignore[type-var]

    return demote_to, write_through


def usable_prefix(hit: np.ndarray, offsets: np.ndarray) -> np.ndarray:
    """Per access, whether it hit *and* every earlier block of its request hit too.

    A prefix cache can only skip computing a prompt's blocks up to its first miss: a block
    cached after a hole is attended to only through the recomputed blocks before it, so it is
    recomputed as well (vLLM and SGLang match the longest cached prefix). A per-block hit ratio
    counts such blocks; this does not. Policies that evict in chain order (LRU, which ages a
    chain's blocks together; Belady, for which an earlier block is never needed later than a
    later one) leave no holes, and then the two agree.
    """
    n = len(hit)
    if n == 0:
        return hit.astype(bool)
    lengths = np.diff(offsets)
    request = np.repeat(np.arange(len(lengths)), lengths)
    position = np.arange(n) - np.repeat(offsets[:-1], lengths)
    miss_at = np.where(hit, np.iinfo(np.int64).max, position)
    first_miss = np.full(len(lengths), np.iinfo(np.int64).max)
    np.minimum.at(first_miss, request, miss_at)
    return position < first_miss[request]


def run_replay(config: SimConfig, trace: Trace) -> Result:
    """Replay mode of :func:`sim.run`: hit ratios at ``tiers.hbm_blocks`` (and, when set,
    ``tiers.dram_blocks`` / ``tiers.ssd_blocks`` / ``tiers.remote_blocks`` below it). Replay
    runs one cache, so a shared pool is just its last tier."""
    tiers = config.tiers
    capacity = tiers.hbm_blocks
    hw = config.hardware
    lower_names = TIER_NAMES[1:]
    if hw.hbm_gb is not None:
        # The HBM tier always has a size in blocks here (the replay mode's default), so a size
        # in gigabytes would otherwise be dropped without a word, and a sweep over it would
        # replay the same capacity every time.
        raise ConfigError("hardware.hbm_gb", "replay mode sizes the cache in blocks: set tiers.hbm_blocks instead")
    for tier in lower_names:
        gb, blocks = getattr(hw, f"{tier}_gb"), getattr(tiers, f"{tier}_blocks")
        if gb and blocks is None:
            # Replay has no model or GPU to turn gigabytes into blocks; ignoring the tier would
            # replay a single tier while the user believes they asked for two.
            raise ConfigError(
                f"hardware.{tier}_gb",
                f"replay mode sizes tiers in blocks: set tiers.{tier}_blocks (or hardware.{tier}_gb=0)",
            )
    for key, value in [("tiers.hbm_blocks", capacity)] + [
        (f"tiers.{t}_blocks", getattr(tiers, f"{t}_blocks")) for t in lower_names
    ]:
        if key == "tiers.hbm_blocks" and value is None:
            raise ConfigError(key, "replay mode needs the cache capacity in blocks, e.g. tiers.hbm_blocks=4000")
        least = 1 if key == "tiers.hbm_blocks" else 0  # 0 lower-tier blocks: no such tier, as in serve mode
        if value is not None and (not is_integer(value) or value < least):
            raise ConfigError(key, f"must be an integer >= {least} block{'s' if least != 1 else ''}, got {value!r}")
    check_shared_keys(config)
    try:
        factory = resolve("eviction", config.eviction)
    except UnknownPolicyError as exc:
        raise ConfigError("eviction", str(exc)) from None
    check_policy_builds("eviction", factory)
    if tiers.block_tokens is not None:
        try:
            check_block_tokens(trace.block_size, tiers.block_tokens)
        except BlockSizeError as exc:
            raise ConfigError("tiers.block_tokens", str(exc)) from None
    below = [(name, getattr(tiers, f"{name}_blocks")) for name in lower_names if getattr(tiers, f"{name}_blocks")]
    names = ["hbm", *(name for name, _ in below)]
    lower = [c for _, c in below]
    per_tier = resolve_tier_eviction(config, names)
    if lower:
        try:
            placement = resolve("admission", config.admission)
        except UnknownPolicyError as exc:
            raise ConfigError("admission", str(exc)) from None
        admission = placement()
        bind_policy("admission", admission, tuple(names))
        warn_of_unfilled_tiers(placement, names)
        where = replay_tiers(trace, [capacity, *lower], factory, block_tokens=tiers.block_tokens,
                             check_invariants=config.check_invariants, tier_policies=per_tier,
                             tier_names=names, admission=admission)  # fmt: skip
    else:
        key = "tier_eviction.hbm" if "hbm" in per_tier else "eviction"
        policy = per_tier.get("hbm", factory)()
        hits = replay_single_tier(trace, capacity, policy, block_tokens=tiers.block_tokens, key=key)
        where = np.where(hits, 0, MISS).astype(np.int8)
    offsets, _ = remap_blocks(trace, tiers.block_tokens)
    request_of = np.repeat(np.arange(len(trace)), np.diff(offsets))
    columns = {"request_id": trace.request_id, **request_labels(trace), "blocks": np.diff(offsets)}
    summary = {
        "mode": "replay",
        "eviction": policy_label(factory),
        **{f"eviction_{tier}": policy_label(f) for tier, f in per_tier.items()},
        **{f"{name}_blocks": c for name, c in zip(names, [capacity, *lower], strict=True)},
        "n_requests": len(trace),
        "n_accesses": int(len(where)),
        "block_hit_ratio": float((where != MISS).mean()) if len(where) else 0.0,
        "prefix_hit_ratio": float(usable_prefix(where != MISS, offsets).mean()) if len(where) else 0.0,
    }
    for t, name in enumerate(names):
        in_tier = where == t
        columns[f"{name}_hit_blocks"] = np.bincount(request_of[in_tier], minlength=len(trace))
        if lower:
            summary[f"{name}_hit_ratio"] = float(in_tier.mean()) if len(where) else 0.0
    return Result(summary, pd.DataFrame(columns))
