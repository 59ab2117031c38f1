"""Raw measurements -> fitted profile parameters, and the fit's error on held-out points.

NumPy only: runs anywhere. Only records with ``split == "fit"`` shape the parameters; the
``heldout`` records (sizes between the fit points, and GEMM shapes never fitted) are predicted
and compared, so the reported error is an honest out-of-sample figure.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from typing import Any

import numpy as np

from hwmodels.calibrated import CalibratedProfile, _key
from hwmodels.gpus import get_gpu
from hwmodels.profile import wave_fill


def _relative_lstsq(features: np.ndarray, seconds: np.ndarray) -> np.ndarray:
    """Least squares on relative error, dropping features whose weight comes out negative."""
    keep = list(range(features.shape[1]))
    while True:
        a = features[:, keep] / seconds[:, None]
        coef, *_ = np.linalg.lstsq(a, np.ones(len(seconds)), rcond=None)
        if (coef >= 0).all() or len(keep) == 1:
            full = np.zeros(features.shape[1])
            full[keep] = np.maximum(coef, 0.0)
            return full
        keep.pop(int(np.argmin(coef)))


def _fit_gemm(records: list[dict]) -> dict[str, Any]:
    by_shape: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        by_shape[_key(r["k"], r["n"])].append(r)
    shapes = {}
    achieved: dict[int, list[float]] = defaultdict(list)
    for key, rows in by_shape.items():
        rows = sorted(rows, key=lambda r: r["m"])
        shapes[key] = {
            "log_m": [float(np.log(r["m"])) for r in rows],
            "log_s": [float(np.log(r["seconds"])) for r in rows],
        }
        for r in rows:
            achieved[r["m"]].append(2.0 * r["m"] * r["k"] * r["n"] / r["seconds"])
    ms = sorted(achieved)
    # Large-m GEMMs of the widest shapes stream weights at full rate: the bandwidth floor.
    bandwidth = max(
        2.0 * (r["m"] * r["k"] + r["k"] * r["n"] + r["m"] * r["n"]) / r["seconds"] for r in records if r["m"] <= 4
    )
    return {
        "shapes": shapes,
        "pooled": {
            "log_m": [float(np.log(m)) for m in ms],
            "log_flops_per_s": [float(np.log(statistics.median(achieved[m]))) for m in ms],
        },
        "bytes_per_s": bandwidth,
    }


def _fit_prefill(records: list[dict], sms: int) -> dict[str, Any]:
    """Per head configuration: causal attention of the new tokens interpolated in log space
    by their count, and attention over a cached prefix as ``a + b * work / fill`` (work = new
    x prefix tokens, fill = :func:`~hwmodels.profile.wave_fill`)."""
    out = {}
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[_key(r["q_heads"], r["kv_heads"], r["head_dim"])].append(r)
    for key, rows in groups.items():
        causal = sorted((r for r in rows if r["prefix"] == 0), key=lambda r: r["seq"])
        log_seq = [float(np.log(r["seq"])) for r in causal]
        log_s = [float(np.log(r["seconds"])) for r in causal]
        crossed = [r for r in rows if r["prefix"] > 0]
        if crossed:
            own = np.exp(np.interp(np.log([r["seq"] for r in crossed]), log_seq, log_s))
            extra = np.maximum(np.array([r["seconds"] for r in crossed]) - own, 1e-7)
            feats = np.array([[1.0, r["seq"] * r["prefix"] / wave_fill(r["seq"], r["q_heads"], sms)] for r in crossed])
            a, b = _relative_lstsq(feats, extra)
        else:
            a, b = 0.0, 0.0
        out[key] = {"log_seq": log_seq, "log_s": log_s, "cross_waves": [float(a), float(b)]}
    return out


def _fit_decode(records: list[dict]) -> dict[str, Any]:
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in records:
        groups[_key(r["q_heads"], r["kv_heads"], r["head_dim"])].append(r)
    out = {}
    for key, rows in groups.items():
        feats = np.array([[1.0, r["batch"], r["batch"] * r["ctx"]] for r in rows])
        out[key] = [float(c) for c in _relative_lstsq(feats, np.array([r["seconds"] for r in rows]))]
    return out


def _fit_copies(records: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    singles = [r for r in records if r["n_copies"] == 1]
    for kind in sorted({r["kind"] for r in singles}):
        rows = sorted((r for r in singles if r["kind"] == kind), key=lambda r: r["bytes"])
        out[kind] = {
            "log_bytes": [float(np.log(r["bytes"])) for r in rows],
            "log_s": [float(np.log(r["seconds"])) for r in rows],
        }
    for kind in sorted({r["kind"] for r in records if r["n_copies"] > 1}):
        single = out[kind]
        rows = sorted((r for r in records if r["kind"] == kind and r["n_copies"] > 1), key=lambda r: r["bytes"])
        increments = []
        for r in rows:
            first = float(np.exp(np.interp(np.log(r["bytes"]), single["log_bytes"], single["log_s"])))
            increments.append(max((r["seconds"] - first) / (r["n_copies"] - 1), 1e-9))
        out[kind]["many"] = {
            "log_bytes": [float(np.log(r["bytes"])) for r in rows],
            "log_s": [float(np.log(x)) for x in increments],
        }
    return out


def _fit_elementwise(records: list[dict]) -> dict[str, Any]:
    latency, inverse_bw = _relative_lstsq(
        np.array([[1.0, r["bytes"]] for r in records]), np.array([r["seconds"] for r in records])
    )
    return {"latency_s": float(latency), "bytes_per_s": float(1.0 / max(inverse_bw, 1e-15))}


def _fit_layer_kernels(records: list[dict]) -> dict[str, Any]:
    """Per kernel, log-log interpolation of time over bytes moved, pooled over the models'
    widths (a kernel's time follows its bytes; widths at the same bytes are averaged)."""
    out: dict[str, Any] = {}
    for kernel in sorted({r["kernel"] for r in records}):
        by_bytes: dict[int, list[float]] = defaultdict(list)
        for r in records:
            if r["kernel"] == kernel:
                by_bytes[r["bytes"]].append(float(np.log(r["seconds"])))
        sizes = sorted(by_bytes)
        out[kernel] = {
            "log_bytes": [float(np.log(b)) for b in sizes],
            "log_s": [float(np.mean(by_bytes[b])) for b in sizes],
        }
    return out


def _fit_ssd(records: list[dict]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for r in records:
        out[f"{r['kind']}_bytes_per_s_at_{r['request_bytes'] >> 20}MiB"] = r["bytes"] / r["seconds"]
        out["o_direct"] = r["o_direct"]
    return out


def _best_tau(times: np.ndarray, excess: np.ndarray, start: float, end: float) -> float:
    """Time constant of ``excess(t) = end + (start - end) * exp(-t / tau)`` fitting the
    points best (least squares over a log grid from 5 ms to 2 s: no optimiser needed)."""
    grid = np.exp(np.linspace(np.log(0.005), np.log(2.0), 200))
    errors = [float(np.sum((end + (start - end) * np.exp(-times / tau) - excess) ** 2)) for tau in grid]
    return float(grid[int(np.argmin(errors))])


def stream_bytes_per_s(power: dict[str, Any]) -> float:
    """The copy bandwidth measured with the mixes (a copy reads and writes its bytes)."""
    return 2.0 * power["copy_bytes"] / power["full_clock_s"]["copy"]


def gemm_clock_bound_s(power: dict[str, Any]) -> float:
    """The mixes' GEMM's seconds beyond streaming its operands, at full clock."""
    m, k, n = power["gemm_mkn"]
    return max(0.0, power["full_clock_s"]["gemm"] - 2.0 * (m * k + k * n + m * n) / stream_bytes_per_s(power))


def mix_multipliers(power: dict[str, Any]) -> list[tuple[float, float]]:
    """``(clock-bound share, steady multiplier on the clock-bound seconds)`` of each mix with
    GEMMs in it, as measured (noise can put one a little under 1)."""
    points = []
    for mix in power["mixes"]:
        bound, full = mix["n_gemm"] * gemm_clock_bound_s(power), mix["full_clock_s"]
        if bound > 0:
            points.append((bound / full, 1.0 + (mix["steady_s"] / full - 1.0) * full / bound))
    return points


def heaviest_mix(power: dict[str, Any]) -> dict[str, Any]:
    """The mix with the most GEMMs: its replays show the onset most clearly."""
    return max(power["mixes"], key=lambda mix: mix["n_gemm"])


def fit_clock(power: dict[str, Any]) -> dict[str, Any]:
    """The sustained-load clock model (:class:`hwmodels.clock.ClockModel`) from
    ``kvsim-calibrate power`` output (:mod:`calibrate.sustained`).

    Each mix's clock-bound seconds are split as the simulator splits a step's: a kernel's time
    beyond moving its bytes at the measured copy bandwidth (the copies, by construction, none;
    the GEMM nearly all). Its slowdown once steady, put on those seconds, is the multiplier at
    its share; the multipliers are made non-decreasing in the share (the draw grows with it).
    The onset constant comes from the all-GEMM mix's first half second, replay by replay; the
    recovery constant from GEMMs timed after idling a loaded GPU for 10 ms to 1 s, each against
    the one after the longest idle (which also carries the clock's ramp from idle)."""
    gemm_s, gemm_clock_bound = power["full_clock_s"]["gemm"], gemm_clock_bound_s(power)
    points = {0.0: 1.0} | {share: max(1.0, multiplier) for share, multiplier in mix_multipliers(power)}
    shares = sorted(points)
    multipliers = list(np.maximum.accumulate([points[c] for c in shares]))

    heaviest = heaviest_mix(power)
    replays = np.asarray(heaviest["replay_s"])
    clock_bound = heaviest["n_gemm"] * gemm_clock_bound
    excess = (replays - heaviest["full_clock_s"]) / clock_bound  # multiplier - 1, replay by replay
    midpoints = np.cumsum(replays) - 0.5 * replays
    early = midpoints < 0.5
    steady_excess = (heaviest["steady_s"] - heaviest["full_clock_s"]) / clock_bound
    onset = _best_tau(midpoints[early], excess[early], 0.0, steady_excess)

    probes = sorted(power["recovery"], key=lambda p: p["idle_s"])
    rested = probes[-1]["gemm_s"]
    idles = np.asarray([p["idle_s"] for p in probes[:-1]])
    probe_excess = np.asarray([(p["gemm_s"] - rested) / gemm_clock_bound for p in probes[:-1]])
    loaded_excess = float(np.median([(p["loaded_gemm_s"] - gemm_s) / gemm_clock_bound for p in probes]))
    recovery = _best_tau(idles, probe_excess, loaded_excess, 0.0)
    rows, fractions = gemm_clock_bound_fractions(power, shares)
    return {
        "shares": [round(c, 4) for c in shares],
        "multipliers": [round(float(x), 4) for x in multipliers],
        "onset_s": round(onset, 4),
        "recovery_s": round(recovery, 4),
        "stream_bytes_per_s": stream_bytes_per_s(power),
        "gemm_rows": rows,
        "gemm_clock_bound_fractions": fractions,
        "measured_at": power["environment"]["measured_at"],
    }


ROWS_NOISE = 0.02  # a layer's GEMMs this close to their full-clock time did not slow at all
ROWS_CAPPED = 0.5  # ... nor did any that ran under the power cap less than half the time


def gemm_clock_bound_fractions(power: dict[str, Any], shares: list[float]) -> tuple[list[int], list[float]]:
    """Per token-row count, the least share of a GEMM's full-clock time the model counts
    clock-bound, from a layer's GEMMs run back to back at each row count (``power["rows"]``,
    :func:`calibrate.sustained.measure_rows`): the mixes' GEMM's share (the roofline split of a
    large GEMM), scaled by how much the rows slowed against the largest rows.

    A roofline split counts a 256-row GEMM a fifth clock-bound, yet run back to back it takes
    the GPU to its cap and slows by 10-20 %, nearly as much as a prefill's. Relative to the
    largest rows, because GPUs of one model differ under the cap by several per cent and the rows
    need not have run on the mixes' GPU. Rows that did not slow, or ran mostly below the cap (a
    16-row GEMM's 2 % is timing noise), are left out: the roofline split stands there. The
    fractions are made non-decreasing in the rows. ``([], [])`` without the measurement."""
    records = sorted(power.get("rows", []), key=lambda r: r["m"])
    if not records:
        return [], []
    largest = records[-1]["steady_layer_s"] / records[-1]["full_layer_s"] - 1.0
    if largest < ROWS_NOISE:
        return [], []
    rows, fractions = [], []
    for record in records:
        slowdown = record["steady_layer_s"] / record["full_layer_s"] - 1.0
        if slowdown < ROWS_NOISE or record.get("steady_power_capped_share", 1.0) < ROWS_CAPPED:
            continue
        rows.append(int(record["m"]))
        fractions.append(round(shares[-1] * min(1.0, slowdown / largest), 4))
    return rows, [float(f) for f in np.maximum.accumulate(fractions)]


def _isotonic(values: list[float]) -> list[float]:
    """The closest non-decreasing sequence (pool adjacent violators, equal weights)."""
    blocks: list[list[float]] = []  # [mean, count]
    for v in values:
        blocks.append([v, 1])
        while len(blocks) > 1 and blocks[-2][0] > blocks[-1][0]:
            (m2, n2), (m1, n1) = blocks.pop(), blocks.pop()
            blocks.append([(m1 * n1 + m2 * n2) / (n1 + n2), n1 + n2])
    return [mean for mean, count in blocks for _ in range(int(count))]


def fit_allreduce(records: list[dict[str, Any]]) -> dict[str, dict[str, list[float]]]:
    """Per group size, log seconds over log bytes of the measured all-reduces (``tp.json``):
    the median where two shapes moved the same bytes, made non-decreasing in size, since a
    larger message never costs less and what remains is the timing's jitter (a few us)."""
    by_tp: dict[int, dict[int, list[float]]] = defaultdict(lambda: defaultdict(list))
    for r in records:
        if r["op"] == "allreduce":
            by_tp[r["tp"]][r["nbytes"]].append(r["seconds"])
    tables = {}
    for tp, by_size in sorted(by_tp.items()):
        sizes = sorted(by_size)
        log_s = _isotonic([float(np.log(statistics.median(by_size[n]))) for n in sizes])
        tables[str(tp)] = {"log_bytes": [float(np.log(n)) for n in sizes], "log_s": log_s}
    return tables


def fit_profile(
    raw: dict[str, Any],
    *,
    name: str,
    gpu: str,
    power: dict[str, Any] | None = None,
    tp: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Profile parameters from a raw measurement file (``kvsim-calibrate run`` output) and,
    where measured, the sustained-load clock (``power.json``) and the all-reduce (``tp.json``)."""
    spec = get_gpu(gpu)  # an unknown GPU name fails here, before any fitting
    fit = [r for r in raw["records"] if r.get("split") == "fit"]

    def of(op: str) -> list[dict]:
        return [r for r in fit if r["op"] == op]

    params = {
        "name": name,
        "gpu": gpu,
        "environment": raw["environment"],
        "gemm": _fit_gemm(of("gemm")),
        "prefill": _fit_prefill(of("prefill_attention"), int(raw["environment"].get("multiprocessors", spec.n_sms))),
        "decode": _fit_decode(of("decode_attention")),
        "copy": _fit_copies(of("copy")),
        "elementwise": _fit_elementwise(of("elementwise")),
        "layer_kernels": _fit_layer_kernels(of("layer_kernel")),
        "ssd": _fit_ssd(of("file_io")),
    }
    if power is not None:
        params["clock"] = fit_clock(power)
    if tp is not None:
        params["allreduce"] = fit_allreduce(tp["records"])
        params["allreduce_environment"] = tp["environment"]
    params["heldout_error"] = heldout_errors(CalibratedProfile(name, get_gpu(gpu), params), raw["records"])
    return params


def predict(profile: CalibratedProfile, r: dict[str, Any]) -> float:
    """The profile's prediction for one measurement record."""
    op = r["op"]
    if op == "gemm":
        return float(profile.gemm_s(r["m"], r["k"], r["n"]))
    if op == "prefill_attention":
        return float(profile.attention_prefill_s(r["seq"], r["q_heads"], r["kv_heads"], r["head_dim"], r["prefix"]))
    if op == "decode_attention":
        return float(profile.attention_decode_s(r["batch"], r["ctx"], r["q_heads"], r["kv_heads"], r["head_dim"]))
    if op == "copy":
        return float(profile.copy_many_s(r["n_copies"], r["bytes"], r["kind"]))
    if op == "layer_kernel":
        return float(profile.layer_kernel_s(r["kernel"], r["bytes"]))
    raise ValueError(f"no prediction for op {op!r}")


def _category(r: dict[str, Any]) -> str:
    if r["op"] == "copy":
        pinned = r["kind"] in ("h2d", "d2h")
        many = r["n_copies"] > 1
        return f"copy_{'pinned' if pinned else r['kind']}{'_many' if many else ''}"
    return r["op"] + ("_unseen_shape" if r.get("split") == "heldout_shape" else "")


def heldout_errors(profile: CalibratedProfile, records: list[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Median and max absolute relative error per operation on records not used for fitting."""
    errors: dict[str, list[float]] = defaultdict(list)
    for r in records:
        if r.get("split") in ("heldout", "heldout_shape") and r["op"] != "file_io":
            errors[_category(r)].append(abs(predict(profile, r) - r["seconds"]) / r["seconds"])
    return {
        cat: {"median_abs_rel_error": float(np.median(v)), "max_abs_rel_error": float(np.max(v)), "points": len(v)}
        for cat, v in sorted(errors.items())
    }
