"""Trace sources: readers for public formats, synthetic generators, one canonical table."""

from traces.errors import TraceFormatError
from traces.io import read_trace, write_trace
from traces.schema import Trace

__all__ = ["Trace", "TraceFormatError", "read_trace", "write_trace"]
