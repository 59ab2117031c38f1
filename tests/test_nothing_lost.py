"""An interrupted run leaves each result complete or absent, never half-written.

``Result.save`` writes every file under a temporary name and renames it into place, and writes
``summary.json`` last, so the summary's presence marks a complete result. These tests kill a
process in the middle of saving (SIGKILL: no cleanup code runs) and check what it left.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from traces.atomic import atomic_path

SAVER = textwrap.dedent(
    """
    import sys
    import numpy as np, pandas as pd
    from sim.result import Result
    out = sys.argv[1]
    rng = np.random.default_rng(0)
    n = 200_000  # big enough that one save takes milliseconds, so kills land mid-write
    for i in range(10_000):
        requests = pd.DataFrame({"request_id": np.arange(n), "ttft_s": rng.random(n)})
        timeseries = pd.DataFrame({"time_s": np.arange(n, dtype=float), "hbm_used_blocks": rng.integers(0, 9, n)})
        Result({"run": i, "n_requests": n}, requests, timeseries).save(f"{out}/run{i:05d}")
        print(i, flush=True)
    """
)


def test_an_exception_inside_atomic_path_leaves_neither_file_nor_temporary(tmp_path: Path) -> None:
    target = tmp_path / "table.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_bytes(b"partial")
        raise RuntimeError("interrupted")
    assert list(tmp_path.iterdir()) == []


def test_an_existing_file_survives_a_failed_rewrite(tmp_path: Path) -> None:
    target = tmp_path / "summary.json"
    target.write_text('{"complete": true}')
    with pytest.raises(KeyboardInterrupt), atomic_path(target) as tmp:
        tmp.write_text('{"compl')
        raise KeyboardInterrupt
    assert json.loads(target.read_text()) == {"complete": True}


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="needs POSIX signals")
@pytest.mark.parametrize("delay_s", [0.0, 0.04, 0.11, 0.3])
def test_killed_while_saving_every_result_is_complete_or_unmarked(tmp_path: Path, delay_s: float) -> None:
    root = Path(__file__).resolve().parents[1]
    env = {**os.environ, "PYTHONPATH": str(root)}
    proc = subprocess.Popen([sys.executable, "-c", SAVER, str(tmp_path)], stdout=subprocess.PIPE, env=env)
    # Kill a while after the first save has finished, so that the kill lands in a later one
    # however long the interpreter took to start (a fixed delay missed on a loaded machine).
    assert proc.stdout is not None and proc.stdout.readline().strip() == b"0"
    time.sleep(delay_s)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    runs = sorted(p for p in tmp_path.iterdir() if p.is_dir())
    assert runs
    complete = [r for r in runs if (r / "summary.json").exists()]
    for run in complete:
        summary = json.loads((run / "summary.json").read_text())
        assert summary["n_requests"] == 200_000
        assert len(pd.read_parquet(run / "requests.parquet")) == 200_000
        assert len(pd.read_parquet(run / "timeseries.parquet")) == 200_000
    for run in runs:
        # Whatever else is there is a complete file or a dot-named temporary that loaders skip.
        for f in run.iterdir():
            if f.name.startswith("."):
                assert f.name.endswith(".tmp")
            elif f.suffix == ".parquet":
                pd.read_parquet(f)
    # The last directory is the one the kill interrupted (unless it landed between saves).
    assert len(complete) >= len(runs) - 1
