"""Sessions recovered from prefix chains, for traces that carry none (Mooncake's).

A conversation's next turn re-sends its history: the new prompt is the previous prompt, the
reply and the user's new message, so its block chain starts with every full block of the
previous prompt. That is the signature this module looks for: a request *continues* an
earlier one when its chain holds the earlier request's whole chain but for that request's last
block (which is usually partial, and so hashes differently once the prompt grows past it).
Where several earlier requests qualify, the one sharing the deepest block is the parent (ties:
the latest to touch it). A shared system prompt does not make two conversations one: a new
conversation shares only the prompt's blocks with any earlier request, not that request's
whole chain.

The inferred session is the first request's index in the chain of continuations, and the turn
counts along it from 1. On the Mooncake conversation slice a third of the requests continue
an earlier one, a median of two minutes later. Sessions let the policies that act on them
(``prefetch=session_aware``, workload-aware eviction's turn signal) act on such a trace; they
are inferred, not recorded, so two users who send the same long prompt and extend it are one
session here, which for prefix reuse they are.
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np

from traces.schema import NO_SESSION, Trace


def infer_sessions(trace: Trace) -> Trace:
    """``trace`` with sessions and turns recovered from its prefix chains (module docstring).
    A trace that already has sessions is refused: they are the record, inference a guess."""
    if (trace.session_id != NO_SESSION).any():
        raise ValueError(f"{trace.source} already has sessions; inferring them would replace the recorded ones")
    offsets = trace.block_offsets.tolist()
    hashes = trace.block_hashes.tolist()
    n = len(trace)
    session = np.arange(n, dtype=np.int64)
    turn = np.ones(n, dtype=np.int32)
    latest_toucher: dict[int, int] = {}
    for r in range(n):
        start, end = offsets[r], offsets[r + 1]
        for position in range(end - 1, start, -1):  # deepest first; the chain's head is shared by all
            parent = latest_toucher.get(hashes[position])
            if parent is not None:
                if position - start + 1 >= offsets[parent + 1] - offsets[parent] - 1:
                    session[r], turn[r] = session[parent], turn[parent] + 1
                break
        for position in range(start, end):
            latest_toucher[hashes[position]] = r
    return replace(trace, session_id=session, turn=turn)
