"""What a run produces: a summary, one row per request, and a time series.

``save`` writes every file atomically, so an interrupted run leaves each file complete or
absent. ``summary.json`` holds only simulated quantities (no wall-clock times, no paths), so
the same config and seed give byte-identical files.
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from traces.atomic import atomic_path, write_text_atomic

SUMMARY_FILE = "summary.json"
REQUESTS_FILE = "requests.parquet"
TIMESERIES_FILE = "timeseries.parquet"
#: The plots :func:`sim.plots.plot_run` may write next to them.
PLOT_FILES = ("hit_ratio_by_tier.png", "latency_cdf.png", "occupancy_and_links.png")


@dataclass
class Result:
    summary: dict[str, Any]
    requests: pd.DataFrame
    timeseries: pd.DataFrame = field(default_factory=pd.DataFrame)

    def save(self, out_dir: str | os.PathLike[str]) -> Path:
        """Write ``requests.parquet``, ``timeseries.parquet`` and, last, ``summary.json``.

        The summary is written last so that its presence marks a complete result (sweeps use
        it to skip runs already done).
        """
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        for frame, name in ((self.requests, REQUESTS_FILE), (self.timeseries, TIMESERIES_FILE)):
            with atomic_path(out / name) as tmp:
                frame.to_parquet(tmp, index=False)
        write_text_atomic(out / SUMMARY_FILE, summary_json(self.summary))
        return out

    @classmethod
    def load(cls, out_dir: str | os.PathLike[str]) -> Result:
        out = Path(out_dir)
        summary = json.loads((out / SUMMARY_FILE).read_text())
        requests = pd.read_parquet(out / REQUESTS_FILE)
        timeseries_path = out / TIMESERIES_FILE
        timeseries = pd.read_parquet(timeseries_path) if timeseries_path.exists() else pd.DataFrame()
        return cls(summary, requests, timeseries)


def summary_json(summary: dict[str, Any]) -> str:
    """Stable JSON: sorted keys, NaN/inf as null, NumPy scalars as plain numbers."""
    return json.dumps(_plain(summary), sort_keys=True, indent=2, allow_nan=False) + "\n"


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return value
