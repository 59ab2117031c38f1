"""Transformer model shapes: what sizes the KV cache and the GEMMs.

Shapes are taken from the models' published ``config.json`` files; parameter counts are
derived from them (a SwiGLU MLP), so a new model needs only its shape: add it to
:data:`MODELS`, or read a Hugging Face ``config.json`` with :func:`spec_from_hf_config`.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any


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
    tied_embeddings: bool = False  # the LM head reuses the embedding matrix (small models)
    # The longest sequence (prompt + output) the model serves: its config's
    # max_position_embeddings, which vLLM takes as max_model_len. None: not limited.
    max_context_tokens: int | None = None

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
        embeddings = (1 if self.tied_embeddings else 2) * self.vocab_size * self.hidden_size
        return self.n_layers * self.params_per_layer + embeddings

    @property
    def weight_bytes(self) -> int:
        return self.n_params * self.bytes_per_param

    def with_overrides(self, **changes: object) -> ModelSpec:
        return replace(self, **changes)


MODELS: dict[str, ModelSpec] = {
    m.name: m
    for m in (
        # Llama 3 was trained to 8K positions; Llama 3.1 has the same shapes with RoPE scaled to 128K.
        ModelSpec("llama-3-8b", 32, 4096, 32, 8, 128, 14336, 128256, max_context_tokens=8192),
        ModelSpec("llama-3-70b", 80, 8192, 64, 8, 128, 28672, 128256, max_context_tokens=8192),
        ModelSpec("llama-3.1-8b", 32, 4096, 32, 8, 128, 14336, 128256, max_context_tokens=131072),
        ModelSpec("llama-3.1-70b", 80, 8192, 64, 8, 128, 28672, 128256, max_context_tokens=131072),
        # Qwen 2.5 ships 32K positions (128K only with YaRN switched on in the config).
        ModelSpec("qwen-2.5-7b", 28, 3584, 28, 4, 128, 18944, 152064, max_context_tokens=32768),
        ModelSpec("qwen-2.5-32b", 64, 5120, 40, 8, 128, 27648, 152064, max_context_tokens=32768),
        # Priced from the calibrated profiles' nearest measured shapes, not their own
        # (calibrate.shapes.CALIBRATION_MODELS); README, "Models the calibration never saw".
        ModelSpec("llama-3.2-1b", 16, 2048, 32, 8, 64, 8192, 128256, tied_embeddings=True, max_context_tokens=131072),
        ModelSpec("llama-3.2-3b", 28, 3072, 24, 8, 128, 8192, 128256, tied_embeddings=True, max_context_tokens=131072),
        ModelSpec("mistral-7b", 32, 4096, 32, 8, 128, 14336, 32768, max_context_tokens=32768),  # v0.3
        ModelSpec("qwen-2.5-14b", 48, 5120, 40, 8, 128, 13824, 152064, max_context_tokens=32768),
        ModelSpec("qwen-2.5-72b", 80, 8192, 64, 8, 128, 29568, 152064, max_context_tokens=32768),
        ModelSpec("qwen-3-8b", 36, 4096, 32, 8, 128, 12288, 151936, max_context_tokens=40960),
    )
}


def _architecture(model: ModelSpec) -> tuple[int, ...]:
    m = model
    return (m.n_layers, m.hidden_size, m.n_q_heads, m.n_kv_heads, m.head_dim, m.intermediate_size, m.vocab_size)


def longer_context_model(model: ModelSpec, lengths: Sequence[int]) -> tuple[ModelSpec, int] | None:
    """The shipped model to suggest where ``model`` refused sequences of ``lengths`` tokens, and
    how many of them it serves: the one that serves the most, and among those one of the same
    shape if any (Llama 3 → Llama 3.1: the same weights' cost with a longer context), else the
    nearest in size, so that the suggestion changes the context and not the GPU time per token;
    ``None`` if no shipped model serves any of them."""

    def served(candidate: ModelSpec) -> int:
        return sum(1 for n in lengths if n <= (candidate.max_context_tokens or 0))

    def preference(candidate: ModelSpec) -> tuple[int, bool, float, str]:
        same_shape = _architecture(candidate) == _architecture(model)
        return -served(candidate), not same_shape, abs(math.log(candidate.n_params / model.n_params)), candidate.name

    best = min(MODELS.values(), key=preference)
    count = served(best)
    return (best, count) if count else None


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(sorted(MODELS))}") from None


# Keys that mark an architecture the execution model does not price: mixture-of-experts MLPs
# (each token runs a few experts' GEMMs, not one dense MLP) and latent attention (MLA caches a
# compressed latent, not K and V per head).
_UNSUPPORTED_KEYS = {
    "num_local_experts": "a mixture-of-experts MLP",
    "num_experts": "a mixture-of-experts MLP",
    "n_routed_experts": "a mixture-of-experts MLP",
    "kv_lora_rank": "multi-head latent attention",
}


def spec_from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a Hugging Face ``config.json`` (Llama, Mistral, Qwen 2/2.5/3
    and other dense decoders with grouped-query attention and a gated MLP).

    Read: ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
    ``intermediate_size``, ``vocab_size`` (required); ``num_key_value_heads`` (default: the
    attention heads, plain multi-head attention), ``head_dim`` (default: hidden size over
    heads), ``tie_word_embeddings`` (default false) and ``max_position_embeddings`` with
    ``rope_scaling`` (the context limit, derived as vLLM derives ``max_model_len``; default
    none). A multimodal config's ``text_config``
    is used where present. ``name``: the spec's name, else the config's ``_name_or_path``, else
    its directory's name.

    Weights and KV are 16-bit whatever ``torch_dtype`` says, as vLLM's ``dtype=auto`` serves
    them (``model.kv_bytes_per_element`` sets FP8 KV). A sliding attention window is not
    modelled: every layer keeps and attends to the whole context. Mixture-of-experts and
    latent-attention configs are refused, since their GEMMs and KV differ from this model's.
    """
    path = Path(path)
    try:
        config = json.loads(path.read_text())
    except FileNotFoundError:
        raise ValueError(f"{path}: no such model config file") from None
    except (OSError, json.JSONDecodeError) as exc:
        raise ValueError(f"{path}: not a readable JSON model config ({exc})") from None
    if not isinstance(config, dict):
        raise ValueError(f"{path}: a model config is a JSON object, got {type(config).__name__}")
    text = config.get("text_config")
    if isinstance(text, dict):
        config = {**config, **text}
    for key, what in _UNSUPPORTED_KEYS.items():
        value = config.get(key)
        if isinstance(value, int) and value > (1 if "experts" in key else 0):
            raise ValueError(f"{path}: field {key}={value}: {what} is not modelled (dense decoders only)")

    def count(key: str, default: Any = None) -> int:
        value = config.get(key, default)
        if value is None:
            raise ValueError(f"{path}: field {key!r} is missing")
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ValueError(f"{path}: field {key!r} must be a positive integer, got {value!r}")
        return value

    hidden, heads = count("hidden_size"), count("num_attention_heads")
    kv_heads = count("num_key_value_heads", heads)
    if heads % kv_heads:
        raise ValueError(f"{path}: field 'num_key_value_heads' ({kv_heads}) must divide num_attention_heads ({heads})")
    head_dim = count("head_dim", hidden // heads if hidden % heads == 0 else None)
    tied = config.get("tie_word_embeddings", False)
    if not isinstance(tied, bool):
        raise ValueError(f"{path}: field 'tie_word_embeddings' must be true or false, got {tied!r}")
    context = _context_limit(path, config, count)
    # Hugging Face keeps a model's config.json in a folder named after the model; a file named
    # otherwise (llama-8b.json beside llama-70b.json) is named by itself.
    own = path.resolve().parent.name if path.name == "config.json" else path.stem
    label = name or config.get("_name_or_path") or own
    return ModelSpec(
        name=str(label),
        n_layers=count("num_hidden_layers"),
        hidden_size=hidden,
        n_q_heads=heads,
        n_kv_heads=kv_heads,
        head_dim=head_dim,
        intermediate_size=count("intermediate_size"),
        vocab_size=count("vocab_size"),
        tied_embeddings=tied,
        max_context_tokens=context,
    )


# RoPE scaling types whose max_position_embeddings already states the scaled context (vLLM does
# not multiply these by the factor); any other type with a factor stretches the context by it.
_ROPE_TYPES_ALREADY_SCALED = {"llama3", "su", "longrope", "default", "mrope"}


def _context_limit(path: Path, config: dict[str, Any], count: Callable[[str], int]) -> int | None:
    """The longest sequence a config's model serves: ``max_position_embeddings``, times the
    RoPE scaling factor where the scaling extends it (YaRN, linear, dynamic: a Qwen-2.5 config
    with YaRN x4 serves 131,072 tokens on 32,768 positions), as vLLM derives ``max_model_len``."""
    if config.get("max_position_embeddings") is None:
        return None
    limit = count("max_position_embeddings")
    scaling = config.get("rope_scaling")
    if not isinstance(scaling, dict):
        return limit
    kind = scaling.get("rope_type") or scaling.get("type")
    factor = scaling.get("factor")
    if kind in _ROPE_TYPES_ALREADY_SCALED or factor is None:
        return limit
    if isinstance(factor, bool) or not isinstance(factor, int | float) or factor < 1:
        raise ValueError(f"{path}: field 'rope_scaling.factor' must be a number >= 1, got {factor!r}")
    if kind == "yarn" and isinstance(scaling.get("original_max_position_embeddings"), int):
        limit = scaling["original_max_position_embeddings"]
    return int(limit * factor)
