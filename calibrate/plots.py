"""The sustained-load clock as a picture: what ``kvsim-calibrate report`` draws next to its
tables, so that whoever calibrates a GPU sees at a glance whether the fit follows the
measurements (matplotlib's Agg backend; one PNG)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from calibrate.fit import gemm_clock_bound_s, heaviest_mix, mix_multipliers  # noqa: E402
from hwmodels.clock import ClockModel  # noqa: E402
from traces.atomic import atomic_path  # noqa: E402


def plot_clock(power: dict[str, Any], clock: ClockModel, path: Path, title: str) -> Path:
    """Left: the steady multiplier on clock-bound seconds against the clock-bound share, each
    measured mix and the fitted curve. Right: the all-GEMM mix replay by replay from a rested
    GPU, against the fitted onset."""
    fig, (left, right) = plt.subplots(1, 2, figsize=(10, 3.6))
    grid = np.linspace(0.0, 1.0, 101)
    left.plot(grid, [clock.steady_multiplier(c) for c in grid], label="fitted")
    shares, multipliers = zip(*mix_multipliers(power), strict=True)
    left.plot(shares, multipliers, "o", label="GEMM/copy mixes, last second of 3 s")
    left.set(xlabel="clock-bound share of the step at full clock", ylabel="multiplier on clock-bound seconds")
    left.legend(fontsize=8)
    heaviest = heaviest_mix(power)
    replays = np.asarray(heaviest["replay_s"])
    bound = heaviest["n_gemm"] * gemm_clock_bound_s(power)
    at = np.cumsum(replays) - 0.5 * replays
    target = clock.steady_multiplier(bound / heaviest["full_clock_s"])
    right.plot(at, 1.0 + (replays - heaviest["full_clock_s"]) / bound, ".", ms=3, label="measured, per replay")
    right.plot(at, [clock.relax(1.0, target, t) for t in at], label=f"fitted onset, {1e3 * clock.onset_s:.0f} ms")
    right.set(xlabel="seconds back to back from rest", ylabel="multiplier", xlim=(0, min(3.0, float(at[-1]))))
    right.legend(fontsize=8)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
