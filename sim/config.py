"""Plain-dataclass configuration of a simulation run.

The library takes these; the hydra CLI (``conf/``) mirrors them as structured configs and
builds them from the command line. A notebook builds them directly::

    from sim.config import SimConfig, HardwareConfig
    cfg = SimConfig(hardware=HardwareConfig(dram_gb=64), eviction="s3fifo")

Policies are given as a shipped name (``"lru"``), a dotted path, ``"file.py:Class"``, or a
callable returning a fresh policy (a class or ``functools.partial``); see
:func:`policies.registry.resolve`. Units are in the field names (``_gb`` = 1e9 bytes,
``_gbps`` = 1e9 bytes/s, ``_s`` = seconds).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

PolicyRef = str | Callable[..., Any]

MODES = ("serve", "replay")
TIER_NAMES = ("hbm", "dram", "ssd", "remote")  # top first
SHARED_TIERS = ("remote",)  # one pool for all replicas; the others are per replica
PREEMPTION_MODES = ("recompute", "swap")
KV_LOAD_MODES = ("always", "if_faster")
KV_LOAD_OVERLAP_MODES = ("none", "layerwise")
DATASHEET_PROFILE = "datasheet"  # hardware.profile value: the GPU's datasheet roofline, measured profile or not


@dataclass
class ModelConfig:
    """Which model is served; overrides change how its KV cache is stored."""

    name: str = "llama-3.1-8b"  # one of hwmodels.models.MODELS
    # A Hugging Face config.json to read the model's shape from instead (name is then ignored):
    # a decoder with grouped-query attention and a gated MLP, dense or a mixture of experts (hwmodels.models).
    config_json: str | None = None
    kv_bytes_per_element: float | None = None  # None: the model's (2 = bf16); 1 = FP8 KV
    kv_compression_ratio: float = 1.0  # bytes kept / bytes raw, for KV compression schemes
    # vLLM's max_model_len: requests whose prompt + output exceed it are refused. None: the
    # model's own limit; a value may lower it, never raise it past what the model was trained on.
    max_context_tokens: int | None = None


@dataclass
class HardwareConfig:
    """One replica's GPUs, memory tiers and links, and the KV pool the replicas share.

    ``hbm_gb`` is the HBM given to the KV cache per replica. Left ``None`` it is what vLLM
    would get: ``gpu_memory_utilization x memory x tensor_parallel`` minus the weights and an
    activation reserve. DRAM and SSD tiers exist when their size is above zero, one of each
    per replica. ``remote_gb`` above zero adds a KV pool below them that every replica reads
    and writes over its network link (Mooncake Store, LMCache's remote backend, SGLang
    HiCache's shared storage): a prefix one replica computed is a hit for the others.
    ``pool_gbps`` caps what the pool's servers deliver to (and take from) all replicas
    together, as one cache server with one NIC does for a whole rack.
    """

    gpu: str = "h100-sxm"
    # Timing profile: None = the shipped calibrated profile measured on this GPU where there is
    # one (H100 SXM, H200), else its datasheet roofline; "datasheet" = the roofline regardless;
    # or a profile's name or directory (kvsim-calibrate fit).
    profile: str | None = None
    tensor_parallel: int = 1
    n_replicas: int = 1
    gpu_memory_utilization: float = 0.9
    activation_reserve_gb: float = 2.0  # per GPU, for activations and CUDA graphs
    hbm_gb: float | None = None
    dram_gb: float = 0.0
    ssd_gb: float = 0.0
    pcie_gbps: float | None = None  # per direction; None = the profile's copy model
    pcie_latency_s: float | None = None  # per copy; None = the profile's copy model
    # One NVMe drive per replica: its reads and writes take turns on it (sim.links), each at its rate.
    ssd_read_gbps: float = 7.0
    ssd_write_gbps: float = 5.0
    ssd_latency_s: float = 100e-6  # per transfer to or from the SSD, not holding it (sim.links)
    remote_gb: float = 0.0  # the shared pool's capacity, for all replicas together
    net_gbps: float = 25.0  # per GPU and direction to the pool: a 200 Gb/s RDMA NIC each
    net_latency_s: float = 20e-6  # per transfer to or from the pool, not holding the NIC (sim.links)
    # The pool servers' own bandwidth per direction, all replicas together; None = they keep
    # up with every replica's NIC (a pool spread over as many nodes as there are replicas).
    pool_gbps: float | None = None
    copies_per_block: int | None = None  # copy calls per block moved; None = 2 x layers (K, V paged per layer)
    # Price the SM clock's fall under the board's power cap when busy (hwmodels.clock), for a
    # profile that measured it (the calibrated ones); False: every step at full clock.
    power_cap: bool = True


@dataclass
class TierConfig:
    """Block size and, optionally, tier capacities in blocks (these override ``*_gb``).

    ``block_tokens`` is the engine's KV block; ``None`` takes the trace's hash block size.
    Replay mode needs only this group: ``kvsim mode=replay tiers.hbm_blocks=2000``.
    """

    block_tokens: int | None = None
    hbm_blocks: int | None = None
    dram_blocks: int | None = None
    ssd_blocks: int | None = None
    remote_blocks: int | None = None  # the shared pool, for all replicas together


@dataclass
class EngineConfig:
    """Iteration-level scheduling knobs, named as vLLM names them."""

    max_num_seqs: int = 256  # max running requests per replica
    max_num_batched_tokens: int = 8192  # token budget per step (chunked prefill)
    preemption: str = "recompute"  # or "swap"
    iteration_overhead_s: float = 0.001  # host-side scheduling per step
    # A prefix hit in DRAM or SSD is loaded "always" (vLLM + LMCache, SGLang HiCache), or only
    # "if_faster" than recomputing its tokens, given the links' queues (load-or-recompute, as
    # in Cake): with small blocks copied layer by layer, or a congested link, recomputing wins.
    kv_load: str = "always"
    # When a load from DRAM runs: "none", before the request's first prefill step (vLLM's
    # OffloadingConnector loads asynchronously and schedules the request once its KV is in;
    # LMCache's default retrieve also completes before the forward pass); "layerwise", during
    # it, layer by layer (SGLang HiCache, LMCache use_layerwise): the request joins the step at
    # once and the step ends no earlier than the load's landing plus one layer's compute.
    kv_load_overlap: str = "none"


@dataclass
class SLOConfig:
    """Latency targets; a request meets its SLO when both hold."""

    ttft_s: float = 2.0
    tpot_s: float = 0.1


@dataclass
class PowerConfig:
    """GPU power by what the GPU is doing: ``gpu_idle_w`` between steps, ``gpu_active_w``
    through steps with prefill work, ``gpu_decode_w`` through decode-only steps.

    Measured on H100 and H200 (``benchmarks/gpu_power_state.py``): compute-heavy steps hold the
    board at its power limit, back-to-back decode stays below it (590 and 645 W of 700), and an
    idle H100 draws 70 W. ``None`` takes the GPU's figures (``hwmodels.gpus``)."""

    gpu_idle_w: float = 70.0
    gpu_active_w: float | None = None  # None: the GPU's power limit
    gpu_decode_w: float | None = None  # None: the GPU's measured decode draw, else its limit
    joules_per_byte_moved: float = 5e-11  # PCIe/SSD transfers


@dataclass
class SimConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    hardware: HardwareConfig = field(default_factory=HardwareConfig)
    tiers: TierConfig = field(default_factory=TierConfig)
    engine: EngineConfig = field(default_factory=EngineConfig)
    slo: SLOConfig = field(default_factory=SLOConfig)
    power: PowerConfig = field(default_factory=PowerConfig)
    eviction: PolicyRef = "lru"
    # Per-tier overrides of ``eviction`` by tier name, e.g. {"dram": "lru"}: a tier below HBM
    # sees only what HBM evicts, which a policy tuned for the access stream may rank badly.
    tier_eviction: dict[str, PolicyRef] = field(default_factory=dict)
    prefetch: PolicyRef = "none"
    # Every computed block is copied at once to each tier below HBM, as LMCache, SGLang HiCache
    # and vLLM's offloading connector do by default (policies/admission/write_through_all.py).
    admission: PolicyRef = "write_through_all"
    scheduler: PolicyRef = "fcfs"
    routing: PolicyRef = "round_robin"
    mode: str = "serve"
    timeseries_interval_s: float = 1.0
    check_invariants: bool = True  # verify capacity, pinning and accounting as the run goes
