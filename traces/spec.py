"""Which trace a run uses, as plain data: a file (any supported format) or a generator.

The hydra CLI fills a :class:`TraceSpec` from ``trace=...`` overrides; notebooks build one
directly. :func:`load_trace` turns it into a :class:`~traces.schema.Trace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from traces.errors import TraceSpecError
from traces.generators import KINDS, generate
from traces.readers import open_trace
from traces.schema import Trace, block_size_problem


@dataclass
class TraceSpec:
    path: str | None = None  # a trace file; None = the generator below
    format: str = "auto"  # auto, mooncake, bailian, azure, burstgpt, csv, parquet
    block_size: int | None = None  # hash block size where the format has none (csv) or to override
    generator: str | None = "default"  # used when path is None: see traces.generators.KINDS
    params: dict[str, Any] = field(default_factory=dict)  # generator parameters
    seed: int = 0
    max_requests: int | None = None  # keep only the first N requests
    time_scale: float = 1.0  # multiply arrival times: 0.5 = the same requests at twice the load

    def describe(self) -> str:
        if self.path is not None:
            return f"{self.path} ({self.format})"
        extra = ", ".join(f"{k}={v}" for k, v in sorted(self.params.items()))
        return f"generator {self.generator}(seed={self.seed}{', ' + extra if extra else ''})"


def load_trace(spec: TraceSpec) -> Trace:
    """The trace ``spec`` names, cut and rescaled as it asks; :class:`TraceSpecError` when it
    names none (a file format without a file, say: ``trace=mooncake`` without ``trace.path``)."""
    if spec.max_requests is not None and spec.max_requests < 1:
        raise TraceSpecError(f"trace.max_requests must be >= 1 or null, got {spec.max_requests}")
    if not 0 < spec.time_scale < float("inf"):
        raise TraceSpecError(f"trace.time_scale must be finite and > 0, got {spec.time_scale}")
    problem = None if spec.block_size is None else block_size_problem(spec.block_size)
    if problem:
        raise TraceSpecError(f"trace.block_size {problem}")
    if spec.path is not None:
        if spec.generator not in (None, "default"):
            # trace=rag trace.path=x: the rag choice and its parameters would be dropped unseen.
            raise TraceSpecError(
                f"trace.path and trace.generator={spec.generator} both name a trace; for a file use "
                "trace=file (or its format: trace=mooncake, ...) with trace.path"
            )
        if spec.params:
            # +trace.params.n_requests=500 on a file (hydra suggests the +) would run the whole file.
            given = ", ".join(f"{k}={v}" for k, v in sorted(spec.params.items()))
            raise TraceSpecError(
                f"trace.params ({given}) are generator parameters and a trace file takes none; "
                "to keep the first N requests of a file use trace.max_requests=N"
            )
        trace = open_trace(spec.path, spec.format, block_size=spec.block_size)
    else:
        trace = _generated(spec)
    if len(trace) == 0:
        raise TraceSpecError(f"{spec.describe()}: the trace has no requests")
    if spec.max_requests is not None and spec.max_requests < len(trace):
        trace = trace.select(slice(0, spec.max_requests))
    if spec.time_scale != 1.0:
        trace = replace(trace, arrival_s=np.asarray(trace.arrival_s) * spec.time_scale)
    return trace


def _generated(spec: TraceSpec) -> Trace:
    """The synthetic trace of a spec without a file. A file format with no file is an error, not
    a cue to fall back on a generator: a user who asked for their Mooncake trace and forgot the
    path must not get results for the bundled workload instead."""
    if spec.generator is None or spec.format != "auto":
        what = f"trace.format={spec.format}" if spec.format != "auto" else "this trace choice"
        raise TraceSpecError(
            f"trace.path is not set: {what} reads a trace file (add trace.path=/path/to/file), "
            f"or pick a generated workload (trace=<kind>, one of {', '.join(KINDS)})"
        )
    params = dict(spec.params)
    if spec.block_size is not None:
        params.setdefault("block_size", spec.block_size)
    try:
        return generate(spec.generator, spec.seed, **params)
    except ValueError as exc:
        raise TraceSpecError(f"trace.generator={spec.generator}: {exc}") from exc
