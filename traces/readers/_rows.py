"""Shared row checks for text readers, so every format reports bad input the same way.

Readers parse one record at a time and call these helpers with the record's 1-based line
number; a bad value raises :class:`TraceFormatError` naming file, line and field at once,
before anything is built, so the caller never sees a half-made trace.
"""

from __future__ import annotations

import gzip
import json
import math
import zlib
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from traces.errors import TraceFormatError, shown
from traces.schema import Trace


class LineError:
    """Builds errors for one source file, in the ``FILE: line N: field 'x': problem`` form."""

    def __init__(self, source: str) -> None:
        self.source = source

    def __call__(self, line: int, field: str | None, problem: str) -> TraceFormatError:
        return TraceFormatError(self.source, line, field, problem, unit="line")


GZIP_MAGIC = b"\x1f\x8b"
# What reading a truncated or corrupt gzip file raises, at whichever read first meets it.
GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)
UTF8_BOM = b"\xef\xbb\xbf"


def open_binary(path: Path) -> BinaryIO:
    """``path`` opened for reading bytes, decompressed if it is gzip (public traces often ship
    as ``.csv.gz``); a missing file or a directory is a :class:`TraceFormatError`."""
    source = str(path)
    try:
        handle = path.open("rb")
    except FileNotFoundError:
        raise TraceFormatError(source, None, None, "file not found") from None
    except IsADirectoryError:
        raise TraceFormatError(source, None, None, "is a directory, not a trace file") from None
    if handle.read(2) == GZIP_MAGIC:
        handle.close()
        return gzip.open(path)  # type: ignore[return-value]  (owns its file, closes it)
    handle.seek(0)
    return handle


def open_text(path: Path, *, keep_blank: bool = False) -> Iterator[tuple[int, str]]:
    """Yield ``(line_number, text)`` for non-blank lines, or every line with ``keep_blank`` (a
    CSV parser needs the blank lines inside a quoted field); decoding errors name the line. A
    UTF-8 byte-order mark (spreadsheet exports write one) is dropped, not taken as part of line 1."""
    source = str(path)
    with open_binary(path) as handle:
        try:
            for number, raw in enumerate(handle, start=1):
                if number == 1 and raw.startswith(UTF8_BOM):
                    raw = raw[len(UTF8_BOM) :]
                try:
                    text = raw.decode("utf-8")
                except UnicodeDecodeError:
                    raise TraceFormatError(source, number, None, "is not UTF-8 text", unit="line") from None
                if keep_blank or text.strip():
                    yield number, text
        except GZIP_ERRORS as exc:
            raise TraceFormatError(source, None, None, f"is a damaged gzip file ({exc})") from None


