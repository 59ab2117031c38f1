"""The ``kvsim`` hydra app end to end, as a user runs it: outputs, errors, sweeps, resume,
collection, custom policies, and identical results from single runs and parallel sweeps."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pandas as pd
import pytest

from hwmodels.calibrated import PROFILES_DIR
from hwmodels.models import MODELS
from sim.results import load_sweep

ROOT = Path(__file__).resolve().parents[1]
SMALL = "trace.params.n_requests=120"


def kvsim(
    *args: str, cwd: Path, extra_path: Path | None = None, full_error: bool = False
) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(str(p) for p in (ROOT, extra_path) if p)}
    env.pop("HYDRA_FULL_ERROR", None)
    if full_error:
        env["HYDRA_FULL_ERROR"] = "1"
    return subprocess.run([sys.executable, "-m", "conf.app", *args], cwd=cwd, env=env, capture_output=True, text=True)


def test_a_run_writes_every_output_and_prints_the_summary(tmp_path: Path) -> None:
    done = kvsim(SMALL, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    run = tmp_path / "run"
    for name in ("summary.json", "requests.parquet", "timeseries.parquet", "config.json", "latency_cdf.png",
                 "hit_ratio_by_tier.png", "occupancy_and_links.png", ".hydra/config.yaml"):  # fmt: skip
        assert (run / name).exists(), name
    summary = json.loads((run / "summary.json").read_text())
    assert summary["n_finished"] + summary["n_rejected"] == 120
    assert len(pd.read_parquet(run / "requests.parquet")) == 120
    assert "TTFT p50 / p99" in done.stdout and "120 finished" in done.stdout


def test_a_tier_gets_its_own_eviction_policy_from_the_command_line(tmp_path: Path) -> None:
    args = (SMALL, "eviction=workload_aware", "hardware.dram_gb=8", "output.plots=false")
    done = kvsim(*args, "+tier_eviction.dram=lru", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["eviction"] == "workload_aware" and summary["eviction_dram"] == "lru"
    assert "eviction=workload_aware, dram: lru" in done.stdout


def test_misspelt_key_unknown_policy_and_bad_value_fail_fast_and_clearly(tmp_path: Path) -> None:
    for typo, message in (
        ("hardware.hbm_gbb=3", "hardware.hbm_gbb: not a kvsim config key; did you mean hardware.hbm_gb?"),
        ("evicton=lru", "evicton: not a kvsim config key; did you mean eviction?"),  # not hydra's "+evicton=lru"
    ):
        done = kvsim(typo, cwd=tmp_path)
        assert done.returncode == 2 and done.stderr.strip() == f"kvsim: error: {message}"
    assert not (tmp_path / "outputs").exists()  # refused before a run directory was made
    evictions = "arc, belady, fifo, gdsf, lfu, lru, s3fifo, sieve, workload_aware"
    models = ", ".join(sorted(MODELS))  # the config group has one entry per shipped model
    for args, message in (
        (["eviction=lruu"], f"eviction=lruu: no such eviction option; did you mean lru? choose one of {evictions}"),
        (["-m", "eviction=lru,s3fifoo"], f"eviction=s3fifoo: no such eviction option; did you mean s3fifo? "
                                         f"choose one of {evictions}"),
        (["model=qwen-2.5-7bb"], f"model=qwen-2.5-7bb: no such model option; did you mean qwen-2.5-7b? "
                                 f"choose one of {models}"),
    ):  # fmt: skip
        unknown = kvsim(*args, cwd=tmp_path)
        assert unknown.returncode == 2 and unknown.stderr.strip() == f"kvsim: error: {message}"
    for added, message in (
        ("+tier_evictoin.dram=lru", "tier_evictoin: not a kvsim config key; did you mean tier_eviction?"),
        ("+hardware.hbm_gbb=3", "hardware.hbm_gbb: not a kvsim config key; did you mean hardware.hbm_gb?"),
    ):
        run = kvsim(SMALL, added, f"hydra.run.dir={tmp_path / 'added'}", cwd=tmp_path)
        assert run.returncode == 2 and run.stderr.strip().splitlines()[-1] == f"kvsim: error: {message}"
    bad = kvsim(SMALL, "hardware.dram_gb=-5", f"hydra.run.dir={tmp_path / 'bad'}", cwd=tmp_path)
    assert bad.returncode == 2
    assert bad.stderr.strip().splitlines()[-1] == "kvsim: error: hardware.dram_gb: must be >= 0, got -5.0"
    assert json.loads((tmp_path / "bad" / "error.json").read_text())["type"] == "ConfigError"


def test_a_value_of_the_wrong_type_a_deleted_key_or_a_missing_target_is_one_line_naming_the_key(
    tmp_path: Path,
) -> None:
    """Hydra refuses these while composing the config, before kvsim's task runs, in five lines
    and with exit status 1; a deleted policy or a _target_ that names nothing was a stack trace."""
    for args, message in (
        (["hardware.hbm_gb=abc"], "hardware.hbm_gb: must be a number or null, got 'abc'"),
        (["hardware.dram_gb=null"], "hardware.dram_gb: must be a number, got null"),
        (["tiers=foo"], "tiers: must be a group of keys, set one at a time (tiers.block_tokens=...), got 'foo'"),
        (["-m", "engine.max_num_seqs=8,2.5"], "engine.max_num_seqs: must be an integer, got 2.5"),  # a sweep's value
        (["~tiers"], "tiers: a kvsim config key cannot be deleted (~tiers); set it instead (tiers=...)"),
    ):
        done = kvsim(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, f"kvsim: error: {message}\n")
    assert not list(tmp_path.iterdir())  # refused before a run directory was made
    evictions = "arc, belady, fifo, gdsf, lfu, lru, s3fifo, sieve, workload_aware"
    for args, message in (
        (["~eviction"], f"eviction: no eviction policy is set; choose one of {evictions}"),
        (["eviction._target_=nosuch.Mod"],
         "eviction._target_: eviction policy 'nosuch.Mod': cannot import 'nosuch' (No module named 'nosuch')"),
    ):  # fmt: skip
        done = kvsim(SMALL, *args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, f"kvsim: error: {message}\n")
        assert json.loads((tmp_path / "run" / "error.json").read_text())["type"] == "ConfigError"


def test_a_wrong_value_or_key_in_a_users_own_config_file_is_one_line_naming_the_file(tmp_path: Path) -> None:
    """Hydra refuses these while composing the config, in five lines and with exit status 1."""
    configs = tmp_path / "configs"
    (configs / "hardware").mkdir(parents=True)
    files = {
        "typed.yaml": "defaults:\n  - config\n  - _self_\nhardware:\n  hbm_gb: abc\n",
        "typo.yaml": "defaults:\n  - config\n  - _self_\ntiers:\n  hbm_blockz: 3\n",
        "grouped.yaml": "defaults:\n  - config\n  - override hardware: mine\n  - _self_\n",
        "hardware/mine.yaml": "defaults:\n  - h100\n  - _self_\ndram_gb: lots\n",
        "sweep.yaml": "defaults:\n  - config\n  - _self_\nhydra:\n  sweeper:\n    params:\n"
        "      engine.max_num_seqs: 8,2.5\n",
        "sweep_typo.yaml": "defaults:\n  - config\n  - _self_\nhydra:\n  sweeper:\n    params:\n"
        "      eviction: lru,fifo\n      tracee.max_requests: 5,6\n",
        "good.yaml": "defaults:\n  - config\n  - _self_\nmode: replay\ntiers:\n  hbm_blocks: 50\n",
    }
    for name, text in files.items():
        (configs / name).write_text(text)
    for args, message in (
        (["--config-dir", str(configs), "--config-name", "typed"],
         f"{configs / 'typed.yaml'}: hardware.hbm_gb: must be a number or null, got 'abc'"),
        ([f"-cd={configs}", "-cn=typo"],
         f"{configs / 'typo.yaml'}: tiers.hbm_blockz: not a kvsim config key; did you mean tiers.hbm_blocks?"),
        (["-cd", str(configs), "-cn", "grouped"],
         f"{configs / 'hardware' / 'mine.yaml'}: hardware.dram_gb: must be a number, got 'lots'"),
        (["-cp", str(configs), "-cn", "typed", "hydra.searchpath=[pkg://conf]"],
         f"{configs / 'typed.yaml'}: hardware.hbm_gb: must be a number or null, got 'abc'"),
        (["-m", "-cd", str(configs), "-cn", "sweep"],
         f"{configs / 'sweep.yaml'}: hydra.sweeper.params: engine.max_num_seqs: must be an integer, got 2.5"),
        (["-m", "-cd", str(configs), "-cn", "sweep_typo"],
         f"{configs / 'sweep_typo.yaml'}: hydra.sweeper.params: tracee: not a kvsim config key; did you mean trace?"),
    ):  # fmt: skip
        done = kvsim(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, f"kvsim: error: {message}\n"), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]  # refused before a run directory was made
    good = kvsim("-cd", str(configs), "-cn", "good", f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert good.returncode == 0, good.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["hbm_blocks"] == 50


def test_a_missing_config_dir_or_config_name_is_one_line(tmp_path: Path) -> None:
    """Hydra says these in three to eight lines, the second with its search path."""
    (tmp_path / "configs").mkdir()
    configs = str(tmp_path / "configs")
    for args, message in (
        (["-cd", str(tmp_path / "nosuch"), "hardware=mine"], f"--config-dir: {tmp_path / 'nosuch'}: no such folder"),
        (["-cn", "nosuch"], "--config-name: nosuch: no such config in kvsim's conf/"),
        (["-cd", configs, "-cn", "nosuch"], f"--config-name: nosuch: no such config in {configs} or kvsim's conf/"),
    ):
        done = kvsim(*args, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (2, f"kvsim: error: {message}\n"), args
    assert sorted(p.name for p in tmp_path.iterdir()) == ["configs"]


def test_a_group_option_of_the_users_own_config_dir_is_chosen_and_named_among_the_options(tmp_path: Path) -> None:
    """The check of a group's choice looked only at kvsim's own options, so ``--config-dir``'s
    were refused as "no such option" before hydra, which has them, ran."""
    (tmp_path / "configs" / "hardware").mkdir(parents=True)
    (tmp_path / "configs" / "hardware" / "mine.yaml").write_text("defaults:\n  - h100\n  - _self_\nhbm_gb: 5\n")
    from omegaconf import OmegaConf

    configs = str(tmp_path / "configs")
    done = kvsim("-cd", configs, "hardware=mine", SMALL, "output.plots=false", f"hydra.run.dir={tmp_path / 'run'}",
                 cwd=tmp_path)  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert OmegaConf.load(tmp_path / "run" / ".hydra" / "config.yaml").hardware.hbm_gb == 5
    misspelt = kvsim("-cd", configs, "hardware=mien", cwd=tmp_path)
    head = "kvsim: error: hardware=mien: no such hardware option; did you mean mine? choose one of "
    assert misspelt.returncode == 2 and misspelt.stderr.startswith(head)
    assert {"h100", "mine"} <= set(misspelt.stderr.removeprefix(head).strip().split(", "))


def test_values_the_schema_takes_and_keys_it_does_not_type_are_left_to_the_run() -> None:
    from conf.app import _override_value_error

    for arg in (
        "hardware.hbm_gb=10", "hardware.hbm_gb=null", "hardware.hbm_gb='10'", "hardware.hbm_gb=range(10,30,10)",
        "hardware.dram_gb=${hardware.ssd_gb}", "tiers={hbm_blocks:3}", "hardware=h100_offload", "mode=replay",
        "eviction=lru", "prefetch.depth=abc", "trace.params.rate=abc", "+tier_eviction.dram=lru", "~eviction",
        "hydra.run.dir=x", "-m", "hardware.hbm_gb=glob(*)",
    ):  # fmt: skip
        assert _override_value_error([arg]) is None, arg
    assert _override_value_error(["tiers={hbm_blocks:x}"]) == "tiers.hbm_blocks: must be an integer or null, got 'x'"
    assert _override_value_error(["tiers={hbm_blockz:3}"]) == (
        "tiers.hbm_blockz: not a kvsim config key; did you mean tiers.hbm_blocks?"
    )
    assert _override_value_error(["output.plots=maybe"]) == "output.plots: must be true or false, got 'maybe'"
    assert _override_value_error(["trace.params=x"]) == (
        "trace.params: must be a mapping, set one entry at a time (+trace.params.NAME=...), got 'x'"
    )


def test_a_file_trace_without_a_path_is_an_error_not_the_bundled_workload(tmp_path: Path) -> None:
    # OmegaConf ignores a ``???`` merged over a default, so this once ran the bundled workload.
    for choice in ("mooncake", "file"):
        run = kvsim(f"trace={choice}", f"hydra.run.dir={tmp_path / choice}", cwd=tmp_path)
        assert run.returncode == 2, run.stdout
        assert run.stderr.strip().splitlines()[-1].startswith("kvsim: error: trace.path is not set")
        assert not (tmp_path / choice / "summary.json").exists()
    rows = [
        {"timestamp": 100 * i, "input_length": 1500, "output_length": 8, "hash_ids": [1, 2, i]} for i in range(3, 9)
    ]
    sample = tmp_path / "sample.jsonl"
    sample.write_text("".join(json.dumps(row) + "\n" for row in rows))
    given = kvsim("trace=mooncake", f"trace.path={sample}", "output.plots=false", cwd=tmp_path)
    assert given.returncode == 0, given.stderr
    assert f"{sample} (mooncake): 6 requests" in given.stdout


# What hydra prints around a failed job's own error: a bad input needs none of it.
HYDRA_NOISE = ("Error executing job with overrides", "HYDRA_FULL_ERROR", "Traceback")


def test_bad_input_fails_in_kvsim_s_own_lines_without_hydra_s_in_a_run_and_a_sweep(tmp_path: Path) -> None:
    """A run or a sweep stopped by bad input says so in kvsim's lines alone (the file, line and
    field; for a sweep, which run) and exits 2, under the default launcher and hydra's basic
    one; the sweep's good run still finishes. HYDRA_FULL_ERROR=1 still gives hydra's full stack."""
    missing = ("trace=file", "trace.path=/nonexistent", f"hydra.run.dir={tmp_path / 'run'}")
    single = kvsim(*missing, cwd=tmp_path)
    assert (single.returncode, single.stderr) == (2, "kvsim: error: /nonexistent: file not found\n")
    full = kvsim(*missing, cwd=tmp_path, full_error=True)
    assert full.returncode != 0 and "Traceback" in full.stderr
    assert full.stderr.strip().splitlines()[-1] == "traces.errors.TraceFormatError: /nonexistent: file not found"
    good, bad = tmp_path / "good.jsonl", tmp_path / "bad.jsonl"
    row = {"timestamp": 0, "input_length": 1500, "output_length": 8, "hash_ids": [1, 2]}
    good.write_text(json.dumps(row) + "\n")
    bad.write_text(json.dumps(row) + "\n" + json.dumps({**row, "input_length": -3}) + "\n")
    for launcher in ("kvsim_joblib", "basic"):
        sweep = tmp_path / launcher
        done = kvsim(
            "-m", "trace=mooncake", f"trace.path={good},{bad}", "output.plots=false", f"hydra/launcher={launcher}",
            f"hydra.sweep.dir={sweep}", cwd=tmp_path,
        )  # fmt: skip
        assert done.returncode == 2 and not any(noise in done.stderr for noise in HYDRA_NOISE), done.stderr
        good_run, bad_run = (f"trace.path={str(path).replace('/', '%2F')},trace=mooncake" for path in (good, bad))
        assert done.stderr.strip().splitlines() == [
            f"kvsim: error: {sweep / bad_run}: {bad}: line 2: field 'input_length': must be >= 1 (got -3)",
            f"kvsim: error: the sweep has 1 failed run ({bad_run}; it has error.json, and kvsim-collect {sweep} lists it)",
        ]
        assert [p.parent.name for p in sweep.rglob("summary.json")] == [good_run]


def test_a_run_or_sweep_directory_that_cannot_be_written_is_one_line(tmp_path: Path) -> None:
    """Hydra makes the directory before kvsim's task runs; a path under a file was its stack
    trace and exit status 1."""
    blocker = tmp_path / "afile"
    blocker.write_text("")
    for args, key, folder in (
        ([f"hydra.run.dir={blocker / 'run'}"], "hydra.run.dir", blocker / "run"),
        (["-m", "hardware.hbm_gb=10,20", f"hydra.sweep.dir={blocker / 's'}"], "hydra.sweep.dir", blocker / "s"),
    ):
        done = kvsim(*args, SMALL, cwd=tmp_path)
        assert (done.returncode, done.stderr) == (
            2, f"kvsim: error: {key}: cannot write in {folder}: {blocker} is a file, not a directory\n"
        )  # fmt: skip
    full = kvsim(SMALL, f"hydra.run.dir={blocker / 'run'}", cwd=tmp_path, full_error=True)
    assert full.returncode == 1 and "Traceback" in full.stderr and "NotADirectoryError" in full.stderr
    assert blocker.read_text() == "" and sorted(p.name for p in tmp_path.iterdir()) == ["afile"]


def test_sweep_runs_in_parallel_collects_failures_and_resumes(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    args = ("-m", SMALL, "eviction=lru,belady", "hardware.hbm_gb=0.5,-1", f"hydra.sweep.dir={sweep}")
    first = kvsim(*args, cwd=tmp_path)
    assert first.returncode == 2 and "Traceback" not in first.stderr  # the hbm_gb=-1 runs fail, in a line each
    assert not any(noise in first.stderr for noise in HYDRA_NOISE), first.stderr
    failures = [line for line in first.stderr.splitlines() if line.startswith("kvsim: error: ")]
    assert len(failures) == 3 and all("hardware.hbm_gb: must be a positive number" in f for f in failures[:2])
    assert failures[-1].startswith(
        "kvsim: error: the sweep has 2 failed runs (the first: eviction=lru,hardware.hbm_gb=-1,"
    )
    collected = subprocess.run(
        [sys.executable, "-m", "conf.collect", str(sweep)], cwd=tmp_path, capture_output=True, text=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
    )  # fmt: skip
    assert collected.returncode == 0, collected.stderr
    table = pd.read_parquet(sweep / "collected.parquet")
    assert len(table) == 4
    assert sorted(table["status"]) == ["failed", "failed", "ok", "ok"]
    assert table.loc[table["status"] == "failed", "error"].str.contains("hardware.hbm_gb").all()
    ok = table[table["status"] == "ok"]
    assert set(ok["eviction"]) == {"lru", "belady"}  # belady: the offline bound works from the CLI too
    assert ok.set_index("eviction")["token_hit_ratio"]["belady"] >= ok.set_index("eviction")["token_hit_ratio"]["lru"]
    stamps = {p: p.stat().st_mtime_ns for p in sweep.rglob("summary.json")}
    again = kvsim(*args, cwd=tmp_path)
    assert again.stdout.count("skipping") == 2
    assert {p: p.stat().st_mtime_ns for p in sweep.rglob("summary.json")} == stamps


def test_resume_redoes_a_run_whose_trace_file_changed_under_the_same_path(tmp_path: Path) -> None:
    sample = tmp_path / "sample.jsonl"

    def write_trace(n_rows: int) -> None:
        rows = [
            {"timestamp": 100 * i, "input_length": 1024, "output_length": 4, "hash_ids": [1, 100 + i]}
            for i in range(n_rows)
        ]
        sample.write_text("".join(json.dumps(row) + "\n" for row in rows))

    args = ("trace=mooncake", f"trace.path={sample}", "output.plots=false", f"hydra.run.dir={tmp_path / 'run'}")
    write_trace(5)
    assert kvsim(*args, cwd=tmp_path).returncode == 0
    same = kvsim(*args, cwd=tmp_path)
    assert "skipping" in same.stdout
    write_trace(7)  # a new slice written over the old file
    changed = kvsim(*args, cwd=tmp_path)
    assert changed.returncode == 0, changed.stderr
    assert "skipping" not in changed.stdout
    summary = json.loads((tmp_path / "run" / "summary.json").read_text())
    assert summary["n_finished"] + summary["n_rejected"] == 7


def test_resume_redoes_a_run_whose_timing_profile_was_refitted(tmp_path: Path) -> None:
    """A profile refitted in place keeps its name; the run's identity carries its digest (and,
    for ``hardware.profile: null``, the name it resolved to), so resume redoes the run."""
    profile = tmp_path / "my-h100-calibrated"
    shutil.copytree(PROFILES_DIR / "h100-sxm-calibrated", profile)
    args = (SMALL, f"hardware.profile={profile}", "output.plots=false", f"hydra.run.dir={tmp_path / 'run'}")
    first = kvsim(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    tpot = json.loads((tmp_path / "run" / "summary.json").read_text())["tpot_s_p50"]
    assert "skipping" in kvsim(*args, cwd=tmp_path).stdout
    params = json.loads((profile / "profile.json").read_text())
    params["decode"] = {heads: [2 * x for x in fit] for heads, fit in params["decode"].items()}  # a slower GPU
    (profile / "profile.json").write_text(json.dumps(params))
    second = kvsim(*args, cwd=tmp_path)
    assert second.returncode == 0 and "skipping" not in second.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tpot_s_p50"] > 1.05 * tpot
    default = kvsim(SMALL, "output.plots=false", f"hydra.run.dir={tmp_path / 'default'}", cwd=tmp_path)
    assert default.returncode == 0, default.stderr
    assert json.loads((tmp_path / "default" / "config.json").read_text())["timing_profile"] == "h100-sxm-calibrated"


def test_a_tensor_parallel_run_s_identity_carries_the_digest_of_the_allreduce_it_borrows() -> None:
    """An H100 prices its TP all-reduce from the H200's measurements (same NVLink 4); a
    re-measured H200 all-reduce changes H100 TP runs, so resume must see that file too, and
    only for TP runs, whose results it changes."""
    import hashlib

    from hydra import compose, initialize_config_module

    from conf.app import _identity

    lender = hashlib.sha256((PROFILES_DIR / "h200-calibrated" / "profile.json").read_bytes()).hexdigest()
    with initialize_config_module(config_module="conf", version_base=None):
        tp2 = json.loads(_identity(compose("config", overrides=["hardware.tensor_parallel=2"])))
        tp1 = json.loads(_identity(compose("config")))
        own = json.loads(_identity(compose("config", overrides=["hardware=h200", "hardware.tensor_parallel=2"])))
    assert tp2["timing_profile"] == "h100-sxm-calibrated"
    assert tp2["allreduce_profile_sha256"] == lender
    assert "allreduce_profile_sha256" not in tp1
    assert "allreduce_profile_sha256" not in own  # the H200's own all-reduce is in its own digest


def test_a_model_from_a_config_json_runs_and_resume_sees_the_file_change(tmp_path: Path) -> None:
    config = tmp_path / "my-model" / "config.json"
    config.parent.mkdir()
    shape = {"hidden_size": 2048, "intermediate_size": 8192, "num_attention_heads": 32,
             "num_key_value_heads": 8, "num_hidden_layers": 16, "vocab_size": 128256}  # fmt: skip
    config.write_text(json.dumps(shape))
    args = (SMALL, f"model.config_json={config}", "output.plots=false", f"hydra.run.dir={tmp_path / 'run'}")
    first = kvsim(*args, cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert "my-model on 1 x h100-sxm" in first.stdout
    tpot = json.loads((tmp_path / "run" / "summary.json").read_text())["tpot_s_p50"]
    assert "skipping" in kvsim(*args, cwd=tmp_path).stdout
    config.write_text(json.dumps(shape | {"num_hidden_layers": 32}))  # twice the layers
    second = kvsim(*args, cwd=tmp_path)
    assert second.returncode == 0 and "skipping" not in second.stdout
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["tpot_s_p50"] > 1.5 * tpot
    config.write_text(json.dumps(shape | {"num_experts": 8}))  # a mixture without its top-k
    refused = kvsim(*args, cwd=tmp_path)
    assert refused.returncode != 0
    assert "model.config_json" in refused.stderr and "field 'num_experts_per_tok' is missing" in refused.stderr


def test_a_rerun_that_fails_leaves_no_earlier_result_standing_for_its_config(tmp_path: Path) -> None:
    run_dir = tmp_path / "run"
    first = kvsim(SMALL, "hardware.hbm_gb=1", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    assert (run_dir / "summary.json").exists() and (run_dir / "hit_ratio_by_tier.png").exists()
    failed = kvsim(SMALL, "hardware.hbm_gb=500", f"hydra.run.dir={run_dir}", cwd=tmp_path)
    assert failed.returncode == 2
    left = {p.name for p in run_dir.iterdir()}
    assert "error.json" in left and not left & {
        "summary.json",
        "config.json",
        "requests.parquet",
        "hit_ratio_by_tier.png",
    }
    (row,) = load_sweep(tmp_path).to_dict("records")
    assert row["status"] == "failed" and row["override.hardware.hbm_gb"] == "500"


def test_single_run_and_parallel_sweep_give_byte_identical_results(tmp_path: Path) -> None:
    single = kvsim(SMALL, "eviction=workload_aware", f"hydra.run.dir={tmp_path / 'single'}", cwd=tmp_path)
    assert single.returncode == 0, single.stderr
    sweep = kvsim("-m", SMALL, "eviction=workload_aware,lru", f"hydra.sweep.dir={tmp_path / 'sweep'}", cwd=tmp_path)
    assert sweep.returncode == 0, sweep.stderr
    (twin,) = [p.parent for p in (tmp_path / "sweep").rglob("summary.json") if "workload_aware" in str(p)]
    for name in ("summary.json", "requests.parquet"):
        assert (twin / name).read_bytes() == (tmp_path / "single" / name).read_bytes(), name


def test_a_users_own_policy_class_is_selected_by_target(tmp_path: Path) -> None:
    (tmp_path / "my_policies.py").write_text(
        textwrap.dedent(
            """
            from policies.eviction.lru import LRU

            class MRU(LRU):
                def victim(self, pinned):
                    for block in reversed(self._order):
                        if block not in pinned:
                            del self._order[block]
                            return block
                    raise RuntimeError("all pinned")
            """
        )
    )
    common = ("mode=replay", "trace=multi_turn", "trace.params.n_requests=400", "tiers.hbm_blocks=300")
    mru = kvsim(
        *common,
        "eviction._target_=my_policies.MRU",
        f"hydra.run.dir={tmp_path / 'mru'}",
        cwd=tmp_path,
        extra_path=tmp_path,
    )
    lru = kvsim(*common, f"hydra.run.dir={tmp_path / 'lru'}", cwd=tmp_path)
    assert mru.returncode == 0 and lru.returncode == 0, mru.stderr + lru.stderr
    mru_summary = json.loads((tmp_path / "mru" / "summary.json").read_text())
    lru_summary = json.loads((tmp_path / "lru" / "summary.json").read_text())
    assert mru_summary["eviction"] == "MRU" and lru_summary["eviction"] == "lru"
    assert mru_summary["block_hit_ratio"] != lru_summary["block_hit_ratio"]


def test_resume_with_plots_on_draws_the_plots_a_run_made_without_them_lacks(tmp_path: Path) -> None:
    """A sweep first run with output.plots=false and resumed with plots on was skipped whole,
    so its runs never got plots; they are drawn from the saved results, as a fresh run draws
    them, without running again."""
    bare, fresh = tmp_path / "bare", tmp_path / "fresh"
    first = kvsim(SMALL, "output.plots=false", f"hydra.run.dir={bare}", cwd=tmp_path)
    assert first.returncode == 0 and not list(bare.glob("*.png")), first.stderr
    summary = (bare / "summary.json").read_bytes()
    again = kvsim(SMALL, f"hydra.run.dir={bare}", cwd=tmp_path)
    assert again.returncode == 0 and "drew its plots" in again.stdout, again.stderr
    assert (bare / "summary.json").read_bytes() == summary
    assert kvsim(SMALL, f"hydra.run.dir={fresh}", cwd=tmp_path).returncode == 0
    plots = sorted(p.name for p in fresh.glob("*.png"))
    assert plots == sorted(p.name for p in bare.glob("*.png")) and len(plots) == 3
    for name in plots:
        assert (bare / name).read_bytes() == (fresh / name).read_bytes(), name


def test_resume_redoes_a_run_whose_policy_file_was_edited(tmp_path: Path) -> None:
    """A user's policy is edited in place between runs of the same command line; the resumed
    run must not keep the old policy's result."""
    policy = tmp_path / "my_evict.py"
    policy.write_text("from policies.eviction.lru import LRU as Mine\n")
    args = ("mode=replay", "trace=multi_turn", "trace.params.n_requests=400", "tiers.hbm_blocks=300",
            "eviction._target_=my_evict.Mine", "output.plots=false", f"hydra.run.dir={tmp_path / 'run'}")  # fmt: skip
    first = kvsim(*args, cwd=tmp_path, extra_path=tmp_path)
    assert first.returncode == 0, first.stderr
    lru_hits = json.loads((tmp_path / "run" / "summary.json").read_text())["block_hit_ratio"]
    assert "skipping" in kvsim(*args, cwd=tmp_path, extra_path=tmp_path).stdout
    policy.write_text("from policies.eviction.fifo import FIFO as Mine\n")
    edited = kvsim(*args, cwd=tmp_path, extra_path=tmp_path)
    assert edited.returncode == 0 and "skipping" not in edited.stdout, edited.stderr
    assert json.loads((tmp_path / "run" / "summary.json").read_text())["block_hit_ratio"] != lru_hits


