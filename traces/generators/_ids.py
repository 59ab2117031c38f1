"""Prefix-chained block ids for generated prompts, computed a segment at a time.

A prompt is a sequence of segments (a system prompt, a document, a conversation's history, a
question), each a known token stream. The id of a block must be equal exactly when the whole
prefix up to it is equal. Chaining by segment gives that without a per-block Python loop:
``key`` identifies everything before a segment, ``combine(key, segment)`` identifies the prefix
through it, and the block at offset ``j`` inside it gets ``mix64(that ^ mix64(j))``. Requests
that share the same leading segments therefore share ids, and nothing else does.
"""

from __future__ import annotations

import numpy as np

from traces.hashing import combine, mix64


def segment_key(parent_key: int | np.uint64, content: int) -> np.uint64:
    """Identity of the prefix ``parent`` followed by the segment with content id ``content``."""
    return np.uint64(combine(np.uint64(parent_key), np.uint64(content)))


def block_ids(key: int | np.uint64, start: int, stop: int) -> np.ndarray:
    """Ids of blocks ``start..stop-1`` of the token stream identified by ``key``."""
    offsets = np.arange(start, stop, dtype=np.uint64)
    return mix64(np.uint64(key) ^ mix64(offsets))
