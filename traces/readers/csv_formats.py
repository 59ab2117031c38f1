"""CSV traces: Azure LLM inference, BurstGPT, and kvsim's canonical schema as CSV.

Azure and BurstGPT carry prompt and output lengths only, no block hashes, so they produce no
prefix reuse by themselves (a generator can add it). Each reader checks the header first, so a
file of another format fails on line 1 with the columns it lacks.
"""

from __future__ import annotations

import csv
import re
import warnings
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.csv as pa_csv

from traces.errors import TraceFormatError
from traces.readers._builder import ColumnBuilder
from traces.readers._rows import (
    GZIP_ERRORS,
    INT32_MAX,
    INT64_MAX,
    LineError,
    as_count,
    as_time,
    check_hash_count,
    check_monotone,
    open_binary,
    open_text,
)
from traces.schema import NO_SESSION, NO_TURN, Trace

LENGTHS_ONLY_BLOCK_SIZE = 16  # no hashes to interpret; vLLM's block size, for remapping

# The longest CSV field read, in characters. Python's csv module stops at 131,072 by default,
# which a long prompt's block_hashes pass (6,300 hashes of 20 digits: 100K tokens in 16-token
# blocks). This limit takes a hash per token (block size 1) of a 10M-token prompt, the longest
# context any model serves, yet bounds what a missing closing quote reads into memory before it
# is named, and fits a C long on every platform (sys.maxsize does not: Windows' is 32 bits).
CSV_FIELD_LIMIT = 1 << 28


def _csv_records(path: Path, fmt: str) -> Iterator[tuple[int, list[str]]]:
    """Yield ``(line_number, values)`` of each record, parsed as CSV is (RFC 4180): a quoted
    field may hold commas, doubled quotes and line breaks, so a record may span lines, and is
    named by the line it begins on. A quote never closed is an error on that line, not the rest
    of the file read into one field (parsed a line at a time, a quoted line break read as a
    short row and an open quote passed unseen). A blank line is a line break inside a quoted
    field, kept as such, and skipped between records."""
    error = LineError(str(path))
    taken: list[tuple[int, str]] = []  # the lines the record being parsed has taken: no more are read
    if csv.field_size_limit() < CSV_FIELD_LIMIT:  # raised, never lowered: the limit is the process's
        csv.field_size_limit(CSV_FIELD_LIMIT)

    def lines() -> Iterator[str]:
        for number, text in open_text(path, keep_blank=True):
            taken.append((number, text))
            yield text

    reader = csv.reader(lines(), strict=True)
    header: list[str] | None = None
    while True:
        taken.clear()
        try:
            values = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            line = taken[0][0]
            if str(exc) != "unexpected end of data":
                problem = (
                    f"malformed CSV ({exc})" if header else f"malformed CSV header ({exc}); expected {fmt} columns"
                )
                if len(taken) > 1:  # as the field limit stops a quote left open in a large file
                    problem += f"; its record runs on to line {taken[-1][0]} (a missing closing quote?)"
                raise error(line, None, problem) from None
            # Read leniently, the record ends in the field left open: its column is the last.
            column = len(next(csv.reader(text for _, text in taken))) - 1
            field = header[column].strip() if header and column < len(header) else None
            raise error(line, field, "opens a quoted field that is never closed (a missing closing quote?)") from None
        if len(taken) == 1 and not taken[0][1].strip():
            continue  # a blank line between records
        header = header or values
        yield taken[0][0], values


def _csv_rows(path: Path, required: tuple[str, ...], fmt: str) -> Iterator[tuple[int, dict[str, str]]]:
    """Yield ``(line_number, row)``; a header lacking ``required`` columns fails on line 1."""
    records = _csv_records(path, fmt)
    error = LineError(str(path))
    try:
        header_line, names = next(records)
    except StopIteration:
        raise TraceFormatError(str(path), None, None, f"is empty; expected a {fmt} CSV header") from None
    header = [h.strip() for h in names]
    missing = [c for c in required if c not in header]
    if missing:
        raise error(
            header_line,
            missing[0],
            f"column is missing from the header (expected {fmt} columns {', '.join(required)}; "
            f"got {', '.join(header)})",
        )
    for line, values in records:
        if len(values) != len(header):
            raise error(line, None, f"has {len(values)} values, the header has {len(header)} columns")
        yield line, dict(zip(header, (v.strip() for v in values), strict=True))


# A UTC offset after a time of day: "...12:00:05.819Z", "...00:00:00.0099+00:00" (2024-25 files).
_UTC_OFFSET = re.compile(r"^(?P<local>.*\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?)\s*(?P<offset>Z|[+-]\d{2}:?\d{2})$")


