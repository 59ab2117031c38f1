"""Timing GPU work honestly: device events, warm-up, fresh inputs, medians."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from typing import Any


def median_gpu_seconds(
    run: Callable[[Any], object],
    input_sets: Sequence[Any],
    *,
    warmup: int = 3,
    repeat: int = 15,
) -> float:
    """Median seconds of ``run(inputs)`` over ``repeat`` timed calls, cycling ``input_sets``.

    Several input sets rotate so that repeated calls do not measure a warm L2 over one
    buffer; each call is bracketed by CUDA events, so host launch gaps between calls are not
    counted but everything the call enqueues is.
    """
    import torch

    for i in range(warmup):
        run(input_sets[i % len(input_sets)])
    torch.cuda.synchronize()
    times = []
    for i in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        run(input_sets[i % len(input_sets)])
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3)
    return statistics.median(times)


def median_graph_seconds(
    run: Callable[[Any], object],
    input_sets: Sequence[Any],
    *,
    calls: int = 20,
    repeat: int = 7,
) -> float:
    """Median GPU seconds of one ``run(inputs)``, from a CUDA graph of ``calls`` back-to-back
    calls (cycling ``input_sets``) replayed ``repeat`` times.

    Timing single small kernels between events measures the host's launch latency, not the
    GPU (a 17 us GEMV reads as 40 us). Serving engines replay decode steps from CUDA graphs, so
    the GPU's own time is the cost the simulator needs; the graph removes launch gaps.
    """
    import torch

    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for i in range(2):
            run(input_sets[i % len(input_sets)])
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        for i in range(calls):
            run(input_sets[i % len(input_sets)])
    graph.replay()
    torch.cuda.synchronize()
    times = []
    for _ in range(repeat):
        start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        graph.replay()
        end.record()
        end.synchronize()
        times.append(start.elapsed_time(end) / 1e3 / calls)
    del graph
    return statistics.median(times)
