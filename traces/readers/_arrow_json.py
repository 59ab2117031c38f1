"""Whole-file reading of regular JSON-lines traces by Arrow.

Alibaba's Bailian traces run to millions of lines of a hundred 16-token block hashes each.
Checked value by value in Python, 100,000 such lines take 4.4 s here; Arrow's JSON reader and
the checks below, done on whole columns, take 1.6 s. A file is read here only when Arrow can
take it exactly as the row reader would: every field
present and of its type, no nulls, one object per line. Anything else returns ``None``, and
the caller reads the file again row by row, which names the line and field of the problem
(or accepts what Arrow is stricter about, such as a count written ``700.0``).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.json as pa_json

from traces.readers._rows import GZIP_ERRORS, INT32_MAX, UTF8_BOM, open_binary

# Arrow reads a file in blocks and a line may not straddle two: long enough for a prompt of
# some 400,000 hashes on one line.
_BLOCK_BYTES = 8 << 20


def read_regular(path: Path, fields: dict[str, pa.DataType]) -> pa.Table | None:
    """``fields`` of every line of ``path`` as one table, or ``None`` where the row reader
    must look: Arrow cannot parse a value as its type, a field is missing or null (Arrow
    reads both as null), a list holds a null, or a line holds other than one object."""
    schema = pa.schema(list(fields.items()))
    options = pa_json.ParseOptions(explicit_schema=schema, unexpected_field_behavior="ignore")
    try:
        with open_binary(path) as handle:
            data = handle.read()
        table = pa_json.read_json(
            pa.BufferReader(data),
            read_options=pa_json.ReadOptions(block_size=_BLOCK_BYTES),
            parse_options=options,
        )
    except (pa.ArrowException, *GZIP_ERRORS):
        return None
    if table.num_rows == 0 or table.num_rows != _object_lines(data):
        return None  # Arrow reads two objects on one line as two rows; json.loads refuses it
    for name in fields:
        column = table.column(name)
        if column.null_count:
            return None
        if pa.types.is_list(column.type) and pc.list_flatten(column).null_count:
            return None
    return table


def _object_lines(data: bytes) -> int:
    """Lines that are not blank, split as the row reader splits them: one object each in a
    file it accepts."""
    if data.startswith(UTF8_BOM):
        data = data[len(UTF8_BOM) :]
    return sum(1 for line in data.split(b"\n") if line.strip())


def requests_are_regular(
    times: np.ndarray, n_in: np.ndarray, n_out: np.ndarray, offsets: np.ndarray, block: int
) -> bool:
    """The checks every JSON-lines row reader makes of a request, on whole columns: times
    finite and in order, token counts in range, at most one hash per (partial) block."""
    return bool(
        np.isfinite(times).all()
        and (np.diff(times) >= 0).all()
        and ((n_in >= 1) & (n_in <= INT32_MAX) & (n_out >= 0) & (n_out <= INT32_MAX)).all()
        and (np.diff(offsets) <= -(-n_in // block)).all()
    )


def list_offsets(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """A list column as CSR: ``(offsets, flat values)`` with ``offsets[0] == 0``."""
    array = column.combine_chunks()
    offsets = array.offsets.to_numpy().astype(np.int64)
    values = array.values.to_numpy(zero_copy_only=False)
    start = int(offsets[0])
    return offsets - start, values[start : int(offsets[-1])]
