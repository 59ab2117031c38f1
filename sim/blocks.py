"""From a trace's hash blocks to the engine's KV blocks, and the future of the access stream.

Re-mapping rule (a trace hashed at ``B_t`` tokens a block, an engine paging at ``B_e``):

* ``B_e = B_t / r`` (finer engine blocks): trace block ``i`` becomes ``r`` engine blocks with
  ids ``combine(h_i, j)``, ``j = 0..r-1``. Because ``h_i`` already names the whole prefix up to
  block ``i``, the derived ids form a hash chain too: two requests share engine block ``(i, j)``
  exactly when they share trace block ``i``. Reuse inside a trace block that the trace does not
  reveal (prefixes diverging mid-block) is not invented.
* ``B_e = r x B_t`` (coarser engine blocks): engine block ``k`` covers trace blocks
  ``k*r .. k*r + r - 1`` and takes the id of the last of them (which names the whole prefix);
  trailing trace blocks that do not fill an engine block are not cacheable, as in a real
  engine that hashes only full blocks.
* Any other ratio is a configuration error.

Prompt tokens past the last hashed block are private to their request: they occupy KV memory
while it runs but are never looked up.
"""

from __future__ import annotations

import numpy as np

from traces.hashing import combine
from traces.schema import Trace

NEVER = np.iinfo(np.int64).max


class BlockSizeError(ValueError):
    pass


def check_block_tokens(trace_block_tokens: int, engine_block_tokens: int) -> None:
    """Raise :class:`BlockSizeError` unless one block size is a multiple of the other."""
    bt, be = trace_block_tokens, engine_block_tokens
    if be <= 0:
        raise BlockSizeError(f"tiers.block_tokens must be > 0, got {be}")
    if bt % be and be % bt:
        raise BlockSizeError(
            f"tiers.block_tokens={be} does not divide or multiply the trace's block size {bt}; "
            f"use a divisor or a multiple of {bt} (e.g. {bt}, {max(1, bt // 2)} or {2 * bt})"
        )


def remap_blocks(trace: Trace, engine_block_tokens: int | None) -> tuple[np.ndarray, np.ndarray]:
    """``(offsets, ids)`` of each request's engine blocks in CSR form (see the module rule)."""
    bt = trace.block_size
    be = bt if engine_block_tokens is None else int(engine_block_tokens)
    check_block_tokens(bt, be)
    if be == bt:
        return trace.block_offsets, trace.block_hashes
    counts = np.diff(trace.block_offsets)
    if bt % be == 0:
        r = bt // be
        ids = combine(
            np.repeat(trace.block_hashes, r),
            np.tile(np.arange(r, dtype=np.uint64), len(trace.block_hashes)),
        )
        # A hashed partial last trace block yields engine blocks only where it has tokens.
        fine_counts = np.minimum(counts * r, -(-trace.input_tokens.astype(np.int64) // be))
        keep = np.arange(len(ids)) - np.repeat(trace.block_offsets[:-1] * r, counts * r) < np.repeat(
            fine_counts, counts * r
        )
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(fine_counts, out=offsets[1:])
        return offsets, ids[keep]
    else:
        r = be // bt
        new_counts = counts // r
        offsets = np.zeros(len(counts) + 1, dtype=np.int64)
        np.cumsum(new_counts, out=offsets[1:])
        # The last trace block of engine block k of request q sits at start_q + k*r + r - 1.
        request_of = np.repeat(np.arange(len(counts)), new_counts)
        k = np.arange(offsets[-1]) - offsets[request_of]
        ids = trace.block_hashes[trace.block_offsets[request_of] + k * r + r - 1]
        return offsets, ids


def next_use(keys: np.ndarray) -> np.ndarray:
    """For each position of ``keys``, the next position holding the same key, else ``NEVER``."""
    n = len(keys)
    out = np.full(n, NEVER, dtype=np.int64)
    if n < 2:
        return out
    order = np.argsort(keys, kind="stable")
    sorted_keys = keys[order]
    same = sorted_keys[1:] == sorted_keys[:-1]
    out[order[:-1][same]] = order[1:][same]
    return out


class AccessOracle:
    """The future of an access stream, for offline policies (Belady/OPT).

    ``next_use[g]`` answers for the block accessed at flat index ``g``; ``next_access(block,
    after)`` answers for any block: the first index ``> after`` at which it is accessed. The
    second is what a tier needs when a block arrives by demotion, outside its own access.
    """

    def __init__(self, keys: np.ndarray) -> None:
        self.next_use = next_use(keys)
        self._order = np.argsort(keys, kind="stable")
        self._sorted_keys = keys[self._order]

    def next_access(self, block: int, after: int) -> int:
        # Method calls, not np.searchsorted: Belady in serve mode asks this at every touch,
        # and numpy's function wrapper was a third of the cost.
        keys = self._sorted_keys
        key = np.uint64(block)
        lo = int(keys.searchsorted(key, side="left"))
        hi = int(keys.searchsorted(key, side="right"))
        positions = self._order[lo:hi]  # ascending: the sort was stable
        k = int(positions.searchsorted(after, side="right"))
        return int(positions[k]) if k < len(positions) else NEVER
