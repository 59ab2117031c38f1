"""The GPU power state recorded with calibration measurements (calibrate.power): reading
nvidia-smi's lines, summarising a window, and carrying the state into the report."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import pytest

from calibrate.cli import format_e2e
from calibrate.power import ClockSampler, parse_sample, summarise
from calibrate.validate import validate

H100 = Path(__file__).resolve().parents[1] / "hwmodels" / "profiles" / "h100-sxm-calibrated"


def test_nvidia_smi_lines_are_read_and_unreadable_ones_skipped() -> None:
    assert parse_sample("1575, 690.38, 0x0000000000000004\n") == (1575.0, 690.38, 4)
    assert parse_sample("1980, 115.4, 0x0000000000000000") == (1980.0, 115.4, 0)
    assert parse_sample("[N/A], 115.4, 0x0") is None
    assert parse_sample("No devices were found") is None
    assert parse_sample("1980, 115.4") is None


def test_a_window_averages_its_own_samples_and_counts_those_under_the_power_cap() -> None:
    assert summarise([]) is None
    with ClockSampler() as clocks:  # on a machine without nvidia-smi it reads nothing itself
        clocks.stop()
        clocks.add(10.0, (1980.0, 120.0, 0x1))  # idle: not the power cap
        clocks.add(11.0, (1500.0, 690.0, 0x4))
        clocks.add(11.05, (1600.0, 694.0, 0x4 | 0x1))
        clocks.add(11.1, (1980.0, 600.0, 0x0))
        clocks.add(12.0, (345.0, 70.0, 0x1))
        state = clocks.window(10.5, 11.5)
        assert state == {"sm_clock_mhz": 1693.3, "power_w": 661.3, "power_capped_share": 0.667}
        assert clocks.window(20.0, 21.0) is None
        # a window between two readings (shorter than the sampling period) takes the nearer
        assert clocks.window(11.96, 11.97)["sm_clock_mhz"] == 345.0
        assert clocks.window(11.11, 11.12)["sm_clock_mhz"] == 1980.0
        assert clocks.window(11.5, 11.6) is None  # nothing within 0.1 s


def test_the_report_shows_the_clock_each_step_was_timed_at_where_it_was_read(tmp_path: Path) -> None:
    profile_dir = tmp_path / "p"
    profile_dir.mkdir()
    for name in ("raw.json", "profile.json"):
        (profile_dir / name).write_text((H100 / name).read_text())
    e2e = json.loads((H100 / "e2e.json").read_text())
    steps = [r for r in e2e["records"] if r["op"].startswith("e2e_")]
    for step in steps[1:]:  # as records from before the clock was read
        for key in ("sm_clock_mhz", "power_w", "power_capped_share"):
            step.pop(key, None)
    steps[0] |= {"sm_clock_mhz": 1576.0, "power_capped_share": 1.0}
    (profile_dir / "e2e.json").write_text(json.dumps(e2e))
    rows = validate(profile_dir)["end_to_end"]
    assert rows[0]["sm_clock_mhz"] == 1576.0 and rows[0]["power_capped_share"] == 1.0
    assert all("sm_clock_mhz" not in row for row in rows[1:])
    table = format_e2e(rows).splitlines()
    assert "SM clock" in table[0] and table[1].rstrip().endswith("1576 MHz    100%")
    assert "MHz" not in table[2]
    assert "SM clock" not in format_e2e(rows[1:])  # records from before the clock was read


@pytest.mark.parametrize("capped", [True, False])
def test_a_slow_reference_gemm_warning_says_the_clock_it_ran_at(tmp_path: Path, capped: bool) -> None:
    profile_dir = tmp_path / "p"
    profile_dir.mkdir()
    for name in ("raw.json", "profile.json"):
        (profile_dir / name).write_text((H100 / name).read_text())
    e2e = json.loads((H100 / "e2e.json").read_text())
    for record in e2e["records"]:
        if record["op"] == "reference_gemm":
            record["seconds"] *= 1.3
            if capped:
                record |= {"sm_clock_mhz": 1459.0, "power_capped_share": 1.0}
    (profile_dir / "e2e.json").write_text(json.dumps(e2e))
    report = subprocess.run(
        [sys.executable, "-m", "calibrate.cli", "report", str(profile_dir)], capture_output=True, text=True
    )
    assert report.returncode == 0 and "not running as when profiled" in report.stderr
    assert ("at 1459 MHz, the power cap active 100% of the time" in report.stderr) == capped


def test_a_compute_bound_record_carries_the_clock_it_was_timed_at() -> None:
    from calibrate.bench import _clocked

    with ClockSampler() as clocks:
        clocks.stop()

        def measure(seconds: float) -> float:
            clocks.add(time.time(), (1500.0, 690.0, 0x4))  # read while the kernel runs
            return seconds

        assert _clocked(clocks, measure, 0.25) == {
            "seconds": 0.25, "sm_clock_mhz": 1500.0, "power_w": 690.0, "power_capped_share": 1.0
        }  # fmt: skip
    assert _clocked(None, measure, 0.5) == {"seconds": 0.5}  # no nvidia-smi: the time alone


def test_long_gemms_are_timed_one_to_a_replay_each_after_a_rest(monkeypatch) -> None:
    """A graph of three 70B-sized GEMMs replayed back to back lasts 30 ms and more and heats the
    GPU to its power cap; the profile must be the GPU at full clock, so each such GEMM is timed
    alone, after a rest, while small ones stay many to a graph (timing resolves them) with no
    rest between replays (the calibration would take minutes longer)."""
    import types

    from calibrate import bench

    timed = []

    def fake_graph_seconds(run, sets, *, calls, rest_s=0.0):
        timed.append((calls, rest_s))
        return 1e-3

    fake_torch = types.SimpleNamespace(
        randn=lambda *shape, **kw: shape,
        bfloat16=None,
        matmul=None,
        cuda=types.SimpleNamespace(is_available=lambda: False),
    )
    monkeypatch.setattr(bench, "_torch", lambda: fake_torch)
    monkeypatch.setattr(bench, "median_graph_seconds", fake_graph_seconds)
    monkeypatch.setattr(bench, "REST_S", 1e-6)
    records = bench.gemm(quick=False)
    assert len(records) == len(timed) > 100
    flops = [2.0 * r["m"] * r["k"] * r["n"] for r in records]
    long_ones = [t for f, t in zip(flops, timed, strict=True) if f >= bench.LONG_GEMM_FLOPS]
    short_ones = [t for f, t in zip(flops, timed, strict=True) if f < bench.LONG_GEMM_FLOPS]
    assert long_ones and all(t == (1, bench.REST_S) for t in long_ones)
    assert short_ones and all(calls >= 3 and rest == 0.0 for calls, rest in short_ones)
    # Llama-3-70B's MLP up-projection at 8,192 rows (7.7 TFLOP, the 1,572 MHz records) is a long one
    long_shapes = {(r["m"], r["k"], r["n"]) for r, f in zip(records, flops, strict=True) if f >= bench.LONG_GEMM_FLOPS}
    assert (8192, 8192, 57344) in long_shapes


def test_the_fit_is_the_same_whatever_clocks_the_records_carry() -> None:
    from calibrate.fit import fit_profile

    raw = json.loads((H100 / "raw.json").read_text())
    plain = fit_profile(raw, name="p", gpu="h100-sxm")
    for record in raw["records"]:
        if record["op"] in ("gemm", "prefill_attention"):
            record |= {"sm_clock_mhz": 1650.0, "power_w": 690.0, "power_capped_share": 1.0}
    assert fit_profile(raw, name="p", gpu="h100-sxm") == plain
