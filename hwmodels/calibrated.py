"""Calibrated GPU profiles: cost models fitted by ``calibrate/`` from measurements on a GPU.

A profile is a directory under ``hwmodels/profiles/<name>/`` holding ``profile.json`` (fitted
parameters, device, torch and driver versions, date) next to the raw measurements it came
from. :class:`CalibratedProfile` answers the :class:`~hwmodels.profile.GpuProfile` calls from
the fitted parameters with NumPy only (no torch in the simulator):

* GEMM: per measured ``(k, n)`` shape, log-log interpolation of time over the token count
  ``m`` (GEMM efficiency is a staircase of tile and wave effects no single formula fits);
  beyond the measured range, time grows linearly in ``m``; an unmeasured shape borrows the
  nearest measured one (its work scaled by the weight size, its fixed latency kept whole), or
  if none is near, the pooled achieved-FLOP/s curve over ``m`` with an HBM-bandwidth floor.
* Prefill attention: log-log interpolation of the causal part over sequence length per head
  configuration, plus a fitted linear cost for attending to a cached prefix.
* Decode attention: ``a + b * batch + c * batch * context`` per head configuration (a
  memory-bound kernel: time follows the KV bytes read).
* A layer's fused memory-bound kernels (norm, rotary, KV write, SiLU-and-mul): log-log
  interpolation of time over bytes per kernel (each reaches its own fraction of the HBM
  bandwidth, and small ones sit on a latency floor).
* Copies: log-log interpolation of time over bytes per kind (latency-bound below ~1 MiB,
  bandwidth-bound above, with a knee no two-parameter line fits); many back-to-back block
  copies pay a fitted increment per further copy, interpolated over the block size.
"""

from __future__ import annotations

import bisect
import json
import math
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from hwmodels.clock import ClockModel
from hwmodels.gpus import GpuSpec, get_gpu
from hwmodels.profile import (
    ArrayLike,
    attention_pair_work,
    check_copy_kind,
    check_layer_kernel,
    ring_allreduce_s,
    wave_fill,
)

PROFILES_DIR = Path(__file__).resolve().parent / "profiles"
PROFILE_FILE = "profile.json"


def available_profiles() -> list[str]:
    if not PROFILES_DIR.is_dir():
        return []
    return sorted(p.name for p in PROFILES_DIR.iterdir() if (p / PROFILE_FILE).exists())


def profile_measured_on(device_name: str) -> str | None:
    """The shipped calibrated profile measured on a GPU that reports ``device_name`` (as
    ``torch.cuda.get_device_name`` does), if any: what a benchmark on that GPU compares with."""
    for name in available_profiles():
        environment = json.loads((PROFILES_DIR / name / PROFILE_FILE).read_text()).get("environment", {})
        if environment.get("device_name") == device_name:
            return name
    return None


#: The shipped profile that times each GPU unless a config names another. Explicit, so that a
#: user's own fit written next to them (``kvsim-calibrate fit --name ...``) never becomes a
#: default by sorting first.
DEFAULT_PROFILES = {"h100-sxm": "h100-sxm-calibrated", "h200": "h200-calibrated"}


def shipped_profile_for_gpu(gpu_name: str) -> str | None:
    """The shipped calibrated profile that times ``gpu_name`` (a :data:`~hwmodels.gpus.GPUS`
    key) by default, if one was measured on it.

    A fitted profile is the more faithful default (within about 3 % of the measured compiled
    steps where the datasheet roofline is 8-10 % short, README "Calibration")."""
    name = DEFAULT_PROFILES.get(gpu_name)
    return name if name is not None and (PROFILES_DIR / name / PROFILE_FILE).is_file() else None


def _key(*parts: int) -> str:
    return ",".join(str(p) for p in parts)


def _loglog(x: ArrayLike, xs: list[float], ys: list[float]) -> ArrayLike:
    """Interpolate ``log y`` over ``log x``; linear growth in ``x`` beyond the last point."""
    if isinstance(x, (int, float)):
        return _loglog_scalar(float(x), xs, ys)
    lx = np.log(np.maximum(np.asarray(x, dtype=np.float64), 1e-12))
    xs_a, ys_a = np.asarray(xs), np.asarray(ys)
    inside = np.exp(np.interp(lx, xs_a, ys_a))
    past = lx > xs_a[-1]
    if not past.any():
        return inside if inside.ndim else float(inside)  # what np.where would give, priced once
    beyond = np.exp(ys_a[-1]) * np.exp(lx - xs_a[-1])
    out = np.where(past, beyond, inside)
    return out if out.ndim else float(out)


