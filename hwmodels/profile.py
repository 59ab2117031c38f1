"""GPU cost profiles: how long the primitive operations of LLM serving take on one GPU.

A profile answers the handful of questions the execution model and the link models ask —
GEMM, prefill and decode attention, memory-bound elementwise work, host<->device copies.
:class:`DatasheetProfile` answers from nominal datasheet figures with stated derating;
a calibrated profile (``hwmodels.calibrated``) answers from measurements fitted by
``calibrate/``. Both satisfy :class:`GpuProfile`, so the simulator cannot tell them apart.

Every method accepts NumPy arrays where it takes a size, so the engine can price many decode
steps in one call.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np

from hwmodels.clock import ClockModel
from hwmodels.gpus import GpuSpec, get_gpu

COPY_KINDS = ("h2d", "d2h", "h2d_pageable", "d2h_pageable", "d2d")
#: The fused memory-bound kernels of a transformer layer, as serving engines run them.
LAYER_KERNELS = ("add_rms_norm", "rope", "kv_write", "silu_mul")

ArrayLike = float | np.ndarray

QUERY_TILE = 128  # query rows per thread block of flash-style prefill kernels at head dim 128

# Tensor-core FLOPs a Hopper GPU does in the time of one exponential: 989 TFLOP/s of dense
# bf16 against 3.9 T exponentials/s from its special-function units (the FlashAttention-3
# paper's figures). At head dimension 128 a prefill kernel's softmax costs half as long as its
# matrix work again, and runs mostly beside it rather than hidden under it: Llama-3.2-1B's
# attention at head dimension 64 took 0.62-0.65 of what the (32, 8, 128) measurements say for
# 128 (H100, 2026-11-23), where the FLOPs alone say 0.5 and this ratio says 0.66.
MATMUL_FLOPS_PER_EXP = 989e12 / 3.9e12
ATTENTION_HEAD_DIM = 128  # the head dimension the prefill kernels' efficiencies are quoted at


def attention_pair_work(head_dim: int, reference_dim: int) -> float:
    """A prefill kernel's work per query-key pair at ``head_dim`` relative to ``reference_dim``:
    4 x head_dim FLOPs of matrix work and one exponential, which a smaller head dimension does
    not shrink (:data:`MATMUL_FLOPS_PER_EXP`)."""
    return (4.0 * head_dim + MATMUL_FLOPS_PER_EXP) / (4.0 * reference_dim + MATMUL_FLOPS_PER_EXP)


def wave_fill(new_tokens: ArrayLike, q_heads: int, sms: int) -> ArrayLike:
    """Share of the GPU's thread-block slots a prefill's attention keeps busy.

    Flash-style kernels (FlashAttention, cuDNN) run one thread block per (query tile, query
    head), one per SM at head dim 128, in waves of ``sms`` blocks. Attention over a long
    cached prefix is nearly all full tiles, so its time is its work over the throughput of
    the blocks that run: 256 new tokens of 32 heads make 64 blocks, half an H100's 132 SMs,
    and run at half the rate of 1,024 or more (measured on the H100: 350 TFLOP/s over a 16k
    prefix, against 660-690 for 1,024-2,048 new tokens); 768 tokens make 192 blocks, a wave
    and a half (480). A conversation's next turn on a long cached history is that case.
    """
    if isinstance(new_tokens, (int, float)):
        # One step's count, in plain numbers (NumPy's per-call overhead on 0-d arrays was most
        # of the cost): every value is a whole number below 2**53, so each division is the
        # same correctly rounded one and the result is the array path's to the bit.
        scalar_blocks = math.ceil(max(float(new_tokens), 1.0) / QUERY_TILE) * q_heads
        return scalar_blocks / (math.ceil(scalar_blocks / sms) * sms)
    blocks = np.ceil(np.maximum(np.asarray(new_tokens, dtype=np.float64), 1.0) / QUERY_TILE) * q_heads
    return blocks / (np.ceil(blocks / sms) * sms)


@runtime_checkable
class GpuProfile(Protocol):
    """Timing of primitive operations on one GPU, in seconds."""

    name: str
    gpu: GpuSpec
    #: How the SM clock falls under the power cap (:mod:`hwmodels.clock`); ``None`` where not
    #: measured, and every step runs at full clock.
    clock: ClockModel | None

    def gemm_s(self, m: ArrayLike, k: int, n: int) -> ArrayLike:
        """bf16 ``(m x k) @ (k x n)``."""

    def attention_prefill_s(
        self,
        seq_len: ArrayLike,
        q_heads: int,
        kv_heads: int,
        head_dim: int,
        prefix_len: ArrayLike = 0,
        step_new_tokens: float | None = None,
    ) -> ArrayLike:
        """Causal attention of ``seq_len`` new tokens over ``prefix_len`` cached + themselves.

        ``step_new_tokens``, where given, is the new tokens of every prefill sequence in the
        step, each rounded up to whole query tiles: one kernel runs them together, tiling each
        on its own, so how full the GPU is depends on them all.
        """

    def attention_decode_s(
        self, batch: int, ctx_len: ArrayLike, q_heads: int, kv_heads: int, head_dim: int
    ) -> ArrayLike:
        """One decode step of ``batch`` sequences of mean context ``ctx_len`` (one layer)."""

    def attention_wave_fill(self, step_new_tokens: float, q_heads: int) -> float:
        """Share of the SMs a step's prefill attention keeps busy (1 where the profile cannot
        tell): what of its time draws full power (:mod:`hwmodels.clock`)."""

    def elementwise_s(self, nbytes: ArrayLike) -> ArrayLike:
        """A memory-bound kernel touching ``nbytes`` of HBM (norms, activations, residuals)."""

    def layer_kernel_s(self, kernel: str, nbytes: ArrayLike) -> ArrayLike:
        """One of a layer's fused :data:`LAYER_KERNELS` moving ``nbytes`` of HBM."""

    def copy_s(self, nbytes: ArrayLike, kind: str) -> ArrayLike:
        """One copy of ``nbytes``; ``kind`` is one of :data:`COPY_KINDS`."""

    def copy_many_s(self, n_copies: ArrayLike, nbytes_each: ArrayLike, kind: str) -> ArrayLike:
        """``n_copies`` back-to-back copies of ``nbytes_each`` (per-copy overhead included)."""

    def allreduce_s(self, nbytes: ArrayLike, tp: int) -> ArrayLike:
        """One all-reduce of ``nbytes`` over ``tp`` GPUs of this kind (tensor parallelism)."""