def json_records(path: Path, fmt: str) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, object)`` for each line of a JSON-lines file."""
    error = LineError(str(path))
    for number, text in open_text(path):
        text = text.strip()
        try:
            record = json.loads(text)
        except json.JSONDecodeError as exc:
            where = "the line ends early (truncated?)" if exc.pos >= len(text) else f"at column {exc.colno}"
            problem = f"malformed JSON ({exc.msg}, {where}); is this a {fmt} file?"
            raise error(number, None, problem) from None
        except ValueError:  # Python reads no integer of over 4,300 digits (int_max_str_digits)
            raise error(number, None, "holds a number too long to read (thousands of digits)") from None
        if not isinstance(record, dict):
            problem = f"expected a JSON object, got {type(record).__name__}; is this a {fmt} file?"
            raise error(number, None, problem)
        yield number, record


def require(record: dict[str, Any], field: str, line: int, error: LineError) -> Any:
    if field not in record:
        raise error(line, field, f"is missing (fields present: {', '.join(sorted(record)) or 'none'})")
    return record[field]


INT32_MAX = 2**31 - 1
INT64_MAX = 2**63 - 1


def _spells_infinity(value: Any) -> bool:
    """Whether ``value`` is written as infinity (``inf``, ``-Infinity``), not as a finite
    number too large for a float (``1e400``, 400 digits), which is out of range instead."""
    return isinstance(value, float) or str(value).strip().lstrip("+-").lower() in ("inf", "infinity")


def as_count(value: Any, field: str, line: int, error: LineError, *, minimum: int, maximum: int = INT32_MAX) -> int:
    """A count or id: an integer (or integral float) in ``[minimum, maximum]``.

    Token counts are stored as int32 and ids as int64; anything larger is a corrupt row. An
    integer is compared as the exact integer it is: as a float, 10**400 cannot be checked at
    all, and a CSV field of 400 digits would read as infinity.
    """
    written = value
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        text = str(value).strip()
        try:
            value = int(text)
        except ValueError:  # "700.0", "1e3", past Python's 4,300 digits; or not a number
            try:
                value = float(text)
            except ValueError:
                raise error(line, field, f"is not a number (got {shown(written)})") from None
    if isinstance(value, float) and (math.isnan(value) or math.isfinite(value) and value != int(value)):
        raise error(line, field, f"is not a whole number (got {shown(value)})")
    got = shown(written if isinstance(value, float) and math.isinf(value) else int(value))
    if value < minimum:
        raise error(line, field, f"must be >= {minimum} (got {got})")
    if value > maximum:
        raise error(line, field, f"must be <= {maximum} (got {got})")
    return int(value)


def as_time(value: Any, field: str, line: int, error: LineError) -> float:
    """A time: a finite number. One too large for a float is out of range, not infinite."""
    if isinstance(value, bool):
        raise error(line, field, f"is not a number (got {value!r})")
    try:
        t = float(value)
    except (TypeError, ValueError):
        raise error(line, field, f"is not a number (got {shown(value)})") from None
    except OverflowError:  # an integer past float's range: JSON reads 10**400 exactly
        raise error(line, field, f"is out of range (got {shown(value)})") from None
    if math.isinf(t) and not _spells_infinity(value):
        raise error(line, field, f"is out of range (got {shown(value)})")
    if not math.isfinite(t):
        raise error(line, field, f"is not finite (got {shown(value)})")
    return t


def as_hash_list(value: Any, field: str, line: int, error: LineError) -> list[int]:
    if not isinstance(value, list):
        raise error(line, field, f"must be a list of non-negative integers (got {type(value).__name__})")
    for h in value:
        if isinstance(h, bool) or not isinstance(h, int) or h < 0 or h >= 1 << 64:
            raise error(line, field, f"must hold non-negative 64-bit integers (got {h!r})")
    return value


def check_hash_count(n_hashes: int, input_tokens: int, block_size: int, line: int, error: LineError) -> None:
    """At most one hash per (possibly partial) prompt block."""
    most = -(-input_tokens // block_size)
    if n_hashes > most:
        raise error(
            line,
            "hash_ids",
            f"has {n_hashes} block hashes but input_length {input_tokens} at {block_size} tokens per block "
            f"allows at most {most}",
        )


def check_monotone(previous: float | None, current: float, field: str, line: int, error: LineError) -> None:
    if previous is not None and current < previous:
        raise error(line, field, f"goes backwards ({current} after {previous}); traces must be in arrival order")


def check_block_size_override(trace: Trace, block_size: int | None, default: int, fmt: str) -> None:
    """A block size given for a format whose hashes have a size of their own must fit them.

    A Mooncake hash stands for 512 tokens; read at 16 tokens a block, every prompt would share
    only its first few per cent, and the run would report hit ratios and TTFTs for a workload
    with almost no reuse, without a word. Too large a size already fails (more hashes than
    blocks); too small shows as hashes that cover a fraction of each prompt."""
    if block_size is None or block_size == default:
        return
    n_hashes = np.diff(trace.block_offsets)
    hashed = n_hashes > 0
    if not hashed.any():
        return
    covered = np.minimum(n_hashes[hashed] * block_size / trace.input_tokens[hashed], 1.0)
    median = float(np.median(covered))
    if median < 0.75:  # a file that hashes its full blocks covers nearly all of a long prompt
        raise TraceFormatError(
            trace.source,
            None,
            "block_size",
            f"at {block_size} tokens per block the hashes cover a median {median:.0%} of each prompt; "
            f"{fmt} hashes {default}-token blocks (leave trace.block_size unset)",
        )