def test_a_users_policy_that_fails_to_bind_is_one_line_naming_it_before_the_run(tmp_path: Path) -> None:
    """It was a stack trace from inside the engine's set-up."""
    policy_file = tmp_path / "my_policies.py"
    policy_file.write_text(
        textwrap.dedent(
            """
            from policies.scheduler.fcfs import FCFS

            class ByTenant(FCFS):
                def bind(self, categories):
                    raise LookupError("the trace labels no tenant")
            """
        )
    )
    run = tmp_path / "run"
    done = kvsim(SMALL, "scheduler._target_=my_policies.ByTenant", f"hydra.run.dir={run}", cwd=tmp_path,
                 extra_path=tmp_path)  # fmt: skip
    message = f"scheduler: ByTenant ({policy_file}) failed in bind(): LookupError: the trace labels no tenant"
    assert (done.returncode, done.stderr) == (2, f"kvsim: error: {message}\n")
    assert json.loads((run / "error.json").read_text())["type"] == "ConfigError"
    assert not (run / "summary.json").exists() and not (run / "config.json").exists()


def test_another_launcher_replaces_the_default_one_whole(tmp_path: Path) -> None:
    """joblib's n_jobs belongs to kvsim's default launcher option, not to the top-level config,
    where it was merged into every launcher and refused by those without the key (basic, ray)."""
    from hydra import compose, initialize_config_module

    import conf.app  # noqa: F401  (registers the policy groups the defaults list names)

    with initialize_config_module(config_module="conf", version_base=None):
        default = compose("config", return_hydra_config=True).hydra.launcher
        basic = compose("config", overrides=["hydra/launcher=basic"], return_hydra_config=True).hydra.launcher
    assert "JoblibLauncher" in default._target_ and default.n_jobs == -1
    assert "BasicLauncher" in basic._target_ and "n_jobs" not in basic
    assert_two_run_sweep(tmp_path, "basic", "mode=replay", "tiers.hbm_blocks=200", "eviction=lru,s3fifo")


