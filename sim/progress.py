"""Progress of a serve run on stderr: a tqdm bar on a terminal, plain lines elsewhere.

The bar counts finished requests, not simulated seconds: an overloaded run keeps working long
after its last arrival while its backlog drains, and a bar over arrival time would sit at 100 %
through all of it. Simulated time and the drain show in the bar's postfix. Where stderr is not
a terminal (a log file) a bar's carriage returns garble the output, and where several runs
share one (a sweep's workers, each given a label) their bars would overwrite each other, so a
line is written as each tenth of the requests is done instead, labelled with its run. Nothing
shows for a run shorter than ``LINE_INTERVAL_S``: the bar is drawn only once that has passed,
and no two lines come closer than that.
"""

from __future__ import annotations

import sys
import time
from typing import TextIO

from tqdm import tqdm

LINE_STEPS = 10  # plain-line mode: one line per tenth of the requests
LINE_INTERVAL_S = 5.0  # nothing before this much wall time, and no two lines closer than this


class SimProgress:
    def __init__(self, last_arrival_s: float, n_requests: int, label: str = "", stream: TextIO | None = None) -> None:
        self._stream = stream if stream is not None else sys.stderr
        self._last_arrival_s = last_arrival_s
        self._n_requests = n_requests
        self._label = label
        self._as_bar = _is_terminal(self._stream) and not label
        self._bar: tqdm | None = None  # drawn once LINE_INTERVAL_S has passed
        self._started = self._last_line = time.monotonic()
        self._next_step = 1
        self._printed = 0  # requests done at the last plain line
        self._now_s, self._done = 0.0, 0

    def _where(self, now_s: float) -> str:
        if now_s <= self._last_arrival_s:
            return f"sim {now_s:,.0f}/{self._last_arrival_s:,.0f} s of arrivals"
        return f"draining, sim {now_s - self._last_arrival_s:,.0f} s after the last arrival"

    def update(self, now_s: float, done: int) -> None:
        self._now_s, self._done = now_s, done
        wall = time.monotonic()
        if self._as_bar:
            if self._bar is None and wall - self._started >= LINE_INTERVAL_S:
                self._bar = tqdm(
                    total=self._n_requests,
                    unit="req",
                    file=self._stream,
                    dynamic_ncols=True,
                    bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} requests [{elapsed}<{remaining}]{postfix}",
                )
            if self._bar is not None:
                self._show_on_bar()
            return
        step = done * LINE_STEPS // self._n_requests if self._n_requests else 0
        if step >= self._next_step and wall - self._last_line >= LINE_INTERVAL_S:
            self._line(wall)
            self._next_step = step + 1

    def close(self, now_s: float, done: int) -> None:
        """End the report at the run's final state: the bar completes its line (so what is
        printed next starts a line of its own), and a run that wrote lines ends with one."""
        self._now_s, self._done = now_s, done
        if self._bar is not None:
            self._show_on_bar()
            self._bar.close()
            self._bar = None
        elif self._printed and self._done > self._printed:
            self._line(time.monotonic())

    def _show_on_bar(self) -> None:
        assert self._bar is not None
        self._bar.n = self._done
        self._bar.set_postfix_str(self._where(self._now_s), refresh=False)
        self._bar.refresh()

    def _line(self, wall: float) -> None:
        head = f"{self._label}: " if self._label else ""
        print(
            f"kvsim: {head}{self._done:,}/{self._n_requests:,} requests done, "
            f"{self._where(self._now_s)}, {wall - self._started:,.0f} s elapsed",
            file=self._stream,
            flush=True,
        )
        self._printed = self._done
        self._last_line = wall


def _is_terminal(stream: TextIO) -> bool:
    isatty = getattr(stream, "isatty", None)
    return bool(isatty and isatty())
