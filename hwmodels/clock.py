"""The SM clock under the board's power cap: how much slower a step runs on a busy GPU.

Why: an H100 SXM or H200 running compute-heavy work back to back reaches its 700 W power cap
within a tenth of a second, and the power limiter lowers the SM clock until the draw fits;
memory-bound work draws less and keeps the full clock. A profile's costs are the GPU at full
clock (its microbenchmarks rest before each timing), so without this a simulated server kept
busy by prefill would run 5-15 % faster than the real one (README, Calibration).

The model, fitted by ``kvsim-calibrate`` from mixes of GEMMs and copies
(:mod:`calibrate.sustained`):

* A step's *clock-bound* seconds are what its kernels take beyond moving their bytes at the
  GPU's streaming bandwidth (a roofline split: all of a large GEMM's time, little of a decode
  GEMM's, none of decode attention's), but for a GEMM at least the share measured for its
  token rows (a layer's GEMMs run back to back at 16-4,096 rows: from ~192 rows on they slow
  nearly as much as a prefill's, where the roofline split would count them mostly
  memory-bound). Only they stretch when the clock falls.
* Run back to back, a step whose clock-bound share of its full-clock time is ``c`` settles at a
  *multiplier* ``m(c)`` on its clock-bound seconds: 1 below a GPU-specific share (the draw fits
  under the cap), rising to about 1.2-1.3 for GEMMs alone. Interpolated between measured mixes.
  Prefill attention counts in ``c`` only as far as it fills the SMs (what the limiter answers
  is power, and attention on half the SMs draws half), though all its seconds stretch.
* The multiplier is GPU state. It approaches the current step's steady value exponentially, with
  one time constant when heating (the limiter pulls the clock down within ~0.1 s) and another
  when cooling (idle or lighter work; recovered within ~0.1 s).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np


@dataclass(frozen=True)
class ClockModel:
    shares: tuple[float, ...]  # clock-bound share of a step's full-clock time, ascending from 0
    multipliers: tuple[float, ...]  # steady multiplier on clock-bound seconds at each share (>= 1)
    onset_s: float  # time constant of the clock falling under load
    recovery_s: float  # time constant of the clock recovering
    stream_bytes_per_s: float  # the GPU's streaming (device-to-device copy) bandwidth
    # Measured per token rows: the least share of a GEMM's time that is clock-bound (see
    # gemm_clock_bound_fraction); empty where not measured.
    gemm_rows: tuple[int, ...] = ()
    gemm_clock_bound_fractions: tuple[float, ...] = ()

    def __post_init__(self) -> None:
        if len(self.shares) != len(self.multipliers) or len(self.shares) < 2:
            raise ValueError("clock model: shares and multipliers need the same length, at least 2")
        if list(self.shares) != sorted(self.shares) or self.shares[0] != 0.0:
            raise ValueError(f"clock model: shares must ascend from 0, got {self.shares}")
        if min(self.multipliers) < 1.0:
            raise ValueError(f"clock model: multipliers must be >= 1, got {self.multipliers}")
        if self.onset_s <= 0 or self.recovery_s <= 0 or self.stream_bytes_per_s <= 0:
            raise ValueError("clock model: time constants and bandwidth must be positive")
        if len(self.gemm_rows) != len(self.gemm_clock_bound_fractions):
            raise ValueError("clock model: gemm_rows and gemm_clock_bound_fractions need the same length")
        # As arrays once: np.interp converts a tuple at every call, and a run asks per step.
        object.__setattr__(self, "_shares", np.asarray(self.shares, dtype=np.float64))
        object.__setattr__(self, "_multipliers", np.asarray(self.multipliers, dtype=np.float64))
        object.__setattr__(self, "_log_gemm_rows", np.log(self.gemm_rows) if self.gemm_rows else None)
        object.__setattr__(self, "_gemm_fractions", np.asarray(self.gemm_clock_bound_fractions, dtype=np.float64))

    @classmethod
    def from_params(cls, params: dict[str, Any]) -> ClockModel:
        return cls(
            shares=tuple(params["shares"]),
            multipliers=tuple(params["multipliers"]),
            onset_s=params["onset_s"],
            recovery_s=params["recovery_s"],
            stream_bytes_per_s=params["stream_bytes_per_s"],
            gemm_rows=tuple(params.get("gemm_rows", ())),
            gemm_clock_bound_fractions=tuple(params.get("gemm_clock_bound_fractions", ())),
        )

    def gemm_clock_bound_fraction(self, rows: float | np.ndarray) -> float | np.ndarray:
        """The least share of a GEMM of ``rows`` token rows that follows the clock, as measured
        with a layer's GEMMs run back to back (``kvsim-calibrate power``): 0 below the first
        row count that slowed, interpolated over log rows between them, the last one's beyond.
        A mid-sized GEMM keeps tensor cores and HBM busy at once: it draws as much power as a
        prefill's and slows nearly as much, though a roofline counts it memory-bound."""
        if not self.gemm_rows:
            return 0.0 * np.asarray(rows, dtype=np.float64)
        log_rows = np.log(np.maximum(np.asarray(rows, dtype=np.float64), 1.0))
        first = np.log(self.gemm_rows[0])
        inside = np.interp(log_rows, self._log_gemm_rows, self._gemm_fractions)
        out = np.where(log_rows < first, 0.0, inside)
        return out if out.ndim else float(out)

    def steady_multiplier(self, share: float) -> float:
        """Multiplier on clock-bound seconds once work of this share has run for a while."""
        return float(np.interp(share, self._shares, self._multipliers))

    def _tau(self, multiplier: float, target: float) -> float:
        """Heating and cooling run at their own pace."""
        return self.onset_s if target > multiplier else self.recovery_s

    def relax(self, multiplier: float, target: float, seconds: float) -> float:
        """The multiplier after ``seconds`` of work whose steady multiplier is ``target``
        (1.0 for idle)."""
        return target + (multiplier - target) * math.exp(-seconds / self._tau(multiplier, target))

    def mean_multiplier(self, multiplier: float, target: float, seconds: float) -> float:
        """The multiplier averaged over ``seconds`` of such work."""
        if seconds <= 0:
            return multiplier
        tau = self._tau(multiplier, target)
        return target + (multiplier - target) * tau / seconds * (1.0 - math.exp(-seconds / tau))

    def step_s(
        self, multiplier: float, full_s: float, clock_bound_s: float, power_bound_s: float | None = None
    ) -> tuple[float, float]:
        """``(seconds, steady multiplier)`` of a step of ``full_s`` at full clock,
        ``clock_bound_s`` of it clock-bound, started with the GPU at ``multiplier``. The steady
        multiplier follows the share of ``power_bound_s`` (the clock-bound seconds that draw
        full power; all of them by default). The clock moves during a long step, so its
        duration solves ``d = (full - clock_bound) + clock_bound * mean(d)``; three fixed-point
        rounds settle it to well under 0.1 %. The GPU's multiplier afterwards is :meth:`relax`
        toward the steady one over the seconds it ran."""
        if full_s <= 0:
            return full_s, multiplier
        target = self.steady_multiplier((clock_bound_s if power_bound_s is None else power_bound_s) / full_s)
        seconds = full_s + clock_bound_s * (multiplier - 1.0)
        for _ in range(3):
            seconds = full_s + clock_bound_s * (self.mean_multiplier(multiplier, target, seconds) - 1.0)
        return seconds, target

    def steps_s(self, multiplier: float, full_s: np.ndarray, clock_bound_s: float) -> tuple[np.ndarray, float]:
        """:meth:`step_s` for consecutive steps of a stable batch (decode: each has the same
        ``clock_bound_s``, as what grows with the context, decode attention, is not
        clock-bound), vectorised: each step is priced at the multiplier of its midpoint on the
        full-clock timeline. Decode steps are mostly memory-bound, so the approximation moves
        them by far less than their own clock-bound seconds."""
        target = self.steady_multiplier(clock_bound_s / float(full_s[0]))
        midpoints = np.cumsum(full_s) - 0.5 * full_s
        at = target + (multiplier - target) * np.exp(-midpoints / self._tau(multiplier, target))
        return full_s + clock_bound_s * (at - 1.0), target
