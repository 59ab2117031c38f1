"""From a :class:`~sim.config.SimConfig` and a trace to concrete hardware: validated first.

Every check runs before any simulation starts, and each failure is a one-line
:class:`ConfigError` naming the config key, the value and what would be valid, so a sweep
fails at once rather than an hour in.
"""

from __future__ import annotations

import functools
import inspect
import math
import numbers
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from hwmodels.calibrated import available_profiles, shipped_profile_for_gpu
from hwmodels.execution import ExecutionModel
from hwmodels.gpus import GPUS, GpuSpec, get_gpu
from hwmodels.models import MODELS, ModelSpec, get_model, longer_context_model, spec_from_hf_config
from hwmodels.profile import GpuProfile, load_profile
from policies.params import PolicyParameterError
from policies.registry import FAMILIES, UnknownPolicyError, policy_label, resolve
from sim.blocks import BlockSizeError, check_block_tokens
from sim.config import (
    DATASHEET_PROFILE,
    KV_LOAD_MODES,
    KV_LOAD_OVERLAP_MODES,
    MODES,
    PREEMPTION_MODES,
    TIER_NAMES,
    SimConfig,
)
from sim.links import DurationModel, linear_duration
from traces.errors import TraceFormatError
from traces.schema import Trace

GB = 1e9
MIN_SAMPLE_INTERVAL_S = 1e-3  # the finest timeseries sampling; see _check_scalars


