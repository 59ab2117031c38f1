"""The one entry point: ``run(config, trace) -> Result`` for either mode."""

from __future__ import annotations

from sim.config import MODES, SimConfig
from sim.result import Result
from traces.schema import Trace


def run(config: SimConfig, trace: Trace, *, progress: bool = False, progress_label: str = "") -> Result:
    """Simulate ``trace`` under ``config``. ``progress`` reports a serve run's progress on
    stderr (a bar on a terminal, a line per tenth of the requests elsewhere), each line headed
    by ``progress_label`` where given; a replay needs none, it takes seconds."""
    if config.mode == "replay":
        from sim.replay import run_replay

        return run_replay(config, trace)
    if config.mode == "serve":
        from sim.engine import run_serve

        return run_serve(config, trace, progress=progress, progress_label=progress_label)
    raise ValueError(f"mode={config.mode!r} is not one of {', '.join(MODES)}")
