"""End-to-end check on the GPU: a Llama-shaped model with random weights, timed on prefill and
decode steps, prefill on a cached prefix (what a prefix hit leaves to compute) and chunked-prefill
steps that mix the two, so the calibrated execution model can be compared with a real forward
pass.

The model is built from a :class:`~hwmodels.models.ModelSpec` (nothing is downloaded): per
layer residual add + RMSNorm, fused QKV projection, rotary embedding, K and V written into a
KV cache, GQA attention through ``scaled_dot_product_attention``, output projection, residual
add + RMSNorm, fused gate/up projection, SiLU-gated product, down projection; then the LM head
on the last token of each sequence. That is the work ``ExecutionModel`` prices, op for op.

It runs two ways, because engines differ in the one place where the execution model must
assume something: the small memory-bound ops between the GEMMs.

* ``compiled``: the elementwise ops go through ``torch.compile``, which fuses each of them into
  one Triton kernel, as vLLM (which compiles its models) and SGLang (custom fused kernels) run
  them. This is what the execution model prices.
* ``eager``: the same code op by op, as a plain PyTorch / Hugging Face model runs it (some 20
  small kernels a layer). It shows what an unfused engine pays on top.

GEMMs (cuBLAS) and attention (SDPA's flash kernels) are the same in both.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from calibrate.timing import median_gpu_seconds, median_graph_seconds
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


class _Ops:
    """The elementwise ops of a layer, eager or fused by ``torch.compile``."""

    def __init__(self, engine: str) -> None:
        if engine not in ENGINES:
            raise ValueError(f"unknown engine {engine!r}; one of {', '.join(ENGINES)}")
        if engine == "compiled":
            import torch

            def compile_(fn: Callable) -> Callable:
                return torch.compile(fn, dynamic=True, fullgraph=True)

            self.add_rms_norm, self.rope, self.silu_mul = map(compile_, (_add_rms_norm, _rope, _silu_mul))
        else:
            self.add_rms_norm, self.rope, self.silu_mul = _add_rms_norm, _rope, _silu_mul


class RandomLlama:
    """Weights only, as plain tensors; :meth:`step` runs one engine step."""

    def __init__(self, spec: ModelSpec, n_layers: int, engine: str = "compiled", device: str = "cuda") -> None:
        import torch

        self.spec, self.n_layers, self.ops = spec, n_layers, _Ops(engine)
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
        x, residual = ops.add_rms_norm(attn @ layer["o"], residual, layer["norm2"])
        return ops.silu_mul(x @ layer["gate_up"]) @ layer["down"], residual

    @staticmethod
    def _attend(q, k, v, k_cache, v_cache, decode: bool):
        """The step's K and V written into their cache slots (the last ``t`` of each sequence),
        then attention: a decode token over its whole cache; prefill tokens over the cached
        prefix before them, if any, and causally over each other, in one kernel (the mask is
        aligned to the cache's end, as flash attention aligns it for a prefix). For that mask
        PyTorch calls its FlashAttention-2 kernel, about half as fast on an H100 as the kernel
        it picks without one, which the profile's attention was measured with (README)."""
        import torch.nn.functional as F
        from torch.nn.attention.bias import causal_lower_right

        t, context = q.shape[2], k_cache.shape[2]
        k_cache[:, :, -t:] = k
        v_cache[:, :, -t:] = v
        if decode:
            return F.scaled_dot_product_attention(q, k_cache, v_cache, enable_gqa=True)
        if context > t:
            mask = causal_lower_right(t, context)
            return F.scaled_dot_product_attention(q, k_cache, v_cache, attn_mask=mask, enable_gqa=True)
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
    import torch

    static_in = example.clone()
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(2):
            step(static_in)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        step(static_in)

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


def measure(spec: ModelSpec, n_layers: int | None = None, engines: tuple[str, ...] = ENGINES) -> list[dict[str, Any]]:
    """Median seconds of prefill steps (one sequence each, from scratch and on a cached
    prefix), chunked-prefill steps (a prefill chunk with decodes) and decode steps (batch x
    context), each replayed from a CUDA graph, for each engine."""
    import torch

    layers = n_layers or spec.n_layers
    records: list[dict[str, Any]] = [_reference_gemm("before")]
    for engine in engines:
        model = RandomLlama(spec, layers, engine)
        with torch.inference_mode():
            for seq in PREFILL_LENGTHS:
                caches = _kv_caches(spec, layers, 1, seq)
                sets = [torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=False), sets[0])
                seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
                del run, caches
                records.append(
                    {
                        "op": "e2e_prefill",
                        "engine": engine,
                        "model": spec.name,
                        "layers": layers,
                        "seq": seq,
                        "seconds": seconds,
                    }
                )
            for seq, prefix in PREFIX_POINTS:
                caches = _kv_caches(spec, layers, 1, prefix + seq)
                sets = [torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=False), sets[0])
                seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
                del run, caches
                records.append(
                    {"op": "e2e_prefix_prefill", "engine": engine, "model": spec.name, "layers": layers,
                     "seq": seq, "prefix": prefix, "seconds": seconds}
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
                seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
                del run, prefill_caches, decode_caches
                torch.cuda.empty_cache()
                records.append(
                    {"op": "e2e_mixed", "engine": engine, "model": spec.name, "layers": layers,
                     "seq": seq, "batch": batch, "ctx": ctx, "seconds": seconds}
                )  # fmt: skip
            for batch, ctx in DECODE_POINTS:
                caches = _kv_caches(spec, layers, batch, ctx + 1)
                sets = [torch.randn(batch, 1, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
                run = _graphed(lambda x, c=caches, m=model: m.step(x, c, decode=True), sets[0])
                seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
                del run, caches
                torch.cuda.empty_cache()
                records.append(
                    {"op": "e2e_decode", "engine": engine, "model": spec.name, "layers": layers,
                     "batch": batch, "ctx": ctx, "seconds": seconds}
                )  # fmt: skip
        del model  # free its weights before the next engine's
        torch.cuda.empty_cache()
    records.append(_reference_gemm("after"))
    return records


def _reference_gemm(when: str) -> dict[str, Any]:
    import torch

    m, k, n = REFERENCE_GEMM
    sets = [
        (torch.randn(m, k, device="cuda", dtype=torch.bfloat16), torch.randn(k, n, device="cuda", dtype=torch.bfloat16))
        for _ in range(2)
    ]
    seconds = median_graph_seconds(lambda ab: torch.matmul(*ab), sets, calls=5)
    return {"op": "reference_gemm", "when": when, "m": m, "k": k, "n": n, "seconds": seconds}
