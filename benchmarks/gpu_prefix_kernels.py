"""On a CUDA GPU: which attention kernel PyTorch runs for prefill on a cached prefix, and how
fast each way of running it is; and GEMMs whose row count is not a multiple of 128.

Why it exists: the end-to-end check (``calibrate/e2e.py``) first ran prefix steps as one SDPA
call with the mask aligned to the cache's end, and they came out 7-28 % longer than predicted.
This times, for the shipped models' head shapes and the end-to-end prefix points:

* ``lower_right``: one call with that mask, by SDPA's default choice and by each backend forced;
* ``split``: the prefix in full and the new tokens causally, two calls without a mask (what the
  calibration microbenchmark times);
* ``merged``: the same two parts with their log-sum-exps and the compiled merge, as the
  end-to-end harness now runs them (``calibrate.e2e.partial_attention``, ``merge_attention``);
* ``causal`` / ``cross``: each of those two parts alone;

each with the CUDA kernels it launched (from the profiler), in K/V layouts as the end-to-end
cache holds them (``cache``: head-major) and as the microbenchmark does (``token``). The GEMM
part times every shipped (k, n) at 128-aligned row counts and at counts just past them, the
evidence for or against ``hwmodels.calibrated.tile_rows``.

    python benchmarks/gpu_prefix_kernels.py --out benchmarks/results/gpu_prefix_kernels_h100_<date>.json

Needs torch with CUDA; the simulator never imports this.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

HEADS = [(32, 8, 128), (28, 4, 128)]  # Llama-3-8B, Qwen-2.5-7B
#: (new tokens, cached prefix): the end-to-end prefix points, then the microbenchmark's.
POINTS = [(512, 3584), (1024, 7168), (2048, 14336), (256, 32512), (512, 2048), (1024, 8192), (256, 16384), (128, 8192)]
GEMM_ROWS = (512, 544, 640, 1024, 1088, 1152, 2048, 2064, 2176, 4096, 4224)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="JSON file to write")
    args = parser.parse_args()

    import torch
    import torch.nn.functional as F
    from torch.nn.attention import SDPBackend, sdpa_kernel
    from torch.nn.attention.bias import causal_lower_right

    from calibrate.e2e import merge_attention, partial_attention
    from calibrate.shapes import all_gemm_shapes
    from calibrate.timing import median_graph_seconds
    from traces.atomic import write_text_atomic

    if not torch.cuda.is_available():
        sys.exit("gpu_prefix_kernels: no CUDA GPU is visible")
    backends = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION,
                "efficient": SDPBackend.EFFICIENT_ATTENTION}  # fmt: skip

    def lower_right(q, k, v):
        t, ctx = q.shape[2], k.shape[2]
        return F.scaled_dot_product_attention(q, k, v, attn_mask=causal_lower_right(t, ctx), enable_gqa=True)

    def causal(q, k, v):
        t = q.shape[2]
        return F.scaled_dot_product_attention(q, k[:, :, -t:], v[:, :, -t:], is_causal=True, enable_gqa=True)

    def cross(q, k, v):
        p = k.shape[2] - q.shape[2]
        return F.scaled_dot_product_attention(q, k[:, :, :p], v[:, :, :p], enable_gqa=True)

    def split(q, k, v):
        cross(q, k, v)
        return causal(q, k, v)

    merge = torch.compile(merge_attention, dynamic=True, fullgraph=True)

    def merged(q, k, v):
        p = k.shape[2] - q.shape[2]
        prefix_part = partial_attention(q, k[:, :, :p], v[:, :, :p], causal=False)
        return merge(*prefix_part, *partial_attention(q, k[:, :, p:], v[:, :, p:], causal=True))

    def kernels_of(fn) -> list[str]:
        with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CUDA]) as prof:
            fn()
            torch.cuda.synchronize()
        names = {e.name[:90] for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA}
        return sorted(n for n in names if not n.startswith("Memset"))

    def qkv(hq: int, hkv: int, d: int, t: int, ctx: int, layout: str) -> tuple:
        def rand(*shape):
            return torch.randn(*shape, device="cuda", dtype=torch.bfloat16)

        q = rand(1, t, hq, d).transpose(1, 2)  # as it leaves the QKV projection
        if layout == "cache":
            return q, rand(1, hkv, ctx, d), rand(1, hkv, ctx, d)
        return q, rand(1, ctx, hkv, d).transpose(1, 2), rand(1, ctx, hkv, d).transpose(1, 2)

    def timed(form, backend: str, sets: list) -> dict:
        def run(x):
            if backend == "default" or form is merged:
                return form(*x)
            with sdpa_kernel([backends[backend]]):
                return form(*x)

        try:
            return {"seconds": median_graph_seconds(run, sets, calls=5), "kernels": kernels_of(lambda: run(sets[0]))}
        except RuntimeError as exc:  # a backend that refuses the shape or the mask
            return {"error": str(exc)[:160]}

    forms = {"lower_right": lower_right, "split": split, "merged": merged, "causal": causal, "cross": cross}
    attention = []
    with torch.inference_mode():
        for hq, hkv, d in HEADS:
            for t, prefix in POINTS:
                for layout in ("cache", "token"):
                    sets = [qkv(hq, hkv, d, t, prefix + t, layout) for _ in range(2)]
                    for name, form in forms.items():
                        for backend in ("cudnn",) if name == "merged" else ("default", *backends):
                            attention.append(
                                {"form": name, "backend": backend, "layout": layout, "q_heads": hq, "kv_heads": hkv,
                                 "head_dim": d, "seq": t, "prefix": prefix, **timed(form, backend, sets)}
                            )  # fmt: skip
                print(f"attention {hq}/{hkv} heads, {t} on {prefix}: done", flush=True)
        gemm = []
        for k, n in all_gemm_shapes():
            weights = [torch.randn(k, n, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            for m in GEMM_ROWS:
                acts = [torch.randn(m, k, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                pairs = [(acts[i % 2], weights[i % 2]) for i in range(4)]
                seconds = median_graph_seconds(lambda ab: torch.matmul(*ab), pairs, calls=10)
                gemm.append({"m": m, "k": k, "n": n, "seconds": seconds})
            print(f"gemm {k} x {n}: done", flush=True)

    from calibrate.bench import environment

    result = {"environment": environment(), "attention": attention, "gemm": gemm}
    write_text_atomic(Path(args.out), json.dumps(result, indent=1) + "\n")
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