class ConfigError(ValueError):
    """A configuration that cannot be simulated; ``key`` is the offending config key."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key
        self.message = message
        super().__init__(f"{key}: {message}")

    def __reduce__(self) -> tuple:
        # Parallel sweep launchers pickle a failed job's exception back to the parent.
        return (type(self), (self.key, self.message))


@dataclass(frozen=True)
class Setup:
    """Everything the engine needs that follows from the config and the trace."""

    model: ModelSpec
    gpu: GpuSpec
    profile: GpuProfile
    execution: ExecutionModel
    block_tokens: int
    bytes_per_block: int
    # (name, capacity in blocks), HBM first; per replica, but for the shared "remote" pool
    tier_blocks: tuple[tuple[str, int], ...]
    copies_per_block: int
    pcie_h2d: DurationModel
    pcie_d2h: DurationModel
    ssd_read: DurationModel
    ssd_write: DurationModel
    net_read: DurationModel  # pool -> replica, per replica
    net_write: DurationModel  # replica -> pool, per replica
    # A request's latency on the SSD and the network: paid once per transfer, after its bytes,
    # without holding the link (both keep many requests in flight; sim.links).
    ssd_latency_s: float
    net_latency_s: float
    # The pool servers' side of the same copies, shared by all replicas; None = not a limit.
    pool_read: DurationModel | None
    pool_write: DurationModel | None
    policies: dict[str, Callable[..., Any]]  # family -> factory
    tier_eviction: dict[str, Callable[..., Any]]  # tier name -> eviction factory overriding policies["eviction"]
    hbm_kv_bytes_available: float


def is_integer(value: object) -> bool:
    """An integer of any integer type (NumPy's too, as a notebook sweep over ``np.arange``
    passes them), but not a bool and not a float."""
    return isinstance(value, numbers.Integral) and not isinstance(value, bool)


def check_shared_keys(config: SimConfig) -> None:
    """The checks every mode makes, whether or not it uses the key: a misspelt model or a bad
    engine setting in a replay-mode sweep should fail there too, not pass unnoticed and then
    fail (or mean something else) in the serve runs of the same sweep."""
    _check_scalars(config)
    _model(config)
    _profile(config, _gpu(config))


def build_setup(config: SimConfig, trace: Trace) -> Setup:
    """Validate ``config`` against ``trace`` and resolve it; raises :class:`ConfigError`."""
    _check_scalars(config)
    repeat = trace.first_repeated_hash()
    if repeat is not None:
        row, block = repeat
        raise TraceFormatError(
            trace.source,
            row,
            "block_hashes",
            f"repeats hash {block} within the request: serve mode names a prompt's blocks by their chained "
            "hash, each naming its whole prefix, so none can occur twice (hash chained prefixes, not block "
            "contents; mode=replay takes any stream of block ids)",
        )
    model = _model(config)
    gpu = _gpu(config)
    profile = _profile(config, gpu)
    tp = config.hardware.tensor_parallel
    _check_tensor_parallel(model, tp)
    block_tokens = trace.block_size if config.tiers.block_tokens is None else config.tiers.block_tokens
    try:
        check_block_tokens(trace.block_size, block_tokens)
    except BlockSizeError as exc:
        raise ConfigError("tiers.block_tokens", str(exc)) from None
    bytes_per_block = model.kv_bytes_per_block(block_tokens)
    if bytes_per_block < 1:
        key = "model.kv_bytes_per_element" if config.model.kv_compression_ratio == 1 else "model.kv_compression_ratio"
        block_bytes = model.kv_bytes_per_token * block_tokens
        raise ConfigError(key, f"leaves a {block_tokens}-token KV block {block_bytes:.3g} bytes, under one byte")
    available = _hbm_kv_bytes_available(config, model, gpu)
    tiers = _tier_capacities(config, bytes_per_block, available)
    copies = 2 * model.n_layers if config.hardware.copies_per_block is None else config.hardware.copies_per_block
    if copies < 1:
        raise ConfigError("hardware.copies_per_block", f"must be >= 1, got {copies}")
    policies = {}
    for family in FAMILIES:
        ref = getattr(config, family)
        try:
            policies[family] = resolve(family, ref)
        except UnknownPolicyError as exc:
            raise ConfigError(family, str(exc)) from None
        check_policy_builds(family, policies[family])
    tier_eviction = resolve_tier_eviction(config, [name for name, _ in tiers])
    warn_of_unfilled_tiers(policies["admission"], [name for name, _ in tiers])
    # A GPU past the model's KV-head count holds a replica of one head (as HBM is sized), so a
    # block's copies are split over at most that many GPUs' links.
    kv_shards = min(tp, model.n_kv_heads)
    h2d, d2h = _pcie_models(config, profile, kv_shards)
    hw = config.hardware
    return Setup(
        model=model,
        gpu=gpu,
        profile=profile,
        execution=ExecutionModel(model, profile, tp, config.engine.iteration_overhead_s),
        block_tokens=block_tokens,
        bytes_per_block=bytes_per_block,
        tier_blocks=tiers,
        copies_per_block=copies,
        pcie_h2d=h2d,
        pcie_d2h=d2h,
        ssd_read=linear_duration(0.0, hw.ssd_read_gbps * GB),
        ssd_write=linear_duration(0.0, hw.ssd_write_gbps * GB),
        net_read=_sharded(linear_duration(0.0, hw.net_gbps * GB), kv_shards),
        net_write=_sharded(linear_duration(0.0, hw.net_gbps * GB), kv_shards),
        ssd_latency_s=hw.ssd_latency_s,
        net_latency_s=hw.net_latency_s,
        pool_read=None if hw.pool_gbps is None else linear_duration(0.0, hw.pool_gbps * GB),
        pool_write=None if hw.pool_gbps is None else linear_duration(0.0, hw.pool_gbps * GB),
        policies=policies,
        tier_eviction=tier_eviction,
        hbm_kv_bytes_available=available,
    )


def check_policy_builds(family: str, factory: Callable[..., Any]) -> None:
    """Build the policy once now: a parameter it does not take or a value it refuses should
    stop the run here, not as a stack trace once replicas are built. A value the constructor
    refuses by name (:class:`~policies.params.PolicyParameterError`) is the config key
    ``<family>.<param>``; any other refusal names the family."""
    try:
        factory()
    except PolicyParameterError as exc:
        raise ConfigError(f"{family}.{exc.param}", f"{exc.message} ({family}={policy_label(factory)})") from None
    except (TypeError, ValueError) as exc:
        raise ConfigError(family, f"cannot build the {family} policy: {exc}") from None


def bind_policy(key: str, policy: Any, *args: Any) -> None:
    """``policy.bind(*args)``, where whatever the policy raises becomes a :class:`ConfigError`
    naming ``key``, the policy and its file. Bind is where a policy first meets the run's tiers
    and trace, so a user's policy that refuses them (or breaks on them) is input to fix, not a
    kvsim failure: it should be one line, as a bad parameter is, not a stack trace. It is said
    before anything is simulated, since every bind happens while the run is being built; the
    policy's own exception stays the cause, in ``error.json``'s traceback and under
    ``HYDRA_FULL_ERROR=1``."""
    try:
        policy.bind(*args)
    except Exception as exc:
        lines = str(exc).strip().splitlines()
        raised = type(exc).__name__ + (f": {lines[0]}" if lines else "")
        raise ConfigError(key, f"{_policy_and_file(policy)} failed in bind(): {raised}") from exc


def _policy_and_file(policy: Any) -> str:
    """A policy's name as reports give it, with the file that defines it where Python knows it."""
    cls = type(policy)
    try:
        return f"{policy_label(cls)} ({inspect.getfile(cls)})"
    except (TypeError, OSError):  # a class with no source file (built in, or made in a notebook cell)
        return policy_label(cls)


