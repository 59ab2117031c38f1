"""Model shapes: the shipped table, Hugging Face config.json files, and how models the
calibration never measured are priced (checked against their steps timed on an H100 and an
H200)."""

from __future__ import annotations

import dataclasses
import json
import shutil
from pathlib import Path

import numpy as np
import pytest

import hwmodels.calibrated
import hwmodels.profile
from calibrate.validate import validate
from hwmodels import load_profile
from hwmodels.calibrated import PROFILES_DIR, CalibratedProfile
from hwmodels.models import MODELS, get_model, longer_context_model, spec_from_hf_config
from sim.build import ConfigError, build_setup
from sim.config import HardwareConfig, ModelConfig, SimConfig
from sim.run import run
from traces import Trace, generate

# Llama-3.2-1B's published config.json, trimmed to what a reader might look at.
LLAMA_32_1B = {
    "_name_or_path": "meta-llama/Llama-3.2-1B",
    "architectures": ["LlamaForCausalLM"],
    "head_dim": 64,
    "hidden_act": "silu",
    "hidden_size": 2048,
    "intermediate_size": 8192,
    "max_position_embeddings": 131072,
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
    "max_position_embeddings": 8192,
    "num_attention_heads": 32,
    "num_hidden_layers": 32,
    "num_key_value_heads": 8,
    "tie_word_embeddings": False,
    "vocab_size": 128256,
}

# Llama-3.1-8B: Llama-3-8B's shapes with RoPE scaled to 128K positions.
LLAMA_31_8B = {**LLAMA_3_8B, "max_position_embeddings": 131072, "rope_scaling": {"rope_type": "llama3"}}


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


def test_a_config_without_its_own_name_is_named_after_its_folder_or_its_file(tmp_path: Path) -> None:
    """Hugging Face keeps config.json in a folder named after the model; two configs side by
    side in one folder (a sweep over them) are told apart by their file names."""
    unnamed = {k: v for k, v in LLAMA_3_8B.items() if k != "_name_or_path"}
    (tmp_path / "my-llama").mkdir()
    assert spec_from_hf_config(write_config(tmp_path / "my-llama", unnamed)).name == "my-llama"
    assert spec_from_hf_config(write_config(tmp_path, unnamed, "llama-8b.json")).name == "llama-8b"
    assert spec_from_hf_config(write_config(tmp_path, unnamed, "wide.json")).name == "wide"


def test_missing_optional_fields_take_the_architecture_defaults(tmp_path: Path) -> None:
    optional = ("num_key_value_heads", "tie_word_embeddings", "max_position_embeddings")
    mha = {k: v for k, v in LLAMA_3_8B.items() if k not in optional}
    spec = spec_from_hf_config(write_config(tmp_path, mha, "plain.json"))
    assert (spec.n_q_heads, spec.n_kv_heads, spec.head_dim) == (32, 32, 128)
    assert spec.kv_bytes_per_token == 4 * get_model("llama-3-8b").kv_bytes_per_token  # 32 KV heads, not 8
    assert not spec.tied_embeddings
    assert spec.max_context_tokens is None  # no limit where the config names none


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
        ({"num_local_experts": 8}, "field 'num_experts_per_tok' is missing"),
        ({"n_routed_experts": 64}, "n_routed_experts=64: a DeepSeek-style mixture of experts"),
        ({"kv_lora_rank": 512}, "kv_lora_rank=512: multi-head latent attention is not modelled"),
        ({"tie_word_embeddings": "yes"}, "'tie_word_embeddings' must be true or false"),
        ({"max_position_embeddings": 0}, "field 'max_position_embeddings' must be a positive integer, got 0"),
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
    config_json = str(write_config(tmp_path, LLAMA_31_8B))
    from_file = run(SimConfig(model=ModelConfig(name="ignored", config_json=config_json), hardware=hardware), trace)
    assert from_file.summary.pop("model") == str(tmp_path.name)  # no _name_or_path: the directory's name
    assert shipped.pop("model") == "llama-3.1-8b"
    assert from_file.summary == shipped


def test_a_bad_model_config_file_is_a_config_error_naming_the_key(tmp_path: Path) -> None:
    trace = generate("multi_turn", seed=2, n_requests=5)
    with pytest.raises(ConfigError) as caught:
        build_setup(SimConfig(model=ModelConfig(config_json=str(tmp_path / "none.json"))), trace)
    assert caught.value.key == "model.config_json" and "none.json" in str(caught.value)


