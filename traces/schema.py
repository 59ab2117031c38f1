"""The canonical trace: one row per request, held as NumPy columns.

Every reader and generator produces a :class:`Trace`; the simulator iterates its columns
directly (no DataFrame row loop). On disk a trace is a Parquet file whose schema is
:data:`ARROW_SCHEMA`, with ``block_size`` kept as table metadata.

Block hashes are stored in CSR form: the hashes of request ``i`` are
``block_hashes[block_offsets[i]:block_offsets[i + 1]]``. One flat array keeps a million-request
trace in a few hundred MB instead of a million small Python lists.

Nullable columns use sentinels in memory (``-1`` for ``session_id``, ``turn`` and
``category_code``) and real nulls in Arrow, so files read by other tools look natural.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa

from traces.errors import TraceFormatError, shown

NO_SESSION = -1
NO_TURN = -1
NO_CATEGORY = -1

SCHEMA_VERSION = "1"
META_BLOCK_SIZE = b"kvsim.block_size"
META_SCHEMA_VERSION = b"kvsim.schema_version"

ARROW_SCHEMA = pa.schema(
    [
        pa.field("request_id", pa.int64(), nullable=False),
        pa.field("arrival_s", pa.float64(), nullable=False),
        pa.field("input_tokens", pa.int32(), nullable=False),
        pa.field("output_tokens", pa.int32(), nullable=False),
        pa.field("block_hashes", pa.list_(pa.uint64()), nullable=False),
        pa.field("session_id", pa.int64(), nullable=True),
        pa.field("turn", pa.int32(), nullable=True),
        pa.field("category", pa.string(), nullable=True),
    ]
)
COLUMNS = tuple(ARROW_SCHEMA.names)
# The most tokens a stored prompt can hold (input_tokens is int32): a larger block holds no more.
MAX_BLOCK_SIZE = 2**31 - 1


def block_size_problem(value: object) -> str | None:
    """Why ``value`` is not a block size (tokens per hashed block), or ``None`` if it is one.

    Checked where a block size comes in (``trace.block_size``, ``--block-size``, a table's
    metadata), so that 0 is refused rather than read as "unset" and the readers' default taken
    in its place, and a huge one never reaches the per-request block counts, which it would
    overflow."""
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or not 1 <= value <= MAX_BLOCK_SIZE:
        return f"must be a whole number from 1 to {MAX_BLOCK_SIZE:,} (got {shown(value)})"
    return None


def _as_int32(values: np.ndarray, name: str, source: str) -> np.ndarray:
    """``values`` as int32, the stored width of counts; a value out of its range is an error
    naming the row (a plain cast would wrap 4,294,967,396 tokens round to 100)."""
    array = np.asarray(values)
    if array.dtype != np.int32 and array.size:
        info = np.iinfo(np.int32)
        outside = np.flatnonzero((array < info.min) | (array > info.max))
        if outside.size:
            row = int(outside[0])
            raise TraceFormatError(source, row, name, f"{array[row]} does not fit a 32-bit count")
    return array.astype(np.int32, copy=False)


@dataclass(frozen=True, eq=False)
class Trace:
    """A request trace in canonical form.

    Invariants (checked by :meth:`validate`, which every reader calls before returning):
    arrivals are finite and non-decreasing, ``input_tokens > 0``, ``output_tokens >= 0``,
    request ids are unique, and request ``i`` has at most ``ceil(input_tokens[i] / block_size)``
    hashes: one per prompt block, where a trace may or may not hash the last, partial block
    (Mooncake does).
    """

    request_id: np.ndarray  # int64
    arrival_s: np.ndarray  # float64, seconds from trace start
    input_tokens: np.ndarray  # int32
    output_tokens: np.ndarray  # int32
    block_offsets: np.ndarray  # int64, length n + 1
    block_hashes: np.ndarray  # uint64, flat
    session_id: np.ndarray  # int64, NO_SESSION where absent
    turn: np.ndarray  # int32, NO_TURN where absent
    category_code: np.ndarray  # int32, index into ``categories`` or NO_CATEGORY
    categories: tuple[str, ...]
    block_size: int
    source: str = field(default="<memory>", compare=False)

    def __len__(self) -> int:
        return len(self.request_id)

    @property
    def n_block_accesses(self) -> int:
        return int(self.block_offsets[-1])

    def hashes_of(self, i: int) -> np.ndarray:
        """The prefix block hashes of request ``i`` (a view, not a copy)."""
        return self.block_hashes[self.block_offsets[i] : self.block_offsets[i + 1]]

    def blocks_per_request(self) -> np.ndarray:
        return np.diff(self.block_offsets)

    def category_of(self, i: int) -> str | None:
        code = int(self.category_code[i])
        return None if code == NO_CATEGORY else self.categories[code]

    # ------------------------------------------------------------------ construction
    @classmethod
    def from_columns(
        cls,
        *,
        arrival_s: np.ndarray,
        input_tokens: np.ndarray,
        output_tokens: np.ndarray,
        block_hashes: list[np.ndarray] | None = None,
        block_offsets: np.ndarray | None = None,
        flat_hashes: np.ndarray | None = None,
        block_size: int,
        request_id: np.ndarray | None = None,
        session_id: np.ndarray | None = None,
        turn: np.ndarray | None = None,
        categories: list[str | None] | np.ndarray | None = None,
        source: str = "<memory>",
        validate: bool = True,
    ) -> Trace:
        """Build a trace from plain columns, filling absent optional columns with sentinels.

        Hashes come either as one array per request (``block_hashes``) or already in CSR form
        (``block_offsets`` + ``flat_hashes``). ``categories`` is one label (or ``None``) per
        request; it is stored as codes into a sorted tuple of distinct labels so that two
        traces with the same labels encode them identically.
        """
        n = len(arrival_s)
        if block_hashes is not None:
            lengths = np.fromiter((len(h) for h in block_hashes), dtype=np.int64, count=n)
            block_offsets = np.zeros(n + 1, dtype=np.int64)
            np.cumsum(lengths, out=block_offsets[1:])
            flat_hashes = (
                np.concatenate([np.asarray(h, dtype=np.uint64) for h in block_hashes])
                if n and block_offsets[-1]
                else np.zeros(0, dtype=np.uint64)
            )
        elif block_offsets is None or flat_hashes is None:
            block_offsets = np.zeros(n + 1, dtype=np.int64)
            flat_hashes = np.zeros(0, dtype=np.uint64)
        labels: tuple[str, ...] = ()
        codes = np.full(n, NO_CATEGORY, dtype=np.int32)
        if categories is not None:
            present = sorted({c for c in categories if c is not None})
            labels = tuple(present)
            index = {c: k for k, c in enumerate(labels)}
            codes = np.fromiter(
                (NO_CATEGORY if c is None else index[c] for c in categories),
                dtype=np.int32,
                count=n,
            )
        trace = cls(
            request_id=np.arange(n, dtype=np.int64) if request_id is None else np.asarray(request_id, dtype=np.int64),
            arrival_s=np.asarray(arrival_s, dtype=np.float64),
            input_tokens=_as_int32(input_tokens, "input_tokens", source),
            output_tokens=_as_int32(output_tokens, "output_tokens", source),
            block_offsets=np.asarray(block_offsets, dtype=np.int64),
            block_hashes=np.asarray(flat_hashes, dtype=np.uint64),
            session_id=np.full(n, NO_SESSION, dtype=np.int64)
            if session_id is None
            else np.asarray(session_id, dtype=np.int64),
            turn=np.full(n, NO_TURN, dtype=np.int32) if turn is None else _as_int32(turn, "turn", source),
            category_code=codes,
            categories=labels,
            block_size=int(block_size),
            source=source,
        )
        if validate:
            trace.validate()
        return trace

    # ------------------------------------------------------------------ checks
    def first_repeated_hash(self) -> tuple[int, int] | None:
        """``(row, hash)`` of the first request whose prompt holds one hash twice, or ``None``.
        A cache-only replay takes any stream of block ids, but serve mode names a prompt's blocks
        by their chained hash, each naming its whole prefix, so it refuses such a trace (block
        contents hashed without their prefix) before it would insert one block twice."""
        return _first_repeated_hash(self.block_offsets, self.block_hashes)

    def validate(self) -> None:
        """Raise :class:`TraceFormatError` naming the first offending row and field."""
        n = len(self.request_id)
        problem = block_size_problem(self.block_size)
        if problem:
            raise TraceFormatError(self.source, None, "block_size", problem)
        for name in ("arrival_s", "input_tokens", "output_tokens", "session_id", "turn", "category_code"):
            if len(getattr(self, name)) != n:
                raise TraceFormatError(self.source, None, name, f"has {len(getattr(self, name))} rows, expected {n}")
        if len(self.block_offsets) != n + 1 or (n and self.block_offsets[0] != 0):
            raise TraceFormatError(self.source, None, "block_hashes", "offsets are not a CSR index")
        _first_bad(self, ~np.isfinite(self.arrival_s), "arrival_s", "is not a finite number")
        _first_bad(self, self.arrival_s < 0, "arrival_s", "is negative")
        if n > 1:
            back = np.flatnonzero(np.diff(self.arrival_s) < 0)
            if len(back):
                i = int(back[0]) + 1
                raise TraceFormatError(
                    self.source,
                    i,
                    "arrival_s",
                    f"goes backwards ({self.arrival_s[i].item()!r} after {self.arrival_s[i - 1].item()!r}); "
                    "arrivals must be non-decreasing",
                )
        _first_bad(self, self.input_tokens <= 0, "input_tokens", "must be > 0")
        _first_bad(self, self.output_tokens < 0, "output_tokens", "must be >= 0")
        counts = np.diff(self.block_offsets)
        _first_bad(self, counts < 0, "block_hashes", "offsets decrease")
        max_blocks = -(-self.input_tokens.astype(np.int64) // self.block_size)
        too_many = counts > max_blocks
        if too_many.any():
            i = int(np.flatnonzero(too_many)[0])
            raise TraceFormatError(
                self.source,
                i,
                "block_hashes",
                f"has {counts[i]} hashes but input_tokens={self.input_tokens[i]} spans only "
                f"{max_blocks[i]} blocks of {self.block_size} tokens (ceil(input_tokens / block_size))",
            )
        if len(np.unique(self.request_id)) != n:
            ids, first = np.unique(self.request_id, return_index=True)
            dup = np.setdiff1d(np.arange(n), first)[0]
            raise TraceFormatError(self.source, int(dup), "request_id", f"{self.request_id[dup]} is not unique")
        bad_cat = (self.category_code < NO_CATEGORY) | (self.category_code >= len(self.categories))
        _first_bad(self, bad_cat, "category", "code out of range")

    # ------------------------------------------------------------------ Arrow
    def to_arrow(self) -> pa.Table:
        n = len(self)
        hashes = pa.ListArray.from_arrays(
            pa.array(self.block_offsets, type=pa.int64()).cast(pa.int32())
            if self.n_block_accesses < 2**31
            else pa.array(self.block_offsets, type=pa.int64()),
            pa.array(self.block_hashes, type=pa.uint64()),
        )
        if hashes.type != pa.list_(pa.uint64()):
            hashes = hashes.cast(pa.list_(pa.uint64()))
        cat_dict = pa.array(list(self.categories), type=pa.string())
        cat_codes = pa.array(self.category_code.astype(np.int32), mask=self.category_code == NO_CATEGORY)
        category = (
            pa.DictionaryArray.from_arrays(cat_codes, cat_dict).cast(pa.string()) if n else pa.array([], pa.string())
        )
        table = pa.Table.from_arrays(
            [
                pa.array(self.request_id, type=pa.int64()),
                pa.array(self.arrival_s, type=pa.float64()),
                pa.array(self.input_tokens, type=pa.int32()),
                pa.array(self.output_tokens, type=pa.int32()),
                hashes,
                pa.array(self.session_id, type=pa.int64(), mask=self.session_id == NO_SESSION),
                pa.array(self.turn, type=pa.int32(), mask=self.turn == NO_TURN),
                category,
            ],
            schema=ARROW_SCHEMA,
        )
        return table.replace_schema_metadata(
            {META_BLOCK_SIZE: str(self.block_size).encode(), META_SCHEMA_VERSION: SCHEMA_VERSION.encode()}
        )

    @classmethod
    def from_arrow(cls, table: pa.Table, *, source: str = "<arrow>", block_size: int | None = None) -> Trace:
        """Read a canonical table. ``block_size`` comes from the metadata unless given here; a
        given one that differs from the metadata of a table with hashes is refused (see
        :func:`_stored_block_size`)."""
        missing = [c for c in ("arrival_s", "input_tokens", "output_tokens") if c not in table.column_names]
        if missing:
            raise TraceFormatError(
                source, None, missing[0], f"column is missing; a canonical trace has {', '.join(COLUMNS)}"
            )
        stored = _stored_block_size(table.schema.metadata or {}, source)
        if block_size is None:
            if stored is None:
                raise TraceFormatError(
                    source, None, "block_size", "is not in the table metadata; pass block_size explicitly"
                )
            block_size = stored
        n = table.num_rows

        def column(name: str, dtype: type, fill: int | None = None) -> np.ndarray:
            if name not in table.column_names:
                if fill is None:
                    raise TraceFormatError(source, None, name, "column is missing")
                return np.full(n, fill, dtype=dtype)
            col = table.column(name).combine_chunks()
            if col.null_count and fill is None:
                row = int(np.flatnonzero(np.asarray(col.is_null()))[0])
                raise TraceFormatError(source, row, name, "is null")
            try:
                if col.null_count:
                    col = col.fill_null(fill)
                return np.asarray(col.cast(pa.from_numpy_dtype(np.dtype(dtype))), dtype=dtype)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TraceFormatError(source, None, name, f"cannot be read as {np.dtype(dtype)}: {exc}") from None

        if "block_hashes" in table.column_names:
            lists = table.column("block_hashes").combine_chunks()
            if lists.null_count:
                lists = lists.fill_null(pa.scalar([], type=lists.type))
            if pa.types.is_list(lists.type) or pa.types.is_large_list(lists.type):
                _refuse_null_hashes(lists, source)
            try:
                lists = lists.cast(pa.large_list(pa.uint64()))
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
                raise TraceFormatError(source, None, "block_hashes", f"is not a list of unsigned ints: {exc}") from None
            offsets = np.asarray(lists.offsets, dtype=np.int64)
            offsets = offsets - offsets[0]
            flat = np.asarray(lists.flatten(), dtype=np.uint64)
        else:
            offsets = np.zeros(n + 1, dtype=np.int64)
            flat = np.zeros(0, dtype=np.uint64)
        if stored is not None and block_size != stored and offsets[-1]:
            # The metadata is the size the hashes were made at (kvsim-trace convert keeps a
            # Mooncake file's 512): read at 16, each hash would stand for a 32nd of its block and
            # the run report almost no reuse, as the text readers' check_block_size_override says.
            raise TraceFormatError(
                source,
                None,
                "block_size",
                f"{block_size} given, but the file's hashes are over {stored}-token blocks (its kvsim.block_size "
                "metadata): leave the block size unset (trace.block_size, --block-size) to read them as written",
            )
        categories = None
        if "category" in table.column_names:
            categories = table.column("category").cast(pa.string()).to_pylist()
        return cls.from_columns(
            request_id=column("request_id", np.int64) if "request_id" in table.column_names else None,
            arrival_s=column("arrival_s", np.float64),
            input_tokens=column("input_tokens", np.int64),
            output_tokens=column("output_tokens", np.int64),
            block_offsets=offsets,
            flat_hashes=flat,
            session_id=column("session_id", np.int64, NO_SESSION),
            turn=column("turn", np.int32, NO_TURN),
            categories=categories,
            block_size=block_size,
            source=source,
        )

    def select(self, rows: np.ndarray | slice) -> Trace:
        """A new trace holding only the given rows (in the given order), hashes included. A
        contiguous range takes its hashes as one stretch of the flat array, with no gather
        (the first N requests of a trace of millions)."""
        if isinstance(rows, slice) and rows.step in (None, 1):
            start, stop, _ = rows.indices(len(self))
            stop = max(start, stop)
            first, last = int(self.block_offsets[start]), int(self.block_offsets[stop])
            offsets = self.block_offsets[start : stop + 1] - first
            return self._with_rows(slice(start, stop), offsets, self.block_hashes[first:last])
        idx = np.arange(len(self))[rows]
        starts, ends = self.block_offsets[idx], self.block_offsets[idx + 1]
        offsets = np.zeros(len(idx) + 1, dtype=np.int64)
        np.cumsum(ends - starts, out=offsets[1:])
        flat = (
            np.concatenate([self.block_hashes[s:e] for s, e in zip(starts, ends, strict=True)])
            if offsets[-1]
            else np.zeros(0, dtype=np.uint64)
        )
        return self._with_rows(idx, offsets, flat)

    def _with_rows(self, rows: np.ndarray | slice, offsets: np.ndarray, flat: np.ndarray) -> Trace:
        """The trace of ``rows`` with their hashes laid out as ``offsets``/``flat``; copies, so
        that a selection does not keep the whole of a large trace alive."""
        return Trace(
            request_id=self.request_id[rows].copy(),
            arrival_s=self.arrival_s[rows].copy(),
            input_tokens=self.input_tokens[rows].copy(),
            output_tokens=self.output_tokens[rows].copy(),
            block_offsets=offsets,
            block_hashes=flat.copy(),
            session_id=self.session_id[rows].copy(),
            turn=self.turn[rows].copy(),
            category_code=self.category_code[rows].copy(),
            categories=self.categories,
            block_size=self.block_size,
            source=self.source,
        )


def _stored_block_size(meta: dict[bytes, bytes], source: str) -> int | None:
    """The block size in a table's metadata, ``None`` where it has none; one that is not a
    block size is an error, given a size in its place or not, since it is what the table's
    hashes were made at."""
    if META_BLOCK_SIZE not in meta:
        return None
    try:
        stored = int(meta[META_BLOCK_SIZE])
    except ValueError:
        raise TraceFormatError(
            source, None, "block_size", f"metadata {meta[META_BLOCK_SIZE]!r} is not an integer"
        ) from None
    problem = block_size_problem(stored)
    if problem:
        raise TraceFormatError(source, None, "block_size", f"metadata kvsim.block_size {problem}")
    return stored


_REPEAT_CHECK_ACCESSES = 1 << 22  # hashes sorted at a time: bounded memory on huge traces


def _first_repeated_hash(offsets: np.ndarray, hashes: np.ndarray) -> tuple[int, int] | None:
    """``(row, hash)`` of the first request that holds one hash twice, or ``None``. The engine
    names blocks by hash, so a repeat would have one request insert the same block twice; it
    is found here, a chunk of requests at a time. Each (row, hash) is mixed into one 64-bit key
    and the keys sorted (a plain sort, several times faster than sorting pairs); only a chunk
    with two equal keys is sorted by the pairs themselves, to tell a repeat from a collision."""
    n = len(offsets) - 1
    start = 0
    while start < n:
        stop = int(np.searchsorted(offsets, offsets[start] + _REPEAT_CHECK_ACCESSES, side="right")) - 1
        stop = min(n, max(stop, start + 1))
        lo, hi = int(offsets[start]), int(offsets[stop])
        if hi - lo > 1:
            rows = np.repeat(np.arange(start, stop, dtype=np.uint64), np.diff(offsets[start : stop + 1]))
            chunk = hashes[lo:hi].astype(np.uint64, copy=False)
            keys = np.sort(chunk ^ (rows * np.uint64(0x9E3779B97F4A7C15)))
            if not (keys[1:] == keys[:-1]).any():
                start = stop
                continue
            order = np.lexsort((chunk, rows))
            rows, chunk = rows[order], chunk[order]
            same = (rows[1:] == rows[:-1]) & (chunk[1:] == chunk[:-1])
            if same.any():
                first = int(np.argmin(np.where(same, rows[1:], n)))
                return int(rows[1:][first]), int(chunk[1:][first])
        start = stop
    return None


def _first_bad(trace: Trace, mask: np.ndarray, field_name: str, problem: str) -> None:
    if mask.any():
        i = int(np.flatnonzero(mask)[0])
        # .item(): the message says -1.0, not NumPy's np.float64(-1.0)
        value = getattr(trace, field_name)[i].item() if hasattr(trace, field_name) else None
        raise TraceFormatError(trace.source, i, field_name, f"{problem} (got {value!r})")


def _refuse_null_hashes(lists: pa.Array, source: str) -> None:
    """A null inside a request's hash list has no block identity; casting it would invent one."""
    values = lists.flatten()  # only this slice's values, unlike ``lists.values``
    if values.null_count:
        first = int(np.flatnonzero(np.asarray(values.is_null()))[0])
        starts = np.asarray(lists.offsets, dtype=np.int64)
        row = int(np.searchsorted(starts - starts[0], first, side="right")) - 1
        raise TraceFormatError(source, row, "block_hashes", "holds a null hash")
