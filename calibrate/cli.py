"""``kvsim-calibrate``: measure a GPU, fit a profile, and check the profile against reality.

    kvsim-calibrate run --out DIR          # on a GPU machine: raw.json (+ e2e.json)
    kvsim-calibrate e2e --out DIR          # on a GPU machine: e2e.json only
    kvsim-calibrate power --out DIR        # on a GPU machine: power.json only
    kvsim-calibrate tp --out DIR           # on a host of 2+ GPUs: tp.json (all-reduce, TP steps)
    kvsim-calibrate moe --out DIR          # on a GPU machine: moe.json (routed experts vs kvsim)
    kvsim-calibrate fit DIR --gpu h100-sxm --name h100-sxm-calibrated
    kvsim-calibrate report hwmodels/profiles/h100-sxm-calibrated

``run`` needs CUDA and says so (exit 1) without it; ``fit`` and ``report`` need only NumPy.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
from pathlib import Path

from calibrate.e2e import ENGINES
from calibrate.moe import MOE_MODELS, MOE_TOKENS
from calibrate.power import ClockSampler
from calibrate.shapes import FAMILIES
from hwmodels.calibrated import PROFILE_FILE, PROFILES_DIR, load_calibrated_profile
from hwmodels.models import MODELS, ModelSpec
from traces.atomic import write_text_atomic

RAW_FILE = "raw.json"
E2E_FILE = "e2e.json"
POWER_FILE = "power.json"
TP_FILE = "tp.json"
MOE_FILE = "moe.json"
CLOCK_PLOT = "clock.png"
VALIDATION_FILE = "validation.json"
SLOW_GPU_TOLERANCE = 0.15  # relative error of the reference GEMM beyond which the e2e check is suspect


def _cuda_or_exit(command: str) -> None:
    try:
        import torch
    except ImportError:
        sys.exit(f"kvsim-calibrate {command}: torch is not installed; install it with the CUDA build for this GPU")
    if not torch.cuda.is_available():
        sys.exit(
            f"kvsim-calibrate {command}: no CUDA GPU is visible (torch.cuda.is_available() is False); "
            "run this on a GPU machine"
        )


def _gpu_out_dir(command: str, out: str) -> Path:
    """Exit without a CUDA GPU, else the output directory, made."""
    _cuda_or_exit(command)
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {value}")
    return value


def cmd_run(args: argparse.Namespace) -> int:
    out = _gpu_out_dir("run", args.out)
    from calibrate.bench import run_all
    from hwmodels.models import get_model

    with ClockSampler() as clocks:
        raw = run_all(
            args.io_dir or tempfile.gettempdir(),
            quick=args.quick,
            log=lambda s: print(s, flush=True),
            clocks=clocks,
            families=tuple(args.only),
        )
        write_text_atomic(out / RAW_FILE, json.dumps(raw, indent=1) + "\n")
        print(f"wrote {out / RAW_FILE}: {len(raw['records'])} measurements on {raw['environment']['device_name']}")
        _write_power(out, raw["environment"], args.quick, clocks)
        if not args.no_e2e:
            specs = [get_model(m) for m in args.e2e_model]
            _write_e2e(out, raw["environment"], specs, 2 if args.quick else None, clocks, ENGINES)
    return 0


def cmd_e2e(args: argparse.Namespace) -> int:
    """The end-to-end steps alone: re-checking a profile needs no new microbenchmarks."""
    out = _gpu_out_dir("e2e", args.out)
    from calibrate.bench import environment
    from hwmodels.models import get_model

    with ClockSampler() as clocks:
        specs = [get_model(m) for m in args.e2e_model]
        _write_e2e(out, environment(), specs, 2 if args.quick else args.layers, clocks, tuple(args.engine))
    return 0


def cmd_power(args: argparse.Namespace) -> int:
    """The sustained-load clock alone: a profile measured before it existed gains it."""
    out = _gpu_out_dir("power", args.out)
    from calibrate.bench import environment

    with ClockSampler() as clocks:
        _write_power(out, environment(), args.quick, clocks)
    return 0


def cmd_tp(args: argparse.Namespace) -> int:
    """The all-reduce and whole tensor-parallel steps, on every GPU of the host."""
    out = _gpu_out_dir("tp", args.out)
    import torch

    from calibrate.bench import environment
    from calibrate.collective import measure

    env = environment() | {"device_count": torch.cuda.device_count(), "nccl_version": _nccl_version()}
    records = measure()
    write_text_atomic(out / TP_FILE, json.dumps({"environment": env, "records": records}, indent=1) + "\n")
    sizes = sorted({r["tp"] for r in records if r["op"] == "allreduce"})
    steps = sum(r["op"] != "allreduce" for r in records)
    print(f"wrote {out / TP_FILE}: all-reduce at TP {sizes}, {steps} tensor-parallel steps")
    return 0


def cmd_moe(args: argparse.Namespace) -> int:
    """One mixture-of-experts layer's routed experts, measured against kvsim's price of them
    from the shipped profile measured on this GPU (:mod:`calibrate.moe`)."""
    out = _gpu_out_dir("moe", args.out)
    from calibrate.bench import environment
    from calibrate.moe import measure
    from hwmodels.calibrated import profile_measured_on

    env = environment()
    name = profile_measured_on(env["device_name"])
    if name is None:
        print(f"no shipped profile was measured on a {env['device_name']}: timings only", flush=True)
    profile = load_calibrated_profile(name) if name is not None else None
    specs = [MODELS[m] for m in args.model]
    records = measure(specs, args.tokens, profile=profile, log=lambda s: print(s, flush=True))
    result = {"environment": env, "profile": name, "records": records}
    write_text_atomic(out / MOE_FILE, json.dumps(result, indent=1) + "\n")
    print(f"wrote {out / MOE_FILE}: {len(records)} timings")
    return 0


def _nccl_version() -> str | None:
    import torch

    version = torch.cuda.nccl.version()
    return ".".join(map(str, version)) if isinstance(version, tuple) else str(version)


def _write_power(out: Path, env: dict, quick: bool, clocks: ClockSampler | None) -> None:
    from calibrate.sustained import measure

    result = measure(clocks, log=lambda s: print(s, flush=True), quick=quick)
    write_text_atomic(out / POWER_FILE, json.dumps({"environment": env} | result, indent=1) + "\n")
    print(f"wrote {out / POWER_FILE}: {len(result['mixes'])} mixes, {len(result['recovery'])} recovery probes")


def _write_e2e(
    out: Path,
    env: dict,
    specs: list[ModelSpec],
    n_layers: int | None,
    clocks: ClockSampler | None,
    engines: tuple[str, ...],
) -> None:
    """Time each model's steps, rewriting ``e2e.json`` after each: a model that fails (out of
    memory) loses only its own steps. ``n_layers``: at most this many layers of each model."""
    from calibrate.e2e import measure

    records: list[dict] = []
    for spec in specs:
        layers = min(n_layers, spec.n_layers) if n_layers else None
        records += measure(spec, n_layers=layers, engines=engines, clocks=clocks)
        write_text_atomic(out / E2E_FILE, json.dumps({"environment": env, "records": records}, indent=1) + "\n")
        steps = sum(r["op"] != "reference_gemm" for r in records)
        print(f"wrote {out / E2E_FILE}: {steps} end-to-end steps, up to {spec.name}", flush=True)


def cmd_fit(args: argparse.Namespace) -> int:
    from calibrate.fit import fit_profile

    source = Path(args.dir)
    raw = json.loads((source / RAW_FILE).read_text())
    power = json.loads((source / POWER_FILE).read_text()) if (source / POWER_FILE).exists() else None
    tp = json.loads((source / TP_FILE).read_text()) if (source / TP_FILE).exists() else None
    params = fit_profile(raw, name=args.name, gpu=args.gpu, power=power, tp=tp)
    dest = Path(args.output) if args.output else PROFILES_DIR / args.name
    dest.mkdir(parents=True, exist_ok=True)
    for name in (RAW_FILE, E2E_FILE, POWER_FILE, TP_FILE):
        if (source / name).exists() and (source / name).resolve() != (dest / name).resolve():
            shutil.copyfile(source / name, dest / name)
    write_text_atomic(dest / PROFILE_FILE, json.dumps(params, indent=1, sort_keys=True) + "\n")
    print(f"wrote {dest / PROFILE_FILE}")
    print(format_errors(params["heldout_error"]))
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from calibrate.validate import validate

    directory = Path(args.profile_dir)
    report = validate(directory)
    write_text_atomic(directory / VALIDATION_FILE, json.dumps(report, indent=1, sort_keys=True) + "\n")
    print(format_errors(report["heldout"]))
    print()
    print(format_e2e(report["end_to_end"]))
    profile = load_calibrated_profile(str(directory))
    if (directory / POWER_FILE).exists() and profile.clock is not None:
        from calibrate.plots import plot_clock

        power = json.loads((directory / POWER_FILE).read_text())
        title = f"{profile.name}: SM clock under the power cap ({power['environment']['device_name']})"
        print(f"\nwrote {plot_clock(power, profile.clock, directory / CLOCK_PLOT, title)}")
    for check in report["reference_gemm"]:
        if abs(check["rel_error"]) > SLOW_GPU_TOLERANCE:
            state = ""
            if "sm_clock_mhz" in check:
                state = (
                    f" at {check['sm_clock_mhz']:.0f} MHz, the power cap active "
                    f"{check['power_capped_share']:.0%} of the time"
                )
            print(
                f"warning: the reference GEMM timed {check['when']} the end-to-end steps ran "
                f"{1e3 * check['measured_s']:.2f} ms{state} against the profile's {1e3 * check['predicted_s']:.2f} "
                "ms: the GPU was not running as when profiled (shared, throttled, power-capped or cold), so the "
                "end-to-end errors above say little about the model; re-run `kvsim-calibrate e2e`",
                file=sys.stderr,
            )
    return 0


def format_errors(errors: dict[str, dict[str, float]]) -> str:
    lines = [f"{'held-out operation':<32}{'points':>8}{'median |err|':>14}{'max |err|':>12}"]
    for cat, e in errors.items():
        lines.append(
            f"{cat:<32}{e['points']:>8}{100 * e['median_abs_rel_error']:>13.1f}%{100 * e['max_abs_rel_error']:>11.1f}%"
        )
    return "\n".join(lines)


def format_e2e(rows: list[dict]) -> str:
    """The end-to-end table; with the GPU's SM clock and power-cap share per step where they
    were read (a step timed under the power cap runs slower than one at full clock)."""
    clocked = any("sm_clock_mhz" in r for r in rows)
    header = f"{'end-to-end step, from rest':<56}{'measured':>12}{'predicted':>12}{'error':>9}"
    lines = [header + (f"{'SM clock':>11}{'capped':>8}" if clocked else "")]
    for r in rows:
        line = f"{r['step']:<56}{1e3 * r['measured_s']:>10.2f}ms{1e3 * r['predicted_s']:>10.2f}ms"
        line += f"{100 * r['rel_error']:>+8.1f}%"
        if "sm_clock_mhz" in r:
            line += f"{r['sm_clock_mhz']:>7.0f} MHz{100 * r['power_capped_share']:>7.0f}%"
        lines.append(line)
    loaded = [r for r in rows if "sustained_measured_s" in r]
    if loaded:
        lines += ["", f"{'the same, after 1 s back to back':<56}{'measured':>12}{'predicted':>12}{'error':>9}"]
        for r in loaded:
            lines.append(
                f"{r['step']:<56}{1e3 * r['sustained_measured_s']:>10.2f}ms{1e3 * r['sustained_predicted_s']:>10.2f}ms"
                f"{100 * r['sustained_rel_error']:>+8.1f}%"
            )
    return "\n".join(lines)


def _add_e2e_models(parser: argparse.ArgumentParser) -> None:
    dense = sorted(name for name, spec in MODELS.items() if not spec.is_moe)  # the e2e model has a dense MLP
    parser.add_argument(
        "--e2e-model",
        nargs="+",
        default=["llama-3-8b"],
        choices=dense,
        metavar="MODEL",
        help=f"one or more of {', '.join(dense)}",
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="kvsim-calibrate", description="Measure a GPU and fit kvsim's cost models.")
    sub = parser.add_subparsers(dest="command", required=True)
    run = sub.add_parser(
        "run", help="run the microbenchmarks, the sustained-load clock and the end-to-end check (needs a CUDA GPU)"
    )
    run.add_argument("--out", required=True)
    run.add_argument("--quick", action="store_true", help="a few points of each benchmark (smoke test)")
    run.add_argument("--io-dir", default=None, help="directory on the disk to measure (default: the temp dir)")
    _add_e2e_models(run)
    run.add_argument("--no-e2e", action="store_true")
    run.add_argument(
        "--only", nargs="+", choices=FAMILIES, default=list(FAMILIES), metavar="FAMILY",
        help=f"only these microbenchmark families (of {', '.join(FAMILIES)}); default all",
    )  # fmt: skip
    e2e = sub.add_parser("e2e", help="only the end-to-end steps, compiled and eager (needs a CUDA GPU)")
    e2e.add_argument(
        "--engine", nargs="+", choices=ENGINES, default=list(ENGINES), help="which engines to time (default both)"
    )
    e2e.add_argument("--out", required=True)
    e2e.add_argument("--quick", action="store_true", help="two layers instead of the model's all")
    e2e.add_argument(
        "--layers", type=_positive, default=None, help="at most this many layers of each model (one that fills the GPU)"
    )
    _add_e2e_models(e2e)
    power = sub.add_parser("power", help="only the sustained-load clock of GEMM/copy mixes (needs a CUDA GPU)")
    power.add_argument("--out", required=True)
    power.add_argument("--quick", action="store_true", help="three mixes and three recovery probes")
    sub.add_parser("tp", help="the all-reduce and tensor-parallel steps (needs 2+ CUDA GPUs)").add_argument(
        "--out", required=True
    )
    moe = sub.add_parser("moe", help="one mixture-of-experts layer's routed experts against kvsim (needs a CUDA GPU)")
    moe.add_argument("--out", required=True)
    moe.add_argument("--model", nargs="+", choices=MOE_MODELS, default=list(MOE_MODELS), help="default both")
    moe.add_argument("--tokens", nargs="+", type=_positive, default=list(MOE_TOKENS), help="tokens in the step")
    fit = sub.add_parser("fit", help="fit a profile from DIR/raw.json (and DIR/tp.json; no GPU needed)")
    fit.add_argument("dir")
    fit.add_argument("--gpu", required=True, help="the GPU spec it was measured on, e.g. h100-sxm")
    fit.add_argument("--name", required=True, help="profile name, e.g. h100-sxm-calibrated")
    fit.add_argument("-o", "--output", default=None, help="default: hwmodels/profiles/NAME")
    report = sub.add_parser("report", help="held-out and end-to-end errors of a fitted profile")
    report.add_argument("profile_dir")
    args = parser.parse_args(argv)
    try:
        commands = {
            "run": cmd_run, "e2e": cmd_e2e, "power": cmd_power, "tp": cmd_tp, "moe": cmd_moe, "fit": cmd_fit,
            "report": cmd_report,
        }  # fmt: skip
        return commands[args.command](args)
    except (FileNotFoundError, ValueError, KeyError, RuntimeError) as exc:
        print(f"kvsim-calibrate: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