def unfilled_tiers(admission: Callable[..., Any], tier_names: list[str]) -> list[str]:
    """Tiers below HBM that the placement policy never writes a block to: not a write-through
    target of a new block, and not on any demotion chain from HBM or from those targets. The
    instance is bound here and thrown away, so an admission policy that cannot be bound to the
    run's tiers is refused before the trace is simulated (each replica then binds its own)."""
    policy = admission()
    bind_policy("admission", policy, tuple(tier_names))
    reached, todo = set(), ["hbm", *policy.write_through_tiers(0)]
    while todo:
        tier = todo.pop()
        if tier in reached:
            continue
        reached.add(tier)
        below = policy.demote_to(tier)
        if below is not None:
            todo.append(below)
    return [name for name in tier_names[1:] if name not in reached]


def warn_of_unfilled_tiers(admission: Callable[..., Any], tier_names: list[str]) -> None:
    """A configured tier that stays empty is most likely a forgotten ``admission`` setting (a
    shared pool under ``write_back``, or an SSD under ``drop``): say so, as the run still means
    something (the tier's capacity simply goes unused)."""
    for name in unfilled_tiers(admission, tier_names):
        warnings.warn(
            f"admission={policy_label(admission)} never writes a block to the {name} tier, which stays empty; "
            + "admission=write_through_all (the default) or ssd_spill fills it",
            UserWarning,
            stacklevel=3,
        )


def resolve_tier_eviction(config: SimConfig, tier_names: list[str]) -> dict[str, Callable[..., Any]]:
    """The per-tier eviction overrides as factories; a tier the run does not have is an error
    (an override that silently does nothing would mislead a comparison)."""
    out = {}
    for tier, ref in config.tier_eviction.items():
        key = f"tier_eviction.{tier}"
        if tier not in TIER_NAMES:
            raise ConfigError(key, f"unknown tier {tier!r}; tiers are {', '.join(TIER_NAMES)}")
        if tier not in tier_names:
            raise ConfigError(key, f"this run has no {tier} tier (its tiers: {', '.join(tier_names)})")
        try:
            out[tier] = resolve("eviction", ref)
        except UnknownPolicyError as exc:
            raise ConfigError(key, str(exc)) from None
    return out


