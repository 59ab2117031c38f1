"""Mixture-of-experts models: their weights, their configs, and how a step of their routed
experts is priced (balanced routing, grouped GEMMs priced from the dense GEMM model)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hwmodels import moe
from hwmodels.execution import ExecutionModel
from hwmodels.models import ModelSpec, get_model, longer_context_model, spec_from_hf_config
from hwmodels.profile import load_profile
from sim.build import ConfigError, build_setup, tensor_parallel_problem
from sim.config import HardwareConfig, ModelConfig, SimConfig
from sim.run import run
from traces import generate

# The published config.json files, trimmed to the fields a reader might look at.
MIXTRAL_8X7B = {
    "_name_or_path": "mistralai/Mixtral-8x7B-v0.1",
    "architectures": ["MixtralForCausalLM"],
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "max_position_embeddings": 32768,
    "num_attention_heads": 32,
    "num_experts_per_tok": 2,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "num_local_experts": 8,
    "sliding_window": None,
    "tie_word_embeddings": False,
    "vocab_size": 32000,
}
QWEN3_30B_A3B = {
    "_name_or_path": "Qwen/Qwen3-30B-A3B",
    "architectures": ["Qwen3MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "head_dim": 128,
    "hidden_size": 2048,
    "intermediate_size": 6144,  # the width of mlp_only_layers' dense MLPs: there are none
    "max_position_embeddings": 40960,
    "mlp_only_layers": [],
    "moe_intermediate_size": 768,
    "num_attention_heads": 32,
    "num_experts": 128,
    "num_experts_per_tok": 8,
    "num_hidden_layers": 48,
    "num_key_value_heads": 4,
    "rope_scaling": None,
    "tie_word_embeddings": False,
    "vocab_size": 151936,
}
# Qwen1.5-MoE-A2.7B (a Qwen2-MoE): 60 routed experts and one shared expert four experts wide.
QWEN15_MOE_A27B = {
    "architectures": ["Qwen2MoeForCausalLM"],
    "decoder_sparse_step": 1,
    "hidden_size": 2048,
    "intermediate_size": 5632,
    "max_position_embeddings": 8192,
    "moe_intermediate_size": 1408,
    "num_attention_heads": 16,
    "num_experts": 60,
    "num_experts_per_tok": 4,
    "num_hidden_layers": 24,
    "num_key_value_heads": 16,
    "shared_expert_intermediate_size": 5632,
    "tie_word_embeddings": False,
    "vocab_size": 151936,
}


def write_config(tmp_path: Path, config: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def dense_of_width(model: ModelSpec, experts: int) -> ModelSpec:
    """The dense model with ``model``'s attention and an MLP as wide as ``experts`` of its
    experts: all of them (its size) or ``experts_per_token`` (its active parameters)."""
    return dataclasses.replace(
        model,
        name=f"dense-{experts}",
        n_experts=0,
        experts_per_token=0,
        intermediate_size=experts * model.intermediate_size,
    )


def gemm_flops(gemms: tuple[moe.Gemm, ...]) -> float:
    return sum(2.0 * rows * k * n for rows, k, n in gemms)


# ------------------------------------------------------------------ weights


def test_every_expert_is_counted_in_the_weights() -> None:
    """All experts live in HBM: Mixtral-8x7B holds 46.7 B parameters (93 GB in bf16), though a
    token runs 12.9 B of them (Mistral's published figures)."""
    mixtral = get_model("mixtral-8x7b")
    h, layers = 4096, 32
    attention = h * (32 + 2 * 8) * 128 + 32 * 128 * h
    experts, router = 8 * 3 * h * 14336, h * 8
    embeddings = 2 * 32000 * h
    assert mixtral.n_params == layers * (attention + experts + router) + embeddings
    assert mixtral.weight_bytes == 2 * mixtral.n_params
    assert round(mixtral.n_params / 1e9, 1) == 46.7
    assert mixtral.n_active_params == layers * (attention + experts // 4 + router) + embeddings
    assert round(mixtral.n_active_params / 1e9, 1) == 12.9


def test_qwen3_30b_a3b_has_30_billion_parameters_of_which_3_are_active() -> None:
    qwen = get_model("qwen-3-30b-a3b")
    assert round(qwen.n_params / 1e9, 1) == 30.5
    assert round(qwen.n_active_params / 1e9, 1) == 3.4  # "A3B": 3.3 B activated, with the router
    assert qwen.kv_bytes_per_token == 2 * 48 * 4 * 128 * 2  # 96 KiB: attention is a small model's


def test_a_shared_expert_is_counted_with_its_gate(tmp_path: Path) -> None:
    """Qwen1.5-MoE-A2.7B: 14.3 B parameters, 2.7 B activated (Qwen's model card)."""
    spec = spec_from_hf_config(write_config(tmp_path, QWEN15_MOE_A27B))
    assert spec.shared_expert_intermediate_size == 5632
    without = dataclasses.replace(spec, shared_expert_intermediate_size=0)
    assert spec.n_params - without.n_params == 24 * (3 * 2048 * 5632 + 2048)
    assert (round(spec.n_params / 1e9, 1), round(spec.n_active_params / 1e9, 1)) == (14.3, 2.7)


def test_the_experts_weights_take_hbm_from_the_kv_cache() -> None:
    """Mixtral's 93 GB of weights do not fit one H100, though a token reads only 26 GB of them."""
    trace = generate("multi_turn", seed=2, n_requests=5)
    one_gpu = SimConfig(model=ModelConfig(name="mixtral-8x7b"), hardware=HardwareConfig(gpu="h100-sxm"))
    with pytest.raises(ConfigError) as caught:
        build_setup(one_gpu, trace)
    assert caught.value.key == "hardware.tensor_parallel" and "93.4 GB" in str(caught.value)
    two_gpus = dataclasses.replace(one_gpu, hardware=HardwareConfig(gpu="h100-sxm", tensor_parallel=2))
    build_setup(two_gpus, trace)


# ------------------------------------------------------------------ configs


@pytest.mark.parametrize(("config", "name"), [(MIXTRAL_8X7B, "mixtral-8x7b"), (QWEN3_30B_A3B, "qwen-3-30b-a3b")])
def test_a_published_mixture_config_gives_the_shipped_spec(tmp_path: Path, config: dict, name: str) -> None:
    spec = spec_from_hf_config(write_config(tmp_path, config))
    assert spec.name == config["_name_or_path"]
    assert dataclasses.replace(spec, name=name) == get_model(name)


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"num_experts_per_tok": None}, "field 'num_experts_per_tok' is missing"),
        ({"num_experts_per_tok": 0}, "field 'num_experts_per_tok' must be a positive integer, got 0"),
        ({"num_experts_per_tok": 200}, "field 'num_experts_per_tok' (200) must be at most num_experts (128)"),
        ({"moe_intermediate_size": "768"}, "field 'moe_intermediate_size' must be a positive integer, got '768'"),
        ({"num_experts": 12.5}, "field 'num_experts' must be a positive integer, got 12.5"),
        ({"shared_expert_intermediate_size": -1}, "field 'shared_expert_intermediate_size' must be a positive"),
        ({"decoder_sparse_step": 2}, "field decoder_sparse_step=2: layers alternating dense and mixture"),
        ({"mlp_only_layers": [0, 47]}, "field mlp_only_layers=[0, 47]: dense MLP layers in a mixture"),
        ({"kv_lora_rank": 512, "n_routed_experts": 64}, "field kv_lora_rank=512: multi-head latent attention"),
    ],
)
def test_a_bad_mixture_config_names_the_file_and_the_field(tmp_path: Path, change: dict, text: str) -> None:
    config = {k: v for k, v in {**QWEN3_30B_A3B, **change}.items() if v is not None}
    path = write_config(tmp_path, config)
    with pytest.raises(ValueError, match=str(path)) as caught:
        spec_from_hf_config(path)
    assert text in str(caught.value)
    assert str(caught.value).count("\n") == 0


