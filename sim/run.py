"""The one entry point: ``run(config, trace) -> Result`` for either mode."""

from __future__ import annotations

import warnings

from sim.build import ConfigError
from sim.config import MODES, SimConfig
from sim.result import Result
from traces.schema import Trace


def run(config: SimConfig, trace: Trace, *, progress: bool = False, progress_label: str = "") -> Result:
    """Simulate ``trace`` under ``config``. ``progress`` reports a serve run's progress on
    stderr (a bar on a terminal, a line per tenth of the requests elsewhere), each line headed
    by ``progress_label`` where given; a replay needs none, it takes seconds."""
    if config.mode == "replay":
        from sim.replay import run_replay

        if len(trace) and trace.n_block_accesses == 0:
            # A hit ratio of zero accesses is no result: refuse it rather than print 0 %.
            raise ConfigError(
                "mode",
                f"replay mode replays a trace's prefix block ids, and {trace.source} has none (a format that "
                "gives only lengths, such as Azure's or BurstGPT's): run it in serve mode (its prompts are "
                "computed, none reused) or use a trace with block hashes",
            )
        return run_replay(config, trace)
    if config.mode == "serve":
        from sim.engine import run_serve

        if len(trace) and trace.n_block_accesses == 0:
            warnings.warn(
                f"{trace.source} has no prefix block ids (lengths only): no KV can be reused, every prompt "
                "is computed in full and hit ratios are 0",
                stacklevel=2,
            )
        return run_serve(config, trace, progress=progress, progress_label=progress_label)
    raise ValueError(f"mode={config.mode!r} is not one of {', '.join(MODES)}")
