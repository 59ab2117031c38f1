"""On a CUDA GPU: engine steps in serving-like sequences (back to back, with idle gaps, prefill
mixed with decode), each step timed, to check the clock model's dynamics (``hwmodels/clock.py``)
on whole steps rather than on the GEMM/copy mixes it was fitted on.

Why it exists: serve mode carries the power cap's clock multiplier from step to step, raising it
under compute-heavy steps and letting it fall during idle gaps and memory-bound decode. The
calibration fits the steady multipliers and the two time constants on synthetic mixes; these
sequences say whether that carries over to a model's real steps in the orders a server runs them.

    python benchmarks/gpu_clock_dynamics.py --out benchmarks/results/gpu_clock_dynamics_h100_<date>.json

``tests/test_power_cap.py`` replays the committed sequences through the model. Needs torch with
CUDA; leaves the GPU's settings as it finds them.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODEL = "llama-3-8b"
REST_S = 2.0  # before each sequence: the clock back at full
PREFILL = (2048, 0, 0)  # new tokens, decode batch, decode context
DECODE = (0, 64, 1024)
# name -> [(step, idle seconds before it)]
SEQUENCES: dict[str, list[tuple[tuple[int, int, int], float]]] = {
    "prefill back to back": [(PREFILL, 0.0)] * 30,
    "prefill, 20 ms idle between": [(PREFILL, 0.0)] + [(PREFILL, 0.02)] * 29,
    "prefill, 100 ms idle between": [(PREFILL, 0.0)] + [(PREFILL, 0.1)] * 19,
    "3 prefills then 15 decodes, four times": ([(PREFILL, 0.0)] * 3 + [(DECODE, 0.0)] * 15) * 4,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    import torch

    from calibrate.bench import environment
    from calibrate.e2e import RandomLlama, _graphed, _kv_caches
    from hwmodels.models import get_model
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_clock_dynamics: no CUDA GPU is visible")
    spec = get_model(MODEL)
    model = RandomLlama(spec, spec.n_layers, "compiled")
    runs: dict[tuple[int, int, int], Any] = {}
    with torch.inference_mode():
        for step in (PREFILL, DECODE):
            seq, batch, ctx = step
            if seq:
                caches = _kv_caches(spec, spec.n_layers, 1, seq)
                x = torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16)
                runs[step] = (_graphed(lambda x, c=caches: model.step(x, c, decode=False), x), x)
            else:
                caches = _kv_caches(spec, spec.n_layers, batch, ctx + 1)
                x = torch.randn(batch, 1, spec.hidden_size, device="cuda", dtype=torch.bfloat16)
                runs[step] = (_graphed(lambda x, c=caches: model.step(x, c, decode=True), x), x)
        sequences = []
        for name, plan in SEQUENCES.items():
            torch.cuda.synchronize()
            time.sleep(REST_S)
            measured = []
            for step, idle in plan:
                if idle:
                    time.sleep(idle)
                run, x = runs[step]
                start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
                start.record()
                run(x)
                end.record()
                end.synchronize()
                measured.append(start.elapsed_time(end) / 1e3)
            sequences.append(
                {
                    "name": name,
                    "steps": [list(step) for step, _ in plan],
                    "idle_before_s": [idle for _, idle in plan],
                    "measured_s": measured,
                }  # fmt: skip
            )
            print(f"{name:42s} first {1e3 * measured[0]:7.2f} ms, last {1e3 * measured[-1]:7.2f} ms", flush=True)
    result = {"environment": environment(), "model": MODEL, "rest_s": REST_S, "sequences": sequences}
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