def _check_scalars(config: SimConfig) -> None:
    hw, eng, slo, pw = config.hardware, config.engine, config.slo, config.power

    def positive(key: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and value > 0 and math.isfinite(value)):
            raise ConfigError(key, f"must be a positive number, got {value!r}")

    def non_negative(key: str, value: float) -> None:
        if not (isinstance(value, (int, float)) and value >= 0 and math.isfinite(value)):
            raise ConfigError(key, f"must be >= 0, got {value!r}")

    if config.mode not in MODES:
        raise ConfigError("mode", f"{config.mode!r} is not one of {', '.join(MODES)}")
    for key, value in (
        ("hardware.tensor_parallel", hw.tensor_parallel),
        ("hardware.n_replicas", hw.n_replicas),
        ("engine.max_num_seqs", eng.max_num_seqs),
        ("engine.max_num_batched_tokens", eng.max_num_batched_tokens),
    ):
        if not is_integer(value) or value < 1:
            raise ConfigError(key, f"must be an integer >= 1, got {value!r}")
    if not 0 < hw.gpu_memory_utilization <= 1:
        raise ConfigError("hardware.gpu_memory_utilization", f"must be in (0, 1], got {hw.gpu_memory_utilization}")
    if hw.hbm_gb is not None:
        positive("hardware.hbm_gb", hw.hbm_gb)
    for key in ("dram_gb", "ssd_gb", "remote_gb", "activation_reserve_gb"):
        non_negative(f"hardware.{key}", getattr(hw, key))
    for key in ("ssd_read_gbps", "ssd_write_gbps", "net_gbps"):
        positive(f"hardware.{key}", getattr(hw, key))
    non_negative("hardware.ssd_latency_s", hw.ssd_latency_s)
    non_negative("hardware.net_latency_s", hw.net_latency_s)
    for key in ("pcie_gbps", "pool_gbps"):
        if getattr(hw, key) is not None:
            positive(f"hardware.{key}", getattr(hw, key))
    if hw.pcie_latency_s is not None:
        non_negative("hardware.pcie_latency_s", hw.pcie_latency_s)
    if eng.preemption not in PREEMPTION_MODES:
        raise ConfigError("engine.preemption", f"{eng.preemption!r} is not one of {', '.join(PREEMPTION_MODES)}")
    if eng.kv_load not in KV_LOAD_MODES:
        raise ConfigError("engine.kv_load", f"{eng.kv_load!r} is not one of {', '.join(KV_LOAD_MODES)}")
    if eng.kv_load_overlap not in KV_LOAD_OVERLAP_MODES:
        raise ConfigError(
            "engine.kv_load_overlap", f"{eng.kv_load_overlap!r} is not one of {', '.join(KV_LOAD_OVERLAP_MODES)}"
        )
    non_negative("engine.iteration_overhead_s", eng.iteration_overhead_s)
    positive("slo.ttft_s", slo.ttft_s)
    positive("slo.tpot_s", slo.tpot_s)
    for key in ("gpu_idle_w", "gpu_active_w", "gpu_decode_w", "joules_per_byte_moved"):
        if getattr(pw, key) is not None:
            non_negative(f"power.{key}", getattr(pw, key))
    positive("timeseries_interval_s", config.timeseries_interval_s)
    if config.timeseries_interval_s < MIN_SAMPLE_INTERVAL_S:
        # The state changes at engine steps (milliseconds at the least); finer samples repeat
        # it, at a cost of one sample per interval per replica (1e-5 s: 41 s for 50 requests).
        raise ConfigError(
            "timeseries_interval_s",
            f"must be >= {MIN_SAMPLE_INTERVAL_S} s (an engine step is longer), got {config.timeseries_interval_s}",
        )
    for key in ("hbm_blocks", "dram_blocks", "ssd_blocks", "remote_blocks"):
        value = getattr(config.tiers, key)
        if value is not None and (not is_integer(value) or value < (1 if key == "hbm_blocks" else 0)):
            lowest = 1 if key == "hbm_blocks" else 0
            raise ConfigError(f"tiers.{key}", f"must be an integer >= {lowest}, got {value!r}")


