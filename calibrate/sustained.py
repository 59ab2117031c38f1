"""How far the SM clock falls under sustained load, and how fast it falls and recovers (GPU only).

Why: run back to back, compute-heavy work takes an H100 SXM or H200 to its 700 W power cap
within a fraction of a second and the SM clock drops by up to a quarter, while memory-bound
work stays below the cap at full clock (``benchmarks/gpu_power_state.py``). The microbenchmarks
time each kernel in whatever state the GPU happens to be in; the simulator needs to know, for a
step of a given mix of work, how slow it runs once the GPU has been busy for a while.

What a step's clock settles at depends on the power its work draws, so this measures mixes:
interleaved tensor-core GEMMs (clock-bound, the most power-hungry work a step does) and
device-to-device copies (HBM-bound, indifferent to the SM clock), in proportions from all
GEMM to all copy by their time at full clock. Each mix runs back to back after an idle spell;
every replay is timed, so the same run gives the onset (how fast the clock falls) and the
steady state (where it settles). A second experiment idles a loaded GPU for a while and times
one GEMM: how fast the clock recovers. Nothing here changes the GPU's settings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from calibrate.power import ClockSampler

GEMM_MKN = (8192, 4096, 14336)  # a long prefill's MLP projection: tensor cores flat out
COPY_BYTES = 256 * 2**20  # a device-to-device copy well past the L2
SHARES = (1.0, 0.85, 0.7, 0.55, 0.4, 0.2, 0.0)  # GEMM share of a mix's time at full clock
UNIT_S = 0.02  # one replay of a mix, at full clock (a step's length)
IDLE_S = 2.0  # before each mix: the clock back at full
LOAD_S = 3.0  # each mix back to back
STEADY_S = 1.0  # the last second of it is the steady state
RECOVERY_IDLE_S = (0.01, 0.03, 0.1, 0.3, 1.0)
RECOVERY_LOAD_S = 1.5


def _interleave(n_gemm: int, n_copy: int) -> list[str]:
    """``n_gemm`` GEMMs and ``n_copy`` copies spread evenly through one sequence, so that the
    power drawn over any stretch of a few milliseconds is the mix's."""
    total = n_gemm + n_copy
    order, placed = [], 0
    for i in range(total):
        if n_gemm and (i + 1) * n_gemm // total > placed:
            order.append("gemm")
            placed += 1
        else:
            order.append("copy")
    return order


def measure(clocks: ClockSampler | None, log: Callable[[str], None] = print, quick: bool = False) -> dict[str, Any]:
    """Run both experiments; plain-dict results (see :func:`calibrate.fit.fit_clock`)."""
    import torch

    m, k, n = GEMM_MKN
    a = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    b = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    c = torch.empty(m, n, device="cuda", dtype=torch.bfloat16)
    src = torch.randn(COPY_BYTES // 2, device="cuda", dtype=torch.bfloat16)
    dst = torch.empty_like(src)
    kernels = {
        "gemm": lambda i: torch.matmul(a[i % 2], b[i % 2], out=c),
        "copy": lambda i: dst.copy_(src),
    }

    def graph(order: list[str]) -> torch.cuda.CUDAGraph:
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for i, name in enumerate(order[:4]):
                kernels[name](i)
        torch.cuda.current_stream().wait_stream(stream)
        g = torch.cuda.CUDAGraph()
        with torch.cuda.graph(g):
            for i, name in enumerate(order):
                kernels[name](i)
        torch.cuda.synchronize()
        return g

    def replays(g: torch.cuda.CUDAGraph, count: int) -> list[float]:
        events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
        events[0].record()
        for i in range(count):
            g.replay()
            events[i + 1].record()
        events[-1].synchronize()
        return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(count)]

    def idle(seconds: float) -> None:
        torch.cuda.synchronize()
        time.sleep(seconds)

    # Each kernel alone at full clock: a few calls right after idle, too short to heat anything.
    full_clock = {}
    for name in kernels:
        g = graph([name] * 4)
        idle(IDLE_S)
        full_clock[name] = statistics.median(replays(g, 3)) / 4
        del g
    log(f"sustained: full clock GEMM {1e3 * full_clock['gemm']:.3f} ms, copy {1e3 * full_clock['copy']:.3f} ms")

    shares = SHARES[::3] if quick else SHARES
    mixes = []
    for share in shares:
        n_gemm = round(share * UNIT_S / full_clock["gemm"])
        n_copy = round((1.0 - share) * UNIT_S / full_clock["copy"])
        g = graph(_interleave(n_gemm, n_copy))
        unit_s = n_gemm * full_clock["gemm"] + n_copy * full_clock["copy"]
        idle(IDLE_S)
        times = replays(g, max(10, round(LOAD_S / unit_s)))
        end = time.time()
        del g
        total = sum(times)
        steady = [t for t, at in zip(times, _ends(times), strict=True) if at > total - STEADY_S]
        state = clocks.window(end - STEADY_S, end) if clocks is not None else None
        mix = {
            "gemm_share": round(n_gemm * full_clock["gemm"] / unit_s, 4),
            "n_gemm": n_gemm,
            "n_copy": n_copy,
            "full_clock_s": unit_s,
            "replay_s": [round(t, 7) for t in times],
            "steady_s": statistics.mean(steady),
        } | ({"steady_" + key: value for key, value in state.items()} if state else {})
        mixes.append(mix)
        log(
            f"sustained: GEMM share {mix['gemm_share']:.2f}: {mix['steady_s'] / unit_s:.3f} x full clock"
            + (f" at {state['sm_clock_mhz']:.0f} MHz, {state['power_w']:.0f} W" if state else "")
        )

    recovery = []
    load_gemms = max(1, round(UNIT_S / full_clock["gemm"]))
    load = graph(["gemm"] * load_gemms)
    probe = graph(["gemm"])
    for pause in RECOVERY_IDLE_S[::2] if quick else RECOVERY_IDLE_S:
        idle(IDLE_S)
        loaded = replays(load, max(10, round(RECOVERY_LOAD_S / UNIT_S)))
        idle(pause)
        first = replays(probe, 1)[0]
        loaded_gemm = loaded[-1] / load_gemms
        recovery.append({"idle_s": pause, "gemm_s": first, "loaded_gemm_s": loaded_gemm})
        log(f"sustained: GEMM {1e3 * first:.3f} ms after {1e3 * pause:.0f} ms idle (loaded {1e3 * loaded_gemm:.3f})")
    del load, probe
    return {"gemm_mkn": list(GEMM_MKN), "copy_bytes": COPY_BYTES, "full_clock_s": full_clock, "mixes": mixes,
            "recovery": recovery}  # fmt: skip


def _ends(times: list[float]) -> list[float]:
    """When each replay ended, from the first one's start."""
    out, total = [], 0.0
    for t in times:
        total += t
        out.append(total)
    return out
