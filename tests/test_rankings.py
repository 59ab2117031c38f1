"""Policy rankings per workload and metric match the stored ones; a deliberate change to a
policy's behaviour is caught with a readable diff."""

from __future__ import annotations

import json

import pytest

from policies.eviction import lru
from policies.scheduler import priority
from sim import rankings


@pytest.fixture(scope="module")
def stored() -> dict:
    return json.loads(rankings.STORED.read_text())


def relevant(stored: dict, actual: dict) -> dict:
    # The Mooncake entries exist only where ../shared/traces is present.
    return {k: v for k, v in stored.items() if not k.startswith("mooncake/") or k in actual}


def test_rankings_hold(stored: dict) -> None:
    actual = rankings.compute_rankings()
    problems = rankings.compare(relevant(stored, actual), actual)
    assert not problems, "policy rankings changed (python -m sim.rankings --refresh if on purpose):\n" + "\n".join(
        problems
    )


def test_a_policy_changed_on_purpose_fails_with_a_readable_diff(stored: dict, monkeypatch: pytest.MonkeyPatch) -> None:
    def evict_most_recent(self, pinned):
        for block in reversed(self._order):
            if block not in pinned:
                del self._order[block]
                return block
        raise RuntimeError("all pinned")

    monkeypatch.setattr(lru.LRU, "victim", evict_most_recent)
    monkeypatch.delattr(lru.LRU, "replay_hits")  # force the hooks, which now evict MRU
    actual = rankings.compute_rankings(include_mooncake=False)
    problems = rankings.compare(relevant(stored, actual), actual)
    assert problems
    assert any("lru" in p and "stored:" in p and "now:" in p for p in problems)


def test_a_priority_scheduler_that_stops_ranking_classes_is_caught(
    stored: dict, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Every single-kind workload has one category, where priority is FCFS; the mixed one
    ranks the urgent requests' TTFT, so a priority scheduler that serves in arrival order
    (and preempts nobody) is a change."""
    monkeypatch.setattr(priority.Priority, "class_of", lambda self, req: 0)
    actual = rankings.scheduler_rankings("mixed", rankings.workloads(include_mooncake=False)["mixed"])
    problems = rankings.compare({k: stored[k] for k in actual}, actual)
    assert any(p.startswith("mixed/scheduler/") and "priority" in p for p in problems), problems


def test_kendall_tau_counts_swaps_and_ties() -> None:
    a = [["x", 3.0], ["y", 2.0], ["z", 1.0]]
    assert rankings.kendall_tau(a, a) == 1.0
    assert rankings.kendall_tau(a, [["z", 3.0], ["y", 2.0], ["x", 1.0]]) == -1.0
    assert 0 < rankings.kendall_tau(a, [["y", 3.0], ["x", 2.0], ["z", 1.0]]) < 1


def test_a_policy_passing_two_others_is_a_change_though_tau_holds() -> None:
    """Nine policies, one falls from seventh to last: tau stays 0.89, but that policy changed.
    A neighbour swap, or a tie that forms or breaks, is no such change."""
    names = [f"p{i}" for i in range(9)]
    stored = {"w/hit": [[p, 0.9 - 0.1 * i] for i, p in enumerate(names)]}
    fell = {"w/hit": [[p, v] for p, v in stored["w/hit"] if p != "p6"] + [["p6", 0.0]]}
    assert rankings.kendall_tau(stored["w/hit"], fell["w/hit"]) > rankings.MIN_KENDALL_TAU
    (problem,) = rankings.compare(stored, fell)
    assert "p6 changed places with 2 policies (p7, p8)" in problem
    swapped = {"w/hit": [[p, 0.25 if p == "p6" else v] for p, v in stored["w/hit"]]}  # passes p7 only
    assert rankings.compare(stored, swapped) == []
    tied = {"w/hit": [[p, 0.5 if i in (4, 5, 6) else v] for i, (p, v) in enumerate(stored["w/hit"])]}
    broken = {"w/hit": [[p, 0.5 - 1e-5 if p == "p6" else v] for p, v in tied["w/hit"]]}
    assert rankings.compare(stored, tied) == [] and rankings.compare(tied, broken) == []


def test_a_refresh_refuses_to_store_a_scheduler_ranking_of_an_overloaded_run(monkeypatch) -> None:
    monkeypatch.setitem(rankings.SCHEDULER_LOAD, "rag", (0.1, 4.0))  # ten times the load, a small KV budget
    trace = rankings.workloads(include_mooncake=False)["rag"]
    with pytest.raises(RuntimeError, match="rag: the fcfs run is overloaded .* lighten it in SCHEDULER_LOAD"):
        rankings.scheduler_rankings("rag", trace, refuse_overload=True)


def test_a_refresh_without_the_mooncake_slice_keeps_its_stored_rankings(tmp_path, monkeypatch) -> None:
    stored = tmp_path / "expected.json"
    stored.write_text(json.dumps({"mooncake/hit@500": [["lru", 0.2]], "rag/hit@500": [["lru", 0.1]]}))
    monkeypatch.setattr(rankings, "STORED", stored)
    monkeypatch.setattr(rankings, "MOONCAKE", tmp_path / "absent.jsonl")
    monkeypatch.setattr(rankings, "compute_rankings", lambda **_: {"rag/hit@500": [["lru", 0.3]]})
    assert rankings.main(["--refresh"]) == 0
    assert json.loads(stored.read_text()) == {"mooncake/hit@500": [["lru", 0.2]], "rag/hit@500": [["lru", 0.3]]}


def test_a_check_without_the_mooncake_slice_passes_when_nothing_changed(tmp_path, monkeypatch, capsys) -> None:
    """``python -m sim.rankings`` on a checkout without ``../shared/traces/`` checks the rankings
    it can compute; the stored Mooncake ones are skipped, not reported as no longer computed."""
    stored = tmp_path / "expected.json"
    stored.write_text(json.dumps({"mooncake/hit@500": [["lru", 0.2]], "rag/hit@500": [["lru", 0.1]]}))
    monkeypatch.setattr(rankings, "STORED", stored)
    monkeypatch.setattr(rankings, "MOONCAKE", tmp_path / "absent.jsonl")
    monkeypatch.setattr(rankings, "compute_rankings", lambda **_: {"rag/hit@500": [["lru", 0.1]]})
    assert rankings.main([]) == 0
    assert "Mooncake rankings are not checked" in capsys.readouterr().out
    monkeypatch.setattr(rankings, "compute_rankings", lambda **_: {})  # a ranking it can compute is gone
    assert rankings.main([]) == 1
