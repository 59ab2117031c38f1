"""Pieces every generator shares: parameter checking, length draws, assembling the trace."""

from __future__ import annotations

import dataclasses
import numbers
from typing import Any, TypeVar

import numpy as np

from traces.generators.arrivals import ArrivalProcess
from traces.schema import NO_SESSION, NO_TURN, Trace

P = TypeVar("P")


def make_params(cls: type[P], kind: str, params: dict[str, Any]) -> P:
    """``cls(**params)``, with an unknown name reported against the valid ones."""
    valid = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(params) - valid)
    if unknown:
        raise ValueError(f"{kind} generator has no parameter {unknown[0]!r}; valid: {', '.join(sorted(valid))}")
    fields = {f.name: f for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    for name, value in params.items():
        field = fields[name]
        if value is None and field.default is None:
            continue  # an optional parameter left to its derived default
        expected = _kind_of(field.default) if field.default is not None else _OPTIONAL.get(str(field.type))
        if expected is not None and _kind_of(value) not in _ACCEPTS[expected]:
            raise ValueError(f"{kind} generator parameter {name!r} must be {expected}, got {value!r}")
    return cls(**params)


# Optional parameters (default None: derived from the others) by their annotation.
_OPTIONAL = {"float | None": "a number", "int | None": "an integer", "str | None": "a string"}


# What a parameter whose default is of each kind accepts: an integer where a float is expected,
# never a float where an integer is (a request count of 2.5 is a mistake, not a rounding).
_ACCEPTS = {"an integer": {"an integer"}, "a number": {"an integer", "a number"}, "a string": {"a string"}}


def _kind_of(value: Any) -> str | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, numbers.Integral):
        return "an integer"
    if isinstance(value, numbers.Real):
        return "a number"
    if isinstance(value, str):
        return "a string"
    return None


def lognormal_int(rng: np.random.Generator, median: float, sigma: float, size: int, lo: int, hi: int) -> np.ndarray:
    """Integer draws around ``median`` with log-spread ``sigma``, clipped to ``[lo, hi]``.

    Prompt and output lengths of real services are close to log-normal (Azure, BurstGPT,
    Mooncake all show a long right tail), so every length here is drawn this way.
    """
    draws = rng.lognormal(np.log(median), sigma, size) if sigma > 0 else np.full(size, float(median))
    return np.clip(np.rint(draws), lo, hi).astype(np.int64)


def zipf_choice(rng: np.random.Generator, n: int, skew: float, size: int) -> np.ndarray:
    """Indices in ``[0, n)`` with probability proportional to ``1 / (rank + 1) ** skew``."""
    weights = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** skew
    return rng.choice(n, size=size, p=weights / weights.sum())


def arrival_process(kind: str, rate: float, cv: float, on_s: float, off_s: float) -> ArrivalProcess:
    return ArrivalProcess(kind=kind, rate=rate, cv=cv, on_s=on_s, off_s=off_s)


class TraceAssembler:
    """Collects requests in any order, then sorts them by arrival into a canonical trace."""

    def __init__(self) -> None:
        self.arrival: list[float] = []
        self.inputs: list[int] = []
        self.outputs: list[int] = []
        self.hashes: list[np.ndarray] = []
        self.sessions: list[int] = []
        self.turns: list[int] = []

    def add(
        self, arrival: float, n_in: int, n_out: int, hashes: np.ndarray, session: int = NO_SESSION, turn: int = NO_TURN
    ) -> None:
        self.arrival.append(arrival)
        self.inputs.append(n_in)
        self.outputs.append(n_out)
        self.hashes.append(hashes)
        self.sessions.append(session)
        self.turns.append(turn)

    def build(self, *, block_size: int, n_requests: int, category: str, source: str) -> Trace:
        """The first ``n_requests`` by arrival (stable order), rebased to start at 0 s."""
        arrival = np.asarray(self.arrival, dtype=np.float64)
        order = np.argsort(arrival, kind="stable")[:n_requests]
        lengths = np.fromiter((len(self.hashes[i]) for i in order), dtype=np.int64, count=len(order))
        offsets = np.zeros(len(order) + 1, dtype=np.int64)
        np.cumsum(lengths, out=offsets[1:])
        flat = np.concatenate([self.hashes[i] for i in order]) if len(order) else np.zeros(0, np.uint64)
        arrival = arrival[order]
        return Trace.from_columns(
            arrival_s=arrival - (arrival[0] if len(arrival) else 0.0),
            input_tokens=np.asarray(self.inputs, dtype=np.int64)[order],
            output_tokens=np.asarray(self.outputs, dtype=np.int64)[order],
            block_offsets=offsets,
            flat_hashes=flat.astype(np.uint64, copy=False),
            block_size=block_size,
            session_id=np.asarray(self.sessions, dtype=np.int64)[order],
            turn=np.asarray(self.turns, dtype=np.int64)[order],
            categories=[category] * len(order),
            source=source,
        )
