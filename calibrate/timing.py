"""Timing GPU work honestly: device events, warm-up, fresh inputs, medians."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Sequence
from typing import Any


def median_gpu_seconds(
    run: Callable[[Any], object],
    input_sets: Sequence[Any],
    *,
    warmup: int = 3,
    repeat: int = 15,
    rest_s: float = 0.0,
) -> float:
    """Median seconds of ``run(inputs)`` over ``repeat`` timed calls, cycling ``input_sets``.

    Several input sets rotate so that repeated calls do not measure a warm L2 over one
    buffer; each call is bracketed by CUDA events, so host launch gaps between calls are not
    counted but everything the call enqueues is. ``rest_s`` idles the GPU between the warm-up
    and the timed calls, so that these start at full clock (:mod:`calibrate.sustained`).
    """
    import torch

    for i in range(warmup):
        run(input_sets[i % len(input_sets)])
    torch.cuda.synchronize()
    time.sleep(rest_s)
    return statistics.median(event_seconds(lambda i=i: run(input_sets[i % len(input_sets)])) for i in range(repeat))


def event_seconds(run: Callable[[], object]) -> float:
    """GPU seconds of what ``run()`` enqueues, between two CUDA events recorded around it
    (waited for), so the host's gaps before and after are not counted."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run()
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def capture_graph(fn: Callable[[], object], warmup: int = 2) -> Any:
    """``fn``'s kernels captured in a CUDA graph (``.replay()`` runs them), after ``warmup``
    calls on a side stream: lazy set-up (cuBLAS workspaces, Triton compilation, NCCL
    communicators) must happen before capture, where it cannot run."""
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(warmup):
            fn()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        fn()
    torch.cuda.synchronize()
    return graph


def median_graph_seconds(
    run: Callable[[Any], object],
    input_sets: Sequence[Any],
    *,
    calls: int = 20,
    repeat: int = 7,
    rest_s: float = 0.0,
) -> float:
    """Median GPU seconds of one ``run(inputs)``, from a CUDA graph of ``calls`` back-to-back
    calls (cycling ``input_sets``) replayed ``repeat`` times.

    Timing single small kernels between events measures the host's launch latency, not the
    GPU (a 17 us GEMV reads as 40 us). Serving engines replay decode steps from CUDA graphs, so
    the GPU's own time is the cost the simulator needs; the graph removes launch gaps.
    ``rest_s`` idles the GPU before each timed replay, so that every one starts at full clock:
    a long graph replayed back to back heats the GPU to its power cap within a tenth of a
    second (:mod:`calibrate.sustained`).
    """
    import torch

    graph = capture_graph(lambda: [run(input_sets[i % len(input_sets)]) for i in range(calls)], warmup=1)
    graph.replay()
    torch.cuda.synchronize()

    def timed(replay: Callable[[], object]) -> float:
        if rest_s:
            torch.cuda.synchronize()
            time.sleep(rest_s)
        return event_seconds(replay) / calls

    seconds = statistics.median(timed(graph.replay) for _ in range(repeat))
    del graph
    return seconds


def sustained_gpu_seconds(
    run: Callable[[Any], object],
    input_sets: Sequence[Any],
    *,
    load_s: float = 1.0,
    repeat: int = 7,
) -> float:
    """Median seconds of ``run(inputs)`` once it has run back to back for ``load_s``: the
    steady state of a busy server, after the power cap has lowered the clock as far as this
    work takes it (a tenth of a second or so on an H100; :mod:`calibrate.sustained`)."""
    import torch

    started, i = time.perf_counter(), 0
    while time.perf_counter() - started < load_s:
        for _ in range(4):
            run(input_sets[i % len(input_sets)])
            i += 1
        torch.cuda.synchronize()
    events = [torch.cuda.Event(enable_timing=True) for _ in range(repeat + 1)]
    events[0].record()
    for j in range(repeat):
        run(input_sets[(i + j) % len(input_sets)])
        events[j + 1].record()
    events[-1].synchronize()
    return statistics.median(events[j].elapsed_time(events[j + 1]) / 1e3 for j in range(repeat))