def _loglog_scalar(x: float, xs: list[float], ys: list[float]) -> float:
    """:func:`_loglog` for one number, in plain floats: a simulation prices one step at a time,
    and NumPy's per-call overhead on a 0-d array is most of a step's pricing."""
    lx = math.log(max(x, 1e-12))
    if lx > xs[-1]:
        return math.exp(ys[-1] + lx - xs[-1])
    if lx <= xs[0]:
        return math.exp(ys[0])
    j = bisect.bisect_right(xs, lx) - 1
    if j >= len(xs) - 1:
        return math.exp(ys[-1])
    slope = (ys[j + 1] - ys[j]) / (xs[j + 1] - xs[j])
    return math.exp(ys[j] + slope * (lx - xs[j]))


GEMM_TILE_ROWS = 64  # token-row granularity of cuBLAS's GEMMs on Hopper past a few tiles
GEMM_ROUNDING_FROM = 128  # rows below which a GEMM is priced at its own count (weight-read bound)


def tile_rows(m: ArrayLike) -> ArrayLike:
    """The token rows a GEMM of ``m`` rows is priced at: past :data:`GEMM_ROUNDING_FROM` rows,
    whole tiles of :data:`GEMM_TILE_ROWS`, the last padded (tile quantisation).

    The profile interpolates GEMMs measured at powers of two, but an engine step has any row
    count: a 512-token chunk with 32 decodes is 544 rows. cuBLAS does not pay for a whole
    128-row tile there, nor for 32 rows only: measured on the H100 (2026-11-23, every shipped
    shape), a 544-row GEMM cost a median 44 % of the way from 512 rows to 640 (20-69 % for half
    the shapes). Rounding to 64 rows predicts the step from an aligned count to an unaligned
    one (544, 1,088, 2,064) with a median error of 4.7 % on the H100 and 4.3 % on the H200,
    against 7.0 % and 6.3 % for 128-row tiles and 4.7 % and 4.5 % for none (README; a test
    holds it). Below 128 rows a GEMM is bound by reading its weights and the count barely
    matters, so it is kept.
    """
    if isinstance(m, (int, float)):
        return float(math.ceil(m / GEMM_TILE_ROWS) * GEMM_TILE_ROWS) if m > GEMM_ROUNDING_FROM else float(m)
    rows = np.asarray(m, dtype=np.float64)
    out = np.where(rows > GEMM_ROUNDING_FROM, np.ceil(rows / GEMM_TILE_ROWS) * GEMM_TILE_ROWS, rows)
    return out if out.ndim else float(out)


