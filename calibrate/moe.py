"""One mixture-of-experts layer's routed experts, timed on the GPU against kvsim's price of them.

kvsim prices the routed experts from the dense GEMM calibration (:mod:`hwmodels.moe`: balanced
routing, each grouped GEMM as one GEMM of ``T k / touched`` rows over the touched experts'
weights side by side); no calibration measured a grouped GEMM. This benchmark times the two
grouped GEMMs of one layer (gate/up, then down) for the shipped mixtures at several token
counts, so that a run on a GPU says how far that extrapolation holds.

Routing is a balanced sample: each token's ``k`` experts are drawn uniformly (a fixed seed),
each expert's rows padded to :data:`ALIGN_ROWS` as fused MoE kernels pad them (vLLM's
``moe_align_block_size``). Two kernels: ``grouped_mm``, torch's grouped GEMM
(``torch._grouped_mm``, CUTLASS on Hopper), where this torch has it, and ``expert_loop``, one
matmul per expert that received rows, captured in one CUDA graph.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import Any

from calibrate.bench import LONG_GEMM_FLOPS, REST_S, _calls
from hwmodels import moe
from hwmodels.models import ModelSpec
from hwmodels.profile import GpuProfile

MOE_MODELS = ("mixtral-8x7b", "qwen-3-30b-a3b")
MOE_TOKENS = (1, 8, 64, 512, 4096, 16384)
ALIGN_ROWS = 16  # each expert's rows padded to a multiple of this, as fused MoE kernels do
KERNELS = ("grouped_mm", "expert_loop")

Record = dict[str, Any]
#: ``timer(run, input_sets, flops)``: ``{"measured_s": seconds of one run(inputs), "timing": how}``.
Timer = Callable[[Callable[[Any], object], Sequence[Any], float], Record]


def gpu_timer(run: Callable[[Any], object], input_sets: Sequence[Any], flops: float) -> Record:
    """Median seconds from a CUDA graph, after a rest (:mod:`calibrate.bench`'s rule: a long
    kernel one to a replay, each replay from rest, so that the power cap does not slow it).
    A kernel that cannot be captured in a graph is timed between CUDA events instead, which
    counts its launch: the record says which."""
    from calibrate.timing import median_gpu_seconds, median_graph_seconds

    time.sleep(REST_S)
    long = flops >= LONG_GEMM_FLOPS
    try:
        seconds = median_graph_seconds(
            run, input_sets, calls=1 if long else _calls(flops), rest_s=REST_S if long else 0.0
        )
        return {"measured_s": seconds, "timing": "cuda_graph"}
    except RuntimeError as exc:
        seconds = median_gpu_seconds(run, input_sets, rest_s=REST_S)
        return {"measured_s": seconds, "timing": "cuda_events", "graph_error": str(exc)[:200]}


def route(tokens: int, n_experts: int, experts_per_token: int, seed: int = 0) -> list[int]:
    """Rows each expert receives when each of ``tokens`` tokens picks ``experts_per_token``
    distinct experts uniformly: a balanced router's sample."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    picks = torch.rand(tokens, n_experts, generator=generator).topk(experts_per_token, dim=1).indices
    return torch.bincount(picks.flatten(), minlength=n_experts).tolist()


