"""Conversations: multi-turn chat sessions and agent loops.

Each turn of a session re-sends the whole conversation so far: turn ``k``'s prompt is turn
``k-1``'s prompt, its answer and a new user (or tool) message. Every session starts with one
of a few shared system prompts (Zipf-popular), so heads are shared across sessions and
histories within one. A session's token stream only ever grows, so block ``j`` of a session is
the same tokens on every turn and carries the same id; the partial last block of a prompt is
not hashed (engines only cache full blocks).

Agent loops are the same process with different shapes: a long shared tool-definition prefix,
many turns, short tool outputs appended, short generations and think times of seconds (a
program, not a person, replies).
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from traces.generators._common import TraceAssembler, arrival_process, lognormal_int, zipf_choice
from traces.generators._ids import block_ids, segment_key
from traces.schema import Trace


@dataclass(frozen=True)
class SessionParams:
    n_requests: int = 2000
    # Requests per second, all turns together, once sessions of every age are running.
    rate: float = 4.0
    # Sessions start this many seconds before the trace does, so that it begins mid-stream at
    # the full rate, as a slice of a real service's log does. From a cold start (0: a service
    # just opened, no conversation under way) the trace runs below the rate for about a
    # session's lifetime, its first requests all first turns. None: three mean lifetimes
    # (mean_turns x the mean think time; 11 minutes for the chat defaults, 2 for agent loops),
    # past which a twentieth of the sessions live on (geometric turns).
    warmup_s: float | None = None
    arrival: str = "poisson"  # process of session starts: poisson, gamma, on_off
    cv: float = 2.0
    on_s: float = 60.0
    off_s: float = 60.0
    block_size: int = 16
    n_system_prompts: int = 4
    system_prompt_tokens: int = 512  # rounded to whole blocks
    system_zipf: float = 1.2
    mean_turns: float = 4.0  # geometric number of turns per session
    message_median: int = 400  # tokens of each new user/tool message
    message_sigma: float = 0.9
    output_median: int = 250
    output_sigma: float = 0.7
    think_median_s: float = 40.0  # gap between a turn's arrival and the next's
    think_sigma: float = 0.8
    max_context_tokens: int = 32768  # a session ends when its prompt would exceed this
    category: str = "chat"

    def __post_init__(self) -> None:
        checks = {
            "n_requests": self.n_requests >= 1,
            "rate": 0 < self.rate < float("inf"),
            "warmup_s": self.warmup_s is None or 0 <= self.warmup_s < float("inf"),
            "block_size": self.block_size >= 1,
            "n_system_prompts": self.n_system_prompts >= 1,
            "system_prompt_tokens": self.system_prompt_tokens >= 0,
            "mean_turns": self.mean_turns >= 1,
            "message_median": self.message_median >= 1,
            "output_median": self.output_median >= 1,
            "think_median_s": self.think_median_s > 0,
            "max_context_tokens": self.max_context_tokens > self.system_prompt_tokens + self.block_size,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"session generator: {name}={getattr(self, name)!r} is out of range")


def warmup_seconds(params: SessionParams) -> float:
    """How long before the trace its sessions start (:attr:`SessionParams.warmup_s`)."""
    if params.warmup_s is not None:
        return params.warmup_s
    mean_think_s = params.think_median_s * float(np.exp(params.think_sigma**2 / 2))  # lognormal mean
    return 3.0 * params.mean_turns * mean_think_s


AGENT_DEFAULTS = dict(
    n_system_prompts=3,
    system_prompt_tokens=2048,  # tool definitions and instructions
    system_zipf=1.0,
    mean_turns=12.0,
    message_median=300,  # a tool's output
    message_sigma=1.0,
    output_median=80,  # a tool call
    output_sigma=0.6,
    think_median_s=3.0,
    think_sigma=0.7,
    max_context_tokens=65536,
    category="agent",
)


def generate_sessions(params: SessionParams, seed: int, *, session_offset: int = 0) -> Trace:
    rng = np.random.default_rng(seed)
    bs = params.block_size
    sys_blocks = round(params.system_prompt_tokens / bs)
    sys_tokens = sys_blocks * bs
    root = int(rng.integers(1, 2**63))
    sys_keys = [segment_key(root, p) for p in range(params.n_system_prompts)]
    sys_ids = [block_ids(k, 0, sys_blocks) for k in sys_keys]
    process = arrival_process(params.arrival, params.rate / params.mean_turns, params.cv, params.on_s, params.off_s)

    out = TraceAssembler()
    n_sessions = 0
    batch = max(16, int(params.n_requests / params.mean_turns * 1.2))
    next_start = -warmup_seconds(params)
    # Later batches only add sessions starting after ``next_start``, so the first n arrivals
    # are final once n requests arrive before it: ``settled`` counts those, ``later`` holds the
    # others (a heap), so that no batch re-counts every arrival so far.
    settled, later = 0, []
    while settled < params.n_requests:
        starts = next_start + process.times(batch, rng)
        next_start = float(starts[-1])
        turns = rng.geometric(1.0 / params.mean_turns, batch)
        prompts = zipf_choice(rng, params.n_system_prompts, params.system_zipf, batch)
        contents = rng.integers(1, 2**63, batch)
        for s in range(batch):
            n_turns = int(turns[s])
            messages = lognormal_int(
                rng, params.message_median, params.message_sigma, n_turns, 1, params.max_context_tokens
            )
            outputs = lognormal_int(rng, params.output_median, params.output_sigma, n_turns, 1, 8192)
            thinks = rng.lognormal(np.log(params.think_median_s), params.think_sigma, n_turns)
            prompt_tokens = sys_tokens + np.cumsum(messages) + np.concatenate(([0], np.cumsum(outputs[:-1])))
            n_turns = int(np.searchsorted(prompt_tokens, params.max_context_tokens, side="right"))
            if n_turns == 0:
                continue
            session = session_offset + n_sessions
            n_sessions += 1
            last_at = float(starts[s])
            for k in range(n_turns - 1):
                last_at += float(thinks[k])
            if last_at < 0:
                continue  # ended before the trace began (warmup_s): nothing of it is in the trace
            p = int(prompts[s])
            longest = int(prompt_tokens[n_turns - 1]) // bs
            own = block_ids(
                segment_key(sys_keys[p], int(contents[s])),
                sys_blocks,
                max(longest, sys_blocks),
            )
            head = np.concatenate((sys_ids[p], own))
            at = float(starts[s])
            for k in range(n_turns):
                if at >= 0:  # a turn before the trace began (warmup_s) is not in it
                    n_in = int(prompt_tokens[k])
                    out.add(at, n_in, int(outputs[k]), head[: n_in // bs], session=session, turn=k + 1)
                    heapq.heappush(later, at)
                at += float(thinks[k])
        while later and later[0] <= next_start:
            heapq.heappop(later)
            settled += 1
    return out.build(
        block_size=bs,
        n_requests=params.n_requests,
        category=params.category,
        source=f"<{params.category} generator seed={seed}>",
    )