def _azure_ns(text: str, line: int, error: LineError) -> int:
    """Nanoseconds since the epoch (UTC) of an Azure ``TIMESTAMP``, offset applied: integers,
    so that rebasing to the first request loses nothing (float epoch seconds keep only
    about 0.2 us)."""
    local, offset_ns = text, 0
    match = _UTC_OFFSET.match(text)
    if match:
        local, offset = match["local"], match["offset"]
        if offset != "Z":
            hours, minutes = int(offset[1:3]), int(offset[-2:])
            offset_ns = (1 if offset[0] == "+" else -1) * (hours * 60 + minutes) * 60 * 10**9
    try:
        stamp = np.datetime64(local, "ns")
        second = np.datetime64(local, "s")  # a range of 10**11 years: no date wraps
    except ValueError:
        raise error(line, "TIMESTAMP", f"is not a date-time (got {text!r})") from None
    if np.isnat(second):
        raise error(line, "TIMESTAMP", "is empty")
    if np.isnat(stamp) or stamp.astype("datetime64[s]") != second:
        # int64 nanoseconds reach from 1677 to 2262; past them NumPy wraps round (a typo's year
        # 3023 read as 1854, "goes backwards") or gives NaT
        raise error(line, "TIMESTAMP", f"is out of range (got {text!r}; dates must fall between 1677 and 2262)")
    return int(stamp.astype(np.int64)) - offset_ns


class _EmptyPrompts:
    """Rows with no prompt tokens: logged failures, not requests to serve. They are skipped
    and counted, with one warning per file, the same way in every lengths-only format."""

    def __init__(self, path: Path, field: str) -> None:
        self.path, self.field, self.lines = path, field, []

    def skip(self, n_in: int, line: int) -> bool:
        if n_in == 0:
            self.lines.append(line)
        return n_in == 0

    def warn(self) -> None:
        if self.lines:
            warnings.warn(
                f"{self.path}: skipped {len(self.lines)} row(s) with 0 {self.field} (first on line {self.lines[0]})",
                stacklevel=3,
            )


AZURE_COLUMNS = ("TIMESTAMP", "ContextTokens", "GeneratedTokens")


def read_azure(path: Path, *, block_size: int | None = None) -> Trace:
    """Azure LLM inference trace: ``TIMESTAMP`` (date-time, naive as in 2023 or with a UTC
    offset as in 2024-25), ``ContextTokens``, ``GeneratedTokens``; other columns (2025's
    ``NumImages``) are ignored.

    The 2024 week-long files hold millions of rows: a regular file is read whole by Arrow's
    CSV reader (some 15x faster than row by row); anything irregular (a bad value, a time
    going backwards, a row to skip) is read again row by row, which names the line and field
    of the problem or warns about the rows it skips. Both give the same trace."""
    columns = _azure_columns(path)
    if columns is None:
        return _read_azure_rows(path, block_size=block_size)
    ns, n_in, n_out = columns
    return Trace.from_columns(
        arrival_s=(ns - ns[0]) / 1e9,
        input_tokens=n_in,
        output_tokens=n_out,
        block_size=LENGTHS_ONLY_BLOCK_SIZE if block_size is None else block_size,
        source=str(path),
    )


def _azure_columns(path: Path) -> tuple[np.ndarray, np.ndarray, np.ndarray] | None:
    """UTC nanoseconds, context and generated tokens of a regular Azure file, or ``None``
    for anything the row reader must look at."""
    import pandas as pd  # its ISO 8601 parser takes every Azure timestamp form at once

    types = {"TIMESTAMP": pa.string(), "ContextTokens": pa.int64(), "GeneratedTokens": pa.int64()}
    options = pa_csv.ConvertOptions(include_columns=list(AZURE_COLUMNS), column_types=types)
    try:
        with open_binary(path) as handle:
            table = pa_csv.read_csv(handle, convert_options=options)
        if table.num_rows == 0 or any(table.column(c).null_count for c in AZURE_COLUMNS):
            return None
        stamps = pd.to_datetime(table.column("TIMESTAMP").to_pandas(), utc=True, format="ISO8601")
        if stamps.isna().any():  # "" or "NaT"
            return None
        # as_unit raises past nanoseconds' range (1677 to 2262), where astype would wrap round
        ns = stamps.dt.tz_convert(None).dt.as_unit("ns").to_numpy().view(np.int64)
    except (pa.ArrowException, ValueError, TypeError, OverflowError, *GZIP_ERRORS):
        return None  # the row reader names the problem (a damaged gzip file included)
    n_in = table.column("ContextTokens").to_numpy()
    n_out = table.column("GeneratedTokens").to_numpy()
    regular = (n_in >= 1).all() and (n_in <= INT32_MAX).all() and (n_out >= 0).all() and (n_out <= INT32_MAX).all()
    if not regular or (np.diff(ns) < 0).any():
        return None
    return ns, n_in, n_out


