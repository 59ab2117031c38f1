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
one GEMM: how fast the clock recovers. A third runs a layer's GEMMs at each of a range of token
rows back to back: from about 192 rows on they take the GPU to its cap and slow by up to a fifth,
though a roofline counts them memory-bound below ~1,000. Nothing here changes the GPU's settings.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from typing import Any

from calibrate.power import ClockSampler
from calibrate.timing import capture_graph

GEMM_MKN = (8192, 4096, 14336)  # a long prefill's MLP projection: tensor cores flat out
COPY_BYTES = 256 * 2**20  # a device-to-device copy well past the L2
SHARES = (1.0, 0.85, 0.7, 0.55, 0.4, 0.2, 0.0)  # GEMM share of a mix's time at full clock
UNIT_S = 0.02  # one replay of a mix, at full clock (a step's length)
IDLE_S = 2.0  # before each mix: the clock back at full
LOAD_S = 3.0  # each mix back to back
STEADY_S = 1.0  # the last second of it is the steady state
RECOVERY_IDLE_S = (0.01, 0.03, 0.1, 0.3, 1.0)
RECOVERY_LOAD_S = 1.5
# Token rows of a transformer layer's GEMMs run back to back: from decode batches to prefills.
# Past ~128 rows a GEMM keeps both the tensor cores and HBM busy and takes the GPU to its cap,
# though a roofline calls it memory-bound; how much of it then slows is what these measure.
ROWS = (16, 64, 128, 192, 256, 384, 512, 768, 1024, 2048, 4096)
ROWS_MODEL = "llama-3-8b"  # whose layer: its four projections, weights of 8 layers (past the L2)
ROWS_PROBE_S = 0.005  # the full-clock timing of the rows' GEMMs: short enough not to heat the GPU


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
    """Run the three experiments; plain-dict results (see :func:`calibrate.fit.fit_clock`)."""
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
        def run() -> None:
            for i, name in enumerate(order):
                kernels[name](i)

        return capture_graph(run)

    # Each kernel alone at full clock: a few calls right after idle, too short to heat anything.
    full_clock = {}
    for name in kernels:
        g = graph([name] * 4)
        _idle(IDLE_S)
        full_clock[name] = statistics.median(_replays(g, 3)) / 4
        del g
    log(f"sustained: full clock GEMM {1e3 * full_clock['gemm']:.3f} ms, copy {1e3 * full_clock['copy']:.3f} ms")

    shares = SHARES[::3] if quick else SHARES
    mixes = []
    for share in shares:
        n_gemm = round(share * UNIT_S / full_clock["gemm"])
        n_copy = round((1.0 - share) * UNIT_S / full_clock["copy"])
        g = graph(_interleave(n_gemm, n_copy))
        unit_s = n_gemm * full_clock["gemm"] + n_copy * full_clock["copy"]
        _idle(IDLE_S)
        times = _replays(g, max(10, round(LOAD_S / unit_s)))
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
        _idle(IDLE_S)
        loaded = _replays(load, max(10, round(RECOVERY_LOAD_S / UNIT_S)))
        _idle(pause)
        first = _replays(probe, 1)[0]
        loaded_gemm = loaded[-1] / load_gemms
        recovery.append({"idle_s": pause, "gemm_s": first, "loaded_gemm_s": loaded_gemm})
        log(f"sustained: GEMM {1e3 * first:.3f} ms after {1e3 * pause:.0f} ms idle (loaded {1e3 * loaded_gemm:.3f})")
    del load, probe
    rows = measure_rows(clocks, log, quick)
    return {"gemm_mkn": list(GEMM_MKN), "copy_bytes": COPY_BYTES, "full_clock_s": full_clock, "mixes": mixes,
            "recovery": recovery, "rows": rows}  # fmt: skip


def measure_rows(
    clocks: ClockSampler | None, log: Callable[[str], None] = print, quick: bool = False, model: str = ROWS_MODEL
) -> list[dict]:
    """A layer's four GEMMs at each of :data:`ROWS` token rows: their time at full clock (as
    many layers as take about :data:`ROWS_PROBE_S`, right after idle: a longer timing would
    heat the GPU within itself, as 8 layers of Llama-3-70B at 4,096 rows, 80 ms, did) and once
    steady (the last second of 3 s back to back), with the clock meanwhile. Why: the
    simulator stretches only a kernel's clock-bound seconds, and a roofline split counts too
    few of a mid-sized GEMM's (:func:`calibrate.fit.fit_clock`)."""
    import torch

    from calibrate.shapes import gemm_shapes
    from hwmodels.models import get_model

    shapes = [kn for name, kn in gemm_shapes(get_model(model)).items() if name != "lm_head"]
    weights = [[torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for k, n in shapes] for _ in range(8)]
    records = []
    for m in ROWS[::3] if quick else ROWS:
        xs = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for k, _ in shapes]
        outs = [torch.empty(m, n, device="cuda", dtype=torch.bfloat16) for _, n in shapes]

        def layers(count: int, xs: list = xs, outs: list = outs) -> Callable[[], None]:
            def run() -> None:
                for i in range(count):
                    for x, w, o in zip(xs, weights[i % 8], outs, strict=True):
                        torch.matmul(x, w, out=o)

            return run

        single = capture_graph(layers(1))
        _idle(IDLE_S)
        count = max(1, min(8, int(ROWS_PROBE_S // min(_replays(single, 3)))))
        probe = capture_graph(layers(count))
        _idle(IDLE_S)
        full = statistics.median(_replays(probe, 3)) / count
        repeats = max(8, round(UNIT_S / full))
        load = capture_graph(layers(repeats))
        _idle(IDLE_S)
        times = _replays(load, max(10, round(LOAD_S / (repeats * full))))
        end = time.time()
        total = sum(times)
        steady = [t for t, at in zip(times, _ends(times), strict=True) if at > total - STEADY_S]
        state = clocks.window(end - STEADY_S, end) if clocks is not None else None
        record = {"m": m, "full_layer_s": full, "steady_layer_s": statistics.mean(steady) / repeats, "model": model}
        records.append(record | ({"steady_" + key: value for key, value in state.items()} if state else {}))
        log(
            f"sustained: layer GEMMs at {m} rows: {record['steady_layer_s'] / full:.3f} x full clock"
            + (f" at {state['sm_clock_mhz']:.0f} MHz, {state['power_w']:.0f} W" if state else "")
        )
        del single, probe, load, xs, outs
    return records


def _replays(g, count: int) -> list[float]:
    """Seconds of each of ``count`` back-to-back replays of ``g``."""
    import torch

    events = [torch.cuda.Event(enable_timing=True) for _ in range(count + 1)]
    events[0].record()
    for i in range(count):
        g.replay()
        events[i + 1].record()
    events[-1].synchronize()
    return [events[i].elapsed_time(events[i + 1]) / 1e3 for i in range(count)]


def _idle(seconds: float) -> None:
    import torch

    torch.cuda.synchronize()
    time.sleep(seconds)


def _ends(times: list[float]) -> list[float]:
    """When each replay ended, from the first one's start."""
    out, total = [], 0.0
    for t in times:
        total += t
        out.append(total)
    return out
