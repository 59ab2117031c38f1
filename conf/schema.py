"""Structured configs for the hydra CLI: the schema ``kvsim``'s YAML is checked against.

These mirror the library's plain dataclasses (:mod:`sim.config`, :class:`traces.TraceSpec`)
with OmegaConf-friendly types, so a misspelt key fails before anything runs
(``Key 'hbm_gbb' not in 'HardwareConf'``). Policies are nodes with a ``_target_`` (a class)
and ``_partial_: true`` plus the policy's own parameters; every policy shipped in
``policies/<family>/`` is registered here under its module name, with its constructor's
parameters and their defaults, so adding a policy file makes it selectable as
``eviction=<name>`` and its parameters settable as ``eviction.<param>=...`` with no YAML needed.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from hydra.core.config_store import ConfigStore
from omegaconf import MISSING

from policies.registry import FAMILIES, available, resolve

CONF_DIR = Path(__file__).resolve().parent


@dataclass
class TraceConf:
    path: str | None = None
    format: str = "auto"
    block_size: int | None = None
    generator: str | None = "default"
    params: dict[str, Any] = field(default_factory=dict)
    seed: int = 0
    max_requests: int | None = None
    time_scale: float = 1.0


@dataclass
class ModelConf:
    name: str = "llama-3.1-8b"
    config_json: str | None = None
    kv_bytes_per_element: float | None = None
    kv_compression_ratio: float = 1.0
    max_context_tokens: int | None = None


@dataclass
class HardwareConf:
    gpu: str = "h100-sxm"
    # Timing profile: None, the GPU's shipped calibrated profile (else its datasheet roofline);
    # "datasheet", the roofline; or a profile's name or directory (sim.config.HardwareConfig).
    profile: str | None = None
    tensor_parallel: int = 1
    n_replicas: int = 1
    gpu_memory_utilization: float = 0.9
    activation_reserve_gb: float = 2.0
    hbm_gb: float | None = None
    dram_gb: float = 0.0
    ssd_gb: float = 0.0
    pcie_gbps: float | None = None
    pcie_latency_s: float | None = None
    ssd_read_gbps: float = 7.0
    ssd_write_gbps: float = 5.0
    ssd_latency_s: float = 100e-6
    remote_gb: float = 0.0
    net_gbps: float = 25.0
    net_latency_s: float = 20e-6
    pool_gbps: float | None = None
    copies_per_block: int | None = None
    power_cap: bool = True


@dataclass
class TierConf:
    block_tokens: int | None = None
    hbm_blocks: int | None = None
    dram_blocks: int | None = None
    ssd_blocks: int | None = None
    remote_blocks: int | None = None


@dataclass
class EngineConf:
    max_num_seqs: int = 256
    max_num_batched_tokens: int = 8192
    preemption: str = "recompute"
    iteration_overhead_s: float = 0.001
    kv_load: str = "always"
    kv_load_overlap: str = "none"


@dataclass
class SLOConf:
    ttft_s: float = 2.0
    tpot_s: float = 0.1


@dataclass
class PowerConf:
    gpu_idle_w: float = 70.0
    gpu_active_w: float | None = None  # None: the GPU's power limit
    gpu_decode_w: float | None = None  # None: the GPU's measured decode draw
    joules_per_byte_moved: float = 5e-11


@dataclass
class OutputConf:
    plots: bool = True  # PNG plots in the run directory
    progress: bool = True  # on stderr: a bar on a terminal, a line per tenth of the requests elsewhere
    resume: bool = True  # skip a run whose directory already holds a complete, identical result


@dataclass
class KvsimConf:
    trace: TraceConf = field(default_factory=TraceConf)
    model: ModelConf = field(default_factory=ModelConf)
    hardware: HardwareConf = field(default_factory=HardwareConf)
    tiers: TierConf = field(default_factory=TierConf)
    engine: EngineConf = field(default_factory=EngineConf)
    slo: SLOConf = field(default_factory=SLOConf)
    power: PowerConf = field(default_factory=PowerConf)
    eviction: Any = MISSING
    tier_eviction: dict[str, Any] = field(default_factory=dict)  # tier name -> policy name, e.g. {dram: lru}
    prefetch: Any = MISSING
    admission: Any = MISSING
    scheduler: Any = MISSING
    routing: Any = MISSING
    mode: str = "serve"
    timeseries_interval_s: float = 1.0
    check_invariants: bool = True
    output: OutputConf = field(default_factory=OutputConf)


def policy_parameters(factory: Any) -> dict[str, Any]:
    """A policy's constructor parameters that a command line can set, with their defaults
    (``MISSING`` for a required one). A parameter whose default is not a plain value (a tuple,
    an object) is left out: ``+family.param=...`` still passes it."""
    plain = (bool, int, float, str, type(None))
    params: dict[str, Any] = {}
    for param in inspect.signature(factory).parameters.values():
        if param.kind in (param.VAR_POSITIONAL, param.VAR_KEYWORD):
            continue
        if param.default is param.empty:
            params[param.name] = MISSING
        elif isinstance(param.default, plain):
            params[param.name] = param.default
    return params


def policy_node(family: str, name: str) -> dict[str, Any]:
    factory = resolve(family, name)
    target = {"_target_": f"{factory.__module__}.{factory.__qualname__}", "_partial_": True}
    return {**target, **policy_parameters(factory)}


def register() -> None:
    """Put the schema and every shipped policy in hydra's ConfigStore.

    A policy with its own YAML file in ``conf/<family>/`` (to expose parameters) is left to
    that file.
    """
    store = ConfigStore.instance()
    store.store(name="kvsim_schema", node=KvsimConf)
    for family in FAMILIES:
        for name in available(family):
            if not (CONF_DIR / family / f"{name}.yaml").exists():
                store.store(group=family, name=name, node=policy_node(family, name))
