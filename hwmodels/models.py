"""Transformer model shapes: what sizes the KV cache and the GEMMs.

Shapes are taken from the models' published ``config.json`` files; parameter counts are
derived from them (a SwiGLU MLP, or a mixture of SwiGLU experts), so a new model needs only
its shape: add it to :data:`MODELS`, or read a Hugging Face ``config.json`` with
:func:`spec_from_hf_config`.
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
    """A decoder-only transformer with grouped-query attention and a SwiGLU MLP, or in every
    layer a mixture of SwiGLU experts (``n_experts`` > 0: Mixtral, Qwen2-MoE, Qwen3-MoE).

    In a mixture, ``intermediate_size`` is each expert's width (Mixtral's ``intermediate_size``,
    Qwen's ``moe_intermediate_size``): a router picks ``experts_per_token`` of the
    ``n_experts`` for each token, and where ``shared_expert_intermediate_size`` > 0 every token
    also runs one shared expert of that width, scaled by a sigmoid gate (Qwen2-MoE).
    """

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
    n_experts: int = 0  # routed experts per layer; 0: a dense MLP
    experts_per_token: int = 0  # the router's top-k
    shared_expert_intermediate_size: int = 0  # 0: no shared expert

    def __post_init__(self) -> None:
        if self.n_experts:
            if not 1 <= self.experts_per_token <= self.n_experts:
                raise ValueError(
                    f"model {self.name}: experts_per_token must be 1 to n_experts ({self.n_experts}), "
                    f"got {self.experts_per_token}"
                )
        elif self.experts_per_token or self.shared_expert_intermediate_size:
            raise ValueError(f"model {self.name}: experts_per_token and shared experts need n_experts > 0")

    @property
    def is_moe(self) -> bool:
        return self.n_experts > 0

    @property
    def kv_bytes_per_token(self) -> float:
        """K and V for every layer of one token: 2 x layers x kv_heads x head_dim x bytes."""
        raw = 2 * self.n_layers * self.n_kv_heads * self.head_dim * self.kv_bytes_per_element
        return raw * self.kv_compression_ratio

    def kv_bytes_per_block(self, block_tokens: int) -> int:
        return int(round(self.kv_bytes_per_token * block_tokens))

    @property
    def params_per_layer(self) -> int:
        """Every weight of a layer, all experts included: they all sit in HBM."""
        return self._attention_params + self._mlp_params(max(self.n_experts, 1))

    @property
    def n_params(self) -> int:
        return self.n_layers * self.params_per_layer + self._embedding_params

    @property
    def n_active_params(self) -> int:
        """The weights one token's forward pass multiplies by: all of a dense model's, and of
        a mixture only the ``experts_per_token`` experts it is routed to (what "A3B" in
        Qwen3-30B-A3B counts)."""
        if not self.is_moe:
            return self.n_params
        per_layer = self._attention_params + self._mlp_params(self.experts_per_token)
        return self.n_layers * per_layer + self._embedding_params

    @property
    def _attention_params(self) -> int:
        h, hd = self.hidden_size, self.head_dim
        return h * (self.n_q_heads + 2 * self.n_kv_heads) * hd + self.n_q_heads * hd * h

    def _mlp_params(self, experts: int) -> int:
        """A layer's MLP with ``experts`` routed experts (one: a dense MLP), plus a mixture's
        router (hidden x experts), shared expert and its gate (hidden x 1)."""
        h = self.hidden_size
        mlp = experts * 3 * h * self.intermediate_size
        if self.is_moe:
            mlp += h * self.n_experts
        if self.shared_expert_intermediate_size:
            mlp += 3 * h * self.shared_expert_intermediate_size + h
        return mlp

    @property
    def _embedding_params(self) -> int:
        return (1 if self.tied_embeddings else 2) * self.vocab_size * self.hidden_size

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
        # Mixtures of experts (Mixtral v0.1; Qwen3-30B-A3B): intermediate_size is each expert's
        # width. Their grouped expert GEMMs are priced from the dense GEMM calibration
        # (hwmodels.moe; README, "Mixtures of experts"), not measured.
        ModelSpec("mixtral-8x7b", 32, 4096, 32, 8, 128, 14336, 32000,
                  n_experts=8, experts_per_token=2, max_context_tokens=32768),
        ModelSpec("qwen-3-30b-a3b", 48, 2048, 32, 4, 128, 768, 151936,
                  n_experts=128, experts_per_token=8, max_context_tokens=40960),
    )
}  # fmt: skip


def _architecture(model: ModelSpec) -> tuple[int, ...]:
    m = model
    return (
        m.n_layers, m.hidden_size, m.n_q_heads, m.n_kv_heads, m.head_dim, m.intermediate_size, m.vocab_size,
        m.n_experts, m.experts_per_token, m.shared_expert_intermediate_size,
    )  # fmt: skip


def longer_context_model(model: ModelSpec, lengths: Sequence[int]) -> tuple[ModelSpec, int] | None:
    """The shipped model to suggest where ``model`` refused sequences of ``lengths`` tokens, and
    how many of them it serves: the one that serves the most, and among those one of the same
    shape if any (Llama 3 → Llama 3.1: the same weights' cost with a longer context), else the
    nearest in size among those dense or mixture-of-experts as ``model`` is (a mixture's GPU time
    follows its active parameters, not its size), so that the suggestion changes the context
    and not the GPU time per token; ``None`` if no shipped model serves any of them."""

    def served(candidate: ModelSpec) -> int:
        return sum(1 for n in lengths if n <= (candidate.max_context_tokens or 0))

    def preference(candidate: ModelSpec) -> tuple[int, bool, bool, float, str]:
        same_shape = _architecture(candidate) == _architecture(model)
        other_kind = candidate.is_moe != model.is_moe
        size = abs(math.log(candidate.n_params / model.n_params))
        return -served(candidate), not same_shape, other_kind, size, candidate.name

    best = min(MODELS.values(), key=preference)
    count = served(best)
    return (best, count) if count else None


def get_model(name: str) -> ModelSpec:
    try:
        return MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r}; shipped models: {', '.join(sorted(MODELS))}") from None


# Keys that mark an architecture the execution model does not price: latent attention (MLA
# caches a compressed latent, not K and V per head) and DeepSeek's mixture (dense first layers,
# grouped routing). Checked in this order: DeepSeek-V2/V3 configs carry both.
_UNSUPPORTED_KEYS = {
    "kv_lora_rank": "multi-head latent attention",
    "n_routed_experts": "a DeepSeek-style mixture of experts (dense first layers, grouped routing)",
}
# Where a config counts its routed experts: Mixtral, and Qwen2-MoE / Qwen3-MoE.
_EXPERT_COUNT_KEYS = ("num_local_experts", "num_experts")


def spec_from_hf_config(path: str | Path, name: str | None = None) -> ModelSpec:
    """A :class:`ModelSpec` from a Hugging Face ``config.json`` (Llama, Mistral, Qwen 2/2.5/3
    and other dense decoders with grouped-query attention and a gated MLP; Mixtral, Qwen2-MoE
    and Qwen3-MoE mixtures of experts).

    Read: ``num_hidden_layers``, ``hidden_size``, ``num_attention_heads``,
    ``intermediate_size``, ``vocab_size`` (required); ``num_key_value_heads`` (default: the
    attention heads, plain multi-head attention), ``head_dim`` (default: hidden size over
    heads), ``tie_word_embeddings`` (default false) and ``max_position_embeddings`` with
    ``rope_scaling`` (the context limit, derived as vLLM derives ``max_model_len``; default
    none). A multimodal config's ``text_config``
    is used where present. ``name``: the spec's name, else the config's ``_name_or_path``, else
    its directory's name.

    A mixture of experts is a config with ``num_local_experts`` (Mixtral) or ``num_experts``
    (Qwen) above 1; it needs ``num_experts_per_tok``, and takes each expert's width from
    ``moe_intermediate_size`` where present (Qwen; else ``intermediate_size``, Mixtral) and a
    shared expert from ``shared_expert_intermediate_size`` (Qwen2-MoE; absent or 0: none).
    Every layer's MLP must be the mixture: a Qwen config whose ``decoder_sparse_step`` is not
    1 or whose ``mlp_only_layers`` is not empty is refused.

    Weights and KV are 16-bit whatever ``torch_dtype`` says, as vLLM's ``dtype=auto`` serves
    them (``model.kv_bytes_per_element`` sets FP8 KV). A sliding attention window is not
    modelled: every layer keeps and attends to the whole context. Latent-attention and
    DeepSeek-style mixture configs are refused, since their GEMMs and KV differ from this
    model's.
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
            raise ValueError(f"{path}: field {key}={value}: {what} is not modelled")

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
    mlp = _mixture(path, config, count) or {"intermediate_size": count("intermediate_size")}
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
        vocab_size=count("vocab_size"),
        tied_embeddings=tied,
        max_context_tokens=context,
        **mlp,
    )


