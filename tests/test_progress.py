"""Progress reports of a serve run: plain lines where stderr is no terminal, counting finished
requests through the drain after the last arrival."""

from __future__ import annotations

import dataclasses
import io
import re

import pytest

import sim.progress
from sim.config import HardwareConfig, SimConfig
from sim.progress import SimProgress
from sim.run import run
from traces import generate


def lines_of(stream: io.StringIO) -> list[str]:
    return stream.getvalue().splitlines()


def test_plain_lines_come_at_each_tenth_of_the_requests_with_the_run_label(monkeypatch) -> None:
    monkeypatch.setattr(sim.progress, "LINE_INTERVAL_S", 0.0)
    stream = io.StringIO()
    progress = SimProgress(100.0, 50, "eviction=lru", stream=stream)
    for done in range(51):
        progress.update(now_s=2.0 * done, done=done)
    progress.close(now_s=100.0, done=50)
    lines = lines_of(stream)
    assert len(lines) == 10 and all(line.startswith("kvsim: eviction=lru: ") for line in lines)
    assert [int(re.search(r"(\d+)/50 requests done", line).group(1)) for line in lines] == list(range(5, 51, 5))
    assert "sim 10/100 s of arrivals" in lines[0]
    assert "draining" not in lines[4]


def test_a_burst_of_progress_gives_one_line_not_one_per_tenth_crossed(monkeypatch) -> None:
    monkeypatch.setattr(sim.progress, "LINE_INTERVAL_S", 0.0)
    stream = io.StringIO()
    progress = SimProgress(10.0, 100, stream=stream)
    progress.update(now_s=5.0, done=73)
    progress.update(now_s=6.0, done=75)  # still in the seventh tenth: nothing new
    progress.update(now_s=7.0, done=80)
    assert [line.split(" requests")[0] for line in lines_of(stream)] == ["kvsim: 73/100", "kvsim: 80/100"]


def test_a_short_run_writes_no_lines() -> None:
    stream = io.StringIO()
    progress = SimProgress(10.0, 20, stream=stream)  # the default interval: seconds between lines
    for done in range(21):
        progress.update(now_s=float(done), done=done)
    assert stream.getvalue() == ""


def test_a_bar_on_a_terminal_ends_at_the_final_count_on_a_line_of_its_own(monkeypatch) -> None:
    monkeypatch.setattr(sim.progress, "LINE_INTERVAL_S", 0.0)

    class Terminal(io.StringIO):
        def isatty(self) -> bool:
            return True

    stream = Terminal()
    progress = SimProgress(10.0, 100, stream=stream)
    for done in range(0, 91, 10):  # the last sample before the run ends: 90 done
        progress.update(now_s=float(done), done=done)
    progress.close(now_s=25.0, done=100)
    final = stream.getvalue().split("\r")[-1]
    assert "100/100 requests" in final and "draining, sim 15 s after" in final and final.endswith("\n")
    # A sweep's run (labelled) shares the terminal with others: lines, not a bar.
    shared = Terminal()
    labelled = SimProgress(10.0, 100, "eviction=lru", stream=shared)
    labelled.update(now_s=5.0, done=50)
    assert shared.getvalue().startswith("kvsim: eviction=lru: 50/100 requests done") and "\r" not in shared.getvalue()


def test_an_overloaded_run_reports_its_drain(monkeypatch, capsys) -> None:
    monkeypatch.setattr(sim.progress, "LINE_INTERVAL_S", 0.0)
    trace = generate("rag", seed=1, n_requests=200)
    trace = dataclasses.replace(trace, arrival_s=trace.arrival_s * 0.02)  # 50 x the arrival rate
    with pytest.warns(UserWarning, match="overloaded"):
        run(SimConfig(hardware=HardwareConfig(hbm_gb=4.0)), trace, progress=True)
    lines = capsys.readouterr().err.splitlines()
    assert lines[-1].startswith("kvsim: 200/200 requests done, draining, sim ")
    # The count goes on through the drain: lines after the last arrival with work still left.
    drained = [int(re.search(r"(\d+)/200", line).group(1)) for line in lines if "draining" in line]
    assert len(drained) >= 5 and drained == sorted(drained) and drained[0] < 100
