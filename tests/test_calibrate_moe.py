"""The mixture-of-experts microbenchmark (``kvsim-calibrate moe``), run on the CPU at tiny
shapes: its two kernels compute the same layer, and its records carry kvsim's price."""

from __future__ import annotations

import pytest

from calibrate import moe as bench_moe
from hwmodels import moe
from hwmodels.models import ModelSpec
from hwmodels.profile import load_profile

torch = pytest.importorskip("torch")

TINY = ModelSpec("tiny-moe", 2, 64, 4, 2, 16, 32, 100, n_experts=8, experts_per_token=2)


def test_a_balanced_routing_sample_gives_each_token_k_experts() -> None:
    rows = bench_moe.route(100, 8, 2)
    assert sum(rows) == 200 and len(rows) == 8 and max(rows) <= 100
    assert all(r % bench_moe.ALIGN_ROWS == 0 and r >= s for r, s in zip(bench_moe.padded(rows), rows, strict=True))
    assert sum(1 for r in bench_moe.route(1, 128, 8) if r) == 8


def test_the_grouped_gemm_and_the_expert_loop_compute_the_same_layer() -> None:
    """Each expert's rows times that expert's weights, whichever kernel runs them; an expert
    no token picked is an empty group."""
    torch.manual_seed(0)
    weights = bench_moe.expert_weights(TINY, "cpu")
    rows = bench_moe.padded([5, 0, 17, 1, 0, 0, 9, 3])
    layer = bench_moe.ExpertLayer(weights, rows)
    x, act = layer.inputs(1)[0]
    start = sum(rows[:2])
    expected_up = x[start : start + rows[2]] @ weights[0][2].T  # expert 2's rows
    looped = layer.expert_loop((x, act))
    assert torch.equal(looped[0][start : start + rows[2]], expected_up)
    if not bench_moe.grouped_mm_available():
        pytest.skip("this torch has no torch._grouped_mm")
    grouped = layer.grouped_mm((x, act))
    for a, b in zip(grouped, looped, strict=True):
        assert torch.allclose(a.float(), b.float(), rtol=2e-2, atol=2e-2)


def test_each_record_has_the_measured_and_the_predicted_time() -> None:
    timed = []

    def timer(run, input_sets, flops):
        run(input_sets[0])
        timed.append(flops)
        return {"measured_s": 1e-3, "timing": "once"}

    profile = load_profile("h100-sxm-calibrated")
    records = bench_moe.measure([TINY], (1, 64), profile=profile, device="cpu", timer=timer)
    kernels = [k for k in bench_moe.KERNELS if k != "grouped_mm" or bench_moe.grouped_mm_available()]
    assert [(r["tokens"], r["kernel"]) for r in records] == [(t, k) for t in (1, 64) for k in kernels]
    one = records[0]
    assert one["experts_touched"] == 2 and one["experts_touched_expected"] == pytest.approx(2)
    priced = sum(profile.gemm_s(*g) for g in moe.mlp_gemms(TINY, 1, tp=1)[1:3])
    assert one["predicted_s"] == pytest.approx(priced)
    assert one["rel_error"] == pytest.approx(priced / 1e-3 - 1)
    assert timed[0] == 2.0 * 2 * bench_moe.ALIGN_ROWS * 3 * 64 * 32  # two experts' padded rows
