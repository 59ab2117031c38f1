"""End-to-end check on the GPU: a Llama-shaped model with random weights, timed on prefill and
decode steps, so the calibrated execution model can be compared with a real forward pass.

The model is built from a :class:`~hwmodels.models.ModelSpec` (nothing is downloaded): per
layer RMSNorm, fused QKV projection, rotary embedding, GQA attention through
``scaled_dot_product_attention`` over a KV cache, output projection, RMSNorm, fused gate/up
projection, SiLU-gated product, down projection, residuals; then the LM head on the last token
of each sequence. That is the work ``ExecutionModel`` prices, op for op.
"""

from __future__ import annotations

from typing import Any

from calibrate.timing import median_gpu_seconds
from hwmodels.models import ModelSpec

PREFILL_LENGTHS = [256, 1024, 4096, 8192]
DECODE_POINTS = [(1, 1024), (16, 2048), (64, 1024), (32, 8192), (256, 512)]  # <= 262k cached tokens


class RandomLlama:
    """Weights only, as plain tensors; ``prefill`` and ``decode`` run one engine step."""

    def __init__(self, spec: ModelSpec, n_layers: int) -> None:
        import torch

        self.spec, self.n_layers = spec, n_layers
        h, hd, q, kv, inter = spec.hidden_size, spec.head_dim, spec.n_q_heads, spec.n_kv_heads, spec.intermediate_size

        def w(*shape: int):
            return torch.randn(*shape, device="cuda", dtype=torch.bfloat16) * shape[0] ** -0.5

        self.layers = [
            {"qkv": w(h, (q + 2 * kv) * hd), "o": w(q * hd, h), "gate_up": w(h, 2 * inter), "down": w(inter, h),
             "norm1": torch.ones(h, device="cuda", dtype=torch.bfloat16), "norm2": torch.ones(h, device="cuda", dtype=torch.bfloat16)}
            for _ in range(n_layers)
        ]  # fmt: skip
        self.lm_head = w(h, spec.vocab_size)

    @staticmethod
    def _rms(x, weight):
        import torch.nn.functional as F

        return F.rms_norm(x, (x.shape[-1],), weight, eps=1e-5)

    @staticmethod
    def _rope(x, cos, sin):
        import torch

        half = x.shape[-1] // 2
        rotated = torch.cat((-x[..., half:], x[..., :half]), dim=-1)
        return x * cos + rotated * sin

    def _layer(self, layer: dict, x, k_cache, v_cache, cos, sin, causal: bool):
        import torch.nn.functional as F

        spec = self.spec
        b, t, h = x.shape
        q_dim, kv_dim = spec.n_q_heads * spec.head_dim, spec.n_kv_heads * spec.head_dim
        qkv = self._rms(x, layer["norm1"]) @ layer["qkv"]
        q, k, v = qkv.split([q_dim, kv_dim, kv_dim], dim=-1)
        q = self._rope(q.view(b, t, spec.n_q_heads, spec.head_dim).transpose(1, 2), cos, sin)
        k = self._rope(k.view(b, t, spec.n_kv_heads, spec.head_dim).transpose(1, 2), cos, sin)
        v = v.view(b, t, spec.n_kv_heads, spec.head_dim).transpose(1, 2)
        if k_cache is not None:
            # Decode: write the new token's K/V into its preallocated slot, attend over all.
            k_cache[:, :, -1:] = k
            v_cache[:, :, -1:] = v
            k, v = k_cache, v_cache
        attn = F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=True)
        x = x + attn.transpose(1, 2).reshape(b, t, q_dim) @ layer["o"]
        gate, up = (self._rms(x, layer["norm2"]) @ layer["gate_up"]).chunk(2, dim=-1)
        return x + (F.silu(gate) * up) @ layer["down"]

    def step(self, x, caches, causal: bool):
        t = x.shape[1]
        cos = x.new_ones(1, 1, t, self.spec.head_dim) * 0.5
        sin = x.new_ones(1, 1, t, self.spec.head_dim) * 0.5
        for i, layer in enumerate(self.layers):
            k_cache, v_cache = caches[i] if caches else (None, None)
            x = self._layer(layer, x, k_cache, v_cache, cos, sin, causal)
        return x[:, -1] @ self.lm_head


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


def measure(spec: ModelSpec, n_layers: int | None = None) -> list[dict[str, Any]]:
    """Median seconds of prefill steps (one sequence each) and decode steps (batch x context),
    each replayed from a CUDA graph."""
    import torch

    layers = n_layers or spec.n_layers
    model = RandomLlama(spec, layers)
    records = []
    with torch.inference_mode():
        for seq in PREFILL_LENGTHS:
            sets = [torch.randn(1, seq, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            run = _graphed(lambda x: model.step(x, None, causal=True), sets[0])
            seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
            del run
            records.append({"op": "e2e_prefill", "model": spec.name, "layers": layers, "seq": seq, "seconds": seconds})
        for batch, ctx in DECODE_POINTS:
            caches = [
                (torch.randn(batch, spec.n_kv_heads, ctx + 1, spec.head_dim, device="cuda", dtype=torch.bfloat16),
                 torch.randn(batch, spec.n_kv_heads, ctx + 1, spec.head_dim, device="cuda", dtype=torch.bfloat16))
                for _ in range(layers)
            ]  # fmt: skip
            sets = [torch.randn(batch, 1, spec.hidden_size, device="cuda", dtype=torch.bfloat16) for _ in range(2)]
            run = _graphed(lambda x, c=caches: model.step(x, c, causal=False), sets[0])
            seconds = median_gpu_seconds(run, sets, warmup=2, repeat=7)
            del run
            records.append(
                {
                    "op": "e2e_decode",
                    "model": spec.name,
                    "layers": layers,
                    "batch": batch,
                    "ctx": ctx,
                    "seconds": seconds,
                }
            )
            del caches
            torch.cuda.empty_cache()
    return records
