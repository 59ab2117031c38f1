"""64-bit hashing for prefix block chains, vectorised over NumPy arrays.

A block id must depend on the whole prefix up to and including the block (a hash chain), so
that equal ids mean reusable KV. ``chain_ids`` builds such ids from per-block content ids;
``mix64`` is the splitmix64 finaliser, a cheap bijection on 64-bit integers with good
avalanche, so distinct inputs never collide and nearby inputs land far apart.
"""

from __future__ import annotations

import numpy as np

_GOLDEN = np.uint64(0x9E3779B97F4A7C15)
_M1 = np.uint64(0xBF58476D1CE4E5B9)
_M2 = np.uint64(0x94D049BB133111EB)
_DENSE_TABLE_PER_BLOCK = 4  # ids below this many per block are checked by a table, not a sort


def mix64(x: np.ndarray | int) -> np.ndarray:
    """splitmix64 finaliser, element-wise; arithmetic wraps modulo 2**64 by design."""
    z = np.asarray(x, dtype=np.uint64) + _GOLDEN
    with np.errstate(over="ignore"):
        z = (z ^ (z >> np.uint64(30))) * _M1
        z = (z ^ (z >> np.uint64(27))) * _M2
    return z ^ (z >> np.uint64(31))


def combine(parent: np.ndarray | int, content: np.ndarray | int) -> np.ndarray:
    """The id of a block with content id ``content`` following a block with id ``parent``."""
    p = np.asarray(parent, dtype=np.uint64)
    with np.errstate(over="ignore"):
        return mix64(mix64(p) ^ (np.asarray(content, dtype=np.uint64) * _GOLDEN))


def chain_ids(content_ids: np.ndarray, root: int = 0) -> np.ndarray:
    """Prefix-chain ids for one sequence of block contents: id[i] depends on content[0..i]."""
    out = np.empty(len(content_ids), dtype=np.uint64)
    parent = np.uint64(root)
    for i, c in enumerate(np.asarray(content_ids, dtype=np.uint64)):
        parent = combine(parent, c)
        out[i] = parent
    return out


def positions_in_requests(offsets: np.ndarray) -> np.ndarray:
    """Each flat block's position in its request, for a CSR ``offsets`` index."""
    offsets = np.asarray(offsets, dtype=np.int64)
    lengths = np.diff(offsets)
    return np.arange(offsets[-1], dtype=np.int64) - np.repeat(offsets[:-1], lengths)


def is_prefix_chained(offsets: np.ndarray, ids: np.ndarray) -> bool:
    """Whether every id stands for one prefix: all its occurrences are heads of their requests,
    or all follow the same id. By induction each id then fixes its whole prefix, which is what
    lets equal ids be treated as reusable KV.

    Published traces number their blocks densely (0..n), so the check is a table of each id's
    parent, linear in the blocks; sparse ids (64-bit hashes) are sorted instead."""
    ids = np.asarray(ids, dtype=np.uint64)
    if len(ids) < 2:
        return True
    # 0 for a head, else the id before it plus one
    parent = np.empty_like(ids)
    parent[0] = 0
    with np.errstate(over="ignore"):
        parent[1:] = ids[:-1] + np.uint64(1)
    head = positions_in_requests(offsets) == 0
    parent[head] = 0
    largest = int(ids.max())
    if largest < _DENSE_TABLE_PER_BLOCK * len(ids):
        parent_of = np.zeros(largest + 1, dtype=np.uint64)
        parent_of[ids] = parent  # one occurrence's parent per id: the others must agree
        return bool(np.array_equal(parent_of[ids], parent))
    order = np.argsort(ids, kind="stable")
    repeat = ids[order[1:]] == ids[order[:-1]]
    a, b = order[:-1][repeat], order[1:][repeat]
    return bool(np.array_equal(parent[a], parent[b]) and np.array_equal(head[a], head[b]))


def chain_requests(offsets: np.ndarray, content_ids: np.ndarray) -> np.ndarray:
    """:func:`chain_ids` of every request of a CSR trace at once: one vectorised step per block
    position over the requests that are that long (longest first), so the cost is linear in
    the blocks whatever the number of requests."""
    offsets = np.asarray(offsets, dtype=np.int64)
    content_ids = np.asarray(content_ids, dtype=np.uint64)
    lengths = np.diff(offsets)
    order = np.argsort(-lengths, kind="stable")
    starts, longest_first = offsets[:-1][order], lengths[order]
    out = np.empty_like(content_ids)
    parent = np.zeros(len(order), dtype=np.uint64)
    for position in range(int(longest_first[0]) if len(order) else 0):
        alive = int(np.searchsorted(-longest_first, -position, side="left"))
        at = starts[:alive] + position
        parent = combine(parent[:alive], content_ids[at])
        out[at] = parent
    return out


def prefix_chained(offsets: np.ndarray, ids: np.ndarray) -> tuple[np.ndarray, bool]:
    """``ids`` as they are when they already form prefix chains, else chained from them as
    content ids (as vLLM hashes a block with its parent's hash); the flag says which. Chaining
    ids that already are chains would only relabel them, so they are kept."""
    if is_prefix_chained(offsets, ids):
        return ids, False
    return chain_requests(offsets, ids), True
