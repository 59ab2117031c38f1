"""``kvsim``: the hydra command line over :func:`sim.run.run`.

    kvsim                                   # the bundled default workload on one H100
    kvsim trace=mooncake trace.path=t.jsonl hardware=h100_offload eviction=s3fifo
    kvsim mode=replay trace=mooncake trace.path=t.jsonl eviction=lru tiers.hbm_blocks=2000
    kvsim -m eviction=lru,s3fifo hardware.hbm_gb=10,20     # a sweep, runs in parallel

Hydra stays here: the app turns the composed config into plain :class:`sim.config.SimConfig`
and :class:`traces.TraceSpec` objects and calls the library. Each run directory gets
``summary.json``, ``requests.parquet``, ``timeseries.parquet``, ``config.json`` (the resolved
config and the trace file's digest), PNG plots, and hydra's own ``.hydra/``; a failed run gets
``error.json`` instead of a summary. A run whose directory already holds a complete result for
the same config, trace file and policy source files is skipped, which is how an interrupted sweep resumes.
"""

from __future__ import annotations

import argparse
import dataclasses
import difflib
import hashlib
import inspect
import json
import os
import re
import signal
import sys
import tempfile
import traceback
import types
import typing
import warnings
from pathlib import Path
from typing import Any

import hydra
from hydra.core.hydra_config import HydraConfig
from hydra.errors import CompactHydraException, InstantiationException
from hydra.experimental.callback import Callback
from hydra.types import RunMode
from hydra.utils import instantiate
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import ConfigKeyError, ValidationError

from conf.schema import CONF_DIR, KvsimConf, policy_parameters, register
from hwmodels.calibrated import allreduce_source_file, calibrated_profile_file
from hwmodels.gpus import get_gpu
from policies.registry import UnknownPolicyError, available, policy_class, resolve
from sim.build import ConfigError, timing_profile_name
from sim.config import EngineConfig, HardwareConfig, ModelConfig, PowerConfig, SimConfig, SLOConfig, TierConfig
from sim.report import format_summary
from sim.result import PLOT_FILES, REQUESTS_FILE, SUMMARY_FILE, TIMESERIES_FILE
from sim.results import CONFIG_FILE, ERROR_FILE, OVERRIDES_FILE
from traces import TraceFormatError, TraceSpec, TraceSpecError, load_trace
from traces.atomic import unwritable_folder, write_text_atomic

POLICY_FAMILIES = ("eviction", "prefetch", "admission", "scheduler", "routing")
# Errors that describe bad input (config values, policy names, trace files), not kvsim bugs.
USER_ERRORS = (ConfigError, UnknownPolicyError, TraceFormatError, TraceSpecError, FileNotFoundError)
# A folder main() makes for each command, where a sweep's runs that fail on bad input leave a
# note (_note_failed_run); the variable reaches the runs through the environment a launcher's
# worker processes inherit.
FAILED_RUNS_ENV = "KVSIM_FAILED_RUNS_DIR"

# The longest file name Linux's and macOS's file systems take (NAME_MAX), in bytes.
RUN_DIR_NAME_BYTES = 255


def path_safe(name: str) -> str:
    """A sweep run's directory name from its overrides (hydra's ``override_dirname``). A path
    among them (``trace.path=a/b.jsonl``) would nest directories, so its slashes are escaped as
    in a URL. A name longer than a file name can be (a deep trace path, many overrides: the
    whole sweep once died making the first run's directory) is cut to a readable prefix and a
    hash of the whole, so that the same overrides always name the same directory (resume finds
    it) and different ones different directories; a name that fits is left as it was, so a
    sweep made before keeps its directories."""
    safe = name.replace("%", "%25").replace("/", "%2F")
    if len(safe.encode()) <= RUN_DIR_NAME_BYTES:
        return safe
    digest = hashlib.sha256(name.encode()).hexdigest()[:16]
    prefix = safe.encode()[: RUN_DIR_NAME_BYTES - len(digest) - 1].decode(errors="ignore")
    return f"{re.sub(r'%[0-9A-F]?$', '', prefix)}~{digest}"  # no escape cut in half


register()
OmegaConf.register_new_resolver("path_safe", path_safe, replace=True)  # conf/config.yaml's hydra.sweep.subdir


