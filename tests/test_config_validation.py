"""Each class of impossible configuration is refused before simulating, naming the key."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from functools import partial

import pytest

from sim.build import ConfigError, build_setup
from sim.config import EngineConfig, HardwareConfig, ModelConfig, PowerConfig, SimConfig, SLOConfig, TierConfig
from traces import Trace

TRACE = Trace.from_columns(
    arrival_s=[0.0], input_tokens=[64], output_tokens=[4], block_hashes=[[1, 2, 3, 4]], block_size=16
)


def error_for(config: SimConfig) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        build_setup(config, TRACE)
    return caught.value


@pytest.mark.parametrize(
    ("config", "key", "text"),
    [
        (SimConfig(hardware=HardwareConfig(hbm_gb=0)), "hardware.hbm_gb", "positive"),
        (SimConfig(hardware=HardwareConfig(dram_gb=-1)), "hardware.dram_gb", ">= 0"),
        (SimConfig(hardware=HardwareConfig(dram_gb=1e-6)), "hardware.dram_gb", "less than one"),
        (SimConfig(hardware=HardwareConfig(hbm_gb=500)), "hardware.hbm_gb", "exceeds"),
        (SimConfig(tiers=TierConfig(hbm_blocks=0)), "tiers.hbm_blocks", ">= 1"),
        (SimConfig(model=ModelConfig(name="llama-3-70b")), "hardware.tensor_parallel", "use tensor_parallel >="),
        (SimConfig(hardware=HardwareConfig(tensor_parallel=3)), "hardware.tensor_parallel", "does not divide"),
        (
            SimConfig(model=ModelConfig(name="qwen-2.5-7b"), hardware=HardwareConfig(tensor_parallel=7)),
            "hardware.tensor_parallel",
            "7 neither divides nor is a multiple of qwen-2.5-7b's 4 KV heads; use one of [1, 2, 4]",
        ),
        (
            SimConfig(model=ModelConfig(name="qwen-2.5-14b"), hardware=HardwareConfig(tensor_parallel=5)),
            "hardware.tensor_parallel",
            "5 neither divides nor is a multiple of qwen-2.5-14b's 8 KV heads; use one of [1, 2, 4, 8]",
        ),
        (
            SimConfig(tiers=TierConfig(block_tokens=1 << 20)),
            "tiers.block_tokens",
            "one KV block (131072.00 MiB) is larger than the",
        ),
        (SimConfig(slo=SLOConfig(ttft_s=0)), "slo.ttft_s", "positive"),
        (SimConfig(slo=SLOConfig(tpot_s=-1)), "slo.tpot_s", "positive"),
        (SimConfig(eviction="lruu"), "eviction", "choose one of"),
        (SimConfig(scheduler="fifo"), "scheduler", "choose one of"),
        (SimConfig(tiers=TierConfig(block_tokens=24)), "tiers.block_tokens", "does not divide or multiply"),
        (SimConfig(tiers=TierConfig(block_tokens=0)), "tiers.block_tokens", "must be > 0, got 0"),
        (SimConfig(hardware=HardwareConfig(copies_per_block=0)), "hardware.copies_per_block", ">= 1, got 0"),
        (SimConfig(engine=EngineConfig(preemption="kill")), "engine.preemption", "recompute, swap"),
        (SimConfig(engine=EngineConfig(preemption="swap")), "engine.preemption", "DRAM tier"),
        (
            SimConfig(
                engine=EngineConfig(preemption="swap"),
                hardware=HardwareConfig(dram_gb=64),
                tiers=TierConfig(dram_blocks=0),
            ),
            "engine.preemption",
            "tiers.dram_blocks=0 leaves none",
        ),
        (SimConfig(engine=EngineConfig(kv_load="never")), "engine.kv_load", "always, if_faster"),
        (SimConfig(engine=EngineConfig(kv_load_overlap="always")), "engine.kv_load_overlap", "none, layerwise"),
        (SimConfig(engine=EngineConfig(max_num_seqs=0)), "engine.max_num_seqs", ">= 1"),
        (SimConfig(model=ModelConfig(name="gpt-5")), "model.name", "llama-3-8b"),
        (SimConfig(hardware=HardwareConfig(gpu="b200")), "hardware.gpu", "h100-sxm"),
        (SimConfig(mode="fast"), "mode", "serve, replay"),
        (SimConfig(power=PowerConfig(gpu_decode_w=-5.0)), "power.gpu_decode_w", ">= 0"),
        (SimConfig(power=PowerConfig(gpu_active_w=float("nan"))), "power.gpu_active_w", "got nan"),
        (SimConfig(timeseries_interval_s=1e-5), "timeseries_interval_s", ">= 0.001 s"),
        (SimConfig(model=ModelConfig(kv_bytes_per_element=float("nan"))), "model.kv_bytes_per_element", "finite"),
        (SimConfig(model=ModelConfig(kv_bytes_per_element=1e-7)), "model.kv_bytes_per_element", "under one byte"),
        (SimConfig(model=ModelConfig(kv_compression_ratio=1e-9)), "model.kv_compression_ratio", "under one byte"),
        (
            SimConfig(hardware=HardwareConfig(gpu="h200", profile="h100-sxm-calibrated")),
            "hardware.profile",
            "measured on h100-sxm",
        ),
        (
            SimConfig(hardware=HardwareConfig(activation_reserve_gb=100)),
            "hardware.activation_reserve_gb",
            "leaves nothing",
        ),
    ],
)
def test_bad_config_names_the_key_and_what_is_valid(config: SimConfig, key: str, text: str) -> None:
    error = error_for(config)
    assert error.key == key
    message = str(error)
    assert message.startswith(f"{key}: ")
    assert text in message
    assert "\n" not in message


def test_seventy_b_fits_at_tensor_parallel_two() -> None:
    setup = build_setup(
        SimConfig(model=ModelConfig(name="llama-3-70b"), hardware=HardwareConfig(tensor_parallel=2)), TRACE
    )
    assert setup.tier_blocks[0][1] > 0


def test_kv_capacity_stops_growing_once_every_gpu_holds_one_kv_head() -> None:
    def hbm_blocks(tp: int) -> int:
        return build_setup(SimConfig(hardware=HardwareConfig(tensor_parallel=tp)), TRACE).tier_blocks[0][1]

    # Llama-3-8B has 8 KV heads: from tp 1 to 8 each GPU adds its memory; past 8 a GPU holds a
    # replica of one head, and only the weights' shrinking share frees a little more.
    assert hbm_blocks(8) > 7 * hbm_blocks(1)
    assert hbm_blocks(8) < hbm_blocks(16) < 1.1 * hbm_blocks(8)


@pytest.mark.parametrize(
    ("tiers", "eviction", "key", "text"),
    [
        (TierConfig(), "lru", "tiers.hbm_blocks", "needs the cache capacity"),
        (TierConfig(hbm_blocks=0), "lru", "tiers.hbm_blocks", ">= 1"),
        (TierConfig(hbm_blocks=10, dram_blocks=-5), "lru", "tiers.dram_blocks", ">= 0 blocks, got -5"),
        (TierConfig(hbm_blocks=10), "lruu", "eviction", "choose one of"),
        (TierConfig(hbm_blocks=10, dram_blocks=2.5), "lru", "tiers.dram_blocks", "integer >= 0 blocks, got 2.5"),
        (TierConfig(hbm_blocks=2.5), "lru", "tiers.hbm_blocks", "integer >= 1 block, got 2.5"),
        (TierConfig(hbm_blocks=10, block_tokens=7), "lru", "tiers.block_tokens", "does not divide or multiply"),
    ],
)
def test_bad_replay_config_names_the_key(tiers: TierConfig, eviction: str, key: str, text: str) -> None:
    from sim.run import run

    with pytest.raises(ConfigError) as caught:
        run(SimConfig(mode="replay", tiers=tiers, eviction=eviction), TRACE)
    assert caught.value.key == key and text in str(caught.value)


def test_zero_lower_tier_blocks_mean_no_such_tier_in_both_modes() -> None:
    from sim.run import run

    for mode in ("serve", "replay"):
        without = run(SimConfig(mode=mode, tiers=TierConfig(hbm_blocks=300)), TRACE).summary
        zero = run(SimConfig(mode=mode, tiers=TierConfig(hbm_blocks=300, dram_blocks=0, ssd_blocks=0)), TRACE).summary
        assert zero == without, mode


def test_numpy_integers_size_tiers_in_both_modes() -> None:
    import numpy as np

    from sim.run import run

    for mode in ("serve", "replay"):
        result = run(SimConfig(mode=mode, tiers=TierConfig(hbm_blocks=np.int64(300), dram_blocks=np.int32(40))), TRACE)
        assert result.summary["n_requests"] == 1


@pytest.mark.parametrize("mode", ["serve", "replay"])
def test_a_policy_parameter_it_does_not_take_or_refuses_is_a_config_error(mode: str) -> None:
    from functools import partial

    from policies.registry import resolve
    from sim.run import run

    tiers = TierConfig(hbm_blocks=100)
    for factory, key, text in (
        (partial(resolve("eviction", "lru"), bogus=1), "eviction", "unexpected keyword argument 'bogus'"),
        (partial(resolve("eviction", "workload_aware"), epochs_per_capacity=-1), "eviction.epochs_per_capacity",
         "must be an integer >= 1, got -1 (eviction=workload_aware)"),
        (partial(resolve("eviction", "s3fifo"), ghost_ratio=-5), "eviction.ghost_ratio", "must be a finite number >= 0"),
        (partial(resolve("eviction", "s3fifo"), ghost_ratio=float("nan")), "eviction.ghost_ratio", "got nan"),
    ):  # fmt: skip
        with pytest.raises(ConfigError) as caught:
            run(SimConfig(mode=mode, tiers=tiers, eviction=factory), TRACE)
        assert caught.value.key == key and text in str(caught.value)


NAN, INF = float("nan"), float("inf")


@pytest.mark.parametrize(
    ("family", "name", "param", "value", "text"),
    [
        ("eviction", "s3fifo", "small_ratio", 0, "> 0 and < 1, got 0"),
        ("eviction", "s3fifo", "small_ratio", 1.0, "> 0 and < 1, got 1.0"),
        ("eviction", "s3fifo", "ghost_ratio", -5, ">= 0, got -5"),  # the ghost was trimmed below empty
        ("eviction", "s3fifo", "ghost_ratio", INF, "got inf"),
        ("eviction", "s3fifo", "move_to_main_threshold", 0, ">= 1, got 0"),
        ("eviction", "s3fifo", "move_to_main_threshold", 2.0, "an integer >= 1, got 2.0"),
        ("eviction", "workload_aware", "epochs_per_capacity", 2.5, "an integer >= 1, got 2.5"),
        ("eviction", "workload_aware", "sample_one_in", 0, ">= 1, got 0"),
        ("eviction", "workload_aware", "prior_lives", NAN, "got nan"),
        ("eviction", "workload_aware", "half_life_horizons", 0, "> 0, got 0"),
        ("prefetch", "lookahead", "depth", 2.5, "an integer >= 1, got 2.5"),  # a slice index mid-run
        ("prefetch", "lookahead", "depth", True, "an integer >= 1, got True"),
        ("prefetch", "on_arrival", "evict", "maybe", "true or false, got 'maybe'"),  # was taken as true
        ("prefetch", "on_arrival", "evict", 0, "true or false, got 0"),
        ("prefetch", "session_aware", "hold_s", -1, ">= 0, got -1"),
        ("prefetch", "session_aware", "hold_s", NAN, "got nan"),
        ("routing", "prefix_affinity", "load_cap", NAN, ">= 1, got nan"),  # was accepted
        ("routing", "prefix_affinity", "load_cap", 0.5, ">= 1, got 0.5"),
        ("routing", "prefix_affinity", "slack_tokens", -1, ">= 0, got -1"),
        ("scheduler", "priority", "default_class", "abc", "an integer, got 'abc'"),  # compared with ints mid-run
        ("scheduler", "priority", "classes", {"chat": "0"}, "a mapping of names to integers, got 'chat': '0'"),
        ("scheduler", "priority", "classes", [0, 1], "a mapping of names to integers, got [0, 1]"),
    ],
)
def test_a_policy_parameter_of_the_wrong_type_or_range_is_refused_naming_its_key(
    family: str, name: str, param: str, value: object, text: str
) -> None:
    from policies.registry import resolve

    error = error_for(SimConfig(**{family: partial(resolve(family, name), **{param: value})}))
    assert error.key == f"{family}.{param}"
    assert str(error).startswith(f"{family}.{param}: must be ") and str(error).endswith(f"{text} ({family}={name})")


def test_every_shipped_policy_parameter_is_checked_by_its_constructor() -> None:
    """A value of no parameter's type is refused by every parameter of every shipped policy,
    naming it: a policy added without checks fails here, not mid-run on a user's typo."""
    import inspect

    from policies.params import PolicyParameterError
    from policies.registry import FAMILIES, available, resolve

    checked = []
    for family in FAMILIES:
        for name in available(family):
            factory = resolve(family, name)
            for param in inspect.signature(factory).parameters:
                with pytest.raises(PolicyParameterError) as caught:
                    factory(**{param: object()})
                assert caught.value.param == param
                checked.append(f"{family}.{name}.{param}")
    assert len(checked) == 14 and "scheduler.priority.classes" in checked


