"""A service that hosts several workloads at once, and the default workload built from it.

Components are generated independently (each with its own seed drawn from the mixed seed)
at a share of the total rate and merged by arrival time, and the trace is the first
``n_requests`` of the merged stream, so every component runs through all of it; each keeps its
category so per-class results can be split apart.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.schema import NO_SESSION, Trace


@dataclass(frozen=True)
class MixedParams:
    n_requests: int = 2000
    rate: float = 6.0
    arrival: str = "poisson"
    cv: float = 2.0
    on_s: float = 60.0
    off_s: float = 60.0
    block_size: int = 16
    chat: float = 0.55  # shares of the request rate per component
    rag: float = 0.25
    agent: float = 0.2
    shared_prompt: float = 0.0
    long_context: float = 0.0
    # The conversational components' (chat, agent; see SessionParams): sessions start this long
    # before the trace does, so it opens mid-stream with conversations of every age under way
    # and each component at its share of the rate throughout (from a cold start, chat and agent
    # traffic would take minutes to ramp up to it while the single-shot components ran at once).
    # None: each component's own default, three of its sessions' mean lifetimes.
    warmup_s: float | None = None

    def __post_init__(self) -> None:
        # Checked here: each component gets a share of the rate, and would name that instead.
        if not 0 < self.rate < float("inf"):
            raise ValueError(f"mixed generator: rate={self.rate!r} is out of range")
        if self.n_requests < 1:
            raise ValueError(f"mixed generator: n_requests must be >= 1, got {self.n_requests}")

    def shares(self) -> dict[str, float]:
        shares = {k: getattr(self, k) for k in ("chat", "rag", "agent", "shared_prompt", "long_context")}
        if any(v < 0 for v in shares.values()) or sum(shares.values()) <= 0:
            raise ValueError(f"mixed generator: shares must be >= 0 with a positive sum, got {shares}")
        total = sum(shares.values())
        return {k: v / total for k, v in shares.items() if v > 0}


def merge(parts: list[Trace], *, block_size: int, source: str) -> Trace:
    """One trace holding every request of ``parts``, ordered by arrival (ties: part order)."""
    arrival = np.concatenate([p.arrival_s for p in parts])
    order = np.argsort(arrival, kind="stable")
    lengths = np.concatenate([p.blocks_per_request() for p in parts])[order]
    starts = np.concatenate([p.block_offsets[:-1] + base for p, base in zip(parts, _bases(parts), strict=True)])[order]
    flat_all = np.concatenate([p.block_hashes for p in parts])
    offsets = np.zeros(len(order) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    index = np.repeat(starts - offsets[:-1], lengths) + np.arange(offsets[-1])
    sessions, next_session = [], 0
    for p in parts:
        has = p.session_id != NO_SESSION
        sessions.append(np.where(has, p.session_id + next_session, NO_SESSION))
        next_session += int(p.session_id.max()) + 1 if has.any() else 0
    return Trace.from_columns(
        arrival_s=arrival[order],
        input_tokens=np.concatenate([p.input_tokens for p in parts])[order],
        output_tokens=np.concatenate([p.output_tokens for p in parts])[order],
        block_offsets=offsets,
        flat_hashes=flat_all[index],
        block_size=block_size,
        session_id=np.concatenate(sessions)[order],
        turn=np.concatenate([p.turn for p in parts])[order],
        categories=np.concatenate([np.asarray(p.categories, dtype=object)[p.category_code] for p in parts])[order],
        source=source,
    )


def _bases(parts: list[Trace]) -> list[int]:
    bases, total = [], 0
    for p in parts:
        bases.append(total)
        total += p.n_block_accesses
    return bases