def test_llama_3_1_is_llama_3_with_sixteen_times_the_context() -> None:
    three, three_one = get_model("llama-3-8b"), get_model("llama-3.1-8b")
    assert (three.max_context_tokens, three_one.max_context_tokens) == (8192, 131072)
    assert dataclasses.replace(three_one, name=three.name, max_context_tokens=three.max_context_tokens) == three


def test_the_context_limit_follows_rope_scaling_as_vllm_derives_it(tmp_path: Path) -> None:
    yarn = {"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 32768}
    cases = [
        ({"max_position_embeddings": 32768, "rope_scaling": yarn}, 131072),  # Qwen-2.5 with YaRN on
        ({"max_position_embeddings": 8192, "rope_scaling": {"type": "linear", "factor": 2.0}}, 16384),
        (LLAMA_31_8B, 131072),  # llama3 scaling: the positions already say 128K
        ({"max_position_embeddings": 32768, "rope_scaling": None}, 32768),
    ]
    for i, (change, limit) in enumerate(cases):
        spec = spec_from_hf_config(write_config(tmp_path, {**LLAMA_3_8B, **change}, f"c{i}.json"))
        assert spec.max_context_tokens == limit, change
    bad = {**LLAMA_3_8B, "rope_scaling": {"type": "yarn", "factor": "4"}}
    with pytest.raises(ValueError, match="field 'rope_scaling.factor' must be a number >= 1, got '4'"):
        spec_from_hf_config(write_config(tmp_path, bad, "bad.json"))


def test_requests_longer_than_the_context_are_refused_and_the_rest_served() -> None:
    trace = generate("multi_turn", seed=2, n_requests=60)
    length = trace.input_tokens.astype(int) + trace.output_tokens.astype(int)
    limit = int(np.median(length))  # half the requests are too long for it
    too_long = length > limit
    config = SimConfig(model=ModelConfig(max_context_tokens=limit), hardware=HardwareConfig(hbm_gb=2.0))
    expected = f"{int(too_long.sum())} of 60 requests .* context of {limit:,} tokens .* model.max_context_tokens set"
    with pytest.warns(UserWarning, match=expected):
        result = run(config, trace)
    frame = result.requests
    assert list(frame["reject_reason"] == "exceeds_context") == list(too_long)
    assert frame.loc[~too_long, "finished"].all()
    assert result.summary["rejected_by_reason"]["exceeds_context"] == too_long.sum() > 0


def test_the_context_limit_may_be_lowered_but_not_raised_past_the_model() -> None:
    trace = generate("multi_turn", seed=2, n_requests=5)
    for limit, text in ((8193, "beyond llama-3-8b's 8192 positions"), (0, "must be a positive integer")):
        with pytest.raises(ConfigError) as caught:
            build_setup(SimConfig(model=ModelConfig(name="llama-3-8b", max_context_tokens=limit)), trace)
        assert caught.value.key == "model.max_context_tokens" and text in str(caught.value)
    lowered = build_setup(SimConfig(model=ModelConfig(name="llama-3-8b", max_context_tokens=4096)), trace)
    assert lowered.model.max_context_tokens == 4096


def test_a_too_long_trace_is_pointed_at_the_same_model_with_a_longer_context() -> None:
    """The suggestion serves as many of the refused requests as any shipped model does, and
    among those changes the context, not the GPU time per token: Llama 3 → Llama 3.1 of the same
    size; where no same-shape model serves them, the nearest in size that does."""

    def suggest(name: str, *lengths: int) -> tuple[str, int] | None:
        found = longer_context_model(get_model(name), list(lengths))
        return None if found is None else (found[0].name, found[1])

    assert suggest("llama-3-70b", 20_000) == ("llama-3.1-70b", 1)
    assert suggest("llama-3-8b", 9_000) == ("llama-3.1-8b", 1)
    assert suggest("qwen-2.5-72b", 100_000) == ("llama-3.1-70b", 1)
    assert suggest("qwen-2.5-7b", 40_000) == ("llama-3.1-8b", 1)  # 8.0B params to its 7.6B
    assert suggest("llama-3-8b", 20_000, 200_000) == ("llama-3.1-8b", 1)  # one far too long hides nothing
    assert suggest("llama-3.1-8b", 10**6) is None
    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0, 2.0], input_tokens=[1000, 20_000, 300_000], output_tokens=[10, 10, 10],
        block_hashes=[[1], [2], [3]], block_size=512,
    )  # fmt: skip
    config = SimConfig(model=ModelConfig(name="llama-3-70b"), hardware=HardwareConfig(gpu="h200", tensor_parallel=2))
    with pytest.warns(UserWarning, match=r"2 of 3 requests .*\(model=llama-3.1-70b serves 131,072 tokens: 1 of them\)"):
        run(config, trace)
    too_high = SimConfig(model=ModelConfig(name="llama-3-8b", max_context_tokens=9000))
    with pytest.raises(ConfigError, match=r"beyond llama-3-8b's 8192 positions .*\(llama-3.1-8b serves 131,072\)"):
        build_setup(too_high, trace)