def _model(config: SimConfig) -> ModelSpec:
    if config.model.config_json is not None:
        try:
            model = spec_from_hf_config(config.model.config_json)
        except ValueError as exc:
            raise ConfigError("model.config_json", str(exc)) from None
    else:
        try:
            model = get_model(config.model.name)
        except ValueError:
            raise ConfigError(
                "model.name",
                f"unknown model {config.model.name!r}; choose one of {', '.join(sorted(MODELS))}"
                " (or give model.config_json, a Hugging Face config.json)",
            ) from None
    changes: dict[str, Any] = {}
    if config.model.kv_bytes_per_element is not None:
        if not 0 < config.model.kv_bytes_per_element < math.inf:
            raise ConfigError(
                "model.kv_bytes_per_element",
                f"must be finite and > 0, got {config.model.kv_bytes_per_element}",
            )
        changes["kv_bytes_per_element"] = float(config.model.kv_bytes_per_element)
    if not 0 < config.model.kv_compression_ratio <= 1:
        raise ConfigError(
            "model.kv_compression_ratio",
            f"must be in (0, 1], got {config.model.kv_compression_ratio}",
        )
    changes["kv_compression_ratio"] = float(config.model.kv_compression_ratio)
    limit = config.model.max_context_tokens
    if limit is not None:
        if not is_integer(limit) or limit < 1:
            raise ConfigError("model.max_context_tokens", f"must be a positive integer, got {limit!r}")
        if model.max_context_tokens is not None and limit > model.max_context_tokens:
            suggestion = longer_context_model(model, [int(limit)])
            advice = (
                f"pick a longer-context model ({suggestion[0].name} serves {suggestion[0].max_context_tokens:,})"
                if suggestion is not None
                else "no shipped model serves that many"
            )
            raise ConfigError(
                "model.max_context_tokens",
                f"{limit} is beyond {model.name}'s {model.max_context_tokens} positions "
                f"(vLLM refuses it too); {advice}",
            )
        changes["max_context_tokens"] = int(limit)
    return model.with_overrides(**changes)


def _gpu(config: SimConfig) -> GpuSpec:
    try:
        return get_gpu(config.hardware.gpu)
    except ValueError:
        raise ConfigError(
            "hardware.gpu",
            f"unknown GPU {config.hardware.gpu!r}; choose one of {', '.join(sorted(GPUS))}",
        ) from None


def timing_profile_name(gpu: str, requested: str | None) -> str:
    """The profile :func:`~hwmodels.profile.load_profile` is given for ``hardware.profile =
    requested`` on ``gpu``: unset, the GPU's shipped calibrated profile where one was measured,
    else its datasheet roofline (the GPU's own name)."""
    if requested is None:
        return shipped_profile_for_gpu(gpu) or gpu
    if requested == DATASHEET_PROFILE:
        return gpu
    return requested


def _profile(config: SimConfig, gpu: GpuSpec) -> GpuProfile:
    name = timing_profile_name(gpu.name, config.hardware.profile)
    try:
        profile = load_profile(name)
    except (ValueError, FileNotFoundError, KeyError) as exc:
        shipped = ", ".join(available_profiles())
        raise ConfigError(
            "hardware.profile",
            f"cannot load profile {name!r}: {exc}; choose {DATASHEET_PROFILE} (the datasheet roofline), "
            f"a shipped profile ({shipped}), a profile directory, or leave it unset (null)",
        ) from None
    if profile.gpu.name != gpu.name:
        # One GPU's memory with another's speed is no real machine.
        raise ConfigError(
            "hardware.profile",
            f"{profile.name} was measured on {profile.gpu.name}, but hardware.gpu is {gpu.name}; "
            f"set hardware.gpu={profile.gpu.name} or pick a profile of {gpu.name} "
            f"(or {DATASHEET_PROFILE}: its datasheet roofline)",
        )
    return profile