def padded(rows: Sequence[int], align: int = ALIGN_ROWS) -> list[int]:
    return [-(-r // align) * align for r in rows]


def grouped_mm_available() -> bool:
    import torch

    return hasattr(torch, "_grouped_mm")


def expert_weights(spec: ModelSpec, device: str) -> tuple[Any, Any]:
    """One layer's routed experts in bf16, stored as ``nn.Linear`` keeps weights (out x in):
    gate/up ``(E, 2 I, h)`` and down ``(E, h, I)``."""
    import torch

    h, width, n = spec.hidden_size, spec.intermediate_size, spec.n_experts
    gate_up = torch.randn(n, 2 * width, h, device=device, dtype=torch.bfloat16) * h**-0.5
    down = torch.randn(n, h, width, device=device, dtype=torch.bfloat16) * width**-0.5
    return gate_up, down


class ExpertLayer:
    """The routed experts of one step: ``rows`` per expert (already padded), in order."""

    def __init__(self, weights: tuple[Any, Any], rows: Sequence[int]) -> None:
        import torch

        self.gate_up, self.down = weights
        self.rows = list(rows)
        self.offsets = torch.tensor(self.rows, device=self.gate_up.device, dtype=torch.int32).cumsum(0)
        self.offsets = self.offsets.to(torch.int32)
        ends = self.offsets.tolist()
        self.experts = [(e, end - r, end) for e, (r, end) in enumerate(zip(self.rows, ends, strict=True)) if r]

    def inputs(self, count: int = 2) -> list[tuple[Any, Any]]:
        """``count`` fresh pairs of (hidden rows, intermediate rows), rotated between calls."""
        import torch

        total, dev = sum(self.rows), self.gate_up.device
        h, width = self.down.shape[1], self.down.shape[2]
        return [
            (
                torch.randn(total, h, device=dev, dtype=torch.bfloat16),
                torch.randn(total, width, device=dev, dtype=torch.bfloat16),
            )
            for _ in range(count)
        ]

    def grouped_mm(self, xs: tuple[Any, Any]) -> tuple[Any, Any]:
        import torch

        x, act = xs
        up = torch._grouped_mm(x, self.gate_up.transpose(-2, -1), offs=self.offsets)
        return up, torch._grouped_mm(act, self.down.transpose(-2, -1), offs=self.offsets)

    def expert_loop(self, xs: tuple[Any, Any]) -> tuple[Any, Any]:
        import torch

        x, act = xs
        ups = [x[start:end] @ self.gate_up[e].T for e, start, end in self.experts]
        downs = [act[start:end] @ self.down[e].T for e, start, end in self.experts]
        return torch.cat(ups), torch.cat(downs)


def predicted_s(spec: ModelSpec, tokens: int, profile: GpuProfile) -> float:
    """kvsim's price of the routed experts' two grouped GEMMs (not the router or the kernels)."""
    return float(sum(profile.gemm_s(*gemm) for gemm in moe.mlp_gemms(spec, tokens, tp=1)[1:3]))


def measure(
    specs: Sequence[ModelSpec],
    tokens: Sequence[int] = MOE_TOKENS,
    *,
    profile: GpuProfile | None = None,
    device: str = "cuda",
    timer: Timer = gpu_timer,
    kernels: Sequence[str] = KERNELS,
    log: Callable[[str], None] = lambda _: None,
) -> list[Record]:
    """One record per model, token count and kernel: seconds measured and, with ``profile``,
    predicted. ``grouped_mm`` is skipped where this torch has none."""
    records = []
    for spec in specs:
        weights = expert_weights(spec, device)
        for count in tokens:
            rows = route(count, spec.n_experts, spec.experts_per_token)
            layer = ExpertLayer(weights, padded(rows))
            flops = 2.0 * sum(padded(rows)) * 3 * spec.hidden_size * spec.intermediate_size
            base = {
                "model": spec.name,
                "tokens": count,
                "experts_touched": sum(1 for r in rows if r),
                "experts_touched_expected": moe.experts_touched(count, spec.n_experts, spec.experts_per_token),
                "max_rows_per_expert": max(rows),
                "rows_padded_to": ALIGN_ROWS,
            }
            if profile is not None:
                base["predicted_s"] = predicted_s(spec, count, profile)
            for kernel in kernels:
                if kernel == "grouped_mm" and not grouped_mm_available():
                    continue
                record = base | {"kernel": kernel} | timer(getattr(layer, kernel), layer.inputs(), flops)
                if profile is not None:
                    record["rel_error"] = base["predicted_s"] / record["measured_s"] - 1.0
                records.append(record)
                log(_line(record))
    return records


def _line(record: Record) -> str:
    line = f"{record['model']:<16}{record['tokens']:>7} tokens {record['kernel']:<12}{1e6 * record['measured_s']:>10.1f} us"
    if "predicted_s" in record:
        line += f"  kvsim {1e6 * record['predicted_s']:>10.1f} us ({100 * record['rel_error']:+.1f} %)"
    return line
