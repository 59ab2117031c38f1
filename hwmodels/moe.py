"""A mixture-of-experts layer's MLP as serving engines run it, for a step of ``T`` tokens.

vLLM and SGLang run it as: a router GEMM (``T`` x hidden x experts, replicated on every GPU),
a top-k softmax over its logits, a sort of the token rows by expert, two grouped GEMMs over
the experts that received rows (gate/up, then down, with SiLU-and-multiply between them: the
fused MoE kernels), and a sum of each token's ``k`` expert outputs; a shared expert (Qwen2-MoE)
is a dense MLP over every token, scaled by a sigmoid gate. Under tensor parallelism each
expert's intermediate width is split over the GPUs, as vLLM does by default (no expert
parallelism), and the layer ends in the same all-reduce as a dense one.

Routing is taken as balanced: each token's ``k`` experts are a uniform draw of the ``E``, so an
expert receives ``T k / E`` rows in expectation and :func:`experts_touched` of them receive
any. Real routers are skewed, which leaves some experts idle and others with more rows than
that: a decode step then reads fewer experts' weights than priced, a prefill waits on its
busiest expert.
"""

from __future__ import annotations

from hwmodels.models import ModelSpec

#: ``(rows, k, n)`` of a GEMM as :meth:`~hwmodels.profile.GpuProfile.gemm_s` prices it.
Gemm = tuple[float, int, int]


def experts_touched(tokens: float, n_experts: int, experts_per_token: int) -> float:
    """Expected number of distinct experts that receive at least one of ``tokens`` tokens:
    ``E (1 - (1 - k/E)^T)``, each expert missed by a token with probability ``1 - k/E``. It is
    ``k`` for one token and nears ``E`` once ``T k`` is a few times ``E``: a decode batch of
    64 on Qwen3-30B-A3B (128 experts, top-8) reads 126 experts' weights, 16 times one token's."""
    return n_experts * (1.0 - (1.0 - experts_per_token / n_experts) ** tokens)


def mlp_gemms(model: ModelSpec, tokens: int, tp: int) -> tuple[Gemm, ...]:
    """The GEMMs of a mixture layer's MLP for a step of ``tokens``, on one of ``tp`` GPUs: the
    router, the routed experts' gate/up and down, then a shared expert's gate/up and down and
    its gate, where it has one.

    A grouped GEMM over the ``touched`` experts with ``m = T k / touched`` rows each is priced
    as one GEMM of ``m`` rows over their weights side by side (``n`` = touched x the expert's
    columns): its FLOPs (``2 T k`` x the expert's weights) and weight bytes (touched x the
    expert's weights) are the grouped kernel's, it pays one launch's fixed latency, not one per
    expert, and its row count is each expert's, which sets how it runs: a decode step's few
    rows per expert stream the weights, a long prefill's hundreds compute, as a dense GEMM of
    that many rows does. Only the activations each expert reads are undercounted (one
    expert's ``m`` rows, not all ``T k``), small beside the weights until prefills of thousands
    of tokens, which are bound by their FLOPs.
    """
    h, width = model.hidden_size, model.intermediate_size // tp
    touched = experts_touched(tokens, model.n_experts, model.experts_per_token)
    rows = tokens * model.experts_per_token / touched
    gemms: tuple[Gemm, ...] = (
        (tokens, h, model.n_experts),
        (rows, h, round(touched * 2 * width)),
        (rows, width, round(touched * h)),
    )
    shared = model.shared_expert_intermediate_size // tp
    if shared:
        gemms += ((tokens, h, 2 * shared), (tokens, shared, h), (tokens, h, 1))
    return gemms


def mlp_kernels(model: ModelSpec, tp: int) -> tuple[tuple[str, int], ...]:
    """``(kernel, elements moved per token)`` of a mixture layer's memory-bound kernels, on
    one of ``tp`` GPUs. ``silu_mul`` is the calibrated layer kernel; the others are priced as
    plain streaming kernels (:meth:`~hwmodels.profile.GpuProfile.elementwise_s`), in 16-bit
    elements: the top-k softmax reads the router's logits and writes ``k`` fp32 weights and
    int32 ids; the sort reads the ids and writes the rows' order; the sum reads each token's
    ``k`` expert outputs and writes one; the shared expert's gate reads its output and the
    routed sum and writes their sum."""
    k, h = model.experts_per_token, model.hidden_size
    kernels = (
        ("moe_topk_softmax", model.n_experts + 4 * k),
        ("moe_sort", 4 * k),
        ("silu_mul", 3 * k * (model.intermediate_size // tp)),
        ("moe_sum", (k + 1) * h),
    )
    shared = model.shared_expert_intermediate_size // tp
    if shared:
        kernels += (("silu_mul", 3 * shared), ("shared_expert_gate", 3 * h))
    return kernels