@pytest.mark.parametrize("name", sorted(MODELS))
def test_every_shipped_model_has_a_config_group_entry(name: str) -> None:
    entry = Path(__file__).resolve().parents[1] / "conf" / "model" / f"{name}.yaml"
    assert entry.is_file() and f"name: {name}\n" in entry.read_text()


RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"
UNSEEN = {"h100-sxm-calibrated": "h100", "h200-calibrated": "h200"}


def test_an_unmeasured_head_configuration_scales_by_the_work_that_bounds_it() -> None:
    """Prefill attention follows query heads x head dimension (FLOPs), plus a softmax that the
    head dimension does not shrink; decode attention reads the cache and follows KV heads x
    head dimension. Llama-3-8B's (32, 8, 128) is measured."""
    profile = load_profile("h100-sxm-calibrated")
    measured_prefill = profile.attention_prefill_s(2048, 32, 8, 128)
    measured_decode = profile.attention_decode_s(64, 2048, 32, 8, 128)
    fixed = profile.attention_decode_s(0, 0, 32, 8, 128)  # the kernel's launch and set-up, whatever the heads
    # Llama-3.2-3B: 24 query heads on the same 8 KV heads borrows (32, 8, 128).
    assert profile.attention_prefill_s(2048, 24, 8, 128) == pytest.approx(0.75 * measured_prefill)
    assert profile.attention_decode_s(64, 2048, 24, 8, 128) == pytest.approx(measured_decode)
    # Llama-3.2-1B: head dimension 64, nothing measured at it: half the matrix work, the same softmax.
    assert 0.6 * measured_prefill < profile.attention_prefill_s(2048, 32, 8, 64) < 0.7 * measured_prefill
    half = profile.attention_decode_s(64, 2048, 32, 8, 64)
    assert 0 < fixed < half < measured_decode
    assert half - fixed == pytest.approx(0.5 * (measured_decode - fixed))


def test_a_shape_priced_from_a_bigger_one_keeps_the_gemm_latency_whole() -> None:
    profile = load_profile("h100-sxm-calibrated")
    latency = profile._gemm_latency_s
    assert 2e-6 < latency < 4e-6
    measured = profile.gemm_s(1, 3584, 3584)  # Qwen-2.5-7B's output projection, measured
    quarter = profile.gemm_s(1, 1792, 1792)
    assert quarter == pytest.approx(latency + (measured - latency) / 4)


def _unseen_steps(tmp_path: Path, profile: str) -> list[dict]:
    """Steps of Llama-3.2-1B/3B, Qwen-3-8B and Qwen-2.5-14B (24 layers at most), timed on a
    lent GPU (``kvsim-calibrate e2e --engine compiled --layers 24``), as the profile prices them."""
    directory = tmp_path / profile
    shutil.copytree(PROFILES_DIR / profile, directory)
    (directory / "tp.json").unlink(missing_ok=True)
    shutil.copy(RESULTS / f"e2e_unseen_models_{UNSEEN[profile]}_2026-11-23.json", directory / "e2e.json")
    return validate(directory)["end_to_end"]


@pytest.mark.parametrize("profile", sorted(UNSEEN))
def test_steps_of_models_the_calibration_never_measured_are_predicted(tmp_path: Path, profile: str) -> None:
    """64 steps of four models whose GEMM shapes and attention heads no calibration measured,
    from rest: a median 3.8 % (H100) and 4.3 % (H200), within 15.6 % and 12.9 %; the worst
    are Llama-3.2-1B's chunked steps, whose ~220 kernels each leave a graph gap of about a
    microsecond that no benchmark prices. Held to 5 % and 17 %."""
    steps = _unseen_steps(tmp_path, profile)
    assert len(steps) == 64
    assert {s["model"] for s in steps} == {"llama-3.2-1b", "llama-3.2-3b", "qwen-3-8b", "qwen-2.5-14b"}
    errors = np.abs([s["rel_error"] for s in steps])
    assert np.median(errors) <= 0.05
    assert errors.max() <= 0.17