MAX_TENSOR_PARALLEL = 16  # the sizes suggested when one is refused: two hosts of eight GPUs


def tensor_parallel_problem(model: ModelSpec, tp: int) -> str | None:
    """Why ``tp`` GPUs cannot split ``model`` as vLLM shards it, or ``None`` if they can.

    vLLM splits the attention heads and the MLP's intermediate width evenly across GPUs (each
    expert's and the shared expert's, in a mixture of experts), and splits the KV heads too, or,
    when there are fewer KV heads than GPUs, gives each GPU a replica of one (which needs ``tp``
    to be a multiple of their number)."""
    if model.n_q_heads % tp:
        return f"{tp} does not divide {model.name}'s {model.n_q_heads} attention heads"
    if model.n_kv_heads % tp and tp % model.n_kv_heads:
        return f"{tp} neither divides nor is a multiple of {model.name}'s {model.n_kv_heads} KV heads"
    if model.intermediate_size % tp:
        what = "expert width" if model.is_moe else "MLP width"
        return f"{tp} does not divide {model.name}'s {what} of {model.intermediate_size}"
    if model.shared_expert_intermediate_size % tp:
        return f"{tp} does not divide {model.name}'s shared expert width of {model.shared_expert_intermediate_size}"
    return None


def _check_tensor_parallel(model: ModelSpec, tp: int) -> None:
    problem = tensor_parallel_problem(model, tp)
    if problem is not None:
        valid = [d for d in range(1, MAX_TENSOR_PARALLEL + 1) if tensor_parallel_problem(model, d) is None]
        raise ConfigError("hardware.tensor_parallel", f"{problem}; use one of {valid}")


def _hbm_kv_bytes_available(config: SimConfig, model: ModelSpec, gpu: GpuSpec) -> float:
    """HBM left for KV per replica, as vLLM sizes it: usable memory minus weights and reserve.

    Each GPU holds its share of the KV heads; past ``tensor_parallel = n_kv_heads`` a GPU
    still holds one whole head (vLLM replicates KV heads then), so the replica's KV capacity
    stops growing there."""
    hw = config.hardware
    tp = hw.tensor_parallel
    usable_per_gpu = gpu.memory_gb * GB * hw.gpu_memory_utilization
    if usable_per_gpu - hw.activation_reserve_gb * GB <= 0:
        raise ConfigError(
            "hardware.activation_reserve_gb",
            f"{hw.activation_reserve_gb} GB leaves nothing of {gpu.name}'s {usable_per_gpu / GB:.1f} GB usable "
            f"(hardware.gpu_memory_utilization={hw.gpu_memory_utilization}) for weights and KV",
        )
    weights_per_gpu = model.weight_bytes / tp
    left_per_gpu = usable_per_gpu - weights_per_gpu - hw.activation_reserve_gb * GB
    if left_per_gpu <= 0:
        needed_tp = math.ceil(model.weight_bytes / (usable_per_gpu - hw.activation_reserve_gb * GB))
        raise ConfigError(
            "hardware.tensor_parallel",
            f"{model.name}'s weights ({model.weight_bytes / GB:.1f} GB, {weights_per_gpu / GB:.1f} GB per GPU "
            f"at tensor_parallel={tp}) leave no room for KV on {gpu.name} ({usable_per_gpu / GB:.1f} GB usable "
            f"per GPU, {hw.activation_reserve_gb} GB activation reserve); "
            f"use tensor_parallel >= {max(needed_tp, tp + 1)}",
        )
    return left_per_gpu * min(tp, model.n_kv_heads)