def test_replay_refuses_a_tier_sized_in_gigabytes() -> None:
    from sim.run import run

    config = SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=10), hardware=HardwareConfig(dram_gb=64))
    with pytest.raises(ConfigError) as caught:
        run(config, TRACE)
    assert caught.value.key == "hardware.dram_gb" and "set tiers.dram_blocks" in str(caught.value)
    config = SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=10), hardware=HardwareConfig(hbm_gb=10.0))
    with pytest.raises(ConfigError) as caught:
        run(config, TRACE)
    assert caught.value.key == "hardware.hbm_gb" and "set tiers.hbm_blocks" in str(caught.value)


@pytest.mark.parametrize(
    ("config", "key"),
    [
        (SimConfig(model=ModelConfig(name="gpt-4")), "model.name"),
        (SimConfig(engine=EngineConfig(preemption="foo")), "engine.preemption"),
        (SimConfig(hardware=HardwareConfig(n_replicas=-1)), "hardware.n_replicas"),
    ],
)
def test_replay_refuses_what_serve_refuses_though_it_does_not_use_it(config: SimConfig, key: str) -> None:
    from dataclasses import replace

    from sim.run import run

    with pytest.raises(ConfigError) as caught:
        run(replace(config, mode="replay", tiers=TierConfig(hbm_blocks=10)), TRACE)
    assert caught.value.key == key


