"""Arrival processes: when requests (or sessions) start.

* ``poisson`` — exponential gaps at ``rate`` per second: independent users.
* ``gamma`` — gamma gaps with mean ``1/rate`` and coefficient of variation ``cv``; ``cv > 1``
  gives the bursts real services show (BurstGPT measured cv well above 1).
* ``on_off`` — Poisson at ``rate`` during ``on_s`` periods separated by silent ``off_s``
  periods: diurnal or batch-job load in miniature.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

PROCESSES = ("poisson", "gamma", "on_off")


@dataclass(frozen=True)
class ArrivalProcess:
    kind: str = "poisson"
    rate: float = 1.0  # mean arrivals per second (during "on" periods for on_off)
    cv: float = 2.0  # gamma only: std / mean of the gaps
    on_s: float = 60.0  # on_off only
    off_s: float = 60.0  # on_off only

    def __post_init__(self) -> None:
        if self.kind not in PROCESSES:
            raise ValueError(f"arrival process {self.kind!r} is not one of {', '.join(PROCESSES)}")
        if not self.rate > 0:
            raise ValueError(f"arrival rate must be > 0, got {self.rate}")
        if not self.cv > 0:
            raise ValueError(f"arrival cv must be > 0, got {self.cv}")
        if not (self.on_s > 0 and self.off_s >= 0):
            raise ValueError(f"on_off needs on_s > 0 and off_s >= 0, got {self.on_s}, {self.off_s}")

    def times(self, n: int, rng: np.random.Generator) -> np.ndarray:
        """``n`` non-decreasing arrival times starting near 0."""
        if self.kind == "poisson":
            gaps = rng.exponential(1.0 / self.rate, n)
        elif self.kind == "gamma":
            shape = 1.0 / self.cv**2
            gaps = rng.gamma(shape, 1.0 / (self.rate * shape), n)
        else:
            busy = np.cumsum(rng.exponential(1.0 / self.rate, n))
            # Stretch "busy" time over on/off cycles: each on_s of busy time is followed by off_s.
            return busy + np.floor(busy / self.on_s) * self.off_s
        return np.cumsum(gaps)
