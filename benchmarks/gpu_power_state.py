"""On a CUDA GPU: how much slower engine steps run once the GPU has been busy for seconds (its
power cap lowering the clocks) than right after idle, against what the calibrated profile
predicts.

Why it exists: every end-to-end step of the calibration check runs a few per cent longer than
predicted, and a GEMM timed after the end-to-end steps ran up to 14 % slower than the same GEMM
in the microbenchmarks. A GPU serving at full load runs steps back to back; an H100 SXM doing
so reaches its 700 W power cap and lowers its SM clock (nvidia-smi reports the cap as the
reason), which a short microbenchmark after idle does not see.

For each of the end-to-end harness's step kinds (Llama-3-8B, all layers, compiled engine, CUDA
graph), a bare GEMM and a device copy it times, after a few seconds idle:

* ``first``: the first call (clocks may still be ramping up from idle);
* ``burst``: the median of the next calls as the harness times them (2 warm-up, 7 timed);
* ``sustained``: the median over the last 2 s of 8 s of back-to-back calls;

with nvidia-smi's SM clock, power draw and power-cap share over each window
(:mod:`calibrate.power`; its power reading is itself a mean over about a second, so a burst's
window shows the idle power before it), and the step time the shipped profile for this GPU
predicts.

    python benchmarks/gpu_power_state.py --out benchmarks/results/gpu_power_state_h100_<date>.json

Needs torch with CUDA (nvidia-smi for clocks and power, optional); the simulator never imports
this. Leaves the GPU's clocks and power limit as it finds them.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from calibrate.power import ClockSampler  # noqa: E402
from hwmodels.calibrated import profile_measured_on  # noqa: E402

MODEL = "llama-3-8b"
IDLE_S = 4.0  # long enough for the clocks to drop back to idle
SUSTAINED_S = 8.0
SUSTAINED_TAIL_S = 2.0


def call_s(run: Any, x: Any) -> float:
    """GPU seconds of one call, between CUDA events."""
    import torch

    start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
    start.record()
    run(x)
    end.record()
    end.synchronize()
    return start.elapsed_time(end) / 1e3


def study(smi: ClockSampler, name: str, run: Any, sets: list[Any], predicted_s: float | None) -> dict[str, Any]:
    """``run`` after idle, then for seconds back to back (see the module docstring)."""
    import torch

    for i in range(2):  # compile, allocate
        run(sets[i % 2])
    torch.cuda.synchronize()
    time.sleep(IDLE_S)
    t0 = time.time()
    calls = [call_s(run, sets[i % 2]) for i in range(10)]
    t1 = time.time()
    series: list[tuple[float, float]] = []
    while time.time() - t1 < SUSTAINED_S:
        series.append((time.time() - t1, call_s(run, sets[len(series) % 2])))
    t2 = time.time()
    burst = statistics.median(calls[3:])
    sustained = statistics.median(s for t, s in series if t >= SUSTAINED_S - SUSTAINED_TAIL_S)
    record = {
        "step": name,
        "first_s": calls[0],
        "burst_s": burst,
        "sustained_s": sustained,
        "sustained_over_burst": sustained / burst,
        "predicted_s": predicted_s,
        "burst_window": smi.window(t0, t1),
        "sustained_window": smi.window(t2 - SUSTAINED_TAIL_S, t2),
    }
    line = f"{name:34s} first {calls[0] * 1e3:8.3f} ms  burst {burst * 1e3:8.3f}  sustained {sustained * 1e3:8.3f}"
    line += f"  x{sustained / burst:.3f}"
    if predicted_s is not None:
        line += f"  predicted {predicted_s * 1e3:8.3f}"
        line += f" ({predicted_s / burst - 1:+.1%} / {predicted_s / sustained - 1:+.1%})"
    window = record["sustained_window"]
    if window:
        line += f"  [{window['sm_clock_mhz']:.0f} MHz, {window['power_w']:.0f} W sustained]"
    print(line, flush=True)
    return record


def step_studies(smi: ClockSampler, profile_name: str) -> list[dict[str, Any]]:
    """Whole engine steps of the end-to-end harness, from CUDA graphs."""
    import torch

    from calibrate.e2e import RandomLlama, _graphed, _kv_caches
    from hwmodels.calibrated import load_calibrated_profile
    from hwmodels.execution import ExecutionModel
    from hwmodels.models import get_model

    spec = get_model(MODEL)
    predict = ExecutionModel(spec, load_calibrated_profile(profile_name)).iteration_s
    model = RandomLlama(spec, spec.n_layers, "compiled")
    h, layers = spec.hidden_size, spec.n_layers
    records = []
    for seq, prefix in ((1024, 0), (4096, 0), (1024, 7168)):
        caches = _kv_caches(spec, layers, 1, prefix + seq)
        sets = [torch.randn(1, seq, h, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        run = _graphed(lambda x, c=caches: model.step(x, c, decode=False), sets[0])
        name = f"prefill {seq}" + (f" on {prefix} cached" if prefix else "")
        records.append(study(smi, name, run, sets, predict([seq], [prefix], 0, 0)))
    seq, batch, ctx = 1024, 64, 1024
    prefill_caches = _kv_caches(spec, layers, 1, seq)
    decode_caches = _kv_caches(spec, layers, batch, ctx + 1)
    sets = [torch.randn(1, seq + batch, h, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    run = _graphed(
        lambda x: model.mixed_step(x[:, :seq], x[0, seq:].view(batch, 1, -1), prefill_caches, decode_caches), sets[0]
    )
    name = f"chunk {seq} + decode {batch} x {ctx}"
    records.append(study(smi, name, run, sets, predict([seq], [0], batch, batch * ctx)))
    for batch, ctx in ((64, 1024), (32, 8192)):
        caches = _kv_caches(spec, layers, batch, ctx + 1)
        sets = [torch.randn(batch, 1, h, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
        run = _graphed(lambda x, c=caches: model.step(x, c, decode=True), sets[0])
        records.append(study(smi, f"decode {batch} x {ctx}", run, sets, predict([], [], batch, batch * ctx)))
    return records


def kernel_studies(smi: ClockSampler, profile_name: str) -> list[dict[str, Any]]:
    """A bare GEMM (Llama-3-8B's gate/up projection at 4096 tokens) and a device copy."""
    import torch

    from hwmodels.calibrated import load_calibrated_profile
    from hwmodels.models import get_model

    spec = get_model(MODEL)
    m, k, n = 4096, spec.hidden_size, 2 * spec.intermediate_size
    weight = torch.randn(k, n, device="cuda", dtype=torch.bfloat16)
    acts = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
    gemm_s = float(load_calibrated_profile(profile_name).gemm_s(m, k, n))
    records = [study(smi, f"gemm {m} x {k} x {n}", lambda x: x @ weight, acts, gemm_s)]
    sources = [torch.empty(1 << 30, dtype=torch.uint8, device="cuda") for _ in range(2)]
    target = torch.empty(1 << 30, dtype=torch.uint8, device="cuda")
    records.append(study(smi, "copy 1 GiB on the device", target.copy_, sources, None))
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    import torch

    from calibrate.bench import environment
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_power_state: no CUDA GPU is visible")
    gpu = torch.cuda.get_device_name()
    profile_name = profile_measured_on(gpu)
    if profile_name is None:
        sys.exit(f"gpu_power_state: no shipped profile was measured on a {gpu}; calibrate one first")
    with ClockSampler() as smi, torch.inference_mode():
        records = step_studies(smi, profile_name)
        torch.cuda.empty_cache()
        records += kernel_studies(smi, profile_name)
    result = {
        "environment": environment(),
        "model": MODEL,
        "profile": profile_name,
        "idle_s": IDLE_S,
        "sustained_s": SUSTAINED_S,
        "records": records,
    }
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
