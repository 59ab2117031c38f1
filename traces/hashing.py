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