def _read_azure_rows(path: Path, *, block_size: int | None = None) -> Trace:
    error = LineError(str(path))
    rows = ColumnBuilder()
    empty = _EmptyPrompts(path, "ContextTokens")
    first_ns: int | None = None
    previous: tuple[int, str] | None = None
    for line, row in _csv_rows(path, AZURE_COLUMNS, "Azure"):
        ns = _azure_ns(row["TIMESTAMP"], line, error)
        if previous is not None and ns < previous[0]:
            raise error(
                line,
                "TIMESTAMP",
                f"goes backwards ({row['TIMESTAMP']} after {previous[1]}); traces must be in arrival order",
            )
        previous = (ns, row["TIMESTAMP"])
        first_ns = ns if first_ns is None else first_ns
        n_in = as_count(row["ContextTokens"], "ContextTokens", line, error, minimum=0)
        n_out = as_count(row["GeneratedTokens"], "GeneratedTokens", line, error, minimum=0)
        if not empty.skip(n_in, line):
            rows.add((ns - first_ns) / 1e9, n_in, n_out)
    empty.warn()
    return rows.build(block_size=LENGTHS_ONLY_BLOCK_SIZE if block_size is None else block_size, source=str(path))


def read_burstgpt(path: Path, *, block_size: int | None = None) -> Trace:
    """BurstGPT: ``Timestamp`` (s), ``Model``, ``Request tokens``, ``Response tokens``, ``Log Type``,
    and in release 1.1 and later ``Session ID``.

    A session's requests are its conversation's turns, numbered in arrival order (1, 2, ...);
    rows without a session id are single requests. BurstGPT logs failed calls too. Rows with
    zero request tokens carry no prompt to serve and are skipped with one warning giving their
    count; zero response tokens are kept (a request that produced nothing still cost its
    prefill).
    """
    error = LineError(str(path))
    rows = ColumnBuilder()
    previous: float | None = None
    empty = _EmptyPrompts(path, "request tokens")
    session_of: dict[str, int] = {}  # session id -> (dense number)
    turns: dict[int, int] = {}  # dense session number -> turns seen
    required = ("Timestamp", "Model", "Request tokens", "Response tokens")
    for line, row in _csv_rows(path, required, "BurstGPT"):
        t = as_time(row["Timestamp"], "Timestamp", line, error)
        check_monotone(previous, t, "Timestamp", line, error)
        previous = t
        n_in = as_count(row["Request tokens"], "Request tokens", line, error, minimum=0)
        n_out = as_count(row["Response tokens"], "Response tokens", line, error, minimum=0)
        if empty.skip(n_in, line):
            continue
        session, turn = NO_SESSION, NO_TURN
        if row.get("Session ID"):
            session = session_of.setdefault(row["Session ID"], len(session_of))
            turn = turns[session] = turns.get(session, 0) + 1
        kind = row["Model"] + (f"/{row['Log Type']}" if row.get("Log Type") else "")
        rows.add(t, n_in, n_out, session_id=session, turn=turn, category=kind or None)
    empty.warn()
    return rows.build(block_size=LENGTHS_ONLY_BLOCK_SIZE if block_size is None else block_size, source=str(path))


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
        if t < 0:  # kept as given, not rebased: Trace.validate would name a row, not this line
            raise error(line, "arrival_s", f"is negative (got {t})")
        check_monotone(previous, t, "arrival_s", line, error)
        previous = t
        n_in = as_count(row["input_tokens"], "input_tokens", line, error, minimum=1)
        n_out = as_count(row["output_tokens"], "output_tokens", line, error, minimum=0)
        hashes: list[int] = []
        if row.get("block_hashes"):
            if block_size is None:
                raise error(
                    line,
                    "block_hashes",
                    "has hashes but no block size was given (CSV has no metadata): pass --block-size N to "
                    "kvsim-trace, trace.block_size=N to kvsim, or block_size=N to open_trace",
                )
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
    trace = rows.build(
        block_size=LENGTHS_ONLY_BLOCK_SIZE if block_size is None else block_size, source=str(path), rebase_time=False
    )
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
