"""On a CUDA GPU: where the time of an end-to-end step goes, kernel class by kernel class,
against the parts the execution model prices, and how the same kernels slow down when the
step is replayed back to back from a CUDA graph.

Why it exists: the end-to-end check's steps run a few per cent (on a cached prefix and
chunked, up to 11 %) longer than predicted. This tells apart a part the model misprices from
the GPU running slower: each step is profiled twice, its kernels launched one by one from
Python (idle gaps between them keep the clock up) and replayed from a CUDA graph as the harness
times it (back to back), with nvidia-smi's SM clock over each (``calibrate.power``). Kernel
classes: GEMM (cuBLAS), attention (cuDNN / flash SDPA), elementwise (Triton-fused, copies,
concatenation, memsets). Llama-3-8B (``--model``: another shipped model), all layers
(``--layers``: at most that many, for a model that does not fit), compiled engine. Each graph
is also timed from rest (after an idle pause), the state the profile's prices stand for.

With ``--long-prefills`` it times prefills of 2,048 to 8,192 tokens instead, the steps the
power cap slows most: whether their GEMMs, priced at full clock, run as the clock model says
under load.

    python benchmarks/gpu_step_kernels.py --out benchmarks/results/gpu_step_kernels_h100_<date>.json

With ``--tp N`` it runs one rank's share of the model under N-way tensor parallelism on this
one GPU (no all-reduce: ``kvsim-calibrate tp`` measures that), at the decode and chunked steps
of the TP check, priced as the execution model prices a shard: where a TP step's compute is
mispriced, by class.

Needs torch with CUDA; the simulator never imports this.
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate.power import ClockSampler  # noqa: E402
from hwmodels.calibrated import profile_measured_on  # noqa: E402

CLASSES = (
    ("gemm", re.compile(r"nvjet|gemm|cutlass|xmma|splitKreduce", re.I)),
    ("attention", re.compile(r"sdpa|flash|fmha|attention", re.I)),
)
REPEAT = 5
#: The decode and chunked steps of ``kvsim-calibrate tp`` (calibrate.collective), whose compute
#: on a shard ran 4-11 % longer than predicted.
TP_STEPS = [
    {"name": "decode 1 x 1,024", "new": 0, "prefix": 0, "decode": 1, "ctx": 1024},
    {"name": "decode 64 x 1,024", "new": 0, "prefix": 0, "decode": 64, "ctx": 1024},
    {"name": "decode 256 x 512", "new": 0, "prefix": 0, "decode": 256, "ctx": 512},
    {"name": "chunk 1,024 + decode 64 x 1,024", "new": 1024, "prefix": 0, "decode": 64, "ctx": 1024},
]


#: Long prefills, the steps whose clock-bound share is highest: the end-to-end check priced
#: Llama-3-70B's and Qwen-2.5-72B's 8,192-token prefills 11-13 % long under the power cap.
LONG_PREFILLS = [{"name": f"prefill {n:,}", "new": n, "prefix": 0, "decode": 0, "ctx": 0} for n in (2048, 4096, 8192)]


def kernel_class(name: str) -> str:
    """GEMM, attention or elementwise (everything else a step launches is memory-bound)."""
    return next((label for label, pattern in CLASSES if pattern.search(name)), "elementwise")


def model_parts(
    step: dict[str, Any], profile_name: str, model_name: str, tp: int = 1, layers: int | None = None
) -> dict[str, float]:
    """Seconds of the step's GEMMs, attention and elementwise kernels (``layers`` of them, by
    default all) and the LM head, as :class:`hwmodels.execution.ExecutionModel` prices them at
    full clock (one rank's under ``tp``)."""
    import numpy as np

    from calibrate.collective import shard
    from hwmodels.calibrated import load_calibrated_profile
    from hwmodels.execution import ExecutionModel
    from hwmodels.models import get_model

    profile = load_calibrated_profile(profile_name)
    model = ExecutionModel(get_model(model_name), profile, tensor_parallel=tp)
    spec = shard(get_model(model_name), tp) if tp > 1 else get_model(model_name)
    h, hd = spec.hidden_size, spec.head_dim
    layers = layers or spec.n_layers
    new, prefix, n_decode, ctx = step["new"], step["prefix"], step["decode"], step["ctx"]
    tokens = new + n_decode
    gemm = sum(
        profile.gemm_s(tokens, k, n)
        for k, n in (
            (h, (spec.n_q_heads + 2 * spec.n_kv_heads) * hd),
            (spec.n_q_heads * hd, h),
            (h, 2 * spec.intermediate_size),
            (spec.intermediate_size, h),
        )
    )
    attention = 0.0
    if new:
        attention += float(
            np.sum(
                profile.attention_prefill_s(
                    np.array([new], float), spec.n_q_heads, spec.n_kv_heads, hd, np.array([prefix], float), float(new)
                )
            )
        )
    if n_decode:
        attention += float(profile.attention_decode_s(n_decode, ctx, spec.n_q_heads, spec.n_kv_heads, hd))
    return {
        "gemm": layers * float(gemm) + float(model._lm_head_s((1 if new else 0) + n_decode)),
        "attention": layers * attention,
        "elementwise": layers * float(model._elementwise_s(tokens)),
    }


def profiled_classes(fn: Any) -> tuple[dict[str, float], dict[str, int]]:
    """Mean seconds per call of ``fn``'s GPU kernels by class, and kernel counts, over a few calls."""
    import torch

    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
        for _ in range(REPEAT):
            fn()
        torch.cuda.synchronize()
    seconds: dict[str, float] = defaultdict(float)
    counts: dict[str, int] = defaultdict(int)
    for event in prof.events():
        if event.device_type != torch.autograd.DeviceType.CUDA or "Memcpy" in event.name:
            continue  # the graph's input copy is the harness's, not the step's
        label = kernel_class(event.name)
        seconds[label] += (event.time_range.end - event.time_range.start) * 1e-6 / REPEAT
        counts[label] += 1
    return dict(seconds), {k: v // REPEAT for k, v in counts.items()}


def _after_rest(run: Any, rest_s: float = 0.3) -> float:
    """GPU seconds of ``run()`` started after ``rest_s`` idle (the SM clock recovers within
    about 30 ms of idle)."""
    import torch

    from calibrate.timing import event_seconds

    torch.cuda.synchronize()
    time.sleep(rest_s)
    return event_seconds(run)


def step_runner(model: Any, step: dict[str, Any]) -> tuple[Any, tuple[int, int, int]]:
    """The step as a function of its input, and the input's shape."""
    from calibrate.e2e import _kv_caches

    spec, layers = model.spec, model.n_layers
    new, prefix, batch, ctx = step["new"], step["prefix"], step["decode"], step["ctx"]
    prefill_caches = _kv_caches(spec, layers, 1, prefix + new) if new else None
    decode_caches = _kv_caches(spec, layers, batch, ctx + 1) if batch else None
    if new and batch:
        return (
            lambda x: model.mixed_step(x[:, :new], x[0, new:].view(batch, 1, -1), prefill_caches, decode_caches),
            (1, new + batch, spec.hidden_size),
        )
    if new:
        return lambda x: model.step(x, prefill_caches, decode=False), (1, new, spec.hidden_size)
    return lambda x: model.step(x, decode_caches, decode=True), (batch, 1, spec.hidden_size)


def study(
    model: Any, step: dict[str, Any], clocks: ClockSampler, profile_name: str, model_name: str, tp: int = 1
) -> dict[str, Any]:
    """One step profiled one kernel at a time and replayed from a graph (module docstring)."""
    import torch

    from calibrate.e2e import _graphed
    from calibrate.timing import median_gpu_seconds

    run, shape = step_runner(model, step)
    sets = [torch.randn(*shape, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    for _ in range(3):
        run(sets[0])
    torch.cuda.synchronize()
    start = time.time()
    one_by_one, counts = profiled_classes(lambda: run(sets[0]))
    one_by_one_clock = clocks.window(start, time.time())
    graph = _graphed(run, sets[0])
    start = time.time()
    graph_s = median_gpu_seconds(graph, sets, warmup=2, repeat=7)
    # the same replay after an idle pause, so that it starts at full clock (a long step may
    # still reach the power cap before it ends)
    start = time.time()
    from_rest_s = statistics.median(_after_rest(lambda: graph(sets[0])) for _ in range(REPEAT))
    from_rest_clock = clocks.window(start, time.time())
    replayed, _ = profiled_classes(lambda: graph(sets[0]))
    replayed_clock = clocks.window(start, time.time())
    predicted = model_parts(step, profile_name, model_name, tp, model.n_layers)
    print(
        f"== {step['name']}: graph step {graph_s * 1e3:.2f} ms back to back, {from_rest_s * 1e3:.2f} ms from "
        f"rest, predicted {sum(predicted.values()) * 1e3:.2f} ms at full clock"
    )
    for label in ("gemm", "attention", "elementwise"):
        print(
            f"   {label:12s} predicted {predicted[label] * 1e3:7.3f}  one by one "
            f"{one_by_one.get(label, 0) * 1e3:7.3f}  graph replay {replayed.get(label, 0) * 1e3:7.3f} ms"
        )
    clock_states = (("one by one", one_by_one_clock), ("graph replay", replayed_clock), ("from rest", from_rest_clock))
    for label, state in clock_states:
        if state:
            print(f"   {label}: {state['sm_clock_mhz']:.0f} MHz, power cap {state['power_capped_share']:.0%}")
    return {
        "step": step["name"],
        "kernels": counts,
        "predicted_s": predicted,
        "one_by_one_s": one_by_one,
        "one_by_one_clock": one_by_one_clock,
        "graph_replay_s": replayed,
        "graph_replay_clock": replayed_clock,
        "graph_step_s": graph_s,
        "graph_step_from_rest_s": from_rest_s,
        "from_rest_clock": from_rest_clock,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--tp", type=int, default=1, help="one rank's share under this tensor parallelism")
    parser.add_argument("--model", default="llama-3-8b", help="a shipped model (hwmodels.models)")
    parser.add_argument("--layers", type=int, help="at most this many layers (a model that fills the GPU)")
    parser.add_argument(
        "--long-prefills",
        action="store_true",
        help="time prefills of 2,048 to 8,192 tokens instead of the default steps (where the "
        "clock model's stretch is largest)",
    )
    args = parser.parse_args()

    import torch

    from calibrate.bench import environment
    from calibrate.e2e import RandomLlama
    from hwmodels.models import get_model
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_step_kernels: no CUDA GPU is visible")
    gpu = torch.cuda.get_device_name()
    profile_name = profile_measured_on(gpu)
    if profile_name is None:
        sys.exit(f"gpu_step_kernels: no shipped profile was measured on a {gpu}; calibrate one first")
    from calibrate.collective import shard

    spec = shard(get_model(args.model), args.tp) if args.tp > 1 else get_model(args.model)
    model = RandomLlama(spec, min(args.layers or spec.n_layers, spec.n_layers), "compiled")
    steps = (
        TP_STEPS
        if args.tp > 1
        else LONG_PREFILLS
        if args.long_prefills
        else [
            {"name": "prefill 512", "new": 512, "prefix": 0, "decode": 0, "ctx": 0},
            {"name": "prefill 512 on 3,584 cached", "new": 512, "prefix": 3584, "decode": 0, "ctx": 0},
            {"name": "chunk 512 + decode 32 x 2,048", "new": 512, "prefix": 0, "decode": 32, "ctx": 2048},
            {"name": "decode 16 x 2,048", "new": 0, "prefix": 0, "decode": 16, "ctx": 2048},
        ]
    )
    with ClockSampler() as clocks, torch.inference_mode():
        records = []
        for step in steps:
            records.append(study(model, step, clocks, profile_name, args.model, args.tp))
            torch.cuda.empty_cache()
    result = {
        "environment": environment(),
        "model": args.model,
        "tensor_parallel": args.tp,
        "layers": model.n_layers,
        "profile": profile_name,
        "records": records,
    }
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
