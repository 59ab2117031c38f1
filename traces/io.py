"""Canonical traces on disk: Parquet files with ``block_size`` in the table metadata."""

from __future__ import annotations

import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq

from traces.atomic import atomic_path
from traces.errors import TraceFormatError
from traces.schema import Trace


def write_trace(trace: Trace, path: str | os.PathLike[str]) -> Path:
    """Write ``trace`` as Parquet atomically (no partial file is ever left at ``path``)."""
    with atomic_path(path) as tmp:
        pq.write_table(trace.to_arrow(), tmp, compression="zstd")
    return Path(path)


def read_trace(path: str | os.PathLike[str], *, block_size: int | None = None) -> Trace:
    """Read a canonical Parquet trace written by :func:`write_trace` or another tool."""
    source = str(path)
    try:
        table = pq.read_table(path)
    except FileNotFoundError:
        raise TraceFormatError(source, None, None, "file not found") from None
    except (pa.ArrowInvalid, OSError) as exc:
        raise TraceFormatError(source, None, None, f"is not a readable Parquet file ({exc})") from None
    return Trace.from_arrow(table, source=source, block_size=block_size)
