"""The microbenchmarks (GPU only; imports torch). Each returns a list of plain-dict records.

Inputs are drawn fresh with ``torch.randn`` (never zeros: zeros run faster than real data)
and rotated between timed calls; every number is a median of CUDA-event-timed repeats.
"""

from __future__ import annotations

import os
import tempfile
import time
from collections.abc import Callable
from typing import Any

from calibrate import shapes
from calibrate.power import ClockSampler
from calibrate.timing import median_gpu_seconds, median_graph_seconds

Record = dict[str, Any]


def _torch():
    import torch

    return torch


REST_S = 0.1  # idle before timing a compute-bound kernel: the clock is back at full (calibrate.sustained)
#: GEMMs of at least this many FLOPs (1.3 ms or more on an H100) are timed one kernel a replay,
#: each replay after :data:`REST_S` idle. Timed as three to a graph, replayed eight times back to
#: back, they ran under the power cap: on the H100 profile of 2026-11-23 the 31 GEMMs whose
#: graphs lasted over 30 ms were timed at a median 1,572 MHz (the rest at 1,965), and
#: Llama-3-70B's 8,192-row GEMMs were priced as they run under load, 11-13 % over a rested
#: GPU's time, which the clock model then stretched again.
LONG_GEMM_FLOPS = 1e12


def _clocked(clocks: ClockSampler | None, measure: Callable[..., float], *args: Any, **kwargs: Any) -> Record:
    """``seconds`` of ``measure(*args, **kwargs)`` at full clock and, when ``clocks`` reads
    them, the GPU's clock and power state meanwhile (:mod:`calibrate.power`).

    Compute-bound kernels timed one after another heat the GPU to its power cap, and the
    clock falls by up to a quarter; the profile is the GPU at full clock (the simulator prices
    the cap from :mod:`calibrate.sustained`), so each timing starts after :data:`REST_S` idle,
    over which the clock recovers, and is short enough (tens of milliseconds) not to heat it
    again. Records say the state they were timed in."""
    torch = _torch()
    if torch.cuda.is_available():  # (the record's bookkeeping is tested without a GPU)
        torch.cuda.synchronize()
    time.sleep(REST_S)
    start = time.time()
    seconds = measure(*args, **kwargs)
    state = clocks.window(start, time.time()) if clocks is not None else None
    return {"seconds": seconds} | (state or {})


