"""Which trace a run uses, as plain data: a file (any supported format) or a generator.

The hydra CLI fills a :class:`TraceSpec` from ``trace=...`` overrides; notebooks build one
directly. :func:`load_trace` turns it into a :class:`~traces.schema.Trace`.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from traces.generators import generate
from traces.readers import open_trace
from traces.schema import Trace


@dataclass
class TraceSpec:
    path: str | None = None  # a trace file; None = the generator below
    format: str = "auto"  # auto, mooncake, bailian, azure, burstgpt, csv, parquet
    block_size: int | None = None  # hash block size where the format has none (csv) or to override
    generator: str = "default"  # used when path is None: see traces.generators.KINDS
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
    if spec.max_requests is not None and spec.max_requests < 1:
        raise ValueError(f"trace.max_requests must be >= 1 or null, got {spec.max_requests}")
    if not spec.time_scale > 0:
        raise ValueError(f"trace.time_scale must be > 0, got {spec.time_scale}")
    if spec.path is not None:
        trace = open_trace(spec.path, spec.format, block_size=spec.block_size)
    else:
        params = dict(spec.params)
        if spec.block_size is not None:
            params.setdefault("block_size", spec.block_size)
        trace = generate(spec.generator, spec.seed, **params)
    if spec.max_requests is not None and spec.max_requests < len(trace):
        trace = trace.select(slice(0, spec.max_requests))
    if spec.time_scale != 1.0:
        trace = replace(trace, arrival_s=np.asarray(trace.arrival_s) * spec.time_scale)
    return trace
