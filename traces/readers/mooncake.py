"""Mooncake (Kimi) traces: JSON lines of ``timestamp`` (ms), ``input_length``,
``output_length`` and ``hash_ids`` over 512-token blocks.

Mooncake's ``hash_ids`` are already prefix-aware: the trace's authors number each distinct
(prefix, block) pair, so two requests share an id exactly where they share the prefix up to
that block. That is the hash-chain property the simulator needs, so ids are kept as they are.
The last id of a request covers its partial final block (ids = ceil(input / 512)).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa

from traces.readers._arrow_json import list_offsets, read_regular, requests_are_regular
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
from traces.schema import NO_SESSION, NO_TURN, Trace

BLOCK_SIZE = 512
FIELDS = {
    "timestamp": pa.float64(),
    "input_length": pa.int64(),
    "output_length": pa.int64(),
    "hash_ids": pa.list_(pa.uint64()),
}


def read_mooncake(path: Path, *, block_size: int | None = None) -> Trace:
    block = BLOCK_SIZE if block_size is None else block_size
    trace = _read_regular(path, block)
    if trace is None:
        trace = _read_rows(path, block)
    check_block_size_override(trace, block_size, BLOCK_SIZE, "Mooncake")
    return trace


def _read_regular(path: Path, block: int) -> Trace | None:
    """The whole file at once by Arrow (:mod:`traces.readers._arrow_json`), or ``None`` if a
    value is one the row reader must look at; both give the same trace."""
    table = read_regular(path, FIELDS)
    if table is None:
        return None
    stamp_ms = table.column("timestamp").to_numpy()
    n_in = table.column("input_length").to_numpy()
    n_out = table.column("output_length").to_numpy()
    offsets, hashes = list_offsets(table.column("hash_ids"))
    if not requests_are_regular(stamp_ms, n_in, n_out, offsets, block):
        return None
    n = len(n_in)
    return Trace.from_columns(
        arrival_s=(stamp_ms - stamp_ms[0]) / 1000.0,  # rebased in milliseconds, as the rows are
        input_tokens=n_in,
        output_tokens=n_out,
        block_offsets=offsets,
        flat_hashes=hashes.astype(np.uint64, copy=False),
        block_size=block,
        session_id=np.full(n, NO_SESSION, dtype=np.int64),
        turn=np.full(n, NO_TURN, dtype=np.int64),
        source=str(path),
    )


def _read_rows(path: Path, block: int) -> Trace:
    """Line by line: names the line and field of the first bad value."""
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
    return rows.build(block_size=block, source=str(path))
