"""Alibaba Bailian traces (the "KVCache cache in the wild" study): JSON lines of ``chat_id``,
``parent_chat_id``, ``timestamp`` (s), ``input_length``, ``output_length``, ``type``, ``turn``
and ``hash_ids`` over 16-token blocks.

Sessions are recovered from the parent chain: a request whose ``parent_chat_id`` is -1 (or
null) starts a session identified by its own ``chat_id``; any other request joins its
parent's session. A parent that is not in the file (the slice began mid-conversation) starts
a session identified by the parent's id, so the conversation's later turns still group. A
request naming itself or a later request as its parent (no turn follows its own reply, and
the file is in time order) starts its own session, with a warning: merged into the later
request's session, it would make two conversations one.
``type`` (text, image, search, file, ...) becomes the category.
"""

from __future__ import annotations

import warnings
from dataclasses import replace
from pathlib import Path

import numpy as np
import pyarrow as pa

from traces.readers._arrow_json import list_offsets, read_regular, requests_are_regular
from traces.readers._builder import ColumnBuilder
from traces.readers._rows import (
    INT32_MAX,
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
FIELDS = {
    "chat_id": pa.int64(),
    "parent_chat_id": pa.int64(),
    "timestamp": pa.float64(),
    "input_length": pa.int64(),
    "output_length": pa.int64(),
    "turn": pa.int64(),
    "type": pa.string(),
    "hash_ids": pa.list_(pa.uint64()),
}


def read_bailian(path: Path, *, block_size: int | None = None) -> Trace:
    block = BLOCK_SIZE if block_size is None else block_size
    trace = _read_regular(path, block)
    if trace is None:
        trace = _read_rows(path, block)
    check_block_size_override(trace, block_size, BLOCK_SIZE, "Bailian")
    return trace


def _read_regular(path: Path, block: int) -> Trace | None:
    """The whole file at once by Arrow (:mod:`traces.readers._arrow_json`), or ``None`` if a
    value is one the row reader must look at; both give the same trace."""
    table = read_regular(path, FIELDS)  # a null parent too: Arrow cannot tell it from a missing one
    if table is None:
        return None
    chat = table.column("chat_id").to_numpy()
    parent = table.column("parent_chat_id").to_numpy()
    t = table.column("timestamp").to_numpy()
    n_in = table.column("input_length").to_numpy()
    n_out = table.column("output_length").to_numpy()
    turn = table.column("turn").to_numpy()
    kinds = table.column("type").to_pylist()
    offsets, hashes = list_offsets(table.column("hash_ids"))
    regular = (
        requests_are_regular(t, n_in, n_out, offsets, block)
        and (chat >= 0).all()
        and ((parent >= 0) | (parent == -1)).all()
        and ((turn >= 0) & (turn <= INT32_MAX)).all()
        and all(kinds)
        and len(np.unique(chat)) == len(chat)
    )
    if not regular:
        return None
    return Trace.from_columns(
        arrival_s=t - t[0],
        input_tokens=n_in,
        output_tokens=n_out,
        block_offsets=offsets,
        flat_hashes=hashes.astype(np.uint64, copy=False),
        block_size=block,
        session_id=np.asarray(_sessions(chat.tolist(), parent.tolist(), str(path)), dtype=np.int64),
        turn=turn,
        categories=kinds,
        source=str(path),
    )


def _sessions(chats: list[int], parents: list[int], source: str) -> list[int]:
    """Each request's session (see the module docstring), in file order; ``parents`` holds -1
    for none. ``chats`` are distinct (both readers check)."""
    position = {chat: i for i, chat in enumerate(chats)}
    session_of: dict[int, int] = {}
    sessions = []
    backwards: list[int] = []
    for i, (chat, parent) in enumerate(zip(chats, parents, strict=True)):
        if parent != -1 and position.get(parent, -1) >= i:
            backwards.append(chat)
            parent = -1
        session = chat if parent == -1 else session_of.get(parent, parent)
        session_of[chat] = session
        sessions.append(session)
    if backwards:
        warnings.warn(
            f"{source}: {len(backwards):,} request(s) name themselves or a later request as parent_chat_id "
            f"(the first: chat_id {backwards[0]}); each starts its own session",
            UserWarning,
            stacklevel=4,
        )
    return sessions


def _read_rows(path: Path, block: int) -> Trace:
    """Line by line: names the line and field of the first bad value."""
    error = LineError(str(path))
    rows = ColumnBuilder()
    chats: list[int] = []
    parents: list[int] = []
    seen: set[int] = set()
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
        if chat in seen:
            raise error(line, "chat_id", f"{chat} appears twice")
        seen.add(chat)
        chats.append(chat)
        parents.append(-1 if parent in NO_PARENT else parent)
        rows.add(t, n_in, n_out, hashes, turn=turn, category=kind)
    trace = rows.build(block_size=block, source=str(path))
    return replace(trace, session_id=np.asarray(_sessions(chats, parents, str(path)), dtype=np.int64))