def test_ray_launcher_runs_the_same_sweep(tmp_path: Path) -> None:
    pytest.importorskip(
        "hydra_plugins.hydra_ray_launcher", reason="hydra-ray-launcher not installed (pip install -e '.[ray]')"
    )
    assert_two_run_sweep(tmp_path, "ray", "eviction=lru,workload_aware")


def assert_two_run_sweep(tmp_path: Path, launcher: str, *overrides: str) -> None:
    """A sweep of two runs under ``hydra/launcher=launcher`` finishes both."""
    done = kvsim(
        "-m", SMALL, *overrides, f"hydra/launcher={launcher}", f"hydra.sweep.dir={tmp_path / 's'}", cwd=tmp_path
    )
    assert done.returncode == 0, done.stderr
    assert len(list((tmp_path / "s").rglob("summary.json"))) == 2


def test_a_policy_parameter_is_set_as_a_plain_key_and_a_misspelt_one_is_named() -> None:
    from hydra import compose, initialize_config_module

    from conf.app import _policy_parameter_error, sim_config

    with initialize_config_module(config_module="conf", version_base=None):
        cfg = compose("config", overrides=["prefetch=lookahead", "prefetch.depth=3", "routing=prefix_affinity"])
    config = sim_config(cfg)
    assert config.prefetch().depth == 3  # set on the command line, without hydra's "+"
    assert config.routing().load_cap == 1.5  # the constructor's default, shown in the config
    assert _policy_parameter_error("prefetch.depth", ["prefetch=lookahead"]) is None
    assert _policy_parameter_error("prefetch.dpth", ["prefetch=lookahead"]) == (
        "prefetch.dpth: prefetch=lookahead has no parameter 'dpth'; did you mean prefetch.depth? its parameters: depth"
    )
    # The default choice (config.yaml) when the command line picks none; a YAML-backed policy's keys.
    assert "routing=round_robin has no parameter 'load_cap'" in _policy_parameter_error("routing.load_cap", [])
    assert "did you mean eviction.prior_lives?" in _policy_parameter_error(
        "eviction.prior_live", ["eviction=workload_aware"]
    )
    # A sweep over several policies, or a policy of one's own, is left to hydra.
    assert _policy_parameter_error("prefetch.dpth", ["prefetch=lookahead,none"]) is None
    assert _policy_parameter_error("eviction.x", ["eviction._target_=my.Policy"]) is None
    assert _policy_parameter_error("routing.load_cap", ["--config-name", "mine"]) is None  # its default, not ours


