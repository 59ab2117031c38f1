"""Reading results back: one run directory, or a whole sweep as one table.

A run directory is complete when it holds ``summary.json`` (written last, atomically); a run
that failed holds ``error.json`` instead. :func:`load_sweep` lists both, so a failed run is
visible next to the others rather than silently missing. No hydra import: it only reads files.
"""

from __future__ import annotations

import difflib
import json
import os
from pathlib import Path
from typing import Any

import pandas as pd

from sim.result import SUMMARY_FILE, Result

ERROR_FILE = "error.json"
CONFIG_FILE = "config.json"
OVERRIDES_FILE = "overrides.json"


def load_run(run_dir: str | os.PathLike[str]) -> Result:
    """The :class:`~sim.result.Result` saved in ``run_dir``."""
    return Result.load(run_dir)


def _run_dirs(root: Path) -> list[Path]:
    marks = {p.parent for name in (SUMMARY_FILE, ERROR_FILE, OVERRIDES_FILE) for p in root.rglob(name)}
    return sorted(marks)


def _overrides(run_dir: Path) -> dict[str, Any]:
    path = run_dir / OVERRIDES_FILE
    if not path.exists():
        return {}
    return {f"override.{k}": v for k, v in json.loads(path.read_text()).items()}


def load_sweep(sweep_dir: str | os.PathLike[str]) -> pd.DataFrame:
    """One row per run under ``sweep_dir``: its overrides, status and summary metrics.

    ``status`` is ``ok`` (complete), ``failed`` (with ``error``) or ``incomplete`` (started,
    neither finished nor failed: an interrupted run). Rows are sorted by run directory so the
    table is the same whichever order the runs finished in.
    """
    root = Path(sweep_dir)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: no such sweep directory")
    rows = []
    for run_dir in _run_dirs(root):
        row: dict[str, Any] = {"run_dir": str(run_dir.relative_to(root)), **_overrides(run_dir)}
        if (run_dir / SUMMARY_FILE).exists():
            row["status"] = "ok"
            row.update(json.loads((run_dir / SUMMARY_FILE).read_text()))
        elif (run_dir / ERROR_FILE).exists():
            error = json.loads((run_dir / ERROR_FILE).read_text())
            row.update(status="failed", error=f"{error.get('type')}: {error.get('message')}")
        else:
            row["status"] = "incomplete"
        rows.append(_flatten(row))
    return pd.DataFrame(rows)


def _flatten(row: dict[str, Any]) -> dict[str, Any]:
    """Nested summary entries (e.g. ``rejected_by_reason``) become dotted columns."""
    flat: dict[str, Any] = {}
    for key, value in row.items():
        if isinstance(value, dict):
            for inner, v in _flatten(value).items():
                flat[f"{key}.{inner}"] = v
        else:
            flat[key] = value
    return flat


#: Summary metrics where more is better; every other metric (latencies, stalls, energy,
#: recompute, evictions) is better lower.
HIGHER_IS_BETTER = ("hit_ratio", "attainment", "goodput", "throughput", "tokens_per_s")
#: Counts of what a run achieved (requests finished, tokens generated, prefetched blocks a
#: request then used), better higher although no word above names them.
HIGHER_IS_BETTER_COUNTS = ("n_finished", "output_tokens", "prefetch_used_blocks")


def higher_is_better(metric: str) -> bool:
    return metric in HIGHER_IS_BETTER_COUNTS or any(word in metric for word in HIGHER_IS_BETTER)


def check_metrics(table: pd.DataFrame, metrics: list[str]) -> None:
    """``KeyError`` naming the first of ``metrics`` that is not a numeric summary column of the
    sweep table, with the closest one (a config column such as ``eviction`` cannot rank)."""
    known = [
        c
        for c in table.columns
        if not c.startswith("override.")
        and c not in ("run_dir", "status")
        and pd.api.types.is_numeric_dtype(table[c])
        and not pd.api.types.is_bool_dtype(table[c])
    ]
    for metric in metrics:
        if metric not in known:
            what = "not a numeric metric" if metric in table.columns else "no metric"
            close = difflib.get_close_matches(metric, known, n=1)
            hint = f"did you mean {close[0]}?" if close else f"metrics: {', '.join(sorted(known))}"
            raise KeyError(f"{what} {metric!r} in the sweep; {hint}")


def rank_runs(table: pd.DataFrame, metrics: list[str]) -> pd.DataFrame:
    """The completed runs of a sweep table (:func:`load_sweep`), best first by ``metrics[0]``
    (the rest break ties, each in its own direction: see :data:`HIGHER_IS_BETTER`): the
    overrides that differ between runs (``default`` where a run left one at its default), then
    the metrics. What answers "which configuration wins on my traffic" after ``kvsim -m``."""
    check_metrics(table, metrics)
    done = table[table["status"] == "ok"].copy()
    overrides = [c for c in done.columns if c.startswith("override.")]
    done[overrides] = done[overrides].astype(object).where(done[overrides].notna(), "default")
    varying = [c for c in overrides if done[c].astype(str).nunique() > 1]
    ordered = done.sort_values(
        metrics + ["run_dir"], ascending=[not higher_is_better(m) for m in metrics] + [True], kind="stable"
    )
    out = ordered[varying + metrics].rename(columns=lambda c: c.removeprefix("override."))
    out.index = range(1, len(out) + 1)
    return out