def warned(call: Callable[[], object]) -> list[str]:
    """The messages of every warning ``call`` raises."""
    with warnings.catch_warnings(record=True) as record:
        warnings.simplefilter("always")
        call()
    return [str(w.message) for w in record]


def test_a_trace_of_lengths_only_is_refused_by_replay_and_warned_of_in_serve() -> None:
    """An Azure or BurstGPT trace gives no block ids: a replay's hit ratio of no accesses is no
    result, and a serve run reuses nothing, which it says."""
    from sim.run import run

    lengths_only = Trace.from_columns(
        arrival_s=[0.0, 1.0], input_tokens=[64, 80], output_tokens=[4, 4], block_size=16, source="azure.csv"
    )
    with pytest.raises(ConfigError) as caught:
        run(SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=10)), lengths_only)
    assert caught.value.key == "mode" and "azure.csv has none" in caught.value.message
    with pytest.warns(UserWarning, match="azure.csv has no prefix block ids"):
        summary = run(SimConfig(), lengths_only).summary
    assert summary["n_finished"] == 2 and summary["block_hit_ratio"] == 0.0
    assert not any("prefix block ids" in w for w in warned(lambda: run(SimConfig(), TRACE)))


def test_requests_whose_kv_never_fits_in_hbm_are_refused_and_warned_of() -> None:
    from sim.run import run

    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0], input_tokens=[40, 4000], output_tokens=[4, 4], block_size=16, source="two.jsonl"
    )
    config = SimConfig(hardware=HardwareConfig(hbm_gb=0.1))  # about 47 blocks of 16 tokens of Llama-3.1-8B
    with pytest.warns(UserWarning, match=r"1 of 2 requests \(50.0%\) need more KV than one replica's HBM holds"):
        summary = run(config, trace).summary
    assert summary["rejected_by_reason"]["kv_exceeds_hbm"] == 1 and summary["n_finished"] == 1
    assert not any("need more KV" in w for w in warned(lambda: run(SimConfig(), trace)))