def test_a_mixtral_config_takes_the_expert_width_from_intermediate_size(tmp_path: Path) -> None:
    """Mixtral has no moe_intermediate_size: its intermediate_size is each expert's width; in a
    Qwen mixture intermediate_size is the dense layers' width, and the experts' is its own."""
    mixtral = spec_from_hf_config(write_config(tmp_path, MIXTRAL_8X7B, "mixtral.json"))
    qwen = spec_from_hf_config(write_config(tmp_path, QWEN3_30B_A3B, "qwen.json"))
    assert (mixtral.intermediate_size, qwen.intermediate_size) == (14336, 768)


# ------------------------------------------------------------------ routing


def test_one_token_touches_its_k_experts_and_a_big_batch_all_of_them() -> None:
    assert moe.experts_touched(1, 128, 8) == pytest.approx(8)
    assert moe.experts_touched(2, 8, 2) == pytest.approx(8 * (1 - (6 / 8) ** 2))  # 3.5 of Mixtral's 8
    counts = [moe.experts_touched(t, 128, 8) for t in (1, 2, 8, 64, 512, 4096, 16384)]
    assert counts == sorted(counts)
    assert all(c <= min(128, t * 8) for c, t in zip(counts, (1, 2, 8, 64, 512, 4096, 16384), strict=True))
    assert counts[-1] == pytest.approx(128, abs=1e-9)


