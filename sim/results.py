"""Reading results back: one run directory, or a whole sweep as one table.

A run directory is complete when it holds ``summary.json`` (written last, atomically); a run
that failed holds ``error.json`` instead. :func:`load_sweep` lists both, so a failed run is
visible next to the others rather than silently missing. No hydra import: it only reads files.
"""

from __future__ import annotations

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