@dataclass(frozen=True)
class CalibratedProfile:
    name: str
    gpu: GpuSpec
    params: dict[str, Any]
    # Head configurations already looked up: a run asks for the same one at every step.
    _heads_memo: dict[tuple[str, int, int, int], tuple[Any, float]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )
    _prefill_curves: dict[tuple[int, int, int], tuple[np.ndarray, np.ndarray]] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    # ------------------------------------------------------------------ GEMM
    def gemm_s(self, m: ArrayLike, k: int, n: int) -> ArrayLike:
        m = tile_rows(m)
        g = self.params["gemm"]
        shape = g["shapes"].get(_key(k, n))
        if shape is not None:
            return _loglog(m, shape["log_m"], shape["log_s"])
        nearest = self._nearest_gemm_shape(k, n)
        latency = self._gemm_latency_s
        if nearest is not None:
            # A tensor-parallel shard or a sibling model: the closest measured shape, its work
            # scaled by the weight size (both the FLOPs and the weight bytes scale with k x n),
            # its fixed latency kept whole.
            (k0, n0), shape = nearest
            work = np.maximum(_loglog(m, shape["log_m"], shape["log_s"]) - latency, 0.0)
            out = latency + work * (k * n) / (k0 * n0)
            return out if np.ndim(out) else float(out)
        m_arr = np.asarray(m, dtype=np.float64)
        flops_per_s = np.exp(
            np.interp(np.log(np.maximum(m_arr, 1.0)), g["pooled"]["log_m"], g["pooled"]["log_flops_per_s"])
        )
        flops = 2.0 * m_arr * k * n
        nbytes = 2.0 * (m_arr * k + k * n + m_arr * n)
        out = latency + np.maximum(flops / flops_per_s, nbytes / g["bytes_per_s"])
        return out if out.ndim else float(out)

    @cached_property
    def _gemm_latency_s(self) -> float:
        """A GEMM kernel's fixed latency (launch, ramp-up, the last wave's drain): what the
        smallest measured shape took at one token row beyond streaming its weights at the
        profile's bandwidth (2.7 us on the H100, 4.9 us on the H200), the shape where it
        weighs most. It does not shrink with the shape, so a shape priced from a bigger one
        keeps it whole: scaled with the weights, Llama-3.2-1B's 2048 x 2048 projection at one
        row came out 3.6 us on the H100 where it ran 5.4 (README, "Models the calibration
        never saw")."""
        g = self.params["gemm"]
        sizes = {key: tuple(map(int, key.split(","))) for key in g["shapes"]}
        if not sizes:
            return 0.0
        key = min(sizes, key=lambda name: sizes[name][0] * sizes[name][1])
        k, n = sizes[key]
        one_row = float(_loglog(1.0, g["shapes"][key]["log_m"], g["shapes"][key]["log_s"]))
        return max(0.0, one_row - 2.0 * (k + k * n + n) / g["bytes_per_s"])

    def _nearest_gemm_shape(self, k: int, n: int) -> tuple[tuple[int, int], dict] | None:
        """The measured ``(k, n)`` closest in log space, if within a factor of 4 on each side."""
        best, best_d = None, None
        for key, shape in self.params["gemm"]["shapes"].items():
            k0, n0 = map(int, key.split(","))
            dk, dn = abs(np.log(k / k0)), abs(np.log(n / n0))
            if max(dk, dn) <= np.log(4.0) and (best_d is None or dk + dn < best_d):
                best, best_d = ((k0, n0), shape), dk + dn
        return best

    # ------------------------------------------------------------------ attention
    def _heads(self, table_name: str, q_heads: int, kv_heads: int, head_dim: int, *, by: str) -> tuple[Any, float]:
        key = (table_name, q_heads, kv_heads, head_dim)
        found = self._heads_memo.get(key)
        if found is None:
            found = self._heads_memo[key] = self._match_heads(
                self.params[table_name], q_heads, kv_heads, head_dim, by=by
            )
        return found

    def _match_heads(
        self, table: dict[str, Any], q_heads: int, kv_heads: int, head_dim: int, *, by: str
    ) -> tuple[Any, float]:
        """Parameters for a head configuration and a scale factor for an unmeasured one.

        An unmeasured configuration (a tensor-parallel shard, a new model) borrows the measured
        one with the same head dimension (else any) and the closest GQA ratio, scaled by the
        work that bounds the kernel: ``by="query"`` for prefill, whose FLOPs follow query heads
        x head dimension; ``by="kv"`` for decode, which reads the cache and follows KV heads x
        head dimension. The two differ for a model whose ratio was not measured (Llama-3.2-3B's
        24 query heads on 8 KV heads borrows 32 on 8: three quarters of the FLOPs, all the KV).
        Another head dimension scales a prefill's matrix work but not its softmax
        (:func:`~hwmodels.profile.attention_pair_work`).
        """
        exact = table.get(_key(q_heads, kv_heads, head_dim))
        if exact is not None:
            return exact, 1.0
        ratio = q_heads / max(kv_heads, 1)
        candidates = [tuple(map(int, k.split(","))) for k in table]
        same_dim = [c for c in candidates if c[2] == head_dim] or candidates
        q0, kv0, dim0 = min(same_dim, key=lambda c: (abs(c[0] / c[1] - ratio), abs(c[0] - q_heads)))
        if by == "kv":
            return table[_key(q0, kv0, dim0)], kv_heads * head_dim / (kv0 * dim0)
        return table[_key(q0, kv0, dim0)], q_heads / q0 * attention_pair_work(head_dim, dim0)

    def attention_prefill_s(
        self,
        seq_len: ArrayLike,
        q_heads: int,
        kv_heads: int,
        head_dim: int,
        prefix_len: ArrayLike = 0,
        step_new_tokens: float | None = None,
    ) -> ArrayLike:
        p, scale = self._heads("prefill", q_heads, kv_heads, head_dim, by="query")
        seq = np.maximum(np.asarray(seq_len, dtype=np.float64), 1.0)
        prefix = np.asarray(prefix_len, dtype=np.float64)
        causal = scale * _loglog(seq, *self._prefill_curve(q_heads, kv_heads, head_dim))
        if "cross_waves" in p:
            a, b = p["cross_waves"]
            fill = wave_fill(seq if step_new_tokens is None else step_new_tokens, q_heads, self._sms())
            cross = a + b * scale * seq * prefix / fill
        else:  # a profile fitted before the wave model: linear in the work
            a, b = p["cross"]
            cross = scale * (a + b * seq * prefix)
        out = causal + np.where(prefix > 0, cross, 0.0)
        return out if np.ndim(out) else float(out)

    def _prefill_curve(self, q_heads: int, kv_heads: int, head_dim: int) -> tuple[np.ndarray, np.ndarray]:
        """The causal prefill curve of a head configuration as arrays, converted once: every
        prefill step prices its chunks on it, and converting the lists each time cost as much
        as the interpolation."""
        key = (q_heads, kv_heads, head_dim)
        found = self._prefill_curves.get(key)
        if found is None:
            p, _ = self._heads("prefill", q_heads, kv_heads, head_dim, by="query")
            found = self._prefill_curves[key] = (np.asarray(p["log_seq"]), np.asarray(p["log_s"]))
        return found

    def attention_wave_fill(self, step_new_tokens: float, q_heads: int) -> float:
        """How full a step's prefill attention keeps the GPU (:func:`wave_fill`): what share of
        its SMs draw power while it runs (:meth:`hwmodels.execution.ExecutionModel.power_bound_s`)."""
        return float(wave_fill(step_new_tokens, q_heads, self._sms()))

    def _sms(self) -> int:
        return int(self.params.get("environment", {}).get("multiprocessors", self.gpu.n_sms))

    def attention_decode_s(
        self, batch: int, ctx_len: ArrayLike, q_heads: int, kv_heads: int, head_dim: int
    ) -> ArrayLike:
        p, scale = self._heads("decode", q_heads, kv_heads, head_dim, by="kv")
        a, b, c = p
        # The fixed cost of the kernel is the same for every head count (4.7-4.9 us for each
        # measured configuration on an H200); only the per-sequence and per-token work scales.
        if isinstance(ctx_len, (int, float)):
            # One step, in plain floats (the same IEEE operations in the same order as the
            # array path, without NumPy's per-call overhead).
            return a + scale * (b * batch + c * batch * float(ctx_len))
        out = a + scale * (b * batch + c * batch * np.asarray(ctx_len, dtype=np.float64))
        return out if np.ndim(out) else float(out)

    # ------------------------------------------------------------------ memory
    def elementwise_s(self, nbytes: ArrayLike) -> ArrayLike:
        e = self.params["elementwise"]
        return e["latency_s"] + np.asarray(nbytes, dtype=np.float64) / e["bytes_per_s"]

    def layer_kernel_s(self, kernel: str, nbytes: ArrayLike) -> ArrayLike:
        """A layer's fused memory-bound kernel (see :data:`~hwmodels.profile.LAYER_KERNELS`),
        interpolated over the bytes it moves; a profile measured before these kernels were
        benchmarked prices them as plain streaming work."""
        check_layer_kernel(kernel)
        fitted = self.params.get("layer_kernels", {}).get(kernel)
        if fitted is None:
            return self.elementwise_s(nbytes)
        return _loglog(nbytes, fitted["log_bytes"], fitted["log_s"])

    def copy_s(self, nbytes: ArrayLike, kind: str) -> ArrayLike:
        check_copy_kind(kind)
        c = self.params["copy"][kind]
        return _loglog(nbytes, c["log_bytes"], c["log_s"])

    def copy_many_s(self, n_copies: ArrayLike, nbytes_each: ArrayLike, kind: str) -> ArrayLike:
        """The first copy costs :meth:`copy_s`; each further one queued behind it costs the
        fitted increment for its size (its issue overhead and its bytes on the link)."""
        check_copy_kind(kind)
        c = self.params["copy"][kind]
        n = np.asarray(n_copies, dtype=np.float64)
        one = self.copy_s(nbytes_each, kind)
        many = c.get("many")
        extra = _loglog(nbytes_each, many["log_bytes"], many["log_s"]) if many else one
        out = np.where(n <= 1, n * one, one + (n - 1) * extra)
        return out if np.ndim(out) else float(out)

    # ------------------------------------------------------------------ tensor parallelism
    @cached_property
    def allreduce_measured_on(self) -> str | None:
        """The profile whose measured all-reduce this one prices: its own where its calibration
        ran ``kvsim-calibrate tp``, else a shipped profile of a GPU on the same interconnect
        (:func:`allreduce_lender`), else ``None`` (the datasheet ring)."""
        if self.params.get("allreduce"):
            return self.name
        return allreduce_lender(self.gpu)

    @cached_property
    def _allreduce_tables(self) -> dict[str, Any] | None:
        source = self.allreduce_measured_on
        if source is None:
            return None
        if source == self.name:
            return self.params["allreduce"]
        return _read_params(source)["allreduce"]

    def allreduce_s(self, nbytes: ArrayLike, tp: int) -> ArrayLike:
        """NCCL's all-reduce as measured (``kvsim-calibrate tp``, on this GPU or one of the same
        interconnect) at the nearest group size measured, scaled by the ring's share of the
        message each GPU moves, ``(tp - 1) / tp``, for another; the datasheet's ring where
        none was measured."""
        tables = self._allreduce_tables
        if tp <= 1 or not tables:
            return ring_allreduce_s(nbytes, tp, self.gpu.nvlink_gbps)
        measured = min((int(size) for size in tables), key=lambda size: (abs(np.log2(size / tp)), -size))
        table = tables[str(measured)]
        seconds = _loglog(np.maximum(nbytes, 1.0), table["log_bytes"], table["log_s"])
        return seconds * ((tp - 1) / tp) / ((measured - 1) / measured)

    @cached_property
    def clock(self) -> ClockModel | None:
        """The sustained-load clock, for a profile whose calibration measured it."""
        params = self.params.get("clock")
        return ClockModel.from_params(params) if params is not None else None

    @property
    def ssd(self) -> dict[str, Any]:
        return self.params.get("ssd", {})