def test_a_session_prefetch_on_a_trace_without_sessions_is_warned_of() -> None:
    from sim.run import run

    trace = Trace.from_columns(
        arrival_s=[0.0, 1.0], input_tokens=[64, 80], output_tokens=[4, 4], block_hashes=[[1, 2, 3, 4], [1, 2, 3, 4, 5]],
        block_size=16, source="no_sessions.jsonl",
    )  # fmt: skip
    with pytest.warns(UserWarning, match="prefetch=session_aware acts on a session's turns, and no_sessions.jsonl"):
        staged = run(SimConfig(prefetch="session_aware"), trace).summary
    assert staged["prefetch_staged_blocks"] == 0
    sessions = Trace.from_columns(
        arrival_s=[0.0, 1.0], input_tokens=[64, 80], output_tokens=[4, 4],
        block_hashes=[[1, 2, 3, 4], [1, 2, 3, 4, 5]], block_size=16, session_id=[7, 7],
    )  # fmt: skip
    for config, used in ((SimConfig(prefetch="session_aware"), sessions), (SimConfig(prefetch="on_arrival"), trace)):
        assert not any("acts on a session" in w for w in warned(partial(run, config, used)))


@pytest.mark.parametrize("profile", ["datasheet", None])
def test_kv_copies_split_over_no_more_gpus_than_the_model_has_kv_heads(profile: str | None) -> None:
    """Past ``tensor_parallel = n_kv_heads`` each GPU holds a replica of one KV head, as HBM is
    sized: a block's copies are split over 8 GPUs' links for Llama-3.1-70B (8 KV heads) at TP 16
    as at TP 8, while from TP 4 to 8 each GPU moves half as much."""

    def setup(tp: int):
        config = SimConfig(
            model=ModelConfig(name="llama-3.1-70b"), hardware=HardwareConfig(tensor_parallel=tp, profile=profile)
        )
        return build_setup(config, TRACE)

    four, eight, sixteen = setup(4), setup(8), setup(16)
    nbytes, copies = 64 * eight.bytes_per_block, 64  # one large copy a block: bytes, not latency, set the time
    for link in ("pcie_h2d", "pcie_d2h", "net_read", "net_write"):
        assert getattr(sixteen, link)(nbytes, copies) == getattr(eight, link)(nbytes, copies)
        assert getattr(eight, link)(nbytes, copies) < getattr(four, link)(nbytes, copies)


