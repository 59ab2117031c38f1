"""Synthetic generators: reproducible, structurally right, and responsive to their knobs."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from traces import KINDS, TraceSpec, TraceSpecError, generate, load_trace
from traces.generators.arrivals import ArrivalProcess
from traces.stats import distinct_count, reuse_ratio

SMALL = dict(n_requests=300)


def same(a, b) -> bool:
    return all(
        np.array_equal(getattr(a, c), getattr(b, c))
        for c in ("arrival_s", "input_tokens", "output_tokens", "block_offsets", "block_hashes", "session_id", "turn")
    )


@pytest.mark.parametrize("kind", KINDS)
def test_every_kind_is_reproducible_valid_and_seed_sensitive(kind: str) -> None:
    a, b, c = generate(kind, 1, **SMALL), generate(kind, 1, **SMALL), generate(kind, 2, **SMALL)
    assert len(a) == 300 and same(a, b) and not same(a, c)
    assert (np.diff(a.arrival_s) >= 0).all() and a.arrival_s[0] == 0
    # Only full blocks are hashed.
    assert (a.blocks_per_request() <= a.input_tokens // a.block_size).all()
    assert reuse_ratio(a.block_hashes) > 0.05, "every kind is built to have prefix reuse"


def test_multi_turn_turns_extend_the_previous_turns_chain() -> None:
    trace = generate("multi_turn", 3, n_requests=400)
    checked = 0
    last_of_session: dict[int, int] = {}
    for i in range(len(trace)):
        s = int(trace.session_id[i])
        if s in last_of_session:
            prev = last_of_session[s]
            assert trace.turn[i] == trace.turn[prev] + 1
            assert trace.input_tokens[i] > trace.input_tokens[prev] + trace.output_tokens[prev] - 1
            before = trace.hashes_of(prev)
            assert np.array_equal(trace.hashes_of(i)[: len(before)], before)
            checked += 1
        last_of_session[s] = i
    assert checked > 50


def test_sessions_with_different_system_prompts_share_no_blocks() -> None:
    trace = generate("multi_turn", 4, n_requests=300, n_system_prompts=2, system_prompt_tokens=64)
    heads = {tuple(trace.hashes_of(i)[:4]) for i in range(len(trace)) if len(trace.hashes_of(i)) >= 4}
    assert len(heads) == 2
    firsts = {int(trace.hashes_of(i)[0]) for i in range(len(trace)) if len(trace.hashes_of(i))}
    fifths = {int(trace.hashes_of(i)[4]) for i in range(len(trace)) if len(trace.hashes_of(i)) > 4}
    assert not firsts & fifths


def test_rag_reuse_rises_with_document_popularity_skew() -> None:
    flat = reuse_ratio(generate("rag", 5, n_requests=600, prefix_zipf=0.2).block_hashes)
    skewed = reuse_ratio(generate("rag", 5, n_requests=600, prefix_zipf=1.6).block_hashes)
    assert skewed > flat + 0.05


def test_agent_loops_have_more_turns_and_shorter_outputs_than_chat() -> None:
    chat, agent = generate("multi_turn", 6, n_requests=800), generate("agent", 6, n_requests=800)
    assert agent.turn.max() > chat.turn.max()
    assert agent.output_tokens.mean() < chat.output_tokens.mean()


def test_poisson_rate_and_gamma_burstiness() -> None:
    rng = np.random.default_rng(0)
    poisson = ArrivalProcess("poisson", rate=5.0).times(20_000, rng)
    assert abs(len(poisson) / poisson[-1] - 5.0) < 0.2
    gaps = np.diff(ArrivalProcess("gamma", rate=5.0, cv=3.0).times(20_000, rng))
    assert abs(gaps.mean() - 0.2) < 0.03 and gaps.std() / gaps.mean() > 2.5
    on_off = ArrivalProcess("on_off", rate=10.0, on_s=10.0, off_s=50.0).times(2_000, rng)
    assert np.diff(on_off).max() >= 50.0  # silent periods exist


def test_mixed_keeps_each_components_category_and_share_throughout() -> None:
    trace = generate("mixed", 7, n_requests=6000, chat=0.5, rag=0.3, agent=0.2)
    category = np.asarray(trace.categories)[trace.category_code]
    nominal = {"chat": 0.5, "rag": 0.3, "agent": 0.2}
    assert {name: float((category == name).mean()) for name in nominal} == pytest.approx(nominal, abs=0.04)
    # Every component runs from the first request to the last: each tenth of the trace's time
    # holds each at a good part of its share (conversations and agent loops come in bursts of
    # turns, so a tenth's share scatters; a component that had ended would be at zero).
    tenths = np.split(category, np.searchsorted(trace.arrival_s, trace.arrival_s[-1] * np.arange(1, 10) / 10))
    for part in tenths:
        for name, share in nominal.items():
            assert (part == name).mean() > share / 3, (name, (part == name).mean())


def test_unknown_generator_or_parameter_lists_the_valid_ones() -> None:
    with pytest.raises(ValueError, match="unknown generator 'chats'.*multi_turn"):
        generate("chats")
    with pytest.raises(ValueError, match="no parameter 'n_request'.*n_requests"):
        generate("rag", n_request=5)
    with pytest.raises(ValueError, match="mean_turns"):
        generate("multi_turn", mean_turns=0.5)
    with pytest.raises(ValueError, match="parameter 'rate' must be a number, got 'abc'"):
        generate("rag", rate="abc")
    with pytest.raises(ValueError, match="parameter 'n_requests' must be an integer, got 2.5"):
        generate("default", n_requests=2.5)
    assert len(generate("rag", n_requests=30, rate=3)) == 30  # an integer where a number is expected
    for kind in ("multi_turn", "mixed"):  # an optional number (None: derived) is checked as a number
        with pytest.raises(ValueError, match="parameter 'warmup_s' must be a number, got 'abc'"):
            generate(kind, warmup_s="abc")
    with pytest.raises(ValueError, match="rag generator: docs_per_request=4 exceeds n_prefixes=2"):
        generate("rag", n_requests=10, n_prefixes=2)
    assert len(generate("shared_prompt", n_requests=10, n_prefixes=2)) == 10  # docs_per_request is rag's alone
    for kind in ("default", "multi_turn", "agent", "rag"):  # the rate given, not a component's share of it
        with pytest.raises(ValueError, match=r"rate=-1 is out of range"):
            generate(kind, rate=-1)


@pytest.mark.parametrize("n_requests", [1, 2, 3, 7, 1001])
def test_a_mix_has_exactly_the_requests_asked_for(n_requests: int) -> None:
    trace = generate("mixed", 5, n_requests=n_requests, chat=0.5, rag=0.3, agent=0.15, shared_prompt=0.05)
    assert len(trace) == n_requests
    with pytest.raises(ValueError, match="n_requests must be >= 1, got 0"):
        generate("default", n_requests=0)


def test_trace_spec_limits_and_rescales_time() -> None:
    base = load_trace(TraceSpec(generator="shared_prompt", params=dict(n_requests=200), seed=1))
    cut = load_trace(TraceSpec(generator="shared_prompt", params=dict(n_requests=200), seed=1, max_requests=50))
    fast = load_trace(TraceSpec(generator="shared_prompt", params=dict(n_requests=200), seed=1, time_scale=0.5))
    assert len(cut) == 50 and np.array_equal(cut.block_hashes, base.block_hashes[: cut.n_block_accesses])
    np.testing.assert_allclose(fast.arrival_s, base.arrival_s * 0.5)
    for bad in (0.0, float("inf"), float("nan")):
        with pytest.raises(TraceSpecError, match="time_scale"):
            load_trace(TraceSpec(time_scale=bad))


def test_a_spec_naming_no_trace_says_which_key_to_set(tmp_path) -> None:
    empty = tmp_path / "empty.jsonl"
    empty.write_text("")
    with pytest.raises(TraceSpecError, match="empty.jsonl \\(mooncake\\): the trace has no requests"):
        load_trace(TraceSpec(path=str(empty), format="mooncake"))
    with pytest.raises(TraceSpecError, match="trace.path is not set: trace.format=mooncake reads a trace file"):
        load_trace(TraceSpec(format="mooncake"))
    with pytest.raises(TraceSpecError, match="trace.path is not set.*one of default, multi_turn"):
        load_trace(TraceSpec(generator=None))
    with pytest.raises(TraceSpecError, match="trace.path and trace.generator=rag both name a trace"):
        load_trace(TraceSpec(path=str(empty), generator="rag"))
    with pytest.raises(TraceSpecError, match=r"trace.params \(n_requests=500\) are generator parameters.*max_requests"):
        load_trace(TraceSpec(path=str(empty), format="mooncake", generator=None, params={"n_requests": 500}))
    with pytest.raises(TraceSpecError, match="trace.generator=chats: unknown generator"):
        load_trace(TraceSpec(generator="chats"))
    with pytest.raises(TraceSpecError, match="trace.generator=rag: .*no parameter 'n_request'"):
        load_trace(TraceSpec(generator="rag", params={"n_request": 5}))


@pytest.mark.parametrize("size", [0, -512, 10**20])
def test_a_trace_block_size_that_is_no_block_size_is_refused_naming_the_key(tmp_path, size: int) -> None:
    """On a file without hashes 0 was read as unset and the run went ahead at 16 tokens a
    block; on one with hashes it divided by zero, and a huge size overflowed (tracebacks)."""
    lengths = tmp_path / "lengths.csv"
    lengths.write_text("arrival_s,input_tokens,output_tokens\n0.0,64,4\n")
    hashed = tmp_path / "hashed.csv"
    hashed.write_text("arrival_s,input_tokens,output_tokens,block_hashes\n0.0,64,4,1 2\n")
    message = f"trace.block_size must be a whole number from 1 to 2,147,483,647 (got {size})"
    for spec in (TraceSpec(path=str(lengths)), TraceSpec(path=str(hashed)), TraceSpec()):
        with pytest.raises(TraceSpecError) as err:
            load_trace(replace(spec, block_size=size))
        assert str(err.value) == message


@settings(max_examples=100, deadline=None)
@given(st.lists(st.integers(0, 2**64 - 1) | st.integers(0, 5), max_size=40))
def test_distinct_count_counts_what_a_set_holds(values: list[int]) -> None:
    assert distinct_count(np.asarray(values, dtype=np.uint64)) == len(set(values))


def test_sessions_started_before_the_trace_bring_it_to_the_rate_asked_for() -> None:
    """From a cold start (``warmup_s=0``) a session trace has no conversation under way, so for
    about a session's lifetime its requests arrive below ``rate`` (8 turns of ~55 s think time:
    2,000 requests at rate 2 come at ~1.4/s). With ``warmup_s`` longer than most sessions last,
    as the default is (three mean lifetimes: 1,320 s here), it starts mid-stream; turns before 0
    are left out, their sessions' later turns kept."""

    def mean_rate(**params) -> float:
        rates = []
        for seed in range(4):
            arrival = generate("multi_turn", seed, n_requests=2000, rate=2.0, mean_turns=8, **params).arrival_s
            rates.append(len(arrival) / arrival[-1])
        return float(np.mean(rates))

    assert mean_rate(warmup_s=0) < 1.6
    assert mean_rate(warmup_s=1500) == pytest.approx(2.0, rel=0.1)
    assert mean_rate() == pytest.approx(2.0, rel=0.1)
    assert generate("agent", 0, n_requests=500).turn.min() == 1
    assert (generate("agent", 0, n_requests=500).turn > 1).mean() > 0.7  # loops under way from the start
    started = generate("multi_turn", 1, n_requests=300, warmup_s=600)
    assert started.turn.min() == 1 and (started.turn > 1).mean() > 0.7  # mostly conversations under way
    with pytest.raises(ValueError, match="warmup_s=-1"):
        generate("agent", warmup_s=-1)
    for mixed in (generate("default", 0, n_requests=500), generate("default", 0, n_requests=500, warmup_s=600)):
        assert (mixed.turn[np.asarray(mixed.categories)[mixed.category_code] == "chat"] > 1).mean() > 0.7


def test_a_contiguous_selection_equals_the_same_rows_gathered() -> None:
    trace = generate("mixed", 3, n_requests=200)
    for rows in (slice(0, 50), slice(20, 120), slice(150, None), slice(40, 40)):
        fast, gathered = trace.select(rows), trace.select(np.arange(len(trace))[rows])
        for name in ("request_id", "arrival_s", "input_tokens", "output_tokens", "block_offsets", "block_hashes",
                     "session_id", "turn", "category_code"):  # fmt: skip
            assert np.array_equal(getattr(fast, name), getattr(gathered, name)), (rows, name)
        fast.validate()