def calibrated_profile_file(name: str) -> Path:
    """The ``profile.json`` of a shipped profile named ``name`` or of the directory ``name``
    (which may not exist)."""
    path = Path(name.removeprefix("calibrated:"))
    directory = path if path.is_dir() else PROFILES_DIR / path
    return directory / PROFILE_FILE


def _read_params(name: str) -> dict[str, Any]:
    file = calibrated_profile_file(name)
    if not file.exists():
        shipped = ", ".join(available_profiles()) or "none"
        raise ValueError(f"unknown calibrated profile {name!r}; shipped profiles: {shipped}")
    return json.loads(file.read_text())


def allreduce_lender(gpu: GpuSpec) -> str | None:
    """The shipped profile (first by name) whose calibration measured NCCL's all-reduce on GPUs
    of ``gpu``'s interconnect, if any.

    Why borrow: an all-reduce of a TP step is NVLink and NCCL work (its fixed latency, the
    protocol's share of the link, the switch), which the GPUs of one fabric share: an H100 SXM
    and an H200 sit on the same NVLink 4 and NVSwitch boards, and NCCL's peak all-reduce bus
    bandwidth on eight of either is the same (about 480 GB/s). Where only one of them was
    measured in pairs, its all-reduce is a better price for the other than the datasheet ring,
    which on the H200's TP steps had twice the error of the measured one."""
    if gpu.interconnect is None:
        return None
    for name in available_profiles():
        params = _read_params(name)
        if params.get("allreduce") and get_gpu(params["gpu"]).interconnect == gpu.interconnect:
            return name
    return None


def allreduce_source_file(name: str) -> Path | None:
    """The ``profile.json`` that calibrated profile ``name`` reads its all-reduce from where
    that is another profile's (:func:`allreduce_lender`); ``None`` where it is its own, the
    datasheet ring, or ``name`` is no calibrated profile. Resume digests it: a re-measured
    lender changes the borrower's TP runs."""
    try:
        params = _read_params(name)
        if params.get("allreduce"):
            return None
        lender = allreduce_lender(get_gpu(params["gpu"]))
    except (ValueError, KeyError):
        return None  # not a calibrated profile, or a broken one: loading it fails later, naming it
    return None if lender is None else calibrated_profile_file(lender)


def load_calibrated_profile(name: str) -> CalibratedProfile:
    """A shipped profile by directory name (``h100-sxm-calibrated``) or a path to one."""
    params = _read_params(name)
    return CalibratedProfile(name=params["name"], gpu=get_gpu(params["gpu"]), params=params)