class SweepRunFailed(CompactHydraException):
    """A run of a sweep failed on bad input where it could leave no note for main() (a worker
    on another machine, or a sweep not started by main()). Hydra waits for the whole sweep,
    then raises the first failed run's exception in the launching process and prints its
    stack, unless the exception is a compact one, which it prints as its message alone (with
    its own two lines around it, which only main()'s notes avoid)."""


class OutputDirCheck(Callback):
    """Refuse, in one line and with exit status 2, a run or sweep directory that cannot be
    written (``hydra.run.dir=afile/run``), before hydra makes it: hydra makes it before it
    calls kvsim's task, so its error would otherwise be a stack trace (config.yaml registers
    this callback). ``HYDRA_FULL_ERROR=1`` leaves the error to hydra, as for any bad input."""

    def on_run_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_output_dir(config, "hydra.run.dir")

    def on_multirun_start(self, config: DictConfig, **kwargs: Any) -> None:
        _check_output_dir(config, "hydra.sweep.dir")


def _check_output_dir(config: DictConfig, key: str) -> None:
    # Resolved as hydra's run_job resolves it, on the same config: ${now:...} is cached there,
    # so the directory made here is the one hydra then uses.
    HydraConfig.instance().set_config(config)
    folder = str(OmegaConf.select(config, key))
    reason = unwritable_folder(folder)
    if reason is not None and not _full_error():
        print(f"kvsim: error: {key}: cannot write in {folder}: {reason}", file=sys.stderr)
        sys.exit(2)


def _full_error() -> bool:
    """Whether the user asked hydra for full stack traces (as hydra reads the variable); then
    bad input is raised to hydra like any other error instead of being said in one line."""
    return os.environ.get("HYDRA_FULL_ERROR") == "1"


def _unknown_key(key: str) -> str | None:
    """What is wrong with a dotted config key the schema does not have (with the closest key it
    does), or ``None`` for a known one. Keys below a group's own fields (``trace.params.*``, a
    policy's parameters, ``tier_eviction.*``) are free-form and not checked here."""
    groups = typing.get_type_hints(KvsimConf)
    top, _, rest = key.partition(".")
    if top not in groups:
        close = difflib.get_close_matches(top, groups, n=1)
        return f"{top}: not a kvsim config key" + (f"; did you mean {close[0]}?" if close else "")
    inner = rest.partition(".")[0]
    group = groups[top]
    if inner and dataclasses.is_dataclass(group):
        fields = [f.name for f in dataclasses.fields(group)]
        if inner not in fields:
            close = difflib.get_close_matches(inner, fields, n=1)
            return f"{top}.{inner}: not a kvsim config key" + (f"; did you mean {top}.{close[0]}?" if close else "")
    return None


def _check_known_keys(plain: dict[str, Any]) -> None:
    """Refuse keys the schema does not have. Hydra's ``+key=value`` adds a key to any config,
    so a misspelt ``+tier_evictoin.dram=lru`` would otherwise run as if it were not there."""
    for key, value in plain.items():
        keys = [f"{key}.{inner}" for inner in value] if isinstance(value, dict) else [key]
        for dotted in keys or [key]:
            problem = _unknown_key(dotted)
            if problem is not None:
                name, _, message = problem.partition(": ")
                raise ConfigError(name, message)


def _override_key_error(argv: list[str]) -> str | None:
    """A misspelt key in a plain ``key=value`` override, in one line before hydra starts (hydra
    would say it in five and suggest ``+key=value``, which adds the misspelt key instead)."""
    for arg in argv:
        key, equals, _ = arg.partition("=")
        if not equals or arg.startswith(("+", "~", "-")) or "/" in key or key.split(".")[0] == "hydra":
            continue
        problem = _unknown_key(key) or _policy_parameter_error(key, argv)
        if problem is not None:
            return problem
    return None


