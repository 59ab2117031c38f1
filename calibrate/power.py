"""The GPU's clock and power state while it is being measured, from nvidia-smi.

Why: a GPU kept busy by compute-heavy work reaches its power cap within a fraction of a second
and lowers its SM clock (an H100 SXM from 1,980 to about 1,500 MHz), so the same kernel runs
up to 17 % slower than right after idle (``benchmarks/gpu_power_state.py``). A measurement that
does not say which state the GPU was in cannot be compared with another; every calibration
record therefore carries the mean SM clock and the share of samples with the power cap active
over the time it was taken. Nothing here changes the GPU's settings.
"""

from __future__ import annotations

import statistics
import subprocess
import threading
import time
from typing import Any

QUERY = ("clocks.sm", "power.draw", "clocks_event_reasons.active")
POWER_CAP_REASON = 0x4  # nvidia-smi's "SW power cap" clock-event reason
SAMPLE_MS = 50
NEAREST_S = 0.1  # how far from a short window a reading may be and still stand for it


def parse_sample(line: str) -> tuple[float, float, int] | None:
    """(SM clock MHz, power W, clock-event reasons) from one line of the query, or ``None`` for
    a line nvidia-smi could not fill (``[N/A]``, a header, an error message)."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) != len(QUERY):
        return None
    try:
        return float(parts[0]), float(parts[1]), int(parts[2], 16)
    except ValueError:
        return None


def summarise(samples: list[tuple[float, float, int]]) -> dict[str, float] | None:
    """Mean SM clock, mean power and the share of samples under the power cap; ``None`` if
    there are none. nvidia-smi's power reading is itself a mean over about a second, so it lags
    a short window; the clock and the cap flag are current."""
    if not samples:
        return None
    return {
        "sm_clock_mhz": round(statistics.mean(s[0] for s in samples), 1),
        "power_w": round(statistics.mean(s[1] for s in samples), 1),
        "power_capped_share": round(sum(bool(s[2] & POWER_CAP_REASON) for s in samples) / len(samples), 3),
    }


class ClockSampler:
    """nvidia-smi's readings every 50 ms, stamped on arrival by a reader thread. Without
    nvidia-smi it records nothing and every window is ``None``."""

    def __init__(self) -> None:
        self._samples: list[tuple[float, tuple[float, float, int]]] = []
        self._lock = threading.Lock()
        try:
            self._proc: subprocess.Popen[str] | None = subprocess.Popen(
                [
                    "nvidia-smi",
                    f"--query-gpu={','.join(QUERY)}",
                    "--format=csv,noheader,nounits",
                    "-lms",
                    str(SAMPLE_MS),
                ],
                stdout=subprocess.PIPE,
                stderr=subprocess.DEVNULL,
                text=True,
            )
        except OSError:
            self._proc = None
            return
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self._proc is not None and self._proc.stdout is not None
        for line in self._proc.stdout:
            sample = parse_sample(line)
            if sample is not None:
                self.add(time.time(), sample)

    def add(self, at: float, sample: tuple[float, float, int]) -> None:
        """Record a reading taken at ``at`` (``time.time()``)."""
        with self._lock:
            self._samples.append((at, sample))

    def window(self, start: float, end: float) -> dict[str, float] | None:
        """:func:`summarise` of the readings taken between ``start`` and ``end`` (``time.time()``);
        for a window shorter than the sampling period, the reading nearest to it, if within
        :data:`NEAREST_S` (clocks move over a tenth of a second or more)."""
        with self._lock:
            samples = list(self._samples)
        inside = [sample for at, sample in samples if start <= at <= end]
        if inside or not samples:
            return summarise(inside)
        distance, nearest = min((max(start - at, at - end), sample) for at, sample in samples)
        return summarise([nearest]) if distance <= NEAREST_S else None

    def stop(self) -> None:
        if self._proc is not None:
            self._proc.terminate()
            self._proc.wait()

    def __enter__(self) -> ClockSampler:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.stop()