def test_a_hash_repeated_within_a_prompt_is_refused_in_serve_mode_naming_the_row(tmp_path, monkeypatch) -> None:
    """Serve mode names a prompt's blocks by their chained hash, so one prompt cannot hold a hash
    twice. The file readers chain the ids they read, but a trace built in a notebook
    (Trace.from_columns) or a Parquet file takes its hashes as given, and one with block contents
    hashed without their prefix once stopped a serve run on the engine invariant "block inserted
    twice". It is refused before the run, naming the source and row, also when the repeat lies
    past the first of the chunks the check sorts at a time; a cache-only replay takes it, as it
    takes any stream of block ids."""
    import traces.schema
    from sim.run import run
    from traces import TraceFormatError, read_trace, write_trace

    def trace_with(repeated: list[int]) -> Trace:
        hashes = [[10 * i, 10 * i + 1] for i in range(40)]
        hashes[33], hashes[34] = repeated, [5, 6]  # 5 6 again: a shared prefix, not a repeat
        return Trace.from_columns(
            arrival_s=list(range(40)),
            input_tokens=[64] * 40,
            output_tokens=[4] * 40,
            block_hashes=hashes,
            block_size=16,
        )

    monkeypatch.setattr(traces.schema, "_REPEAT_CHECK_ACCESSES", 8)
    trace = trace_with([5, 6, 5])
    with pytest.raises(TraceFormatError, match=r"<memory>: row 33: field 'block_hashes': repeats hash 5 within"):
        build_setup(SimConfig(), trace)
    write_trace(trace, tmp_path / "repeats.parquet")
    with pytest.raises(TraceFormatError, match=r"repeats\.parquet: row 33: field 'block_hashes': repeats hash 5"):
        build_setup(SimConfig(), read_trace(tmp_path / "repeats.parquet"))
    assert run(SimConfig(mode="replay", tiers=TierConfig(hbm_blocks=100)), trace).summary["block_hit_ratio"] > 0
    build_setup(SimConfig(), trace_with([5, 6, 7]))


