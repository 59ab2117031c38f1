"""End-to-end check on the GPU: a Llama-shaped model with random weights, timed on prefill and
decode steps, prefill on a cached prefix (what a prefix hit leaves to compute) and chunked-prefill
steps that mix the two, so the calibrated execution model can be compared with a real forward
pass.

The model is built from a :class:`~hwmodels.models.ModelSpec` (nothing is downloaded): per
layer residual add + RMSNorm, fused QKV projection, rotary embedding, K and V written into a
KV cache, GQA attention (``scaled_dot_product_attention``; on a cached prefix, the prefix and the
new tokens as two fused kernels merged, see ``RandomLlama._attend``), output projection, residual
add + RMSNorm, fused gate/up projection, SiLU-gated product, down projection; then the LM head
on the last token of each sequence. That is the work ``ExecutionModel`` prices, op for op.

It runs two ways, because engines differ in the one place where the execution model must
assume something: the small memory-bound ops between the GEMMs.

* ``compiled``: the elementwise ops go through ``torch.compile``, which fuses each of them into
  one Triton kernel, as vLLM (which compiles its models) and SGLang (custom fused kernels) run
  them. This is what the execution model prices.
* ``eager``: the same code op by op, as a plain PyTorch / Hugging Face model runs it (some 20
  small kernels a layer). It shows what an unfused engine pays on top.

GEMMs (cuBLAS) and attention (SDPA's and cuDNN's flash kernels) are the same in both; the merge
of a prefix's two attention parts is an elementwise op like the others (one kernel compiled).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from calibrate.power import ClockSampler
from calibrate.timing import capture_graph, median_gpu_seconds, median_graph_seconds, sustained_gpu_seconds
from hwmodels.models import ModelSpec

PREFILL_LENGTHS = [256, 1024, 4096, 8192]
DECODE_POINTS = [(1, 1024), (16, 2048), (64, 1024), (32, 8192), (256, 512)]  # <= 262k cached tokens
#: (new tokens, cached prefix tokens): a prompt whose prefix was found in the cache, the step a
#: prefix hit leaves to compute. Its attention reads the whole prefix.
PREFIX_POINTS = [(512, 3584), (1024, 7168), (2048, 14336), (256, 32512)]
#: (prefill chunk, decoding sequences, their context): a chunked-prefill step, vLLM's default.
MIXED_POINTS = [(512, 32, 2048), (1024, 64, 1024), (2048, 16, 4096)]
ENGINES = ("compiled", "eager")
#: (m, k, n) of a GEMM timed before and after the steps (Llama-3-8B's gate/up projection at 4096
#: tokens, a shape every profile measures): a GPU that runs slower than when it was profiled
#: (shared, throttled, cold) shows here, and the report says so instead of blaming the model.
REFERENCE_GEMM = (4096, 4096, 28672)


def _add_rms_norm(x, residual, weight):
    """The residual stream's add and the next sublayer's RMSNorm, in fp32 as engines do."""
    import torch

    residual = x + residual
    r = residual.float()
    normed = r * torch.rsqrt(r.pow(2).mean(-1, keepdim=True) + 1e-5)
    return normed.to(x.dtype) * weight, residual


def _rope(q, k, cos, sin):
    """Rotary embedding (rotate-half form) of queries and keys."""
    import torch

    def rotate(x):
        half = x.shape[-1] // 2
        return x * cos + torch.cat((-x[..., half:], x[..., :half]), dim=-1) * sin

    return rotate(q), rotate(k)


def _silu_mul(gate_up):
    import torch.nn.functional as F

    gate, up = gate_up.chunk(2, dim=-1)
    return F.silu(gate) * up


def partial_attention(q, k, v, causal: bool):
    """Attention of ``q`` over one part of its keys, with the log-sum-exp of its scores, so that
    parts can be merged (:func:`merge_attention`). ``q`` is (batch, q heads, tokens, head dim),
    ``k`` and ``v`` (batch, kv heads, length, head dim); ``causal`` aligns the mask to the top
    left (the part is the new tokens themselves). Returns the output as ``q``'s shape and the
    log-sum-exp as (batch, q heads, tokens, 1) in fp32.

    On a GPU this is cuDNN's fused attention (PyTorch's ``_scaled_dot_product_cudnn_attention``,
    the kernel ``scaled_dot_product_attention`` itself picks on Hopper without a mask, which
    takes grouped K and V as they are); elsewhere, the same function written out (the CPU tests).
    """
    import torch

    if q.is_cuda:
        out = torch.ops.aten._scaled_dot_product_cudnn_attention(q, k, v, None, True, 0.0, causal, False)
        return out[0], out[1].view(*q.shape[:3], 1)
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, dim=1).float(), v.repeat_interleave(group, dim=1).float()
    scores = q.float() @ k.transpose(-1, -2) * q.shape[-1] ** -0.5
    if causal:
        t, n = scores.shape[-2:]
        scores = scores.masked_fill(torch.ones(t, n, dtype=torch.bool).triu(1), float("-inf"))
    lse = torch.logsumexp(scores, dim=-1, keepdim=True)
    return (torch.exp(scores - lse) @ v).to(q.dtype), lse


def check_prefix_attention(spec: ModelSpec, new_tokens: int = 256, prefix: int = 768, device: str = "cuda") -> float:
    """Largest difference, relative to the output's largest value, between prefix attention
    run in two parts and merged and the same attention in one call with the mask aligned to the
    cache's end; raises if it exceeds 2 %, or if the parts cannot run here. The GPU path rests
    on a PyTorch-internal operator: if a PyTorch release changes it or a GPU lacks it, this
    fails, with a message saying so, before anything is timed."""
    import torch
    import torch.nn.functional as F
    from torch.nn.attention.bias import causal_lower_right

    g = torch.Generator(device=device).manual_seed(0)
    shape = (1, spec.n_q_heads, new_tokens, spec.head_dim)
    q = torch.randn(*shape, generator=g, device=device, dtype=torch.bfloat16)
    k, v = (
        torch.randn(1, spec.n_kv_heads, prefix + new_tokens, spec.head_dim, generator=g, device=device,
                    dtype=torch.bfloat16)
        for _ in range(2)
    )  # fmt: skip
    with torch.inference_mode():
        try:
            parts = [
                partial_attention(q, k[:, :, :prefix], v[:, :, :prefix], causal=False),
                partial_attention(q, k[:, :, prefix:], v[:, :, prefix:], causal=True),
            ]
        except (RuntimeError, AttributeError) as exc:  # no cuDNN attention for this GPU or build
            raise RuntimeError(
                f"the prefix steps need cuDNN's fused attention with its log-sum-exp, which this GPU or PyTorch "
                f"does not run ({type(exc).__name__}: {str(exc)[:200]}); use a CUDA build of PyTorch with "
                "cuDNN 9 on an Ampere or newer GPU"
            ) from exc
        merged = merge_attention(*parts[0], *parts[1]).float()
        whole = F.scaled_dot_product_attention(
            q, k, v, attn_mask=causal_lower_right(new_tokens, prefix + new_tokens), enable_gqa=True
        ).float()
    error = float((merged - whole).abs().max() / whole.abs().max())
    if error > 0.02:
        raise RuntimeError(
            f"prefix attention in two parts differs from one call by {100 * error:.1f} % of its largest value "
            f"({spec.name}, {new_tokens} new tokens on {prefix}): calibrate.e2e.partial_attention needs fixing "
            "for this PyTorch"
        )
    return error


def merge_attention(out_a, lse_a, out_b, lse_b):
    """Attention over two parts of the keys, from each part's output and log-sum-exp: each is
    weighted by its share of the softmax's denominator (the merge that split-KV and cascade
    attention kernels end with)."""
    import torch

    top = torch.maximum(lse_a, lse_b)
    weight_a, weight_b = torch.exp(lse_a - top), torch.exp(lse_b - top)
    return ((out_a.float() * weight_a + out_b.float() * weight_b) / (weight_a + weight_b)).to(out_a.dtype)


class _Ops:
    """The elementwise ops of a layer, eager or fused by ``torch.compile``."""

    def __init__(self, engine: str) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
        if engine == "compiled":
            import torch

            def compile_(fn: Callable) -> Callable:
                return torch.compile(fn, dynamic=True, fullgraph=True)

            self.add_rms_norm, self.rope, self.silu_mul, self.merge_attention = map(
                compile_, (_add_rms_norm, _rope, _silu_mul, merge_attention)
            )
        else:
            self.add_rms_norm, self.rope, self.silu_mul, self.merge_attention = (
                _add_rms_norm, _rope, _silu_mul, merge_attention
            )  # fmt: skip


class RandomLlama:
    """Weights only, as plain tensors; :meth:`step` runs one engine step.

    Under tensor parallelism ``spec`` is one rank's share (:func:`calibrate.collective.shard`)
    and ``reduce`` sums a sublayer's partial output over the ranks, in place, as an engine's
    row-parallel projections do after attention and after the MLP."""

    def __init__(
        self,
        spec: ModelSpec,
        n_layers: int,
        engine: str = "compiled",
        device: str = "cuda",
        reduce: Callable[[Any], Any] | None = None,
    ) -> None:
        import torch

        self.spec, self.n_layers, self.ops = spec, n_layers, _Ops(engine)
        self.reduce = reduce or (lambda x: x)
        h, hd, q, kv, inter = spec.hidden_size, spec.head_dim, spec.n_q_heads, spec.n_kv_heads, spec.intermediate_size

        def w(*shape: int):
            return torch.randn(*shape, device=device, dtype=torch.bfloat16) * shape[0] ** -0.5

        self.layers = [
            {"qkv": w(h, (q + 2 * kv) * hd), "o": w(q * hd, h), "gate_up": w(h, 2 * inter), "down": w(inter, h),
             "norm1": torch.ones(h, device=device, dtype=torch.bfloat16), "norm2": torch.ones(h, device=device, dtype=torch.bfloat16)}
            for _ in range(n_layers)
        ]  # fmt: skip
        self.lm_head = w(h, spec.vocab_size)

    def _qkv(self, layer: dict, x, residual, cos, sin):
        """Residual add + RMSNorm, QKV projection and rotary embedding of ``x`` (batch, tokens,
        hidden): ``q``, ``k``, ``v`` as (batch, heads, tokens, head dim), and the residual."""
        spec, ops = self.spec, self.ops
        b, t, _ = x.shape
        q_dim, kv_dim = spec.n_q_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        x, residual = ops.add_rms_norm(x, residual, layer["norm1"])
        q, k, v = (x @ layer["qkv"]).split([q_dim, kv_dim, kv_dim], dim=-1)
        q, k = ops.rope(
            q.view(b, t, spec.n_q_heads, spec.head_dim), k.view(b, t, spec.n_kv_heads, spec.head_dim), cos, sin
        )
        return (
            q.transpose(1, 2),
            k.transpose(1, 2),
            v.view(b, t, spec.n_kv_heads, spec.head_dim).transpose(1, 2),
            residual,
        )

    def _mlp(self, layer: dict, attn, residual):
        """Output projection of ``attn`` (batch, tokens, q heads x head dim), residual add +
        RMSNorm, gate/up projection, SiLU-gated product, down projection."""
        ops = self.ops
        x, residual = ops.add_rms_norm(self.reduce(attn @ layer["o"]), residual, layer["norm2"])
        return self.reduce(ops.silu_mul(x @ layer["gate_up"]) @ layer["down"]), residual

    def _attend(self, q, k, v, k_cache, v_cache, decode: bool):
        """The step's K and V written into their cache slots (the last ``t`` of each sequence),
        then attention: a decode token over its whole cache; prefill tokens causally over each
        other and, if the cache holds a prefix before them, over that prefix.

        On a prefix the two parts run as two fused kernels (the prefix in full, the new tokens
        causally) merged by their log-sum-exps. One kernel with the mask aligned to the cache's
        end is what FlashAttention-3 and FlashInfer run in vLLM and SGLang, but PyTorch has no
        kernel of that class for such a mask: for it SDPA calls FlashAttention-2, which ran at
        215-340 TFLOP/s on an H100 where cuDNN's Hopper kernel, which the profile's attention
        was measured with, ran the two parts at 375-630 (``benchmarks/gpu_prefix_kernels.py``,
        2026-11-23)."""
        import torch.nn.functional as F

        t, context = q.shape[2], k_cache.shape[2]
        k_cache[:, :, -t:] = k
        v_cache[:, :, -t:] = v
        if decode:
            return F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=True)
        if context > t:
            prefix = context - t
            out_prefix, lse_prefix = partial_attention(q, k_cache[:, :, :prefix], v_cache[:, :, :prefix], causal=False)
            out_new, lse_new = partial_attention(q, k_cache[:, :, prefix:], v_cache[:, :, prefix:], causal=True)
            return self.ops.merge_attention(out_prefix, lse_prefix, out_new, lse_new)
        return F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=True)

    def _rotary(self, x):
        t = x.shape[1]
        return x.new_ones(1, t, 1, self.spec.head_dim) * 0.5, x.new_ones(1, t, 1, self.spec.head_dim) * 0.5

    def step(self, x, caches, decode: bool):
        """One step over ``x`` (batch, tokens, hidden); ``caches`` holds each layer's K and V
        (batch, kv heads, context, head dim), the step's tokens last. A prefill whose cache is
        longer than its tokens runs on top of a cached prefix."""
        import torch

        b, t, _ = x.shape
        cos, sin = self._rotary(x)
        residual = torch.zeros_like(x)
        for layer, (k_cache, v_cache) in zip(self.layers, caches, strict=True):
            q, k, v, residual = self._qkv(layer, x, residual, cos, sin)
            attn = self._attend(q, k, v, k_cache, v_cache, decode)
            x, residual = self._mlp(layer, attn.transpose(1, 2).reshape(b, t, -1), residual)
        return (x + residual)[:, -1] @ self.lm_head

    def mixed_step(self, x_prefill, x_decode, prefill_caches, decode_caches):
        """A chunked-prefill step: one sequence's prefill chunk ``x_prefill`` (1, tokens,
        hidden) and ``x_decode`` (batch, 1, hidden), one token per decoding sequence, run as
        one batch of tokens through the GEMMs and elementwise kernels, as vLLM and SGLang
        flatten a step; attention runs per part over its own caches."""
        import torch

        t, b = x_prefill.shape[1], x_decode.shape[0]
        x = torch.cat((x_prefill, x_decode.view(1, b, -1)), dim=1)
        cos, sin = self._rotary(x)
        residual = torch.zeros_like(x)
        for layer, (pk, pv), (dk, dv) in zip(self.layers, prefill_caches, decode_caches, strict=True):
            q, k, v, residual = self._qkv(layer, x, residual, cos, sin)
            prefill = self._attend(q[:, :, :t], k[:, :, :t], v[:, :, :t], pk, pv, decode=False)
            decode = self._attend(*(part[:, :, t:].transpose(0, 2) for part in (q, k, v)), dk, dv, decode=True)
            attn = torch.cat((prefill.transpose(1, 2).reshape(1, t, -1), decode.reshape(1, b, -1)), dim=1)
            x, residual = self._mlp(layer, attn, residual)
        return (x + residual)[0, t - 1 :] @ self.lm_head


def _graphed(step, example):
    """Capture ``step(example)`` in a CUDA graph and return a replay that refills the input.

    Serving engines run decode (and vLLM v1 most of prefill) from CUDA graphs, so the step's
    GPU time, not Python's launch overhead, is what the execution model must predict.
    """
    static_in = example.clone()
    graph = capture_graph(lambda: step(static_in))

    def replay(x):
        static_in.copy_(x)
        graph.replay()

    return replay


def _kv_caches(spec: ModelSpec, layers: int, batch: int, context: int) -> list[tuple[Any, Any]]:
    import torch

    shape = (batch, spec.n_kv_heads, context, spec.head_dim)
    return [
        (
            torch.randn(*shape, device="cuda", dtype=torch.bfloat16),
            torch.randn(*shape, device="cuda", dtype=torch.bfloat16),
        )
        for _ in range(layers)
    ]


REST_S = 0.3  # idle before the timed calls: they start at full clock


def _timed(
    run: Callable[[Any], object], sets: list[Any], clocks: ClockSampler | None, sustained: bool
) -> dict[str, Any]:
    """A step in two stated power states, each with the GPU's clock and power meanwhile when
    ``clocks`` reads them (:mod:`calibrate.power`):

    * ``seconds``: the median of 7 calls run back to back after 2 warm-ups and
      :data:`REST_S` idle, so they start at full clock (a long step heats the GPU to its power
      cap within itself, as on a server after a pause);
    * ``sustained_seconds`` (with ``sustained``): the median of 7 calls after 1 s back to
      back, the steady state of a server kept busy with this step.
    """
    start = time.time()
    timing: dict[str, Any] = {"seconds": median_gpu_seconds(run, sets, warmup=2, repeat=7, rest_s=REST_S)}
    state = clocks.window(start + REST_S, time.time()) if clocks is not None else None
    timing |= state or {}
    if sustained:
        load = time.time()
        timing["sustained_seconds"] = sustained_gpu_seconds(run, sets)
        state = clocks.window(load + 1.0, time.time()) if clocks is not None else None
        timing |= {"sustained_" + key: value for key, value in (state or {}).items()}
    return timing


def measure(
    spec: ModelSpec,
    n_layers: int | None = None,
    engines: tuple[str, ...] = ENGINES,
    clocks: ClockSampler | None = None,
) -> list[dict[str, Any]]:
    """Median seconds of prefill steps (one sequence each, from scratch and on a cached
    prefix), chunked-prefill steps (a prefill chunk with decodes) and decode steps (batch x
    context), each replayed from a CUDA graph, for each engine; with ``clocks``, each with the
    GPU's clock and power state while it was timed."""
    import torch

    layers = n_layers or spec.n_layers
    check_prefix_attention(spec)
    records: list[dict[str, Any]] = [_reference_gemm("before", clocks)]
    for engine in engines:
        model = RandomLlama(spec, layers, engine)
        with torch.inference_mode():
            for seq in PREFILL_LENGTHS:
                caches = _kv_caches(spec, layers, 1, seq)
                sets = [torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=False), sets[0])
                timing = _timed(run, sets, clocks, sustained=engine == "compiled")
                del run, caches
                records.append(
                    {"op": "e2e_prefill", "engine": engine, "model": spec.name, "layers": layers, "seq": seq} | timing
                )
            for seq, prefix in PREFIX_POINTS:
                caches = _kv_caches(spec, layers, 1, prefix + seq)
                sets = [torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=False), sets[0])
                timing = _timed(run, sets, clocks, sustained=engine == "compiled")
                del run, caches
                records.append(
                    {"op": "e2e_prefix_prefill", "engine": engine, "model": spec.name, "layers": layers,
                     "seq": seq, "prefix": prefix} | timing
                )  # fmt: skip
            for seq, batch, ctx in MIXED_POINTS:
                prefill_caches = _kv_caches(spec, layers, 1, seq)
                decode_caches = _kv_caches(spec, layers, batch, ctx + 1)
                sets = [
                    torch.randn(1, seq + batch, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)
                ]

                def mixed(x, m=model, pc=prefill_caches, dc=decode_caches, seq=seq, batch=batch):
                    return m.mixed_step(x[:, :seq], x[0, seq:].view(batch, 1, -1), pc, dc)

                run = _graphed(mixed, sets[0])
                timing = _timed(run, sets, clocks, sustained=engine == "compiled")
                del run, prefill_caches, decode_caches
                torch.cuda.empty_cache()
                records.append(
                    {"op": "e2e_mixed", "engine": engine, "model": spec.name, "layers": layers,
                     "seq": seq, "batch": batch, "ctx": ctx} | timing
                )  # fmt: skip
            for batch, ctx in DECODE_POINTS:
                caches = _kv_caches(spec, layers, batch, ctx + 1)
                sets = [torch.randn(batch, 1, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=True), sets[0])
                timing = _timed(run, sets, clocks, sustained=engine == "compiled")
                del run, caches
                torch.cuda.empty_cache()
                records.append(
                    {"op": "e2e_decode", "engine": engine, "model": spec.name, "layers": layers,
                     "batch": batch, "ctx": ctx} | timing
                )  # fmt: skip
        del model  # free its weights before the next engine's
        torch.cuda.empty_cache()
    records.append(_reference_gemm("after", clocks))
    return records


def _reference_gemm(when: str, clocks: ClockSampler | None) -> dict[str, Any]:
    import torch

    m, k, n = REFERENCE_GEMM
    sets = [
        (torch.randn(m, k, device="cuda", dtype=torch.bfloat16), torch.randn(k, n, device="cuda", dtype=torch.bfloat16))
        for _ in range(2)
    ]
    torch.cuda.synchronize()
    time.sleep(REST_S)  # at full clock, as the profile's GEMMs were timed
    start = time.time()
    seconds = median_graph_seconds(lambda ab: torch.matmul(*ab), sets, calls=5)
    state = clocks.window(start, time.time()) if clocks is not None else None
    return {"op": "reference_gemm", "when": when, "m": m, "k": k, "n": n, "seconds": seconds} | (state or {})