def _mixture(path: Path, config: dict[str, Any], count: Callable[..., int]) -> dict[str, int]:
    """The :class:`ModelSpec` fields of a mixture-of-experts config (each expert's width as
    ``intermediate_size``), or none for a dense one."""
    key = next((k for k in _EXPERT_COUNT_KEYS if config.get(k) is not None), None)
    if key is None or (isinstance(config[key], int) and not isinstance(config[key], bool) and config[key] <= 1):
        return {}  # a dense model, or one expert: a dense MLP
    n_experts = count(key)
    top_k = count("num_experts_per_tok")
    if top_k > n_experts:
        raise ValueError(f"{path}: field 'num_experts_per_tok' ({top_k}) must be at most {key} ({n_experts})")
    if config.get("decoder_sparse_step", 1) != 1:
        raise ValueError(
            f"{path}: field decoder_sparse_step={config['decoder_sparse_step']!r}: layers alternating dense and "
            "mixture-of-experts MLPs are not modelled (every layer's MLP must be the mixture: 1)"
        )
    if config.get("mlp_only_layers"):
        raise ValueError(
            f"{path}: field mlp_only_layers={config['mlp_only_layers']!r}: dense MLP layers in a mixture of "
            "experts are not modelled (every layer's MLP must be the mixture: [])"
        )
    width_key = "moe_intermediate_size" if config.get("moe_intermediate_size") is not None else "intermediate_size"
    shared = config.get("shared_expert_intermediate_size") or 0
    return {
        "n_experts": n_experts,
        "experts_per_token": top_k,
        "intermediate_size": count(width_key),
        "shared_expert_intermediate_size": count("shared_expert_intermediate_size") if shared else 0,
    }


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