@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen-3-30b-a3b"])
@pytest.mark.parametrize("tokens", [1, 7, 64, 544, 16384])
def test_the_routed_gemms_do_the_routed_flops_and_read_the_touched_experts(name: str, tokens: int) -> None:
    """Priced as one GEMM over the touched experts side by side, the routed experts still do
    2 T k x 3 h I FLOPs and read touched x 3 h I weights (balanced routing)."""
    model = get_model(name)
    h, width, k = model.hidden_size, model.intermediate_size, model.experts_per_token
    routed = moe.mlp_gemms(model, tokens, tp=1)[1:3]
    assert gemm_flops(routed) == pytest.approx(2 * tokens * k * 3 * h * width, rel=1e-4)
    touched = moe.experts_touched(tokens, model.n_experts, k)
    assert sum(kk * n for _, kk, n in routed) == pytest.approx(touched * 3 * h * width, rel=1e-4)


def test_tensor_parallelism_halves_each_gpus_expert_flops() -> None:
    """vLLM splits each expert's intermediate width over the GPUs (no expert parallelism): at
    TP 2 a GPU does half the routed FLOPs, and a long prefill's routed GEMMs take half the time."""
    model, profile = get_model("mixtral-8x7b"), load_profile("h100-sxm-calibrated")
    for tokens in (1, 64, 4096):
        one, two = (moe.mlp_gemms(model, tokens, tp)[1:3] for tp in (1, 2))
        assert gemm_flops(two) == pytest.approx(gemm_flops(one) / 2, rel=1e-6)
    one, two = (sum(profile.gemm_s(*g) for g in moe.mlp_gemms(model, 16384, tp)[1:3]) for tp in (1, 2))
    assert two / one == pytest.approx(0.5, rel=0.03)
    assert tensor_parallel_problem(get_model("qwen-3-30b-a3b"), 8) is None  # 768 / 8 = 96 columns each
    odd = dataclasses.replace(get_model("qwen-3-30b-a3b"), intermediate_size=770)
    assert tensor_parallel_problem(odd, 4) == "4 does not divide qwen-3-30b-a3b's expert width of 770"


# ------------------------------------------------------------------ step times


@pytest.mark.parametrize("profile", ["h100-sxm-calibrated", "h200-calibrated", "h100-sxm-datasheet"])
@pytest.mark.parametrize("name", ["mixtral-8x7b", "qwen-3-30b-a3b"])
def test_a_big_decode_batch_costs_between_the_active_and_the_total_dense_model(profile: str, name: str) -> None:
    """256 sequences touch every expert: the step reads all the weights, like a dense model
    of the same size, but does only the active parameters' FLOPs, so it costs less than that
    model and more than a dense model of its active parameters."""
    model = get_model(name)
    price = {
        spec.name: ExecutionModel(spec, load_profile(profile)).iteration_s((), (), 256, 256 * 2000)
        for spec in (model, dense_of_width(model, model.experts_per_token), dense_of_width(model, model.n_experts))
    }
    active, total = price[f"dense-{model.experts_per_token}"], price[f"dense-{model.n_experts}"]
    assert active < price[name] < total


def test_a_decode_step_grows_with_the_experts_its_batch_touches() -> None:
    """Eight sequences on Qwen3-30B-A3B touch 52 experts, six times one sequence's: the step
    reads six times the expert weights, where a dense model's eight sequences read its weights
    once, as one does."""
    model, profile = get_model("qwen-3-30b-a3b"), load_profile("h100-sxm-calibrated")
    mixture = ExecutionModel(model, profile)
    active = ExecutionModel(dense_of_width(model, model.experts_per_token), profile)

    def growth(execution: ExecutionModel) -> float:
        return execution.iteration_s((), (), 8, 8 * 1000) / execution.iteration_s((), (), 1, 1000)

    assert growth(active) < 1.1
    assert growth(mixture) > 2.0


def test_a_mixture_model_serves_a_trace_end_to_end() -> None:
    trace = generate("multi_turn", seed=2, n_requests=30)
    config = SimConfig(model=ModelConfig(name="qwen-3-30b-a3b"), hardware=HardwareConfig(gpu="h200"))
    result = run(config, trace)
    assert result.requests["finished"].all()
    assert result.summary["model"] == "qwen-3-30b-a3b"


def test_a_dense_model_is_pointed_at_a_dense_model_for_a_longer_context() -> None:
    """Qwen-2.5-32B's 32K is too short for 40K tokens: Qwen3-30B-A3B is nearer in size than
    Llama-3.1-70B, but its step costs what a 3 B model's does; the suggestion keeps the GPU
    time per token, so it stays dense."""
    found = longer_context_model(get_model("qwen-2.5-32b"), [40_000])
    assert found is not None and found[0].name == "llama-3.1-70b"
