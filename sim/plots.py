"""PNG plots of one run: latency CDFs, hit ratio per tier, occupancy and link use over time.

Uses matplotlib's Agg backend (no display needed); every function writes one file and returns
its path, so the CLI, notebooks and tests can call them alike.
"""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from sim.config import SHARED_TIERS, TIER_NAMES  # noqa: E402
from sim.result import PLOT_FILES, Result  # noqa: E402
from traces.atomic import atomic_path  # noqa: E402

TIERS = TIER_NAMES


def _save(fig: plt.Figure, path: Path) -> Path:
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=110, bbox_inches="tight", format="png")
    plt.close(fig)
    return path


def latency_cdfs(requests: pd.DataFrame, path: Path) -> Path:
    fig, axes = plt.subplots(1, 2, figsize=(10, 3.6))
    for ax, column, label in ((axes[0], "ttft_s", "TTFT (s)"), (axes[1], "tpot_s", "TPOT (s)")):
        values = np.sort(requests[column].dropna().to_numpy())
        if len(values):
            ax.plot(values, np.arange(1, len(values) + 1) / len(values))
            for q in (0.5, 0.99):
                ax.axvline(np.quantile(values, q), ls=":", color="grey")
        ax.set_xlabel(label)
        ax.set_ylabel("fraction of requests")
        ax.grid(alpha=0.3)
    axes[0].set_title("time to first token")
    axes[1].set_title("time per output token")
    return _save(fig, path)


def shares_by_source(summary: dict) -> dict[str, float]:
    """Share of prompt tokens (serve) or block accesses (replay) served by each tier, and
    recomputed. A single-tier replay reports only ``block_hit_ratio``: those hits are HBM's."""
    tiers = [t for t in TIERS if f"token_hit_ratio_{t}" in summary or f"{t}_hit_ratio" in summary]
    shares = {t: summary.get(f"token_hit_ratio_{t}", summary.get(f"{t}_hit_ratio", 0.0)) for t in tiers}
    if not shares and "block_hit_ratio" in summary:
        shares = {"hbm": summary["block_hit_ratio"]}
    shares["recomputed"] = summary.get("recompute_ratio", 1.0 - summary.get("block_hit_ratio", sum(shares.values())))
    return shares


def hit_ratio_by_tier(summary: dict, path: Path) -> Path:
    shares = shares_by_source(summary)
    fig, ax = plt.subplots(figsize=(5, 3.4))
    ax.bar(
        list(shares),
        list(shares.values()),
        color=["tab:green", "tab:blue", "tab:purple", "tab:orange"][: len(shares) - 1] + ["tab:red"],
    )
    ax.set_ylabel("share of prompt tokens" if "recompute_ratio" in summary else "share of block accesses")
    ax.set_ylim(0, 1)
    ax.set_title("where prompt KV came from")
    return _save(fig, path)


def occupancy_and_links(timeseries: pd.DataFrame, path: Path) -> Path:
    per_time = timeseries.groupby("time_s").sum(numeric_only=True)
    for tier in SHARED_TIERS:
        if f"{tier}_used_blocks" in per_time:
            # Every replica's row shows the one shared pool: count it once.
            per_time[f"{tier}_used_blocks"] = timeseries.groupby("time_s")[f"{tier}_used_blocks"].max()
    fig, axes = plt.subplots(2, 1, figsize=(10, 5.5), sharex=True)
    for tier in TIERS:
        if f"{tier}_used_blocks" in per_time:
            axes[0].plot(per_time.index, per_time[f"{tier}_used_blocks"], label=f"{tier} used")
    axes[0].set_ylabel("blocks (all replicas)")
    axes[0].legend(loc="upper left")
    axes[0].grid(alpha=0.3)
    means = timeseries.groupby("time_s").mean(numeric_only=True)
    for column in [c for c in means if c.endswith("_utilisation")]:
        axes[1].plot(means.index, means[column], label=column.removesuffix("_utilisation"))
    axes[1].set_ylabel("link utilisation (mean over replicas)")
    axes[1].set_xlabel("simulated time (s)")
    axes[1].set_ylim(0, 1.05)
    axes[1].legend(loc="upper left")
    axes[1].grid(alpha=0.3)
    return _save(fig, path)


def plot_run(result: Result, out_dir: str | os.PathLike[str]) -> list[Path]:
    """Every plot that applies to ``result`` (replay runs have no latencies or time series)."""
    out = Path(out_dir)
    by_tier, latency, occupancy = (out / name for name in PLOT_FILES)
    paths = [hit_ratio_by_tier(result.summary, by_tier)]
    if "ttft_s" in result.requests:
        paths.append(latency_cdfs(result.requests, latency))
    if len(result.timeseries):
        paths.append(occupancy_and_links(result.timeseries, occupancy))
    return paths