ALLREDUCE_LATENCY_S = 10e-6  # a datasheet all-reduce's fixed cost: kernel launch and handshakes


def ring_allreduce_s(nbytes: ArrayLike, tp: int, link_gbps: float, latency_s: float = ALLREDUCE_LATENCY_S) -> ArrayLike:
    """A ring all-reduce: each GPU sends and receives ``2 (tp - 1) / tp`` of the message over
    its link, plus a fixed cost. What a datasheet can say; NCCL reaches about two thirds of
    NVLink's rate on large messages and far less on mid-sized ones (``kvsim-calibrate tp``)."""
    if tp <= 1:
        return 0.0 * nbytes
    return 2 * (tp - 1) / tp * nbytes / (link_gbps * 1e9) + latency_s


def check_layer_kernel(kernel: str) -> None:
    if kernel not in LAYER_KERNELS:
        raise ValueError(f"unknown layer kernel {kernel!r}; expected one of {', '.join(LAYER_KERNELS)}")


def check_copy_kind(kind: str) -> None:
    if kind not in COPY_KINDS:
        raise ValueError(f"unknown copy kind {kind!r}; expected one of {', '.join(COPY_KINDS)}")


@dataclass(frozen=True)
class DatasheetProfile:
    """A roofline from datasheet numbers, derated by efficiencies typical of real kernels.

    Each operation costs ``max(flops / achievable_flops, bytes / achievable_bandwidth)`` plus a
    kernel launch. The default efficiencies (70 % of peak bf16 for large GEMMs, 88 % of HBM
    bandwidth, 80 % of nominal PCIe) are what well-tuned kernels reach on Hopper/Ampere (the
    HBM figure is the rate at which the calibration measured a kernel streaming its operands
    on an H100 and an H200, 89 % and 87 %: at 80 % decode steps, which stream the weights, came
    out 8-12 % long); they are deliberately simple, and a calibrated profile replaces them with
    fitted curves.
    """

    gpu: GpuSpec
    flops_efficiency: float = 0.7
    hbm_efficiency: float = 0.88
    pcie_efficiency: float = 0.8
    pageable_slowdown: float = 4.0  # pageable copies are staged through a bounce buffer
    kernel_launch_s: float = 4e-6
    copy_latency_s: float = 3e-6  # a pinned host<->device copy's issue and completion
    pageable_copy_latency_s: float = 25e-6
    clock: ClockModel | None = None  # a datasheet says nothing of the power cap's effect

    @property
    def name(self) -> str:
        return f"{self.gpu.name}-datasheet"

    @property
    def _flops(self) -> float:
        return self.gpu.bf16_tflops * 1e12 * self.flops_efficiency

    @property
    def _hbm_bps(self) -> float:
        return self.gpu.hbm_tbps * 1e12 * self.hbm_efficiency

    def _roofline(self, flops: ArrayLike, nbytes: ArrayLike, fill: ArrayLike = 1.0) -> ArrayLike:
        """``fill``: the share of the SMs the kernel keeps busy, which its FLOPs run on."""
        return np.maximum(flops / (self._flops * fill), nbytes / self._hbm_bps) + self.kernel_launch_s

    def gemm_s(self, m: ArrayLike, k: int, n: int) -> ArrayLike:
        flops = 2.0 * m * k * n
        nbytes = 2.0 * (m * k + k * n + m * n)
        return self._roofline(flops, nbytes)

    def attention_prefill_s(
        self,
        seq_len: ArrayLike,
        q_heads: int,
        kv_heads: int,
        head_dim: int,
        prefix_len: ArrayLike = 0,
        step_new_tokens: float | None = None,
    ) -> ArrayLike:
        # Each new token attends to the prefix and, causally, to half of the new tokens. The
        # FLOPs run only on the SMs the kernel's thread blocks fill (:func:`wave_fill`, over
        # the whole step's new tokens, as a varlen kernel runs every chunk in one launch): a
        # short turn on a long cached history keeps half an H100 busy and takes twice its FLOPs'
        # time (measured: 256 new tokens on 32,512 cached, 21 ms a step where the full-GPU
        # roofline said 14).
        # The efficiency holds at head dimension 128, matrix work and softmax measured together
        # (attention_pair_work scales it to another).
        keys_per_query = prefix_len + (seq_len + 1) / 2.0
        pair_flops = 4.0 * ATTENTION_HEAD_DIM * attention_pair_work(head_dim, ATTENTION_HEAD_DIM)
        flops = pair_flops * q_heads * seq_len * keys_per_query
        nbytes = 2.0 * (2 * seq_len * q_heads * head_dim + 2 * (prefix_len + seq_len) * kv_heads * head_dim)
        fill = wave_fill(seq_len if step_new_tokens is None else step_new_tokens, q_heads, self.gpu.n_sms)
        return self._roofline(flops, nbytes, fill)

    def attention_decode_s(
        self, batch: int, ctx_len: ArrayLike, q_heads: int, kv_heads: int, head_dim: int
    ) -> ArrayLike:
        flops = 4.0 * batch * q_heads * head_dim * ctx_len
        nbytes = 2.0 * batch * (2 * ctx_len * kv_heads * head_dim + 2 * q_heads * head_dim)
        return self._roofline(flops, nbytes)

    def attention_wave_fill(self, step_new_tokens: float, q_heads: int) -> float:
        """The share of the GPU's SMs a step's prefill attention keeps busy (:func:`wave_fill`)."""
        return float(wave_fill(step_new_tokens, q_heads, self.gpu.n_sms))

    def elementwise_s(self, nbytes: ArrayLike) -> ArrayLike:
        return nbytes / self._hbm_bps + self.kernel_launch_s

    def layer_kernel_s(self, kernel: str, nbytes: ArrayLike) -> ArrayLike:
        """The datasheet knows no kernel's efficiency: each streams at the datasheet's rate."""
        check_layer_kernel(kernel)
        return self.elementwise_s(nbytes)

    def copy_s(self, nbytes: ArrayLike, kind: str) -> ArrayLike:
        return self.copy_many_s(1, nbytes, kind)

    def copy_many_s(self, n_copies: ArrayLike, nbytes_each: ArrayLike, kind: str) -> ArrayLike:
        check_copy_kind(kind)
        if kind == "d2d":
            # A device-to-device copy reads and writes every byte.
            return n_copies * (self.kernel_launch_s + 2.0 * nbytes_each / self._hbm_bps)
        bps = self.gpu.pcie_gbps * 1e9 * self.pcie_efficiency
        latency = self.copy_latency_s
        if kind.endswith("_pageable"):
            bps /= self.pageable_slowdown
            latency = self.pageable_copy_latency_s
        return n_copies * (latency + nbytes_each / bps)

    def allreduce_s(self, nbytes: ArrayLike, tp: int) -> ArrayLike:
        return ring_allreduce_s(nbytes, tp, self.gpu.nvlink_gbps)


_CALIBRATED_SUFFIX = "-calibrated"


def load_profile(name: str) -> GpuProfile:
    """A profile by name: ``<gpu>-datasheet``, a shipped calibrated profile, or the directory
    of one (``kvsim-calibrate fit -o DIR``).

    ``"h100-sxm"`` alone means its datasheet profile.
    """
    if name.endswith(_CALIBRATED_SUFFIX) or name.startswith("calibrated:") or (Path(name) / "profile.json").is_file():
        from hwmodels.calibrated import load_calibrated_profile

        return load_calibrated_profile(name)
    base = name.removesuffix("-datasheet")
    return DatasheetProfile(get_gpu(base))
