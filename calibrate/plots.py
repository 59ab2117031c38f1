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
    measured mix and the fitted curve. Middle: the all-GEMM mix replay by replay from a rested
    GPU, against the fitted onset. Right, where measured: a layer's GEMMs back to back by token
    rows, their slowdown and the clock-bound share the model counts for them."""
    rows = sorted(power.get("rows", []), key=lambda r: r["m"])
    fig, axes = plt.subplots(1, 3 if rows else 2, figsize=(15 if rows else 10, 3.6))
    left, right = axes[0], axes[1]
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
    if rows:
        m = [r["m"] for r in rows]
        axes[2].plot(
            m, [r["steady_layer_s"] / r["full_layer_s"] for r in rows], "o-", label="slowdown, last second of 3 s"
        )
        axes[2].plot(
            m,
            [clock.gemm_clock_bound_fraction(x) for x in m],
            "s--",
            label="floor on the clock-bound share (roofline split where 0)",
        )
        axes[2].set(xscale="log", xlabel="GEMM token rows", ylabel="x full clock / share")
        axes[2].legend(fontsize=8)
    fig.suptitle(title)
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path
