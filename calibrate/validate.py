"""Compare a fitted profile with measurements it was not fitted on.

Two checks: the held-out microbenchmark points (GEMM, attention, copies at sizes and shapes the
fit never saw), and whole engine steps of a Llama-shaped model (``e2e.json``) against what
:class:`~hwmodels.execution.ExecutionModel` predicts with the profile for the same batch. A
reference GEMM timed around those steps tells whether the GPU ran as fast as when profiled.
"""

from __future__ import annotations

import json
import statistics
from pathlib import Path
from typing import Any

from calibrate.fit import heldout_errors
from hwmodels.calibrated import load_calibrated_profile
from hwmodels.clock import ClockModel
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
    records = []
    for name in ("e2e.json", "tp.json"):  # single-GPU steps; tensor-parallel steps (tp.json)
        if (profile_dir / name).exists():
            records += [r for r in json.loads((profile_dir / name).read_text())["records"] if r["op"] != "allreduce"]
    for r in records:
        if r["op"] == "reference_gemm":
            predicted = float(profile.gemm_s(r["m"], r["k"], r["n"]))
            report["reference_gemm"].append(
                {"when": r["when"], "measured_s": r["seconds"], "predicted_s": predicted,
                 "rel_error": (predicted - r["seconds"]) / r["seconds"]} | _power_state(r)
            )  # fmt: skip
            continue
        spec = get_model(r["model"])
        tp = r.get("tp", 1)
        model = ExecutionModel(spec.with_overrides(n_layers=r["layers"]), profile, tensor_parallel=tp)
        engine = r.get("engine", "eager")  # records from before the compiled engine
        step, batch = _step(r)
        full = model.iteration_s(*batch)
        label = f"{r['model']} {engine} {step}" + (f" (tp {tp})" if tp > 1 else "")
        row = {"op": r["op"], "engine": engine, "model": r["model"], "tp": tp, "step": label}
        row |= {"measured_s": r["seconds"], "predicted_full_clock_s": full} | _power_state(r)
        if profile.clock is None:
            row["predicted_s"] = full
        else:
            clock_bound = model.clock_bound_s(*batch[:3])
            power_bound = model.power_bound_s(*batch[:3], clock_bound)
            row["predicted_s"] = _from_rest(profile.clock, full, clock_bound, power_bound)
            if "sustained_seconds" in r:
                steady = full + clock_bound * (profile.clock.steady_multiplier(power_bound / full) - 1.0)
                row |= {
                    "sustained_measured_s": r["sustained_seconds"],
                    "sustained_predicted_s": steady,
                    "sustained_rel_error": (steady - r["sustained_seconds"]) / r["sustained_seconds"],
                } | {key: r[key] for key in ("sustained_sm_clock_mhz",) if key in r}
        if "without_allreduce_seconds" in r:  # a TP step also timed without its all-reduces
            tokens = sum(batch[0]) + batch[2]
            row |= {
                "measured_allreduce_s": r["seconds"] - r["without_allreduce_seconds"],
                "predicted_allreduce_s": model.allreduce_s(tokens),
            }
        row["rel_error"] = (row["predicted_s"] - r["seconds"]) / r["seconds"]
        report["end_to_end"].append(row)
    return report


def _step(r: dict[str, Any]) -> tuple[str, tuple[list[int], list[int], int, int]]:
    """A step record's name and its batch, as :meth:`ExecutionModel.iteration_s` takes it."""
    if r["op"] == "e2e_prefill":
        return f"prefill {r['seq']} tokens", ([r["seq"]], [0], 0, 0)
    if r["op"] == "e2e_prefix_prefill":
        return f"prefill {r['seq']} on {r['prefix']} cached", ([r["seq"]], [r["prefix"]], 0, 0)
    if r["op"] == "e2e_mixed":
        return f"chunk {r['seq']} + decode {r['batch']} x {r['ctx']}", (
            [r["seq"]],
            [0],
            r["batch"],
            r["batch"] * r["ctx"],
        )
    return f"decode batch {r['batch']} ctx {r['ctx']}", ([], [], r["batch"], r["batch"] * r["ctx"])


def _from_rest(clock: ClockModel, full_s: float, clock_bound_s: float, power_bound_s: float, calls: int = 7) -> float:
    """The median of ``calls`` runs of a step back to back from a rested GPU, as the harness
    times it (:func:`calibrate.e2e._timed`): a long step heats the GPU within itself."""
    multiplier, seconds = 1.0, []
    for _ in range(calls):
        duration, target = clock.step_s(multiplier, full_s, clock_bound_s, power_bound_s)
        multiplier = clock.relax(multiplier, target, duration)
        seconds.append(duration)
    return statistics.median(seconds)


def _power_state(record: dict[str, Any]) -> dict[str, Any]:
    """The GPU's clock and power-cap share while the record was timed, where it was read
    (:mod:`calibrate.power`; records from before 2026-11-23 have none)."""
    return {key: record[key] for key in ("sm_clock_mhz", "power_capped_share") if key in record}
