"""Mooncake (Kimi) traces: JSON lines of ``timestamp`` (ms), ``input_length``,
``output_length`` and ``hash_ids`` over 512-token blocks.

Mooncake's ``hash_ids`` are already prefix-aware: the trace's authors number each distinct
(prefix, block) pair, so two requests share an id exactly where they share the prefix up to
that block. That is the hash-chain property the simulator needs, so ids are kept as they are.
The last id of a request covers its partial final block (ids = ceil(input / 512)).
"""

from __future__ import annotations

from pathlib import Path

from traces.readers._builder import ColumnBuilder
from traces.readers._rows import (
    LineError,
    as_count,
    as_hash_list,
    as_time,
    check_block_size_override,
    check_hash_count,
    check_monotone,
    json_records,
    require,
)
from traces.schema import Trace

BLOCK_SIZE = 512


def read_mooncake(path: Path, *, block_size: int | None = None) -> Trace:
    block = block_size or BLOCK_SIZE
    error = LineError(str(path))
    rows = ColumnBuilder()
    previous: float | None = None
    first_ms: float | None = None
    for line, record in json_records(path, "Mooncake"):
        stamp_ms = as_time(require(record, "timestamp", line, error), "timestamp", line, error)
        check_monotone(previous, stamp_ms, "timestamp", line, error)  # in the file's milliseconds
        previous = stamp_ms
        first_ms = stamp_ms if first_ms is None else first_ms
        t = (stamp_ms - first_ms) / 1000.0  # rebased in milliseconds: 3053 ms is 3.053 s, not 3.0530000000001
        n_in = as_count(require(record, "input_length", line, error), "input_length", line, error, minimum=1)
        n_out = as_count(require(record, "output_length", line, error), "output_length", line, error, minimum=0)
        hashes = as_hash_list(require(record, "hash_ids", line, error), "hash_ids", line, error)
        check_hash_count(len(hashes), n_in, block, line, error)
        rows.add(t, n_in, n_out, hashes)
    trace = rows.build(block_size=block, source=str(path))
    check_block_size_override(trace, block_size, BLOCK_SIZE, "Mooncake")
    return trace
