"""Ranking a sweep's runs: best first in each metric's own direction, failed runs left out,
only the overrides that differ shown, and a misspelt metric named with its closest match."""

from __future__ import annotations

import pandas as pd
import pytest

from conf.collect import main as collect
from sim.results import rank_runs


def sweep_table() -> pd.DataFrame:
    return pd.DataFrame(
        [
            {"run_dir": "a", "status": "ok", "override.eviction": "lru", "override.seed": 1,
             "token_hit_ratio": 0.30, "ttft_s_p99": 0.9},
            {"run_dir": "b", "status": "ok", "override.eviction": "arc", "override.seed": 1,
             "token_hit_ratio": 0.35, "ttft_s_p99": 1.1},
            {"run_dir": "c", "status": "failed", "override.eviction": "sieve", "override.seed": 1,
             "token_hit_ratio": None, "ttft_s_p99": None},
            {"run_dir": "d", "status": "ok", "override.eviction": "fifo", "override.seed": 1,
             "token_hit_ratio": 0.35, "ttft_s_p99": 0.8},
        ]
    )  # fmt: skip


def test_runs_rank_best_first_each_metric_in_its_own_direction() -> None:
    by_hits = rank_runs(sweep_table(), ["token_hit_ratio", "ttft_s_p99"])
    # Higher hit ratio first; the tie between arc and fifo goes to the lower P99.
    assert by_hits["eviction"].tolist() == ["fifo", "arc", "lru"]
    assert list(by_hits.columns) == ["eviction", "token_hit_ratio", "ttft_s_p99"]  # seed never varies
    assert by_hits.index.tolist() == [1, 2, 3]
    assert rank_runs(sweep_table(), ["ttft_s_p99"])["eviction"].tolist() == ["fifo", "lru", "arc"]


def test_a_misspelt_metric_names_the_closest_one() -> None:
    with pytest.raises(KeyError, match="did you mean ttft_s_p99"):
        rank_runs(sweep_table(), ["ttft_p99"])


def test_a_config_column_cannot_rank_and_a_default_override_says_default() -> None:
    table = sweep_table().assign(eviction=["lru", "arc", "sieve", "fifo"])
    with pytest.raises(KeyError, match="not a numeric metric 'eviction'"):
        rank_runs(table, ["eviction"])
    table.loc[table["run_dir"] == "a", "override.seed"] = None  # a run that left seed at its default
    assert rank_runs(table, ["ttft_s_p99"])["seed"].tolist() == [1, "default", 1]


def test_the_collect_command_prints_the_ranking(tmp_path, capsys) -> None:
    for row in sweep_table().to_dict("records"):
        run_dir = tmp_path / row["run_dir"]
        run_dir.mkdir()
        overrides = {k.removeprefix("override."): v for k, v in row.items() if k.startswith("override.")}
        (run_dir / "overrides.json").write_text(pd.Series(overrides).to_json())
        if row["status"] == "ok":
            (run_dir / "summary.json").write_text(
                pd.Series({"token_hit_ratio": row["token_hit_ratio"], "ttft_s_p99": row["ttft_s_p99"]}).to_json()
            )
        else:
            (run_dir / "error.json").write_text('{"type": "ValueError", "message": "boom"}')
    assert collect([str(tmp_path), "--rank", "ttft_s_p99"]) == 0
    out = capsys.readouterr().out
    ranked = out.split("ranked by ttft_s_p99 (lower is better):")[1].splitlines()
    assert [line.split()[1] for line in ranked[2:5]] == ["fifo", "lru", "arc"]
    (tmp_path / "collected.parquet").unlink()
    assert collect([str(tmp_path), "--rank", "ttft"]) == 2
    assert not (tmp_path / "collected.parquet").exists()  # refused before writing


def test_counts_of_what_a_run_achieved_rank_higher_first() -> None:
    """Ranking by finished requests put the run that refused most of them first."""
    table = pd.DataFrame(
        [
            {"run_dir": "a", "status": "ok", "override.hardware.hbm_gb": "2", "n_finished": 57, "n_rejected": 143,
             "output_tokens": 900, "prefetch_used_blocks": 3},
            {"run_dir": "b", "status": "ok", "override.hardware.hbm_gb": "8", "n_finished": 200, "n_rejected": 0,
             "output_tokens": 4000, "prefetch_used_blocks": 40},
        ]
    )  # fmt: skip
    for metric in ("n_finished", "output_tokens", "prefetch_used_blocks"):
        assert list(rank_runs(table, [metric])["hardware.hbm_gb"]) == ["8", "2"], metric
    assert list(rank_runs(table, ["n_rejected"])["hardware.hbm_gb"]) == ["8", "2"]
