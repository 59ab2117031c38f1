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


GPUS: dict[str, GpuSpec] = {
    g.name: g
    for g in (
        GpuSpec("h100-sxm", 989.0, 3.35, 85.52, 64.0, 450.0),  # 81,559 MiB
        GpuSpec("h200", 989.0, 4.8, 150.76, 64.0, 450.0),  # 143,771 MiB
        GpuSpec("a100-80gb", 312.0, 2.0, 85.90, 32.0, 300.0),  # 81,920 MiB
    )
}


def get_gpu(name: str) -> GpuSpec:
    try:
        return GPUS[name]
    except KeyError:
        raise ValueError(f"unknown GPU {name!r}; shipped GPUs: {', '.join(sorted(GPUS))}") from None
