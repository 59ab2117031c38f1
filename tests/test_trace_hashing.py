"""Block ids as prefix chains: the check that ids already are chains, the vectorised chaining
of a whole trace, and what the readers do with ids that name block contents only."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from policies.eviction.lru import LRU
from sim.replay import replay_single_tier
from traces import generate, open_trace
from traces.hashing import chain_ids, chain_requests, is_prefix_chained

requests_of_small_ids = st.lists(st.lists(st.integers(0, 5), max_size=6), min_size=1, max_size=12)


def csr(requests: list[list[int]]) -> tuple[np.ndarray, np.ndarray]:
    offsets = np.concatenate(([0], np.cumsum([len(r) for r in requests]))).astype(np.int64)
    return offsets, np.asarray([i for r in requests for i in r], dtype=np.uint64)


@settings(max_examples=200, deadline=None)
@given(requests_of_small_ids)
def test_chaining_a_whole_trace_equals_chaining_each_request(requests: list[list[int]]) -> None:
    offsets, ids = csr(requests)
    expected = [chain_ids(np.asarray(r, dtype=np.uint64)).tolist() for r in requests]
    chained = chain_requests(offsets, ids)
    assert [chained[offsets[i] : offsets[i + 1]].tolist() for i in range(len(requests))] == expected
    assert is_prefix_chained(offsets, chained)


@settings(max_examples=200, deadline=None)
@given(requests_of_small_ids)
def test_ids_are_chains_exactly_when_equal_ids_have_equal_prefixes(requests: list[list[int]]) -> None:
    prefix_of: dict[int, tuple[int, ...]] = {}
    consistent = True
    for r in requests:
        for i, block in enumerate(r):
            consistent &= prefix_of.setdefault(block, tuple(r[:i])) == tuple(r[:i])
    offsets, ids = csr(requests)
    assert is_prefix_chained(offsets, ids) == consistent  # dense ids: checked by a table
    assert is_prefix_chained(offsets, ids + np.uint64(2**63)) == consistent  # sparse: by sorting


def test_generated_and_mooncake_style_ids_are_already_chains() -> None:
    trace = generate("multi_turn", n_requests=300, seed=1)
    assert is_prefix_chained(trace.block_offsets, trace.block_hashes)
    assert is_prefix_chained(*csr([[1, 2, 3], [1, 2, 4], [9], [1, 5]]))
    assert not is_prefix_chained(*csr([[1, 2, 3], [7, 2, 3]]))  # 2 after 1 and after 7
    assert not is_prefix_chained(*csr([[1, 2], [2]]))  # 2 as a head and after 1


def bailian_row(chat: int, t: float, hash_ids: list[int]) -> dict:
    return {"chat_id": chat, "parent_chat_id": -1, "timestamp": t, "input_length": 16 * len(hash_ids),
            "output_length": 4, "type": "text", "turn": 1, "hash_ids": hash_ids}  # fmt: skip


def test_a_file_of_content_ids_is_chained_so_only_shared_prefixes_hit(tmp_path: Path, caplog) -> None:
    rows = [bailian_row(1, 0.0, [1, 2, 3]), bailian_row(2, 1.0, [7, 2, 3]), bailian_row(3, 2.0, [1, 2, 9])]
    path = tmp_path / "content_ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="traces.readers"):
        trace = open_trace(path)
    assert "chained" in caplog.text and str(path) in caplog.text
    first, second, third = (trace.hashes_of(i).tolist() for i in range(3))
    assert not set(second) & set(first)  # 2 and 3 after 7 are other KV than after 1
    assert third[:2] == first[:2] and third[2] != first[2]
    hits = replay_single_tier(trace, 100, LRU())
    assert hits.sum() == 2  # the third request's two-block prefix, nothing else


def test_ids_that_already_are_chains_are_kept_as_read(tmp_path: Path, caplog) -> None:
    rows = [bailian_row(1, 0.0, [1, 2, 3]), bailian_row(2, 1.0, [1, 2, 4]), bailian_row(3, 2.0, [5])]
    path = tmp_path / "chain_ids.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with caplog.at_level(logging.INFO, logger="traces.readers"):
        trace = open_trace(path)
    assert trace.block_hashes.tolist() == [1, 2, 3, 1, 2, 4, 5]
    assert "chained" not in caplog.text
