"""Datasheet figures of the GPUs and host links kvsim ships (DESIGN.md's table).

These are the *nominal* numbers; a :class:`~hwmodels.profile.DatasheetProfile` derates them,
and a calibrated profile replaces them with measurements.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class GpuSpec:
    name: str
    bf16_tflops: float  # dense
    hbm_tbps: float  # TB/s = 1e12 B/s
    memory_gb: float  # 1e9 bytes as the driver reports them (a datasheet's "80 GB" is 80 GiB)
    pcie_gbps: float  # GB/s per direction, nominal
    nvlink_gbps: float  # GB/s per direction per GPU, for tensor-parallel all-reduce
    power_limit_w: float  # board power limit (TDP): what compute-heavy steps draw, held at it
    n_sms: int  # streaming multiprocessors: how many thread blocks of a flash-style kernel run at once
    # Measured draw of back-to-back decode steps (memory-bound, below the limit); None where not
    # measured, and the limit stands in for it.
    decode_power_w: float | None = None
    # The GPU-to-GPU fabric of its usual board (NVLink generation and switch): GPUs that share
    # it run NCCL's all-reduce alike, so one's measured all-reduce times the other's.
    interconnect: str | None = None


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        # 81,559 MiB; decode: Llama-3-8B batch 64 x 1,024 and 32 x 8,192, 602 and 572 W
        # (nvidia-smi, 8 s back to back, 2026-11-23, benchmarks/gpu_power_state.py)
        GpuSpec("h100-sxm", 989.0, 3.35, 85.52, 64.0, 450.0, 700.0, 132, 590.0, "nvlink4-nvswitch"),
        # 143,771 MiB; decode: the same steps, 620-666 W on two lent H200s (2026-11-23)
        GpuSpec("h200", 989.0, 4.8, 150.76, 64.0, 450.0, 700.0, 132, 645.0, "nvlink4-nvswitch"),
        # 81,920 MiB; SXM4 400 W
        GpuSpec("a100-80gb", 312.0, 2.0, 85.90, 32.0, 300.0, 400.0, 108, interconnect="nvlink3-nvswitch"),
    )
}


def get_gpu(name: str) -> GpuSpec:
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; shipped GPUs: {', '.join(sorted(GPUS))}") from None
