"""Readers for public trace formats, all producing the canonical :class:`~traces.schema.Trace`.

``open_trace(path, format="auto")`` picks the reader from the file: Parquet by suffix or magic
bytes; JSON lines by the fields of the first record (``chat_id`` = Bailian, ``hash_ids`` =
Mooncake); CSV by its header. Text files may be gzip-compressed. Every reader raises
:class:`~traces.errors.TraceFormatError` naming the file, line and field of the first bad
value; none returns a partial trace.

Block ids are made prefix chains as they are read. The simulator treats equal ids as
reusable KV, which holds only if an id fixes the whole prefix before it, as in vLLM's and
SGLang's block hashes. Mooncake documents its ids so; a file whose ids repeat after different
prefixes (per-block content hashes: Bailian's documentation says only that each 16-token
block is hashed) has them chained from its ids, as a prefix cache would hash those blocks.
Ids that already are chains are kept, so nothing changes for them.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import logging
import os
from collections.abc import Callable
from pathlib import Path

from traces.errors import TraceFormatError
from traces.hashing import prefix_chained
from traces.io import read_trace
from traces.readers._rows import GZIP_ERRORS, open_binary, open_text
from traces.readers.bailian import read_bailian
from traces.readers.csv_formats import read_azure, read_burstgpt, read_canonical_csv
from traces.readers.mooncake import read_mooncake
from traces.schema import Trace, block_size_problem

Reader = Callable[..., Trace]
log = logging.getLogger(__name__)
PARQUET_MAGIC = b"PAR1"


def _read_parquet(path: Path, *, block_size: int | None = None) -> Trace:
    return read_trace(path, block_size=block_size)


READERS: dict[str, Reader] = {
    "mooncake": read_mooncake,
    "bailian": read_bailian,
    "azure": read_azure,
    "burstgpt": read_burstgpt,
    "csv": read_canonical_csv,
    "parquet": _read_parquet,
}
FORMATS = tuple(READERS)


def detect_format(path: Path) -> str:
    """The format of ``path`` from its suffix or magic bytes, else its first non-blank line (gzip
    or not); an error lists the choices."""
    if path.suffix.lower() in (".parquet", ".pq"):
        return "parquet"
    with open_binary(path) as handle:
        try:
            if handle.read(len(PARQUET_MAGIC)) == PARQUET_MAGIC:
                return "parquet"
        except GZIP_ERRORS as exc:
            raise TraceFormatError(str(path), None, None, f"is a damaged gzip file ({exc})") from None
    try:
        first = next((text.strip() for _, text in open_text(path)), "")
    except TraceFormatError:
        first = ""  # not text: no format below matches
    if first.startswith("{"):
        try:
            record = json.loads(first)
        except json.JSONDecodeError:
            record = {}
        if isinstance(record, dict) and "chat_id" in record:
            return "bailian"
        if isinstance(record, dict) and "hash_ids" in record:
            return "mooncake"
    try:
        header = {h.strip() for h in next(csv.reader([first]), [])}
    except csv.Error:
        header = set()  # not CSV either: no format below matches
    if {"TIMESTAMP", "ContextTokens"} <= header:
        return "azure"
    if "Request tokens" in header:
        return "burstgpt"
    if "arrival_s" in header:
        return "csv"
    if not first:
        raise TraceFormatError(str(path), None, None, "is empty")
    raise TraceFormatError(
        str(path),
        None,
        None,
        f"cannot tell the trace format; name it (kvsim-trace --format, kvsim trace.format=) as one of "
        f"{', '.join(FORMATS)}",
    )


LFS_POINTER = b"version https://git-lfs.github.com/spec/"


def refuse_lfs_pointer(path: Path) -> None:
    """A clone without Git LFS holds a three-line pointer where a large trace should be; say so,
    rather than fail on its first line as a malformed row of whatever format was asked for."""
    with open_binary(path) as handle:
        try:
            head = handle.read(len(LFS_POINTER))
        except GZIP_ERRORS:
            return  # a damaged gzip: the reader names it
    if head == LFS_POINTER:
        raise TraceFormatError(
            str(path), None, None, "is a Git LFS pointer, not the trace: fetch the file itself (git lfs pull)"
        )


def open_trace(path: str | os.PathLike[str], format: str = "auto", *, block_size: int | None = None) -> Trace:
    """Read any supported trace file into the canonical form. ``block_size`` (tokens per hashed
    block) is for a format without one of its own (CSV) or to override it, and is checked here,
    before any reader divides by it: ``None`` leaves it to the file."""
    file = Path(path)
    problem = None if block_size is None else block_size_problem(block_size)
    if problem:
        raise ValueError(f"block_size {problem}")
    if format != "auto" and format not in READERS:
        raise TraceFormatError(
            str(file), None, None, f"unknown trace format {format!r}; choose one of auto, {', '.join(FORMATS)}"
        )
    refuse_lfs_pointer(file)
    fmt = detect_format(file) if format == "auto" else format
    trace = READERS[fmt](file, block_size=block_size)
    chained, changed = prefix_chained(trace.block_offsets, trace.block_hashes)
    if not changed:
        return trace
    log.info(
        "%s: block ids repeat after different prefixes, so they name block contents, not prefixes; "
        "chained them as a prefix cache hashes blocks (each id with the one before it)",
        file,
    )
    return dataclasses.replace(trace, block_hashes=chained)


__all__ = ["FORMATS", "READERS", "detect_format", "open_trace"]