REFUSING_POLICIES = """
from policies.admission.ssd_spill import SsdSpill
from policies.eviction.fifo import FIFO
from policies.eviction.lru import LRU
from policies.scheduler.fcfs import FCFS


class SmallOnly(LRU):
    def bind(self, capacity_blocks, workload):
        super().bind(capacity_blocks, workload)
        if capacity_blocks > 50:
            raise RuntimeError(f"at most 50 blocks, got {capacity_blocks}\\nsecond line")


class NoLowerTier(FIFO):
    def bind(self, capacity_blocks, workload):
        if workload.tier != "hbm":
            raise ValueError(f"no {workload.tier}")
        super().bind(capacity_blocks, workload)


class ByCategory(FCFS):
    def bind(self, categories):
        raise KeyError("chat")


class TwoTiersOnly(SsdSpill):
    def bind(self, tiers):
        assert len(tiers) == 2
        super().bind(tiers)
"""


@pytest.mark.parametrize("mode", ["serve", "replay"])
def test_a_policy_that_fails_to_bind_is_a_config_error_naming_it_its_file_and_what_it_raised(
    tmp_path, mode: str
) -> None:
    """A user's policy that raises in bind() (meeting the run's tiers or trace) was a stack trace
    from inside the engine; it is a ConfigError naming the key that chose it, the class, its
    file and the first line of what it raised, which stays the error's cause."""
    from sim.run import run

    path = tmp_path / f"refusing_{mode}.py"  # the registry keeps a file's module by its name
    path.write_text(REFUSING_POLICIES)
    small, dram = TierConfig(hbm_blocks=40), TierConfig(hbm_blocks=40, dram_blocks=100)
    cases = [
        (dict(tiers=TierConfig(hbm_blocks=80), eviction=f"{path}:SmallOnly"), "eviction",
         f"eviction: SmallOnly ({path}) failed in bind(): RuntimeError: at most 50 blocks, got 80"),
        (dict(tiers=dram, eviction=f"{path}:SmallOnly"), "eviction",
         f"eviction: SmallOnly ({path}) failed in bind(): RuntimeError: at most 50 blocks, got 100"),
        (dict(tiers=dram, tier_eviction={"dram": f"{path}:NoLowerTier"}), "tier_eviction.dram",
         f"tier_eviction.dram: NoLowerTier ({path}) failed in bind(): ValueError: no dram"),
    ]  # fmt: skip
    if mode == "serve":
        cases += [
            (dict(tiers=small, scheduler=f"{path}:ByCategory"), "scheduler",
             f"scheduler: ByCategory ({path}) failed in bind(): KeyError: 'chat'"),
            (dict(tiers=TierConfig(hbm_blocks=40, dram_blocks=10, ssd_blocks=10), admission=f"{path}:TwoTiersOnly"),
             "admission", f"admission: TwoTiersOnly ({path}) failed in bind(): AssertionError"),
        ]  # fmt: skip
    for fields, key, message in cases:
        with pytest.raises(ConfigError) as caught:
            run(SimConfig(mode=mode, **fields), TRACE)
        assert (caught.value.key, str(caught.value)) == (key, message)
        assert caught.value.__cause__ is not None
    # The same policies bind where they accept the run: they are refused for what they raised.
    for fields in (
        dict(tiers=small, eviction=f"{path}:SmallOnly"),
        dict(tiers=TierConfig(hbm_blocks=40, dram_blocks=10), admission=f"{path}:TwoTiersOnly"),
    ):
        assert run(SimConfig(mode=mode, **fields), TRACE).summary["n_requests"] == 1
