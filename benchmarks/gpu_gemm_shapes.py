"""On a CUDA GPU: the linear layers of models the calibration never measured, timed over token
rows and compared with what the shipped profile for this GPU prices them at.

Why it exists: a calibrated profile measures the GEMM shapes of four models
(``calibrate.shapes.CALIBRATION_MODELS``) and prices any other shape from the nearest measured
one (``hwmodels.calibrated.CalibratedProfile.gemm_s``). This says how well that carries to a
model several times smaller (Llama-3.2-1B and -3B by default), shape by shape, timed as the
calibration times them (replayed from a CUDA graph, several calls per graph).

    python benchmarks/gpu_gemm_shapes.py --out benchmarks/results/gemm_unseen_shapes_h100_<date>.json

Needs torch with CUDA; about half a minute a model.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

ROWS = (1, 8, 32, 128, 512, 2048, 8192)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    parser.add_argument("--models", nargs="+", default=["llama-3.2-1b", "llama-3.2-3b"])
    args = parser.parse_args()

    import torch

    from calibrate import shapes
    from calibrate.bench import _calls, _matmul, environment
    from calibrate.timing import median_graph_seconds
    from hwmodels.calibrated import load_calibrated_profile, profile_measured_on
    from hwmodels.models import get_model
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_gemm_shapes: no CUDA GPU is visible")
    profile_name = profile_measured_on(torch.cuda.get_device_name())
    if profile_name is None:
        sys.exit(f"gpu_gemm_shapes: no shipped profile was measured on a {torch.cuda.get_device_name()}")
    profile = load_calibrated_profile(profile_name)
    records = []
    for name in args.models:
        for layer, (k, n) in shapes.gemm_shapes(get_model(name)).items():
            weights = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            for m in ROWS:
                acts = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                sets = [(acts[i % 2], weights[i % 2]) for i in range(4)]
                seconds = median_graph_seconds(_matmul, sets, calls=_calls(2.0 * m * k * n))
                predicted = float(profile.gemm_s(m, k, n))
                records.append({"model": name, "gemm": layer, "m": m, "k": k, "n": n, "seconds": seconds})
                print(
                    f"{name:14s} {layer:8s} m={m:5d} k={k:6d} n={n:6d} measured {seconds * 1e6:8.1f} us "
                    f"priced {predicted * 1e6:8.1f} us ({(predicted - seconds) / seconds:+.1%})",
                    flush=True,
                )
    result = {"environment": environment(), "profile": profile_name, "records": records}
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
