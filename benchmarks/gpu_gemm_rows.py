"""On a CUDA GPU: how much a layer's GEMMs slow under the power cap, by token rows, for several
models' layer shapes (``calibrate.sustained.measure_rows``, which ``kvsim-calibrate power`` runs
for Llama-3-8B only).

Why it exists: the clock model counts a GEMM's clock-bound share by its row count alone, fitted
on one model's layer (``hwmodels/clock.py``); this says whether other shapes slow at the same
rows, i.e. whether the fitted floor carries over to the models a user simulates.

    python benchmarks/gpu_gemm_rows.py --out benchmarks/results/gemm_rows_models_h100_<date>.json

Needs torch with CUDA; leaves the GPU's settings as it finds them (about 2 minutes a model).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

MODELS = ("llama-3-8b", "llama-3-70b", "qwen-2.5-32b")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()

    import torch

    from calibrate.bench import environment
    from calibrate.power import ClockSampler
    from calibrate.sustained import measure_rows
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_gemm_rows: no CUDA GPU is visible")
    clocks = ClockSampler()
    time.sleep(1.0)
    results = {"environment": environment(), "models": {}}
    try:
        for model in args.models:
            print(f"== {model}", flush=True)
            results["models"][model] = measure_rows(clocks, model=model)
    finally:
        clocks.stop()
    write_text_atomic(Path(args.out), json.dumps(results, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
