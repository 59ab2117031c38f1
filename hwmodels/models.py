"""Transformer model shapes: what sizes the KV cache and the GEMMs.

Shapes are taken from the models' published ``config.json`` files; parameter counts are
derived from them (a SwiGLU MLP and untied embeddings), so a new model needs only its shape.
"""

from __future__ import annotations

from dataclasses import dataclass, replace


@dataclass(frozen=True)
class ModelSpec:
    """A decoder-only transformer with grouped-query attention and a SwiGLU MLP."""

    name: str
    n_layers: int
    hidden_size: int
    n_q_heads: int
    n_kv_heads: int
    head_dim: int
    intermediate_size: int
    vocab_size: int
    bytes_per_param: int = 2  # bf16 weights
    kv_bytes_per_element: float = 2.0  # bf16 KV; 1.0 models FP8 KV
    kv_compression_ratio: float = 1.0  # < 1 models KV quantisation / compression

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer of one token: 2 x layers x kv_heads x head_dim x bytes."""
        raw = 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_element
        return raw * self.kv_compression_ratio

    def kv_bytes_per_block(self, block_tokens: int) -> int:
        return int(round(self.kv_bytes_per_token * block_tokens))

    @property
    def params_per_layer(self) -> int:
        h, hd = self.hidden_size, self.head_dim
        attn = h * (self.n_q_heads + 2 * self.n_kv_heads) * hd + self.n_q_heads * hd * h
        mlp = 3 * h * self.intermediate_size
        return attn + mlp

    @property
    def n_params(self) -> int:
        return self.n_layers * self.params_per_layer + 2 * self.vocab_size * self.hidden_size

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.bytes_per_param

    def with_overrides(self, **changes: object) -> ModelSpec:
        return replace(self, **changes)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256),
        ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256),
        ModelSpec("qwen-2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064),
        ModelSpec("qwen-2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064),
    )
}


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(sorted(MODELS))}") from None
