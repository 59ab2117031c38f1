"""Progress of a serve run on stderr: a tqdm bar on a terminal, plain lines elsewhere.

The bar counts finished requests, not simulated seconds: an overloaded run keeps working long
after its last arrival while its backlog drains, and a bar over arrival time would sit at 100 %
through all of it. Simulated time and the drain show in the bar's postfix. Where stderr is not
a terminal (a log file, a sweep's worker processes) a bar's carriage returns garble the output,
so a line is written as each tenth of the requests is done instead (at most one per
``LINE_INTERVAL_S``, so a run of a few seconds writes none), labelled with the run it belongs
to when several share the stream.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

LINE_STEPS = 10  # plain-line mode: one line per tenth of the requests
LINE_INTERVAL_S = 5.0  # ... and no two lines closer in wall time than this


class SimProgress:
    def __init__(self, last_arrival_s: float, n_requests: int, label: str = "", stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._last_arrival_s = last_arrival_s
        self._n_requests = n_requests
        self._label = f"{label}: " if label else ""
        self._started = self._last_line = time.monotonic()
        self._next_step = 1
        self._bar = (
            tqdm(
                total=n_requests,
                unit="req",
                desc=label or None,
                file=self._stream,
                delay=LINE_INTERVAL_S,
                dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} requests [{elapsed}<{remaining}]{postfix}",
            )
            if _is_terminal(self._stream)
            else None
        )

    def _where(self, now_s: float) -> str:
        if now_s <= self._last_arrival_s:
            return f"sim {now_s:,.0f}/{self._last_arrival_s:,.0f} s of arrivals"
        return f"draining, sim {now_s - self._last_arrival_s:,.0f} s after the last arrival"

    def update(self, now_s: float, done: int) -> None:
        wall = time.monotonic()
        if self._bar is not None:
            if wall - self._started >= LINE_INTERVAL_S:  # tqdm's own delay binds update(), not refresh()
                self._bar.n = done
                self._bar.set_postfix_str(self._where(now_s), refresh=False)
                self._bar.refresh()
            return
        step = done * LINE_STEPS // self._n_requests if self._n_requests else 0
        if step >= self._next_step and wall - self._last_line >= LINE_INTERVAL_S:
            elapsed = wall - self._started
            print(
                f"kvsim: {self._label}{done:,}/{self._n_requests:,} requests done, "
                f"{self._where(now_s)}, {elapsed:,.0f} s elapsed",
                file=self._stream,
                flush=True,
            )
            self._next_step = step + 1
            self._last_line = wall

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
