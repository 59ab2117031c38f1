"""Accumulates parsed records into the CSR columns of a :class:`~traces.schema.Trace`."""

from __future__ import annotations

import numpy as np

from traces.schema import NO_SESSION, NO_TURN, Trace


class ColumnBuilder:
    """Append one request at a time; :meth:`build` makes NumPy columns once at the end.

    Hashes go into one flat list (not one array per request), which keeps a million-request
    file from turning into a million small arrays.
    """

    def __init__(self) -> None:
        self.arrival: list[float] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.offsets: list[int] = [0]
        self.hashes: list[int] = []
        self.sessions: list[int] = []
        self.turns: list[int] = []
        self.categories: list[str | None] = []

    def add(
        self,
        arrival_s: float,
        input_tokens: int,
        output_tokens: int,
        hashes: list[int] = (),  # type: ignore[assignment]
        *,
        session_id: int = NO_SESSION,
        turn: int = NO_TURN,
        category: str | None = None,
    ) -> None:
        self.arrival.append(arrival_s)
        self.inputs.append(input_tokens)
        self.outputs.append(output_tokens)
        self.hashes.extend(hashes)
        self.offsets.append(len(self.hashes))
        self.sessions.append(session_id)
        self.turns.append(turn)
        self.categories.append(category)

    def __len__(self) -> int:
        return len(self.arrival)

    def build(self, *, block_size: int, source: str, rebase_time: bool = True) -> Trace:
        """The trace, with arrivals shifted so that the first request arrives at 0 s."""
        arrival = np.asarray(self.arrival, dtype=np.float64)
        if rebase_time and len(arrival):
            arrival = arrival - arrival[0]
        return Trace.from_columns(
            arrival_s=arrival,
            input_tokens=np.asarray(self.inputs, dtype=np.int64),
            output_tokens=np.asarray(self.outputs, dtype=np.int64),
            block_offsets=np.asarray(self.offsets, dtype=np.int64),
            flat_hashes=np.asarray(self.hashes, dtype=np.uint64),
            block_size=block_size,
            session_id=np.asarray(self.sessions, dtype=np.int64),
            turn=np.asarray(self.turns, dtype=np.int64),
            categories=self.categories if any(c is not None for c in self.categories) else None,
            source=source,
        )
