"""Alibaba Bailian traces (the "KVCache cache in the wild" study): JSON lines of ``chat_id``,
``parent_chat_id``, ``timestamp`` (s), ``input_length``, ``output_length``, ``type``, ``turn``
and ``hash_ids`` over 16-token blocks.

Sessions are recovered from the parent chain: a request whose ``parent_chat_id`` is -1 (or
null) starts a session identified by its own ``chat_id``; any other request joins its
parent's session. A parent that is not in the file (the slice began mid-conversation) starts
a session identified by the parent's id, so the conversation's later turns still group.
``type`` (text, image, search, file, ...) becomes the category.
"""

from __future__ import annotations

from pathlib import Path

from traces.readers._builder import ColumnBuilder
from traces.readers._rows import (
    INT64_MAX,
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

BLOCK_SIZE = 16
NO_PARENT = (-1, None)


def read_bailian(path: Path, *, block_size: int | None = None) -> Trace:
    block = block_size or BLOCK_SIZE
    error = LineError(str(path))
    rows = ColumnBuilder()
    session_of: dict[int, int] = {}
    previous: float | None = None
    for line, record in json_records(path, "Bailian"):
        chat = as_count(require(record, "chat_id", line, error), "chat_id", line, error, minimum=0, maximum=INT64_MAX)
        parent = require(record, "parent_chat_id", line, error)
        if parent not in NO_PARENT:
            parent = as_count(parent, "parent_chat_id", line, error, minimum=0, maximum=INT64_MAX)
        t = as_time(require(record, "timestamp", line, error), "timestamp", line, error)
        check_monotone(previous, t, "timestamp", line, error)
        previous = t
        n_in = as_count(require(record, "input_length", line, error), "input_length", line, error, minimum=1)
        n_out = as_count(require(record, "output_length", line, error), "output_length", line, error, minimum=0)
        turn = as_count(require(record, "turn", line, error), "turn", line, error, minimum=0)
        kind = require(record, "type", line, error)
        if not isinstance(kind, str) or not kind:
            raise error(line, "type", f"must be a non-empty string (got {kind!r})")
        hashes = as_hash_list(require(record, "hash_ids", line, error), "hash_ids", line, error)
        check_hash_count(len(hashes), n_in, block, line, error)
        if chat in session_of:
            raise error(line, "chat_id", f"{chat} appears twice")
        session = chat if parent in NO_PARENT else session_of.get(parent, parent)
        session_of[chat] = session
        rows.add(t, n_in, n_out, hashes, session_id=session, turn=turn, category=kind)
    trace = rows.build(block_size=block, source=str(path))
    check_block_size_override(trace, block_size, BLOCK_SIZE, "Bailian")
    return trace
