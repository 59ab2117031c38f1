"""``kvsim-trace``: convert public traces to the canonical Parquet table, inspect, generate.

    kvsim-trace convert SRC --format mooncake -o OUT.parquet
    kvsim-trace stats FILE [--json]
    kvsim-trace gen KIND [--n N] [--seed S] [--param key=value ...] -o OUT.parquet

Bad input prints one line naming file, line and field and exits with status 2; no output
file is left behind (outputs are written under a temporary name and renamed at the end).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

from traces.atomic import unwritable_file
from traces.errors import TraceFormatError
from traces.generators import KINDS, generate
from traces.io import write_trace
from traces.readers import FORMATS, open_trace
from traces.schema import Trace, block_size_problem
from traces.sessions import infer_sessions
from traces.stats import format_stats, trace_stats

EXIT_BAD_INPUT = 2


def _parse_value(text: str) -> Any:
    """``key=value`` values: JSON where it parses (numbers, true, null), else the string."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def _params(pairs: list[str]) -> dict[str, Any]:
    params = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise ValueError(f"--param expects key=value, got {pair!r}")
        params[key] = _parse_value(value)
    return params


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="kvsim-trace", description="Convert, inspect and generate kvsim traces.")
    sub = parser.add_subparsers(dest="command", required=True)
    convert = sub.add_parser("convert", help="read a trace in a public format, write canonical Parquet")
    convert.add_argument("source")
    convert.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    convert.add_argument("--block-size", type=int, default=None, help="hash block size (csv input; or override)")
    convert.add_argument("-o", "--output", required=True)
    stats = sub.add_parser("stats", help="requests, lengths, unique blocks, reuse ratio, per category")
    stats.add_argument("file")
    for command in (convert, stats):
        command.add_argument(
            "--infer-sessions",
            action="store_true",
            help="recover sessions from prefix chains where the trace has none (Mooncake)",
        )
    stats.add_argument("--format", choices=("auto", *FORMATS), default="auto")
    stats.add_argument("--block-size", type=int, default=None, help="hash block size (csv input; or override)")
    stats.add_argument("--json", action="store_true", help="print JSON instead of a table")
    gen = sub.add_parser("gen", help="generate a synthetic trace")
    gen.add_argument("kind", choices=KINDS)
    gen.add_argument("--n", type=int, default=None, help="number of requests")
    gen.add_argument("--seed", type=int, default=0)
    gen.add_argument("--param", action="append", default=[], metavar="KEY=VALUE", help="generator parameter")
    gen.add_argument("-o", "--output", required=True)
    return parser


@contextlib.contextmanager
def _reader_notes_to_stderr() -> Iterator[None]:
    """What the readers log about a file (such as block ids chained as read) as a line on
    stderr, and what they warn of (rows skipped) as ``kvsim-trace: warning:`` lines rather than
    Python's source-line format, for the command's run only."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(logging.Formatter("kvsim-trace: %(message)s"))
    logger = logging.getLogger("traces")
    level = logger.level
    logger.addHandler(handler)
    logger.setLevel(logging.INFO)
    formatwarning = warnings.formatwarning
    warnings.formatwarning = _one_line_warning
    try:
        yield
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)
        warnings.formatwarning = formatwarning


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    return f"kvsim-trace: warning: {message}\n"


def main(argv: list[str] | None = None) -> int:
    with _reader_notes_to_stderr():
        try:
            return _main(argv)
        except BrokenPipeError:
            # The reader of stdout went away (``kvsim-trace stats ... | head``): nothing is lost.
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            return 0


def _read(path: str, format: str, block_size: int | None, sessions_inferred: bool) -> Trace:
    """The trace at ``path``, with sessions inferred if asked; one with no requests is refused,
    as ``kvsim`` refuses to run it, rather than converted into an empty file or summarised as
    zeros."""
    trace = open_trace(path, format, block_size=block_size)
    if len(trace) == 0:
        raise TraceFormatError(path, None, None, "holds no requests")
    return infer_sessions(trace) if sessions_inferred else trace


def _main(argv: list[str] | None) -> int:
    args = _parser().parse_args(argv)
    output = getattr(args, "output", None)
    if output is not None and not output.endswith(".parquet"):
        # Only Parquet is written; a .csv or .jsonl name would hold Parquet that nothing reads.
        print(f"kvsim-trace: error: {output}: the output is Parquet; name it *.parquet", file=sys.stderr)
        return EXIT_BAD_INPUT
    block_size = getattr(args, "block_size", None)
    problem = None if block_size is None else block_size_problem(block_size)
    if problem:
        print(f"kvsim-trace: error: --block-size {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    reason = None if output is None else unwritable_file(output)
    if reason is not None:
        print(f"kvsim-trace: error: {output}: cannot be written: {reason}", file=sys.stderr)
        return EXIT_BAD_INPUT
    try:
        if args.command == "convert":
            trace = _read(args.source, args.format, args.block_size, args.infer_sessions)
            write_trace(trace, args.output)
            print(f"wrote {args.output}: {len(trace):,} requests, {trace.n_block_accesses:,} block hashes")
        elif args.command == "stats":
            stats = trace_stats(_read(args.file, args.format, args.block_size, args.infer_sessions))
            print(json.dumps(stats, indent=2) if args.json else format_stats(stats))
        else:
            params = _params(args.param)
            if args.n is not None:
                params["n_requests"] = args.n
            trace = generate(args.kind, args.seed, **params)
            write_trace(trace, args.output)
            print(f"wrote {args.output}: {len(trace):,} requests over {trace.arrival_s[-1]:,.1f} s")
    except (TraceFormatError, ValueError) as exc:
        print(f"kvsim-trace: error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    return 0


if __name__ == "__main__":
    sys.exit(main())