def _override_value_error(argv: list[str]) -> str | None:
    """A plain ``key=value`` override (or one of a sweep's values) whose value the schema's type
    refuses (``hardware.hbm_gb=abc``, ``hardware.dram_gb=null``, ``tiers=foo``), in one line
    naming the key before hydra starts: hydra refuses it while composing the config, before
    kvsim's task runs, in five lines and with exit status 1. OmegaConf judges, as hydra would,
    by merging the value into the schema; only keys of the schema's own fields are checked (a
    group's choice, a policy's parameters, ``trace.params.*`` are checked elsewhere), and only
    values hydra's plain or sweep syntax gives (interpolations pass, as hydra resolves them).
    Deleting such a key (``~tiers``) is refused too: the run needs it (deleting a group's choice,
    ``~eviction``, is left to the run, which names what is missing)."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import HydraException

    parser = OverridesParser.create()
    for arg in argv:
        if arg.startswith(("+", "-")) or ("=" not in arg and not arg.startswith("~")):
            continue
        try:
            override = parser.parse_override(arg)
            values = list(override.sweep_iterator()) if override.is_sweep_override() else [override.value()]
        except HydraException:
            continue  # hydra's richer syntax (glob, interval) or a syntax error: hydra says what is wrong
        key = override.key_or_group
        top, _, inner = key.partition(".")
        if _field_type(key) is None or (not inner and _is_group(top)) or "." in inner:
            continue
        if override.is_delete():
            return f"{key}: a kvsim config key cannot be deleted (~{key}); set it instead ({key}=...)"
        for value in values:
            problem = _schema_refusal(key, value)
            if problem is not None:
                return problem
    return None


def _is_group(name: str) -> bool:
    """Whether ``name=...`` picks an option of a config group rather than setting a value."""
    return name in POLICY_FAMILIES or (CONF_DIR / name).is_dir()


def _schema_refusal(key: str, value: Any) -> str | None:
    """What the schema says against ``key=value``, in one line naming the key (or the key inside
    a mapping value, ``tiers={hbm_blocks: x}``), or ``None``."""
    try:
        OmegaConf.update(OmegaConf.structured(KvsimConf), key, value, merge=True)
    except (ConfigKeyError, ValidationError) as exc:
        return _refusal_line(exc)
    return None


def _refusal_line(exc: ConfigKeyError | ValidationError) -> str:
    """The schema's refusal of a key or value, as OmegaConf raised it, in one line naming the key."""
    if isinstance(exc, ConfigKeyError):
        return _unknown_key(exc.full_key) or f"{exc.full_key}: not a kvsim config key"
    words = _type_words(exc.full_key)
    if words is None:
        return f"{exc.full_key}: {exc.msg.splitlines()[0]}"
    return f"{exc.full_key}: must be {words}, got {_as_typed(exc.value)}"


_COMPOSED_IN = re.compile(r"In '(?P<config>[^']+)': ")


def _hydra_loader(argv: list[str]) -> tuple[argparse.Namespace, Any] | None:
    """Hydra's reading of a command line and a config loader over the search path hydra will
    search for it (its own argument parser, search path and loader, ``--config-dir`` first), so
    that what is checked before hydra starts is what hydra will compose; ``None`` where hydra
    will refuse the command line itself (a bad flag, a missing ``--config-dir``) and say why."""
    from hydra._internal.config_loader_impl import ConfigLoaderImpl
    from hydra._internal.utils import (
        create_automatic_config_search_path,
        detect_calling_file_or_module_from_task_function,
        get_args_parser,
    )

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None
    calling_file, calling_module = detect_calling_file_or_module_from_task_function(_hydra_main)
    search_path = create_automatic_config_search_path(calling_file, calling_module, args.config_path or ".")
    if args.config_dir is not None:
        if not os.path.isdir(args.config_dir):
            return None
        search_path.prepend(provider="command-line", path=f"file://{os.path.abspath(args.config_dir)}")
    return args, ConfigLoaderImpl(config_search_path=search_path)


def _config_source_error(argv: list[str]) -> str | None:
    """A ``--config-dir`` that is not a folder, or a ``--config-name`` that no folder of the
    search path holds, in one line (hydra says either in several, the second with its search
    path and no list of what is there). A primary config that ``hydra.searchpath`` may find is
    left to hydra, which knows that path only while composing."""
    from hydra._internal.utils import get_args_parser

    try:
        args = get_args_parser().parse_args(argv)
    except SystemExit:
        return None  # hydra says what is wrong with the command line itself
    if args.config_dir is not None and not os.path.isdir(args.config_dir):
        return f"--config-dir: {args.config_dir}: no such folder"
    parsed = _hydra_loader(argv)
    if parsed is None or not args.config_name or _searchpath_may_grow_from_overrides(args):
        return None
    _, loader = parsed
    if any(source.is_config(args.config_name) for source in loader.get_sources()):
        return None
    main_folder = f"--config-path {args.config_path}" if args.config_path else "kvsim's conf/"
    where = " or ".join([*([args.config_dir] if args.config_dir else []), main_folder])
    return f"--config-name: {args.config_name}: no such config in {where}"