def _tier_capacities(config: SimConfig, bytes_per_block: int, hbm_available: float) -> tuple[tuple[str, int], ...]:
    hw, tiers = config.hardware, config.tiers
    block_mib = bytes_per_block / 2**20
    if tiers.hbm_blocks is not None:
        hbm_blocks = tiers.hbm_blocks
        if hbm_blocks * bytes_per_block > hbm_available:
            raise ConfigError(
                "tiers.hbm_blocks",
                f"{hbm_blocks} blocks of {block_mib:.2f} MiB exceed the {hbm_available / GB:.1f} GB of HBM left "
                f"for KV after weights; use at most {int(hbm_available // bytes_per_block)}",
            )
    else:
        if hw.hbm_gb is not None and hw.hbm_gb * GB > hbm_available:
            raise ConfigError(
                "hardware.hbm_gb",
                f"{hw.hbm_gb} GB exceeds the {hbm_available / GB:.1f} GB of HBM left for KV after weights "
                f"on {hw.gpu} x {hw.tensor_parallel}",
            )
        hbm_bytes = hbm_available if hw.hbm_gb is None else hw.hbm_gb * GB
        hbm_blocks = int(hbm_bytes // bytes_per_block)
        if hbm_blocks < 1 and hw.hbm_gb is not None:
            raise ConfigError("hardware.hbm_gb", f"{hw.hbm_gb} GB holds less than one {block_mib:.2f} MiB KV block")
        if hbm_blocks < 1:
            raise ConfigError(
                "tiers.block_tokens",
                f"one KV block ({block_mib:.2f} MiB) is larger than the {hbm_available / GB:.2f} GB of HBM left "
                f"for KV after weights on {hw.gpu} x {hw.tensor_parallel}; use smaller blocks or more GPUs",
            )
    capacities = [("hbm", hbm_blocks)]
    for name in ("dram", "ssd", "remote"):
        blocks = getattr(tiers, f"{name}_blocks")
        if blocks is None:
            size_gb = getattr(hw, f"{name}_gb")
            if size_gb == 0:
                continue
            blocks = int(size_gb * GB // bytes_per_block)
            if blocks < 1:
                raise ConfigError(
                    f"hardware.{name}_gb",
                    f"{size_gb} GB holds less than one {block_mib:.2f} MiB KV block",
                )
        if blocks > 0:
            capacities.append((name, blocks))
    if config.engine.preemption == "swap" and "dram" not in dict(capacities):
        raise ConfigError(
            "engine.preemption",
            "swap needs a DRAM tier to swap into; "
            + (
                "tiers.dram_blocks=0 leaves none (set it > 0, or null to size DRAM from hardware.dram_gb)"
                if config.tiers.dram_blocks == 0
                else "set hardware.dram_gb > 0"
            )
            + " or use recompute",
        )
    return tuple(capacities)


def _pcie_models(config: SimConfig, profile: GpuProfile, shards: int) -> tuple[DurationModel, DurationModel]:
    """Per-replica PCIe: each of the ``shards`` GPUs moves its share of a block over its own
    link at once."""
    hw = config.hardware
    if hw.pcie_gbps is None and hw.pcie_latency_s is None:

        def from_profile(kind: str) -> DurationModel:
            # Cached: a run moves blocks of one size in a few counts, over and over.
            @functools.lru_cache(maxsize=4096)
            def duration(nbytes: int, n_copies: int) -> float:
                return float(profile.copy_many_s(n_copies, nbytes / shards / n_copies, kind))

            return duration

        return from_profile("h2d"), from_profile("d2h")
    gbps = hw.pcie_gbps if hw.pcie_gbps is not None else profile.gpu.pcie_gbps * 0.8
    latency = hw.pcie_latency_s if hw.pcie_latency_s is not None else float(profile.copy_s(1, "h2d"))
    sharded = _sharded(linear_duration(latency, gbps * GB), shards)
    return sharded, sharded


def _sharded(per_gpu: DurationModel, shards: int) -> DurationModel:
    """A replica's link made of one link per GPU, each moving its ``1/shards`` of the KV heads
    at once (PCIe lanes and NICs are per GPU)."""

    def sharded(nbytes: int, n_copies: int) -> float:
        return per_gpu(nbytes / shards, n_copies)

    return sharded
