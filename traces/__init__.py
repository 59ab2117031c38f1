"""Trace sources: readers for public formats, synthetic generators, one canonical table."""

from traces.errors import TraceFormatError, TraceSpecError
from traces.generators import KINDS, default_workload, generate
from traces.io import read_trace, write_trace
from traces.readers import FORMATS, open_trace
from traces.schema import Trace
from traces.spec import TraceSpec, load_trace
from traces.stats import trace_stats

__all__ = [
    "FORMATS",
    "KINDS",
    "Trace",
    "TraceFormatError",
    "TraceSpec",
    "TraceSpecError",
    "default_workload",
    "generate",
    "load_trace",
    "open_trace",
    "read_trace",
    "trace_stats",
    "write_trace",
]
