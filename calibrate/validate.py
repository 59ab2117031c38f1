"""Compare a fitted profile with measurements it was not fitted on.

Two checks: the held-out microbenchmark points (GEMM, attention, copies at sizes and shapes the
fit never saw), and whole engine steps of a Llama-shaped model (``e2e.json``) against what
:class:`~hwmodels.execution.ExecutionModel` predicts with the profile for the same batch. A
reference GEMM timed around those steps tells whether the GPU ran as fast as when profiled.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from calibrate.fit import heldout_errors
from hwmodels.calibrated import load_calibrated_profile
from hwmodels.execution import ExecutionModel
from hwmodels.models import get_model


def validate(profile_dir: Path) -> dict[str, Any]:
    profile = load_calibrated_profile(str(profile_dir))
    raw = json.loads((profile_dir / "raw.json").read_text())
    report: dict[str, Any] = {
        "profile": profile.name,
        "heldout": heldout_errors(profile, raw["records"]),
        "end_to_end": [],
        "reference_gemm": [],
    }
    e2e_path = profile_dir / "e2e.json"
    if e2e_path.exists():
        for r in json.loads(e2e_path.read_text())["records"]:
            if r["op"] == "reference_gemm":
                predicted = float(profile.gemm_s(r["m"], r["k"], r["n"]))
                report["reference_gemm"].append(
                    {"when": r["when"], "measured_s": r["seconds"], "predicted_s": predicted,
                     "rel_error": (predicted - r["seconds"]) / r["seconds"]} | _power_state(r)
                )  # fmt: skip
                continue
            spec = get_model(r["model"])
            model = ExecutionModel(spec.with_overrides(n_layers=r["layers"]), profile)
            engine = r.get("engine", "eager")  # records from before the compiled engine
            if r["op"] == "e2e_prefill":
                predicted = model.iteration_s([r["seq"]], [0], 0, 0)
                step = f"{r['model']} {engine} prefill {r['seq']} tokens"
            elif r["op"] == "e2e_prefix_prefill":
                predicted = model.iteration_s([r["seq"]], [r["prefix"]], 0, 0)
                step = f"{r['model']} {engine} prefill {r['seq']} on {r['prefix']} cached"
            elif r["op"] == "e2e_mixed":
                predicted = model.iteration_s([r["seq"]], [0], r["batch"], r["batch"] * r["ctx"])
                step = f"{r['model']} {engine} chunk {r['seq']} + decode {r['batch']} x {r['ctx']}"
            else:
                predicted = model.iteration_s([], [], r["batch"], r["batch"] * r["ctx"])
                step = f"{r['model']} {engine} decode batch {r['batch']} ctx {r['ctx']}"
            report["end_to_end"].append(
                {
                    "op": r["op"],
                    "engine": engine,
                    "model": r["model"],
                    "step": step,
                    "measured_s": r["seconds"],
                    "predicted_s": predicted,
                    "rel_error": (predicted - r["seconds"]) / r["seconds"],
                }
                | _power_state(r)
            )
    return report


def _power_state(record: dict[str, Any]) -> dict[str, Any]:
    """The GPU's clock and power-cap share while the record was timed, where it was read
    (:mod:`calibrate.power`; records from before 2026-11-23 have none)."""
    return {key: record[key] for key in ("sm_clock_mhz", "power_capped_share") if key in record}