def _searchpath_may_grow_from_overrides(args: argparse.Namespace) -> bool:
    return any(arg.lstrip("+").startswith("hydra.searchpath") for arg in args.overrides)


def _searchpath_may_grow(args: argparse.Namespace) -> bool:
    """Whether ``hydra.searchpath`` may add folders (and their group options) to the search path
    while the config is composed: set on the command line, or possibly in a primary config of
    the user's own."""
    return bool(args.config_name or args.config_path) or _searchpath_may_grow_from_overrides(args)


def _config_file_error(argv: list[str]) -> str | None:
    """A key or a value of the wrong type in a config file of the user's own (one named by
    ``--config-name``, ``--config-path``, ``--config-dir`` or found through ``hydra.searchpath``),
    or a misspelt key or a wrong value among a sweep file's ``hydra.sweeper.params``, in one
    line naming the file, the key and what the key holds. Hydra refuses these while composing
    the config, before kvsim's task runs, in five lines and with exit status 1, and prints its
    error itself, leaving nothing to catch; so the config is composed here first, as hydra will
    compose it, and anything else that fails is left to hydra to say. Only where the user's
    files are in play: the shipped ones are checked by tests."""
    from hydra.errors import HydraException

    parsed = _hydra_loader(argv)
    if parsed is None:
        return None
    args, loader = parsed
    if args.config_dir is None and not _searchpath_may_grow(args):
        return None
    config_name = args.config_name or "config"
    try:
        cfg = loader.load_configuration(config_name, args.overrides, RunMode.MULTIRUN if args.multirun else RunMode.RUN)
    except HydraException as exc:
        cause = exc.__cause__ or exc.__context__  # hydra raises its own while handling OmegaConf's
        composed_in = _COMPOSED_IN.match(str(exc))
        if not isinstance(cause, (ConfigKeyError, ValidationError)) or composed_in is None:
            return None
        return f"{_config_file(loader, composed_in['config'])}: {_refusal_line(cause)}"
    params = OmegaConf.select(cfg, "hydra.sweeper.params") if args.multirun else None
    primary = _config_file(loader, config_name)
    for key, value in (params or {}).items():
        override = [f"{key}={value}"]  # as hydra's basic sweeper makes them overrides
        problem = _override_key_error(override) or _override_value_error(override)
        if problem is not None:
            in_primary = os.path.isfile(primary) and key in (
                OmegaConf.select(OmegaConf.load(primary), "hydra.sweeper.params") or {}
            )
            return (f"{primary}: " if in_primary else "") + f"hydra.sweeper.params: {problem}"
    return None


def _config_file(loader: Any, config_path: str) -> str:
    """The file a config of hydra's search path (``my_run``, ``hardware/mine``) was read from,
    as hydra's own search finds it: the first source holding it."""
    for source in loader.get_sources():
        if source.is_config(config_path):
            folder = source.path if source.scheme() == "file" else source.full_path()
            return os.path.join(folder, f"{config_path}.yaml")
    return config_path


def _field_type(key: str) -> Any:
    """The schema's type of a dotted key, or ``None`` where the key is not a schema field
    (below a free-form mapping or a policy)."""
    hint: Any = KvsimConf
    for part in key.split("."):
        base = _without_none(hint)
        if not dataclasses.is_dataclass(base):
            return None
        hint = typing.get_type_hints(base).get(part)
        if hint is None:
            return None
    return hint


def _without_none(hint: Any) -> Any:
    """``X`` of ``X | None``; any other type as it is."""
    if typing.get_origin(hint) in (typing.Union, types.UnionType):
        return next(arg for arg in typing.get_args(hint) if arg is not type(None))
    return hint


_TYPE_WORDS = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


def _type_words(key: str) -> str | None:
    """What a schema field holds, in an error's words: ``float | None`` is "a number or null"."""
    hint = _field_type(key)
    base = _without_none(hint)
    if dataclasses.is_dataclass(base):
        words = f"a group of keys, set one at a time ({key}.{dataclasses.fields(base)[0].name}=...)"
    elif typing.get_origin(base) is dict:
        words = f"a mapping, set one entry at a time (+{key}.NAME=...)"
    elif base in _TYPE_WORDS:
        words = _TYPE_WORDS[base]
    else:
        return None
    return words + (" or null" if base is not hint else "")


