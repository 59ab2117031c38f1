"""Model shapes: the shipped table and Hugging Face config.json files."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from hwmodels.models import MODELS, get_model, spec_from_hf_config
from sim.build import ConfigError, build_setup
from sim.config import HardwareConfig, ModelConfig, SimConfig
from sim.run import run
from traces import generate

# Llama-3.2-1B's published config.json, trimmed to what a reader might look at.
LLAMA_32_1B = {
    "_name_or_path": "meta-llama/Llama-3.2-1B",
    "architectures": ["LlamaForCausalLM"],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 16,
    "num_key_value_heads": 8,
    "rope_theta": 500000.0,
    "tie_word_embeddings": True,
    "torch_dtype": "bfloat16",
    "vocab_size": 128256,
}
# Llama-3-8B's, which has no head_dim key: it is the hidden size over the heads.
LLAMA_3_8B = {
    "hidden_size": 4096,
    "intermediate_size": 14336,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
}


def write_config(tmp_path: Path, config: dict, name: str = "config.json") -> Path:
    path = tmp_path / name
    path.write_text(json.dumps(config))
    return path


def test_a_hugging_face_config_gives_the_shipped_spec(tmp_path: Path) -> None:
    from_file = spec_from_hf_config(write_config(tmp_path, LLAMA_32_1B))
    assert from_file.name == "meta-llama/Llama-3.2-1B"
    assert dataclasses.replace(from_file, name="llama-3.2-1b") == get_model("llama-3.2-1b")
    eight_b = spec_from_hf_config(write_config(tmp_path, LLAMA_3_8B), name="llama-3-8b")
    assert eight_b == get_model("llama-3-8b")


def test_missing_optional_fields_take_the_architecture_defaults(tmp_path: Path) -> None:
    mha = {k: v for k, v in LLAMA_3_8B.items() if k not in ("num_key_value_heads", "tie_word_embeddings")}
    spec = spec_from_hf_config(write_config(tmp_path, mha, "plain.json"))
    assert (spec.n_q_heads, spec.n_kv_heads, spec.head_dim) == (32, 32, 128)
    assert spec.kv_bytes_per_token == 4 * get_model("llama-3-8b").kv_bytes_per_token  # 32 KV heads, not 8
    assert not spec.tied_embeddings


def test_a_multimodal_config_uses_its_text_model(tmp_path: Path) -> None:
    spec = spec_from_hf_config(write_config(tmp_path, {"architectures": ["X"], "text_config": LLAMA_3_8B}))
    assert dataclasses.replace(spec, name="llama-3-8b") == get_model("llama-3-8b")


def test_tied_embeddings_count_the_vocabulary_matrix_once() -> None:
    tied = get_model("llama-3.2-1b")
    untied = dataclasses.replace(tied, tied_embeddings=False)
    assert untied.weight_bytes - tied.weight_bytes == 2 * tied.vocab_size * tied.hidden_size
    assert 2.4e9 < tied.weight_bytes < 2.5e9  # 1.24 B parameters in bf16, as published


@pytest.mark.parametrize(
    ("change", "text"),
    [
        ({"num_hidden_layers": None}, "field 'num_hidden_layers' is missing"),
        ({"hidden_size": "4096"}, "field 'hidden_size' must be a positive integer, got '4096'"),
        ({"num_key_value_heads": 5}, "must divide num_attention_heads"),
        ({"num_local_experts": 8}, "num_local_experts=8: a mixture-of-experts MLP is not modelled"),
        ({"kv_lora_rank": 512}, "kv_lora_rank=512: multi-head latent attention is not modelled"),
        ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
    ],
)
def test_a_bad_config_names_the_file_and_the_field(tmp_path: Path, change: dict, text: str) -> None:
    config = {k: v for k, v in {**LLAMA_3_8B, **change}.items() if v is not None}
    path = write_config(tmp_path, config)
    with pytest.raises(ValueError, match=str(path)) as caught:
        spec_from_hf_config(path)
    assert text in str(caught.value)


def test_unreadable_config_files_are_refused_with_their_path(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no such model config file"):
        spec_from_hf_config(tmp_path / "absent.json")
    (tmp_path / "broken.json").write_text("{not json")
    with pytest.raises(ValueError, match="broken.json: not a readable JSON model config"):
        spec_from_hf_config(tmp_path / "broken.json")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ValueError, match="a model config is a JSON object, got list"):
        spec_from_hf_config(tmp_path / "list.json")


def test_a_run_from_a_config_file_equals_the_run_of_the_shipped_model(tmp_path: Path) -> None:
    trace = generate("multi_turn", seed=2, n_requests=60)
    hardware = HardwareConfig(hbm_gb=2.0, dram_gb=4)
    shipped = run(SimConfig(hardware=hardware), trace).summary
    config_json = str(write_config(tmp_path, LLAMA_3_8B))
    from_file = run(SimConfig(model=ModelConfig(name="ignored", config_json=config_json), hardware=hardware), trace)
    assert from_file.summary.pop("model") == str(tmp_path.name)  # no _name_or_path: the directory's name
    assert shipped.pop("model") == "llama-3-8b"
    assert from_file.summary == shipped


def test_a_bad_model_config_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    trace = generate("multi_turn", seed=2, n_requests=5)
    with pytest.raises(ConfigError) as caught:
        build_setup(SimConfig(model=ModelConfig(config_json=str(tmp_path / "none.json"))), trace)
    assert caught.value.key == "model.config_json" and "none.json" in str(caught.value)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_shipped_model_has_a_config_group_entry(name: str) -> None:
    entry = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{name}.yaml"
    assert entry.is_file() and f"name: {name}\n" in entry.read_text()