@pytest.mark.parametrize(
    ("measured", "models"),
    [
        ("e2e_unseen_models_more_h100", {"mistral-7b", "qwen-2.5-72b"}),
        ("e2e_unseen_models_more_recheck_h100", {"mistral-7b", "qwen-2.5-72b"}),
        ("e2e_large_models_h100", {"llama-3-70b", "qwen-2.5-32b"}),
        ("e2e_large_models_recheck_h100", {"llama-3-70b", "qwen-2.5-32b"}),
    ],
)
def test_models_timed_later_on_other_h100s_are_predicted_as_well(tmp_path: Path, measured: str, models: set) -> None:
    """Steps timed on other lent H100s on 2026-12-07, after the pricing rules were settled, each
    model twice (24 layers at most), held to the same 5 % median and 17 % worst as the four
    models above. Mistral-7B (Llama-3-8B's shapes but for a 32k vocabulary) and Qwen-2.5-72B (its
    MLP 29,568 wide where Llama-3-70B's is 28,672): 1.8-1.9 % and 2.5-2.7 % median, within 5.0 %
    and 7.4 %. Llama-3-70B and Qwen-2.5-32B, whose GEMM shapes the calibration measures but whose
    whole steps no check had timed: 1.8-2.5 % median, within 7.6-9.5 %. Their 8,192-token
    prefills were 10-13 % long before the profile's largest GEMMs were timed again from rest."""
    directory = tmp_path / "h100"
    shutil.copytree(PROFILES_DIR / "h100-sxm-calibrated", directory)
    shutil.copy(RESULTS / f"{measured}_2026-12-07.json", directory / "e2e.json")
    steps = validate(directory)["end_to_end"]
    assert {s["model"] for s in steps} == models and len(steps) == 32
    errors = np.abs([s["rel_error"] for s in steps])
    assert np.median(errors) <= 0.05
    assert errors.max() <= 0.17


def test_the_small_models_need_the_gemm_latency_and_the_softmax_share(tmp_path: Path, monkeypatch) -> None:
    """On the H200 (timed after both were settled on the H100's data): without the GEMM's
    fixed latency kept whole and the softmax's share of prefill attention, Llama-3.2-1B's steps
    are predicted to a median 10 % instead of 5 %, within 20 % instead of 13 %."""

    def small_model_errors() -> np.ndarray:
        steps = _unseen_steps(tmp_path / str(len(list(tmp_path.iterdir()))), "h200-calibrated")
        return np.abs([s["rel_error"] for s in steps if s["model"] == "llama-3.2-1b"])

    priced = small_model_errors()
    monkeypatch.setattr(CalibratedProfile, "_gemm_latency_s", property(lambda self: 0.0))
    monkeypatch.setattr(hwmodels.profile, "MATMUL_FLOPS_PER_EXP", 0.0)
    without = small_model_errors()
    assert np.median(without) >= 1.5 * np.median(priced)
    assert without.max() >= 1.3 * priced.max()


@pytest.mark.parametrize("profile", sorted(UNSEEN))
def test_small_gemms_priced_from_bigger_ones_are_not_biased(profile: str, monkeypatch) -> None:
    """Llama-3.2-1B's and -3B's linear layers at 1-128 rows (``benchmarks/gpu_gemm_shapes.py``):
    the median signed error +0.9 % (H100) and +5.7 % (H200), held to 6 %; scaled with the
    weights, latency and all, they come out -6.9 % and -12.5 %. Shape by shape the scatter is
    wide either way (mean absolute error 9-19 %): cuBLAS picks kernels for small shapes that no
    scaling rule follows."""
    records = json.loads((RESULTS / f"gemm_unseen_shapes_{UNSEEN[profile]}_2026-11-23.json").read_text())["records"]
    small = [r for r in records if r["m"] <= 128 and r["gemm"] != "lm_head"]

    def median_error() -> float:
        priced = load_profile(profile)
        return float(np.median([(priced.gemm_s(r["m"], r["k"], r["n"]) - r["seconds"]) / r["seconds"] for r in small]))

    assert abs(median_error()) <= 0.06
    monkeypatch.setattr(CalibratedProfile, "_gemm_latency_s", property(lambda self: 0.0))
    assert median_error() <= -0.06