def _as_typed(value: Any) -> str:
    """A value as it is typed on a command line: ``null``, ``true``, ``'abc'``."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return repr(value)


def _policy_parameter_error(key: str, argv: list[str]) -> str | None:
    """A ``family.param`` override that the chosen shipped policy has no parameter for, in one
    line with its parameters (hydra would say "not in struct" over five). Left to hydra where
    the choice is not one shipped policy (a sweep over several, a ``_target_`` of one's own)."""
    family, _, param = key.partition(".")
    if family not in POLICY_FAMILIES or not param or "." in param or param.startswith("_"):
        return None
    chosen = _chosen_option(family, argv)
    if chosen is None or any(arg.lstrip("+").startswith(f"{family}._target_=") for arg in argv):
        return None
    yaml_file = CONF_DIR / family / f"{chosen}.yaml"
    if yaml_file.exists():
        params = [k for k in OmegaConf.load(yaml_file) if not str(k).startswith("_")]
    elif chosen in available(family):
        params = list(policy_parameters(resolve(family, chosen)))
    else:
        return None
    if param in params:
        return None
    close = difflib.get_close_matches(param, params, n=1)
    hint = f"did you mean {family}.{close[0]}? " if close else ""
    listed = ", ".join(params) if params else "none"
    return f"{key}: {family}={chosen} has no parameter {param!r}; {hint}its parameters: {listed}"


_OTHER_CONFIG_FLAGS = {"-cn", "--config-name", "-cp", "--config-path", "-cd", "--config-dir"}


def _chosen_option(family: str, argv: list[str]) -> str | None:
    """The one option of a config group this command line selects (the last ``family=...``,
    else the default in ``config.yaml``); ``None`` for a sweep over several, or where another
    primary config may set the default (``--config-name``, ``--config-dir``, ``--config-path``)."""
    picked = [arg.partition("=")[2] for arg in argv if arg.lstrip("+").partition("=")[0] == family]
    if picked:
        return None if "," in picked[-1] else picked[-1]
    if any(arg.split("=")[0] in _OTHER_CONFIG_FLAGS for arg in argv):
        return None
    for entry in OmegaConf.load(CONF_DIR / "config.yaml").defaults:
        if isinstance(entry, DictConfig) and family in entry:
            return str(entry[family])
    return None


def sim_config(cfg: DictConfig) -> SimConfig:
    """The library config for a composed hydra config; policies become factories."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    _check_known_keys(plain)
    policies = {family: _policy_factory(cfg, family) for family in POLICY_FAMILIES}
    return SimConfig(
        model=ModelConfig(**plain["model"]),
        hardware=HardwareConfig(**plain["hardware"]),
        tiers=TierConfig(**plain["tiers"]),
        engine=EngineConfig(**plain["engine"]),
        slo=SLOConfig(**plain["slo"]),
        power=PowerConfig(**plain["power"]),
        mode=plain["mode"],
        timeseries_interval_s=plain["timeseries_interval_s"],
        check_invariants=plain["check_invariants"],
        tier_eviction=plain["tier_eviction"],
        **policies,
    )


def _policy_factory(cfg: DictConfig, family: str) -> Any:
    """The factory of a family's policy node. A family left unset (``~eviction``) or a
    ``_target_`` that names nothing is a ConfigError naming the key, said as a bad policy name
    is, where hydra's own errors are stack traces."""
    if OmegaConf.is_missing(cfg, family):
        raise ConfigError(family, f"no {family} policy is set; choose one of {', '.join(available(family))}")
    try:
        return instantiate(cfg[family])
    except InstantiationException as exc:
        try:
            resolve(family, OmegaConf.select(cfg, f"{family}._target_"))
        except UnknownPolicyError as unknown:
            raise ConfigError(f"{family}._target_", str(unknown)) from None
        raise ConfigError(family, str(exc).splitlines()[0]) from None


def trace_spec(cfg: DictConfig) -> TraceSpec:
    return TraceSpec(**OmegaConf.to_container(cfg.trace, resolve=True))


def _identity(cfg: DictConfig) -> str:
    """The resolved config minus output switches, plus the timing profile it resolves to and
    the SHA-256 of each input file (the trace, a model's config.json, a calibrated profile's
    fit): two runs with equal identity are the same run. The digests are there because a file
    rewritten in place (a new slice, a fixed row, a refitted profile) keeps its path, and the
    profile's name because ``hardware.profile: null`` means whichever one ships for the GPU;
    resume must not keep results for the old ones."""
    plain = OmegaConf.to_container(cfg, resolve=True)
    plain.pop("output", None)
    files = {"trace_sha256": cfg.trace.get("path"), "model_config_sha256": cfg.model.get("config_json")}
    try:
        profile = timing_profile_name(get_gpu(cfg.hardware.gpu).name, cfg.hardware.profile)
    except ValueError:
        pass  # an unknown GPU fails later, naming the key
    else:
        plain["timing_profile"] = profile
        files["timing_profile_sha256"] = calibrated_profile_file(profile)
        if cfg.hardware.get("tensor_parallel", 1) > 1:
            files["allreduce_profile_sha256"] = allreduce_source_file(profile)
    files.update(_policy_source_files(cfg))
    for key, path in files.items():
        if path is not None and Path(path).is_file():  # a missing file fails later, naming the path
            with open(path, "rb") as file:
                plain[key] = hashlib.file_digest(file, "sha256").hexdigest()
    return json.dumps(plain, sort_keys=True, indent=2)


def _policy_source_files(cfg: DictConfig) -> dict[str, str | None]:
    """The source file of each policy the run uses, under ``<family>_source_sha256`` (and
    ``tier_eviction.<tier>_source_sha256``). A policy is the part of a run a user edits most,
    in place (``policies/eviction/my_policy.py``, or a module of their own package), and a
    resumed sweep must redo its runs after such an edit rather than keep the old results. A
    reference that names nothing is left out here: building the run fails on it, naming it."""
    refs = {
        f"{family}_source_sha256": (family, OmegaConf.select(cfg, f"{family}._target_")) for family in POLICY_FAMILIES
    }
    for tier, name in (cfg.get("tier_eviction") or {}).items():
        refs[f"tier_eviction.{tier}_source_sha256"] = ("eviction", name)
    files: dict[str, str | None] = {}
    for key, (family, ref) in refs.items():
        try:
            source = inspect.getsourcefile(policy_class(resolve(family, ref)))
        except Exception:  # noqa: BLE001 (a bad reference or a broken file: building the run names it)
            continue
        files[key] = source
    return files


def _already_done(run_dir: Path, identity: str) -> bool:
    config = run_dir / CONFIG_FILE
    return (run_dir / SUMMARY_FILE).exists() and config.exists() and config.read_text() == identity


def _forget_previous_result(run_dir: Path) -> None:
    """Remove what an earlier run left in ``run_dir`` before this one starts. Its summary first:
    that file marks a complete result, and if it outlived a config this run is about to
    rewrite, a run killed or failed now would leave the old numbers standing as this config's
    (resume would skip it, ``load_sweep`` would list it as ok)."""
    for name in (SUMMARY_FILE, CONFIG_FILE, ERROR_FILE, REQUESTS_FILE, TIMESERIES_FILE, *PLOT_FILES):
        (run_dir / name).unlink(missing_ok=True)


def _record_failure(run_dir: Path, exc: BaseException) -> None:
    message = str(exc)
    if isinstance(exc, KeyboardInterrupt):
        message = "interrupted before it finished; running the same command again redoes it"
    error = {
        "type": type(exc).__name__,
        "message": message,
        "traceback": "".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
    }
    write_text_atomic(run_dir / ERROR_FILE, json.dumps(error, indent=2) + "\n")


def execute(cfg: DictConfig, run_dir: Path, overrides: list[str], progress_label: str = "") -> dict[str, Any] | None:
    """Run one simulation into ``run_dir``; ``None`` when skipped as already complete.
    ``progress_label`` heads the run's progress lines (a sweep's workers share stderr)."""
    from sim.run import run  # imported late so that `kvsim --help` stays fast

    identity = _identity(cfg)
    if cfg.output.resume and _already_done(run_dir, identity):
        if cfg.output.plots and not (run_dir / PLOT_FILES[0]).exists():
            # First made with output.plots=false: its result stands, and its plots are drawn
            # from the files it saved (every run has the hit-ratio plot).
            from sim.plots import plot_run
            from sim.result import Result

            plot_run(Result.load(run_dir), run_dir)
            print(f"kvsim: {run_dir} already holds this run's result; drew its plots (output.resume=false to redo)")
        else:
            print(f"kvsim: {run_dir} already holds this run's result; skipping (output.resume=false to redo)")
        return None
    run_dir.mkdir(parents=True, exist_ok=True)
    _forget_previous_result(run_dir)
    write_text_atomic(run_dir / OVERRIDES_FILE, json.dumps(_parse_overrides(overrides), indent=2) + "\n")
    try:
        config = sim_config(cfg)
        spec = trace_spec(cfg)
        trace = load_trace(spec)
        result = run(config, trace, progress=cfg.output.progress, progress_label=progress_label)
        write_text_atomic(run_dir / CONFIG_FILE, identity)
        if cfg.output.plots:
            from sim.plots import plot_run

            plot_run(result, run_dir)
        result.save(run_dir)  # summary.json last: its presence marks the run complete
    except BaseException as exc:
        _record_failure(run_dir, exc)
        raise
    print(f"\n{spec.describe()}: {len(trace):,} requests, mode={config.mode}")
    print(format_summary(result.summary))
    print(f"results in {run_dir}")
    return result.summary


def _parse_overrides(overrides: list[str]) -> dict[str, str]:
    """Each command-line override's key and value as typed, for kvsim-collect's columns. A value
    hydra quoted (it quotes one with spaces: ``trace.path='/data/my traces/a.jsonl'``) is
    unquoted, so the column holds the path, not the path in quotes."""
    parsed = {}
    for item in overrides:
        key, _, value = item.partition("=")
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        parsed[key.lstrip("+~")] = value
    return parsed


@hydra.main(version_base=None, config_path=".", config_name="config")
def _hydra_main(cfg: DictConfig) -> None:
    warnings.formatwarning = _one_line_warning  # again here: a sweep's workers do not run main()
    hydra_cfg = HydraConfig.get()
    run_dir = Path(hydra_cfg.runtime.output_dir)
    sweeping = hydra_cfg.mode == RunMode.MULTIRUN
    try:
        execute(cfg, run_dir, list(hydra_cfg.overrides.task), progress_label=run_dir.name if sweeping else "")
    except USER_ERRORS as exc:
        if _full_error():
            raise
        if not sweeping:
            # A bad config or trace is the user's to fix: one line, no stack trace.
            print(f"kvsim: error: {exc}", file=sys.stderr)
            sys.exit(2)
        # Each failed run in one line as it fails; error.json is already in the run directory
        # for kvsim-collect. The run then ends as done for hydra, which would otherwise print
        # its own "Error executing job" and HYDRA_FULL_ERROR lines; main() ends the sweep
        # with an error from the notes. The other runs go on either way.
        print(f"kvsim: error: {run_dir}: {exc}", file=sys.stderr, flush=True)
        if not _note_failed_run(run_dir, hydra_cfg.job.num):
            raise SweepRunFailed(
                f"kvsim: error: the sweep has failed runs (the first: {run_dir.name}; each has error.json, "
                f"and kvsim-collect {run_dir.parent} lists them)"
            ) from None


def _note_failed_run(run_dir: Path, job_num: int) -> bool:
    """Leave a note of a sweep's run that failed on bad input in main()'s folder; ``False``
    where there is none (a worker on another machine, a sweep not started by main()), so that
    the run fails to hydra instead and the sweep cannot end as a success."""
    folder = os.environ.get(FAILED_RUNS_ENV)
    if not folder or not Path(folder).is_dir():
        return False
    note = {"job": job_num, "run": run_dir.name, "sweep_dir": str(run_dir.parent)}
    write_text_atomic(Path(folder) / f"{job_num}.json", json.dumps(note) + "\n")
    return True


def _exit_if_runs_failed(folder: Path) -> None:
    """End a sweep whose runs left failure notes with one line and exit status 2, as a single
    run that fails on bad input ends; the runs have said their own errors as they failed."""
    notes = sorted((json.loads(path.read_text()) for path in folder.glob("*.json")), key=lambda note: note["job"])
    if not notes:
        return
    first, collect = notes[0]["run"], f"kvsim-collect {notes[0]['sweep_dir']}"
    if len(notes) == 1:
        line = f"1 failed run ({first}; it has error.json, and {collect} lists it)"
    else:
        line = f"{len(notes)} failed runs (the first: {first}; each has error.json, and {collect} lists them)"
    print(f"kvsim: error: the sweep has {line}", file=sys.stderr)
    sys.exit(2)


def _group_choice_error(argv: list[str]) -> str | None:
    """One line for a command-line choice of a config group that has no such option (hydra's
    own message runs to a screen of search paths), or ``None``. Only plain choices and
    comma-separated sweeps are checked; anything in hydra's richer override syntax (``glob()``,
    ``range()``, interpolations, deletions) is left to hydra."""
    choices = []
    for arg in argv:
        key, sep, value = arg.partition("=")
        key = key.lstrip("+")
        if not sep or arg.startswith(("-", "~")) or "." in key or "/" in key or key == "hydra":
            continue
        if not re.fullmatch(r"[\w.-]+(,[\w.-]+)*", value):
            continue
        choices.append((key, value.split(",")))
    if not choices:
        return None
    parsed = _hydra_loader(argv)
    if parsed is None or _searchpath_may_grow(parsed[0]):
        return None
    loader = parsed[1]  # with the groups of a --config-dir of the user's own
    groups = set(loader.list_groups(""))
    options = {key: loader.get_group_options(key) for key, _ in choices if key in groups}
    for key, values in choices:
        for value in values:
            if key in options and value not in options[key]:
                close = difflib.get_close_matches(value, options[key], n=1)
                hint = f"did you mean {close[0]}? " if close else ""
                return f"{key}={value}: no such {key} option; {hint}choose one of {', '.join(options[key])}"
    return None


def _one_line_warning(
    message: Warning | str, category: type[Warning], filename: str, lineno: int, line: str | None = None
) -> str:
    """A simulator warning (a tier that stays empty, a stalled run) as the CLI's own line, not
    as the source line that raised it."""
    return f"kvsim: warning: {message}\n"


class Terminated(KeyboardInterrupt):
    """SIGTERM (``kill PID``, a batch scheduler's stop) to the ``kvsim`` process, raised as an
    interrupt so that it ends as Ctrl-C does: a sweep's launcher stops its worker processes,
    which would otherwise live on without it, each finishing the run it had started and then
    waiting idle, and a run records that it was interrupted."""


def _raise_terminated(signum: int, frame: types.FrameType | None) -> None:
    raise Terminated()


def main() -> None:
    """Console entry point; hydra's own stack traces are shortened to the message, a
    misspelt key or group option and a value of the wrong type are one line before hydra
    starts, warnings are one line each, and a sweep whose runs failed on bad input ends with one
    line of kvsim's (_exit_if_runs_failed). SIGTERM ends it as Ctrl-C does (:class:`Terminated`),
    with exit status 143."""
    warnings.formatwarning = _one_line_warning
    signal.signal(signal.SIGTERM, _raise_terminated)
    argv = sys.argv[1:]
    problem = (
        _config_source_error(argv)
        or _override_key_error(argv)
        or _override_value_error(argv)
        or _group_choice_error(argv)
        or _config_file_error(argv)
    )
    if problem is not None:
        print(f"kvsim: error: {problem}", file=sys.stderr)
        sys.exit(2)
    with tempfile.TemporaryDirectory(prefix="kvsim-failed-runs-", ignore_cleanup_errors=True) as failed_runs:
        os.environ[FAILED_RUNS_ENV] = failed_runs  # withdrawn below: the folder lives as long as this command
        try:
            _hydra_main()
        except KeyboardInterrupt as exc:
            # Ctrl-C or SIGTERM. In a sweep every finished run is complete on disk and no
            # interrupted one looks complete, so the same command picks up where this one stopped.
            sweep = any(arg in ("-m", "--multirun") for arg in sys.argv[1:])
            rest = "; finished runs are kept, the same command again runs the rest" if sweep else ""
            terminated = isinstance(exc, Terminated)
            print(f"\nkvsim: {'terminated' if terminated else 'interrupted'}{rest}", file=sys.stderr)
            sys.exit(143 if terminated else 130)
        finally:
            os.environ.pop(FAILED_RUNS_ENV, None)
        _exit_if_runs_failed(Path(failed_runs))


if __name__ == "__main__":
    main()
