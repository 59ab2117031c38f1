"""CSV traces: Azure LLM inference, BurstGPT, and kvsim's canonical schema as CSV.

Azure and BurstGPT carry prompt and output lengths only, no block hashes, so they produce no
prefix reuse by themselves (a generator can add it). Each reader checks the header first, so a
file of another format fails on line 1 with the columns it lacks.
"""

from __future__ import annotations

import csv
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from traces.errors import TraceFormatError
from traces.readers._builder import ColumnBuilder
from traces.readers._rows import INT64_MAX, LineError, as_count, as_time, check_hash_count, check_monotone, open_text
from traces.schema import NO_SESSION, NO_TURN, Trace

LENGTHS_ONLY_BLOCK_SIZE = 16  # no hashes to interpret; vLLM's block size, for remapping


def _csv_rows(path: Path, required: tuple[str, ...], fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)``; a header lacking ``required`` columns fails on line 1."""
    lines = open_text(path)
    error = LineError(str(path))
    try:
        header_line, header_text = next(lines)
    except StopIteration:
        raise TraceFormatError(str(path), None, None, f"is empty; expected a {fmt} CSV header") from None
    header = [h.strip() for h in next(csv.reader([header_text]))]
    missing = [c for c in required if c not in header]
    if missing:
        raise error(
            header_line,
            missing[0],
            f"column is missing from the header (expected {fmt} columns {', '.join(required)}; "
            f"got {', '.join(header)})",
        )
    for line, text in lines:
        try:
            values = next(csv.reader([text]))
        except csv.Error as exc:
            raise error(line, None, f"malformed CSV ({exc})") from None
        if len(values) != len(header):
            raise error(line, None, f"has {len(values)} values, the header has {len(header)} columns")
        yield line, dict(zip(header, (v.strip() for v in values), strict=True))


def read_azure(path: Path, *, block_size: int | None = None) -> Trace:
    """Azure LLM inference trace: ``TIMESTAMP`` (date-time), ``ContextTokens``, ``GeneratedTokens``."""
    error = LineError(str(path))
    rows = ColumnBuilder()
    previous: float | None = None
    for line, row in _csv_rows(path, ("TIMESTAMP", "ContextTokens", "GeneratedTokens"), "Azure"):
        try:
            stamp = np.datetime64(row["TIMESTAMP"], "ns")
        except ValueError:
            raise error(line, "TIMESTAMP", f"is not a date-time (got {row['TIMESTAMP']!r})") from None
        if np.isnat(stamp):
            raise error(line, "TIMESTAMP", "is empty")
        t = stamp.astype(np.int64) / 1e9
        check_monotone(previous, t, "TIMESTAMP", line, error)
        previous = t
        n_in = as_count(row["ContextTokens"], "ContextTokens", line, error, minimum=1)
        n_out = as_count(row["GeneratedTokens"], "GeneratedTokens", line, error, minimum=0)
        rows.add(t, n_in, n_out)
    return rows.build(block_size=block_size or LENGTHS_ONLY_BLOCK_SIZE, source=str(path))


def read_burstgpt(path: Path, *, block_size: int | None = None) -> Trace:
    """BurstGPT: ``Timestamp`` (s), ``Model``, ``Request tokens``, ``Response tokens``, ``Log Type``.

    BurstGPT logs failed calls too. Rows with zero request tokens carry no prompt to serve and
    are skipped with one warning giving their count; zero response tokens are kept (a request
    that produced nothing still cost its prefill).
    """
    error = LineError(str(path))
    rows = ColumnBuilder()
    previous: float | None = None
    skipped: list[int] = []
    required = ("Timestamp", "Model", "Request tokens", "Response tokens")
    for line, row in _csv_rows(path, required, "BurstGPT"):
        t = as_time(row["Timestamp"], "Timestamp", line, error)
        check_monotone(previous, t, "Timestamp", line, error)
        previous = t
        n_in = as_count(row["Request tokens"], "Request tokens", line, error, minimum=0)
        n_out = as_count(row["Response tokens"], "Response tokens", line, error, minimum=0)
        if n_in == 0:
            skipped.append(line)
            continue
        kind = row["Model"] + (f"/{row['Log Type']}" if row.get("Log Type") else "")
        rows.add(t, n_in, n_out, category=kind or None)
    if skipped:
        warnings.warn(
            f"{path}: skipped {len(skipped)} row(s) with 0 request tokens (first on line {skipped[0]})",
            stacklevel=2,
        )
    return rows.build(block_size=block_size or LENGTHS_ONLY_BLOCK_SIZE, source=str(path))


CANONICAL_REQUIRED = ("arrival_s", "input_tokens", "output_tokens")


def read_canonical_csv(path: Path, *, block_size: int | None = None) -> Trace:
    """kvsim's schema as CSV: ``block_hashes`` space-separated; optional columns may be empty.

    CSV has no table metadata, so a file with hashes needs ``block_size`` from the caller.
    """
    error = LineError(str(path))
    rows = ColumnBuilder()
    ids: list[int] = []
    id_lines: list[int] = []
    previous: float | None = None
    for line, row in _csv_rows(path, CANONICAL_REQUIRED, "canonical"):
        t = as_time(row["arrival_s"], "arrival_s", line, error)
        check_monotone(previous, t, "arrival_s", line, error)
        previous = t
        n_in = as_count(row["input_tokens"], "input_tokens", line, error, minimum=1)
        n_out = as_count(row["output_tokens"], "output_tokens", line, error, minimum=0)
        hashes: list[int] = []
        if row.get("block_hashes"):
            if block_size is None:
                raise error(line, "block_hashes", "has hashes but no block_size was given (CSV has no metadata)")
            try:
                hashes = [int(h) for h in row["block_hashes"].split()]
            except ValueError:
                raise error(line, "block_hashes", "must be space-separated integers") from None
            if any(h < 0 or h >= 1 << 64 for h in hashes):
                raise error(line, "block_hashes", "must hold non-negative 64-bit integers")
            check_hash_count(len(hashes), n_in, block_size, line, error)
        session = (
            as_count(row["session_id"], "session_id", line, error, minimum=0, maximum=INT64_MAX)
            if row.get("session_id")
            else NO_SESSION
        )
        turn = as_count(row["turn"], "turn", line, error, minimum=0) if row.get("turn") else NO_TURN
        id_lines.append(line)
        ids.append(
            as_count(row["request_id"], "request_id", line, error, minimum=0, maximum=INT64_MAX)
            if row.get("request_id")
            else len(ids)
        )
        rows.add(t, n_in, n_out, hashes, session_id=session, turn=turn, category=row.get("category") or None)
    trace = rows.build(block_size=block_size or LENGTHS_ONLY_BLOCK_SIZE, source=str(path), rebase_time=False)
    if len(set(ids)) != len(ids):
        seen: set[int] = set()
        for i, rid in enumerate(ids):
            if rid in seen:
                raise error(id_lines[i], "request_id", f"{rid} is not unique")
            seen.add(rid)
    return Trace.from_columns(
        arrival_s=trace.arrival_s,
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        block_offsets=trace.block_offsets,
        flat_hashes=trace.block_hashes,
        block_size=trace.block_size,
        request_id=np.asarray(ids, dtype=np.int64),
        session_id=trace.session_id,
        turn=trace.turn,
        categories=[trace.category_of(i) for i in range(len(trace))],
        source=str(path),
    )