def test_a_bad_policy_parameter_is_one_line_naming_its_key_and_a_sweep_s_other_runs_finish(tmp_path: Path) -> None:
    """A policy parameter of the wrong type once crashed the run once replicas were built (a
    float slicing the queue), and in a sweep counted as a crash; it is bad input, said in one
    line before the run starts."""
    args = (SMALL, "hardware=h100_offload", "prefetch=lookahead", "prefetch.depth=2.5")
    done = kvsim(*args, f"hydra.run.dir={tmp_path / 'run'}", cwd=tmp_path)
    assert (done.returncode, done.stderr) == (
        2, "kvsim: error: prefetch.depth: must be an integer >= 1, got 2.5 (prefetch=lookahead)\n"
    )  # fmt: skip
    assert json.loads((tmp_path / "run" / "error.json").read_text())["type"] == "ConfigError"
    sweep = tmp_path / "sweep"
    args = ("-m", SMALL, "mode=replay", "tiers.hbm_blocks=200", "eviction=s3fifo", "eviction.ghost_ratio=-5,0.9")
    done = kvsim(*args, "hydra/launcher=basic", "output.plots=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert done.returncode == 2 and not any(noise in done.stderr for noise in HYDRA_NOISE), done.stderr
    assert "eviction.ghost_ratio: must be a finite number >= 0, got -5 (eviction=s3fifo)" in done.stderr
    table = load_sweep(sweep).set_index("override.eviction.ghost_ratio")
    assert table["status"].to_dict() == {"-5": "failed", "0.9": "ok"}
    assert table.loc["-5", "error"].startswith("ConfigError: eviction.ghost_ratio: ")


def test_a_sweep_over_trace_files_gives_one_directory_per_file_not_nested_ones(tmp_path: Path) -> None:
    paths = []
    for name, n in (("a", 4), ("b", 6)):
        rows = [
            {"timestamp": 10 * i, "input_length": 600, "output_length": 4, "hash_ids": [1, 100 + i]} for i in range(n)
        ]
        (tmp_path / name).mkdir()
        paths.append(tmp_path / name / "trace.jsonl")
        paths[-1].write_text("".join(json.dumps(row) + "\n" for row in rows))
    sweep = tmp_path / "sweep"
    args = ("-m", "trace=mooncake", f"trace.path={paths[0]},{paths[1]}", "mode=replay", "tiers.hbm_blocks=4")
    done = kvsim(*args, f"hydra.sweep.dir={sweep}", "output.plots=false", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    runs = sorted(p.parent for p in sweep.rglob("summary.json"))
    assert [run.parent for run in runs] == [sweep, sweep]  # siblings, each named by its escaped path
    assert [json.loads((run / "summary.json").read_text())["n_requests"] for run in runs] == [4, 6]
    assert all(str(path).replace("/", "%2F") in run.name for run, path in zip(runs, paths, strict=True))


def test_a_run_name_too_long_for_a_file_system_is_cut_to_a_prefix_and_a_stable_hash() -> None:
    from conf.app import RUN_DIR_NAME_BYTES, path_safe

    assert path_safe("eviction=lru,trace.path=/a/b%c.jsonl") == "eviction=lru,trace.path=%2Fa%2Fb%25c.jsonl"
    fits = "x" * RUN_DIR_NAME_BYTES
    assert path_safe(fits) == fits  # a name that was possible keeps its directory
    deep = "eviction=lru,trace.path=" + "/traces" * 40
    names = [path_safe(n) for n in (deep, deep.replace("lru", "arc"), deep + "x", "x" + fits)]
    assert all(len(n.encode()) <= RUN_DIR_NAME_BYTES for n in names)
    assert len(set(names)) == 4 and path_safe(deep) == names[0]  # the same overrides, the same directory
    assert names[0].startswith("eviction=lru,trace.path=%2Ftraces%2Ftraces")
    for pad in range(6):  # no character or %-escape cut in half at any alignment
        name = path_safe("y" * pad + "é/" * 200)
        assert name.encode().decode() == name and "é" in name and "%2~" not in name and "%~" not in name


def test_a_sweep_over_a_deep_trace_path_runs_and_resumes(tmp_path: Path) -> None:
    """Its run directories' names were over 255 bytes: the sweep died making the first one,
    having run nothing."""
    trace = tmp_path / ("d" * 120) / ("e" * 120) / "trace.jsonl"
    trace.parent.mkdir(parents=True)
    rows = [{"timestamp": 10 * i, "input_length": 600, "output_length": 4, "hash_ids": [1, 100 + i]} for i in range(5)]
    trace.write_text("".join(json.dumps(row) + "\n" for row in rows))
    sweep = tmp_path / "sweep"
    args = ("-m", "trace=mooncake", f"trace.path={trace}", "mode=replay", "tiers.hbm_blocks=4", "eviction=lru,fifo")
    first = kvsim(*args, "output.plots=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert first.returncode == 0, first.stderr
    runs = sorted(p.parent.name for p in sweep.rglob("summary.json"))
    assert len(runs) == 2 and all(len(run.encode()) <= 255 for run in runs)
    again = kvsim(*args, "output.plots=false", f"hydra.sweep.dir={sweep}", cwd=tmp_path)
    assert again.returncode == 0 and again.stdout.count("skipping") == 2


def test_ctrl_c_mid_sweep_says_how_to_resume_and_leaves_the_interrupted_runs_to_redo(tmp_path: Path) -> None:
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    args = ("-m", "trace.params.n_requests=30000", "hardware.hbm_gb=20,40", f"hydra.sweep.dir={sweep}")
    process = subprocess.Popen(
        [sys.executable, "-m", "conf.app", *args], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
        stderr=subprocess.PIPE, text=True, start_new_session=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # as a terminal's Ctrl-C finds it
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while len(list(sweep.glob("*/overrides.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.2)  # both runs have started simulating
    os.killpg(process.pid, signal.SIGINT)  # what Ctrl-C sends: the whole process group
    _, stderr = process.communicate(timeout=120)
    assert process.returncode == 130 and "Traceback" not in stderr, stderr
    assert stderr.strip().splitlines()[-1] == (
        "kvsim: interrupted; finished runs are kept, the same command again runs the rest"
    )
    # Neither run finished; each is listed as interrupted (its worker may have been stopped
    # before it could write error.json), so the same command redoes both.
    table = load_sweep(sweep)
    assert len(table) == 2 and set(table["status"]) <= {"incomplete", "failed"}
    failed = table[table["status"] == "failed"]
    assert failed["error"].str.startswith("KeyboardInterrupt: interrupted before it finished").all()


def test_sigterm_mid_sweep_stops_its_workers_and_ends_as_ctrl_c_does(tmp_path: Path) -> None:
    """``kill PID`` of a sweep: the launcher's worker processes used to live on without it, each
    finishing the run it had started and then idling for minutes (a sweep started again at once
    ran the same runs twice over)."""
    sweep = tmp_path / "sweep"
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    env.pop("HYDRA_FULL_ERROR", None)
    args = ("-m", "trace.params.n_requests=30000", "hardware.hbm_gb=20,40", "output.progress=false")
    process = subprocess.Popen(
        [sys.executable, "-m", "conf.app", *args, f"hydra.sweep.dir={sweep}"], cwd=tmp_path, env=env,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True,
    )  # fmt: skip
    try:
        deadline = time.monotonic() + 120
        while len(list(sweep.glob("*/overrides.json"))) < 2 and time.monotonic() < deadline:
            time.sleep(0.2)  # both runs have started simulating in their workers
        process.send_signal(signal.SIGTERM)  # to the kvsim process alone, as `kill PID` sends it
        _, stderr = process.communicate(timeout=120)
        assert process.returncode == 143 and "Traceback" not in stderr, stderr
        assert stderr.strip().splitlines()[-1] == (
            "kvsim: terminated; finished runs are kept, the same command again runs the rest"
        )
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline:
            try:
                os.killpg(process.pid, 0)  # is any process of the sweep left?
            except ProcessLookupError:
                break
            time.sleep(0.2)
        else:
            pytest.fail("the sweep's worker processes outlived it")
    finally:
        try:
            os.killpg(process.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    table = load_sweep(sweep)
    assert len(table) == 2 and set(table["status"]) <= {"incomplete", "failed"}


def test_override_columns_hold_values_as_typed_without_the_quotes_hydra_adds() -> None:
    from conf.app import _parse_overrides

    parsed = _parse_overrides(["trace.path='/data/my traces/a.jsonl'", "+trace.params.rate=2", "eviction=lru", "x='"])
    assert parsed == {"trace.path": "/data/my traces/a.jsonl", "trace.params.rate": "2", "eviction": "lru", "x": "'"}