def gemm(quick: bool, clocks: ClockSampler | None = None) -> list[Record]:
    torch = _torch()
    records = []
    kn_fit = shapes.all_gemm_shapes()
    kn_heldout = sorted(
        {kn for kn in (shapes.gemm_shapes(m, tp=2).values() for m in shapes.calibration_specs()) for kn in kn}
        - set(kn_fit)
    )
    plan = [(kn, m, "fit") for kn in kn_fit for m in shapes.GEMM_M_FIT]
    plan += [(kn, m, "heldout") for kn in kn_fit for m in shapes.GEMM_M_HELDOUT]
    plan += [(kn, m, "heldout_shape") for kn in kn_heldout for m in shapes.GEMM_M_FIT[::2]]
    if quick:
        plan = plan[:: max(1, len(plan) // 12)]
    for (k, n), m, split in plan:
        weights = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        acts = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        sets = [(acts[i % 2], weights[i % 2]) for i in range(4)]
        flops = 2.0 * m * k * n
        if flops >= LONG_GEMM_FLOPS:  # one kernel a replay, each replay from rest
            timing = _clocked(clocks, median_graph_seconds, _matmul, sets, calls=1, rest_s=REST_S)
        else:
            timing = _clocked(clocks, median_graph_seconds, _matmul, sets, calls=_calls(flops))
        records.append({"op": "gemm", "split": split, "m": m, "k": k, "n": n} | timing)
        del weights, acts, sets
    return records


def _matmul(ab: tuple[Any, Any]) -> Any:
    return _torch().matmul(*ab)


def _calls(flops: float) -> int:
    """Calls per graph: many for tiny kernels (so timing resolves them), few for big ones."""
    return int(min(50, max(3, 2e12 / max(flops, 1.0))))


def _qkv(
    batch: int, q_heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int, token_major: bool = False
) -> tuple:
    """Query, key and value as SDPA takes them, (batch, heads, length, head dim). With
    ``token_major`` they are views of (batch, length, heads, head dim) memory, the layout in
    which a prefill's Q, K and V leave the QKV projection and a paged cache holds tokens."""
    torch = _torch()

    def rand(heads: int, length: int):
        if token_major:
            return torch.randn(batch, length, heads, head_dim, device="cuda", dtype=torch.bfloat16).transpose(1, 2)
        return torch.randn(batch, heads, length, head_dim, device="cuda", dtype=torch.bfloat16)

    return rand(q_heads, q_len), rand(kv_heads, kv_len), rand(kv_heads, kv_len)


def _sdpa(q, k, v, causal: bool):
    import torch.nn.functional as F

    return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=q.shape[1] != k.shape[1])


def prefill_attention(quick: bool, clocks: ClockSampler | None = None) -> list[Record]:
    """Causal self-attention of ``seq`` new tokens; with a prefix, the new tokens also attend to
    ``prefix`` cached tokens (timed as the causal part plus the full cross part, which is how
    paged prefix attention splits the work)."""
    records = []
    plan = [((s, 0), "fit") for s in shapes.PREFILL_SEQ_FIT] + [((s, 0), "heldout") for s in shapes.PREFILL_SEQ_HELDOUT]
    plan += [(sp, "fit") for sp in shapes.PREFILL_PREFIX_FIT] + [
        (sp, "heldout") for sp in shapes.PREFILL_PREFIX_HELDOUT
    ]
    heads = shapes.attention_heads()
    if quick:
        plan, heads = plan[:3], heads[:1]
    for hq, hkv, d in heads:
        for (seq, prefix), split in plan:
            sets = [_qkv(1, hq, hkv, seq, prefix + seq, d, token_major=True) for _ in range(2)]

            def run(qkv, prefix=prefix, seq=seq):
                q, k, v = qkv
                if prefix:
                    _sdpa(q, k[:, :, :prefix], v[:, :, :prefix], causal=False)
                _sdpa(q, k[:, :, prefix:], v[:, :, prefix:], causal=True)

            calls = _calls(4.0 * hq * d * seq * (prefix + seq))
            timing = _clocked(
                clocks, lambda run=run, sets=sets, calls=calls: median_graph_seconds(run, sets, calls=calls)
            )
            records.append({"op": "prefill_attention", "split": split, "seq": seq, "prefix": prefix,
                            "q_heads": hq, "kv_heads": hkv, "head_dim": d} | timing)  # fmt: skip
            del sets
    return records


def decode_attention(quick: bool) -> list[Record]:
    """One query token per sequence over its cached context: the memory-bound decode kernel."""
    records = []
    plan = [
        ((b, c), "fit")
        for b in shapes.DECODE_BATCH_FIT
        for c in shapes.DECODE_CTX_FIT
        if b * c <= shapes.DECODE_MAX_TOKENS
    ]
    plan += [(bc, "heldout") for bc in shapes.DECODE_HELDOUT]
    heads = shapes.attention_heads()
    if quick:
        plan, heads = plan[:3], heads[:1]
    for hq, hkv, d in heads:
        for (batch, ctx), split in plan:
            sets = [_qkv(batch, hq, hkv, 1, ctx, d) for _ in range(2)]
            seconds = median_graph_seconds(lambda qkv: _sdpa(*qkv, causal=False), sets, calls=10)
            records.append({"op": "decode_attention", "split": split, "batch": batch, "ctx": ctx,
                            "q_heads": hq, "kv_heads": hkv, "head_dim": d, "seconds": seconds})  # fmt: skip
            del sets
    return records


def copies(quick: bool) -> list[Record]:
    """Host<->device copies, pinned and pageable, one large or many block-sized; and d2d."""
    torch = _torch()
    records = []
    sizes = [(b, "fit") for b in shapes.COPY_BYTES_FIT] + [(b, "heldout") for b in shapes.COPY_BYTES_HELDOUT]
    if quick:
        sizes = sizes[:3]
    largest = max(b for b, _ in sizes)
    device = torch.randn(largest // 2, device="cuda", dtype=torch.bfloat16).view(torch.uint8)
    device2 = torch.randn(largest // 2, device="cuda", dtype=torch.bfloat16).view(torch.uint8)
    pinned = torch.randn(largest // 2, dtype=torch.bfloat16).view(torch.uint8).pin_memory()
    pageable = torch.randn(largest // 2, dtype=torch.bfloat16).view(torch.uint8)
    kinds: dict[str, Callable[[int], Callable[[Any], object]]] = {
        "h2d": lambda nb: lambda _: device[:nb].copy_(pinned[:nb], non_blocking=True),
        "d2h": lambda nb: lambda _: pinned[:nb].copy_(device[:nb], non_blocking=True),
        "h2d_pageable": lambda nb: lambda _: device[:nb].copy_(pageable[:nb]),
        "d2h_pageable": lambda nb: lambda _: pageable[:nb].copy_(device[:nb]),
        "d2d": lambda nb: lambda _: device2[:nb].copy_(device[:nb]),
    }
    for kind, make in kinds.items():
        for nbytes, split in sizes:
            if kind in ("h2d", "d2h", "d2d"):
                # Asynchronous copies: timed on the GPU from a graph, as an engine issues them.
                seconds = median_graph_seconds(make(nbytes), [None], calls=10 if nbytes < 64 << 20 else 2)
            else:
                # Pageable copies are synchronous (staged through a bounce buffer): host-timed.
                seconds = median_gpu_seconds(make(nbytes), [None], repeat=5 if nbytes >= 256 << 20 else 15)
            records.append(
                {"op": "copy", "split": split, "kind": kind, "n_copies": 1, "bytes": nbytes, "seconds": seconds}
            )
    many = [(nm, "fit") for nm in shapes.COPY_MANY_FIT] + [(nm, "heldout") for nm in shapes.COPY_MANY_HELDOUT]
    if quick:
        many = many[:2]
    for kind in ("h2d", "d2h"):
        for (n, nbytes), split in many:
            # Distinct, non-contiguous slots, as a paged KV cache's blocks are.
            stride = nbytes * 2
            pairs = [(i * stride, (i * 3 % n) * stride) for i in range(n)]
            if kind == "h2d":

                def run(_, pairs=pairs, nbytes=nbytes):
                    for dst, src in pairs:
                        device[dst : dst + nbytes].copy_(pinned[src : src + nbytes], non_blocking=True)
            else:

                def run(_, pairs=pairs, nbytes=nbytes):
                    for dst, src in pairs:
                        pinned[src : src + nbytes].copy_(device[dst : dst + nbytes], non_blocking=True)

            if n * stride > largest // 2:
                continue
            seconds = median_graph_seconds(run, [None], calls=1, repeat=7)
            records.append(
                {"op": "copy", "split": split, "kind": kind, "n_copies": n, "bytes": nbytes, "seconds": seconds}
            )
    return records


def _copy_record(split: str, kind: str, n_copies: int, nbytes: int, seconds: float) -> Record:
    return {"op": "copy", "split": split, "kind": kind, "n_copies": n_copies, "bytes": nbytes, "seconds": seconds}


def elementwise(quick: bool) -> list[Record]:
    """A memory-bound add (two reads, one write) at several sizes: achievable HBM bandwidth."""
    torch = _torch()
    records = []
    for nbytes in shapes.ELEMENTWISE_BYTES[: 2 if quick else None]:
        n = nbytes // 2
        sets = [
            (torch.randn(n, device="cuda", dtype=torch.bfloat16), torch.randn(n, device="cuda", dtype=torch.bfloat16))
            for _ in range(2)
        ]
        seconds = median_graph_seconds(lambda ab: torch.add(*ab), sets, calls=10)
        records.append({"op": "elementwise", "split": "fit", "bytes": 3 * nbytes, "seconds": seconds})
    return records


def layer_kernels(quick: bool) -> list[Record]:
    """The memory-bound kernels between a layer's GEMMs, fused as a serving engine runs them
    (``torch.compile``, as in the end-to-end check): residual add + RMSNorm, rotary embedding
    of Q and K, K and V written into the cache, SiLU-and-multiply. Their achieved bandwidth is
    well below a plain streaming copy's (reductions, strided halves, transposed writes), so
    each is measured itself, over token counts, for every calibration model's widths; tensor-
    parallel halves of those widths are held out as unseen shapes."""
    from calibrate.e2e import _Ops

    ops = _Ops("compiled")
    records = []
    tokens = [(t, "fit") for t in shapes.LAYER_KERNEL_TOKENS_FIT]
    tokens += [(t, "heldout") for t in shapes.LAYER_KERNEL_TOKENS_HELDOUT]
    widths = sorted(
        {
            (m.hidden_size, m.n_q_heads, m.n_kv_heads, m.head_dim, m.intermediate_size, 1)
            for m in shapes.calibration_specs()
        }
    )
    widths += [(h, q // 2, kv // 2, d, i // 2, 2) for h, q, kv, d, i, _ in widths]
    if quick:
        tokens, widths = tokens[:3], widths[:1]

    for hidden, q_heads, kv_heads, head_dim, inter, tp in widths:
        for t, split in tokens:
            if tp > 1 and split != "fit":
                continue
            split = split if tp == 1 else "heldout_shape"
            kernels = _layer_kernel_plan(ops, t, hidden, q_heads, kv_heads, head_dim, inter)
            for kernel, (elements_per_token, sets, run) in kernels.items():
                nbytes = 2 * elements_per_token * t
                seconds = median_graph_seconds(run, sets, calls=20 if nbytes < 64 << 20 else 5)
                records.append({"op": "layer_kernel", "split": split, "kernel": kernel, "tokens": t,
                                "hidden": hidden, "tp": tp, "bytes": nbytes, "seconds": seconds})  # fmt: skip
            del kernels
    return records


def _layer_kernel_plan(
    ops: Any, t: int, hidden: int, q_heads: int, kv_heads: int, head_dim: int, inter: int
) -> dict[str, tuple[int, list, Callable[[Any], object]]]:
    """Per kernel: elements moved per token, two input sets, and the call, for ``t`` tokens."""
    torch = _torch()

    def rand(*shape: int):
        return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

    cos, sin = rand(1, t, 1, head_dim), rand(1, t, 1, head_dim)
    k_cache, v_cache = rand(1, kv_heads, t, head_dim), rand(1, kv_heads, t, head_dim)

    def kv_write(kv):
        k_cache.copy_(kv[0].transpose(1, 2))
        v_cache.copy_(kv[1].transpose(1, 2))

    kv_sets = [(rand(1, t, kv_heads, head_dim), rand(1, t, kv_heads, head_dim)) for _ in range(2)]
    return {
        "add_rms_norm": (4 * hidden, [(rand(t, hidden), rand(t, hidden), rand(hidden)) for _ in range(2)],
                         lambda a: ops.add_rms_norm(*a)),
        "rope": (2 * (q_heads + kv_heads) * head_dim,
                 [(rand(1, t, q_heads, head_dim), rand(1, t, kv_heads, head_dim)) for _ in range(2)],
                 lambda qk: ops.rope(qk[0], qk[1], cos, sin)),
        "kv_write": (4 * kv_heads * head_dim, kv_sets, kv_write),
        "silu_mul": (3 * inter, [rand(t, 2 * inter) for _ in range(2)], ops.silu_mul),
    }  # fmt: skip


def file_io(directory: str, quick: bool) -> list[Record]:
    """SSD-style sequential I/O with O_DIRECT (page cache bypassed) at block-sized and large
    requests. Falls back to buffered I/O plus fsync where O_DIRECT is refused, and says so."""
    import mmap

    records = []
    total = (64 << 20) if quick else (1 << 30)
    for request in (2 << 20, 64 << 20):
        buffer = mmap.mmap(-1, request)  # page-aligned, as O_DIRECT needs
        buffer.write(os.urandom(request))
        path = tempfile.mktemp(dir=directory, suffix=".kvsim-io")
        direct = hasattr(os, "O_DIRECT")
        try:
            flags = os.O_WRONLY | os.O_CREAT | (os.O_DIRECT if direct else 0)
            try:
                fd = os.open(path, flags, 0o600)
            except OSError:
                direct = False
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o600)
            start = time.perf_counter()
            for _ in range(total // request):
                os.write(fd, buffer)
            os.fsync(fd)
            write_s = time.perf_counter() - start
            os.close(fd)
            fd = os.open(path, os.O_RDONLY | (os.O_DIRECT if direct else 0))
            start = time.perf_counter()
            while os.readv(fd, [buffer]) > 0:
                pass
            read_s = time.perf_counter() - start
            os.close(fd)
        finally:
            if os.path.exists(path):
                os.remove(path)
        for kind, seconds in (("ssd_write", write_s), ("ssd_read", read_s)):
            records.append({"op": "file_io", "split": "fit", "kind": kind, "request_bytes": request, "bytes": total,
                            "seconds": seconds, "o_direct": direct})  # fmt: skip
    return records


def environment() -> dict[str, Any]:
    torch = _torch()
    props = torch.cuda.get_device_properties(0)
    return {
        "device_name": torch.cuda.get_device_name(0),
        "device_memory_bytes": props.total_memory,
        "multiprocessors": props.multi_processor_count,
        "torch_version": torch.__version__,
        "cuda_version": torch.version.cuda,
        "driver": _driver_version(),
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
    }


def _driver_version() -> str | None:
    import subprocess

    try:
        out = subprocess.run(["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"],
                             capture_output=True, text=True, timeout=20)  # fmt: skip
        return next(iter(out.stdout.split()), None)  # one line per GPU, all alike
    except (OSError, subprocess.SubprocessError):
        return None


def run_all(
    io_dir: str,
    quick: bool = False,
    log: Callable[[str], None] = print,
    clocks: ClockSampler | None = None,
    families: tuple[str, ...] = shapes.FAMILIES,
) -> dict[str, Any]:
    """The microbenchmarks of ``families`` (default all); with ``clocks``, ``power_state``
    gives the GPU's mean clock and power-cap share over each family's run
    (:mod:`calibrate.power`)."""
    torch = _torch()
    torch.manual_seed(0)
    result: dict[str, Any] = {
        "environment": environment(),
        "records": [],
        "power_state": {},
        "families": list(families),
    }
    benches = {"gemm": gemm, "prefill_attention": prefill_attention, "decode_attention": decode_attention,
               "copies": copies, "elementwise": elementwise, "layer_kernels": layer_kernels}  # fmt: skip
    clocked = {"gemm", "prefill_attention"}  # compute-bound: each record says its clock
    for name, bench in benches.items():
        if name not in families:
            continue
        start, started_at = time.perf_counter(), time.time()
        records = bench(quick, clocks) if name in clocked else bench(quick)
        result["records"] += records
        torch.cuda.empty_cache()
        line = f"{name}: {len(records)} measurements in {time.perf_counter() - start:.0f} s"
        state = clocks.window(started_at, time.time()) if clocks is not None else None
        if state is not None:
            result["power_state"][name] = state
            line += f" (SM {state['sm_clock_mhz']:.0f} MHz, power cap {state['power_capped_share']:.0%} of the time)"
        log(line)
    if "file_io" in families:
        result["records"] += file_io(io_dir, quick)
    return result
