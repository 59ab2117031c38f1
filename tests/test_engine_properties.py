"""Invariants of serve mode over random small traces and random configurations.

Each example runs the engine with its internal checks on (capacity at every insert, pinned
blocks never evicted, link bytes equal to the bytes the engine issued, token accounting), and
then checks from the outside what a user relies on: every request finished or was rejected
with a reason, occupancy stayed within capacity, time ran forward, and each request's events
happened in order.
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import sim.replica
from policies import available
from sim.config import EngineConfig, HardwareConfig, ModelConfig, SimConfig, TierConfig
from sim.kvcache import InvariantError, TieredCache
from sim.replica import Replica
from sim.result import Result
from sim.run import run
from traces import Trace, generate

BLOCK = 16


@st.composite
def traces(draw: st.DrawFn) -> Trace:
    n = draw(st.integers(1, 24))
    n_prefixes = draw(st.integers(1, 4))
    prefix_blocks = [draw(st.integers(1, 12)) for _ in range(n_prefixes)]
    gaps = draw(st.lists(st.floats(0.0, 0.5), min_size=n, max_size=n))
    rows = []
    for i in range(n):
        p = draw(st.integers(0, n_prefixes - 1))
        shared = draw(st.integers(0, prefix_blocks[p]))
        own = draw(st.integers(0, 6))
        tail = draw(st.integers(0, BLOCK - 1))
        blocks = [1000 * (p + 1) + j for j in range(shared)] + [10**6 + 100 * i + j for j in range(own)]
        tokens = max(1, len(blocks) * BLOCK + tail)
        rows.append((blocks, tokens, draw(st.integers(0, 40))))
    return Trace.from_columns(
        arrival_s=np.cumsum(gaps),
        input_tokens=[r[1] for r in rows],
        output_tokens=[r[2] for r in rows],
        block_hashes=[r[0] for r in rows],
        block_size=BLOCK,
        session_id=[i % 3 for i in range(n)],
        categories=["text" if i % 2 else "api" for i in range(n)],
    )


@st.composite
def configs(draw: st.DrawFn) -> SimConfig:
    dram = draw(st.sampled_from([0, 16, 64]))
    ssd = draw(st.sampled_from([0, 32]))
    remote = draw(st.sampled_from([0, 0, 24, 200]))  # the pool all replicas share
    preemption = draw(st.sampled_from(["recompute", "swap"])) if dram else "recompute"
    replicas = draw(st.integers(1, 3))
    return SimConfig(
        hardware=HardwareConfig(
            n_replicas=replicas,
            copies_per_block=draw(st.sampled_from([1, 64])),
            pool_gbps=draw(st.sampled_from([None, 2.0])),  # the pool servers' port, shared
        ),
        tiers=TierConfig(
            hbm_blocks=draw(st.integers(6, 80)),
            dram_blocks=dram or None,
            ssd_blocks=ssd or None,
            remote_blocks=remote or None,
        ),
        engine=EngineConfig(
            max_num_seqs=draw(st.integers(1, 8)),
            max_num_batched_tokens=draw(st.sampled_from([16, 64, 512])),
            preemption=preemption,
        ),
        eviction=draw(st.sampled_from(available("eviction"))),
        admission=draw(st.sampled_from(available("admission"))),
        scheduler=draw(st.sampled_from(available("scheduler"))),
        prefetch=draw(st.sampled_from(available("prefetch"))),
        routing=draw(st.sampled_from(available("routing"))),
        timeseries_interval_s=0.25,
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(trace=traces(), config=configs())
def test_random_runs_keep_every_invariant(trace: Trace, config: SimConfig) -> None:
    result = run(config, trace)
    summary, requests = result.summary, result.requests
    reasons = set(requests.loc[~requests["finished"], "reject_reason"])
    assert reasons <= {"kv_exceeds_hbm"}, f"unfinished requests: {reasons}"
    assert summary["n_finished"] + summary["n_rejected"] == len(trace)
    capacity = config.tiers.hbm_blocks
    assert summary["hbm_peak_blocks"] <= capacity
    assert summary.get("remote_peak_blocks", 0) <= (config.tiers.remote_blocks or 0)
    series = result.timeseries
    if len(series):
        assert (series["hbm_used_blocks"] <= capacity).all()
        if config.tiers.remote_blocks:
            assert (series["remote_used_blocks"] <= config.tiers.remote_blocks).all()
        times = series.loc[series["replica"] == 0, "time_s"].to_numpy()
        assert (np.diff(times) > 0).all()
    done = requests[requests["finished"]]
    arrival = done["arrival_s"]
    assert (done["queue_s"] >= 0).all()
    assert (done["ttft_s"] >= done["queue_s"] - 1e-12).all()
    assert (done["e2e_s"] >= done["ttft_s"] - 1e-12).all()
    assert np.isfinite(arrival + done["e2e_s"]).all()
    if summary["n_finished"]:
        assert summary["token_hit_ratio"] + summary["recompute_ratio"] == pytest.approx(1.0)
    hit_columns = [c for c in requests.columns if c.endswith("_hit_tokens")]
    assert (done[hit_columns].sum(axis=1) + done["recomputed_tokens"] == done["input_tokens"]).all()
    if summary["gpu_busy_fraction"] > 0:
        assert 1.0 <= summary["mean_batch_size"] <= config.engine.max_num_seqs + 1e-9
    staged = summary["prefetch_staged_blocks"]
    assert summary["prefetch_used_blocks"] + summary["prefetch_wasted_blocks"] <= staged
    assert staged == 0 or config.prefetch != "none"
    per_block = summary["bytes_per_block"]
    for key, value in summary.items():
        if key.startswith("link_") and key.endswith("_bytes"):
            assert value % per_block == 0, key
        if key.startswith("link_") and key.endswith("_utilisation"):  # undefined over an empty run
            assert value <= 1.0 + 1e-9 or (np.isnan(value) and summary["makespan_s"] == 0), key


def test_the_mean_batch_is_one_when_requests_never_overlap_and_grows_with_the_load() -> None:
    trace = generate("rag", seed=3, n_requests=40)
    alone = Trace.from_columns(
        arrival_s=np.arange(len(trace)) * 1000.0,  # each finishes long before the next arrives
        input_tokens=trace.input_tokens,
        output_tokens=trace.output_tokens,
        block_hashes=[trace.hashes_of(i) for i in range(len(trace))],
        block_size=trace.block_size,
    )
    config = SimConfig(hardware=HardwareConfig(hbm_gb=4.0))
    assert run(config, alone).summary["mean_batch_size"] == pytest.approx(1.0)
    batches = []
    for scale in (1.0, 0.1):
        squeezed = Trace.from_columns(
            arrival_s=trace.arrival_s * scale,
            input_tokens=trace.input_tokens,
            output_tokens=trace.output_tokens,
            block_hashes=[trace.hashes_of(i) for i in range(len(trace))],
            block_size=trace.block_size,
        )
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # the tenfold load overloads the replica, as intended
            batches.append(run(config, squeezed).summary["mean_batch_size"])
    assert 1.0 < batches[0] < batches[1]


def pressure_trace() -> Trace:
    n = 12
    return Trace.from_columns(
        arrival_s=np.linspace(0, 0.2, n),
        input_tokens=[8 * BLOCK] * n,
        output_tokens=[30] * n,
        block_hashes=[[100 * (i % 4) + j for j in range(8)] for i in range(n)],
        block_size=BLOCK,
    )


def pressure_config() -> SimConfig:
    return SimConfig(tiers=TierConfig(hbm_blocks=24, dram_blocks=64))


def test_a_tier_overfilled_by_a_broken_engine_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(TieredCache, "make_room", lambda self, t, n, moves: True)
    with pytest.raises(InvariantError, match="capacity"):
        run(pressure_config(), pressure_trace())


def test_bytes_moved_without_being_issued_are_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Replica._transfer

    def unaccounted(self, hop, nbytes, n_blocks):
        end = original(self, hop, nbytes, n_blocks)
        self.issued_bytes[hop[0].name] -= nbytes  # the engine "forgets" what it issued
        return end

    monkeypatch.setattr(Replica, "_transfer", unaccounted)
    with pytest.raises(InvariantError, match="bytes moved"):
        run(pressure_config(), pressure_trace())


def test_broken_token_accounting_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    original = Replica._record_lookup

    def off_by_one(self, req, tiers, hit_tokens):
        original(self, req, tiers, hit_tokens)
        self.log.recomputed_tokens[req.index] += 1

    monkeypatch.setattr(Replica, "_record_lookup", off_by_one)
    with pytest.raises(InvariantError, match="recomputed"):
        run(pressure_config(), pressure_trace())


def chains_trace(
    rows: list[tuple[float, int, list[int], int]],
    sessions: list[int] | None = None,
    categories: list[str] | None = None,
) -> Trace:
    """(arrival, prompt tokens, block hashes, output tokens) per request."""
    return Trace.from_columns(
        arrival_s=[r[0] for r in rows],
        input_tokens=[r[1] for r in rows],
        output_tokens=[r[3] for r in rows],
        block_hashes=[r[2] for r in rows],
        block_size=BLOCK,
        session_id=sessions,
        categories=categories,
    )


def held_room_case() -> tuple[SimConfig, Trace]:
    # A session's 20 blocks are held for its next turn; a request that needs that room arrives
    # while nothing runs.
    trace = chains_trace([(0.0, 320, list(range(1, 21)), 4), (5.0, 1424, list(range(100, 189)), 16)], [1, -1])
    return SimConfig(prefetch="session_aware", tiers=TierConfig(hbm_blocks=100)), trace


def staged_room_case() -> tuple[SimConfig, Trace]:
    # On arrival the last request's prefix is staged up from DRAM, pinned until it lands, while
    # the request before it waits for that room with nothing running.
    x, x2 = list(range(1, 61)), list(range(1, 62))
    rows = [(0.0, 960, x, 4), (5.0, 1424, list(range(1000, 1089)), 16), (10.0, 1424, list(range(2000, 2089)), 16)]
    trace = chains_trace([*rows, (10.0, 976, x2, 4)])
    return SimConfig(prefetch="on_arrival", tiers=TierConfig(hbm_blocks=100, dram_blocks=500)), trace


@pytest.mark.parametrize("case", [held_room_case, staged_room_case])
def test_a_request_waiting_for_held_or_staged_room_runs_once_it_is_free(case) -> None:
    config, trace = case()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a stalled run warns
        result = run(config, trace)
    assert result.requests["finished"].all()


def test_staged_blocks_are_counted_used_or_evicted_unused() -> None:
    """On its arrival the last request's prefix is staged up from DRAM into the room HBM has;
    the request before it then takes that room once the blocks have landed, evicting some of
    them unused, and the last request is admitted on those still there. Every staged block is
    one or the other, and the used ones are exactly the last request's HBM hits."""
    config, trace = staged_room_case()
    result = run(config, trace)
    summary, last = result.summary, result.requests.iloc[-1]
    staged, used = summary["prefetch_staged_blocks"], summary["prefetch_used_blocks"]
    assert used == last["hbm_hit_tokens"] // BLOCK
    assert staged > used > 0
    assert summary["prefetch_wasted_blocks"] == staged - used


def test_a_stage_that_completes_a_prefix_makes_room_without_evicting_its_head() -> None:
    """A's 10 blocks are cached when B's 15 push A's last 4 down to DRAM (HBM holds 22; a
    released request's tail goes first). On A's return its 4 blocks are staged back, and the
    room is made from B's blocks, not from A's head, which the stage completes: A then finds
    its whole prefix in HBM."""
    a, b = list(range(100, 110)), list(range(200, 215))
    trace = chains_trace([(0.0, 10 * BLOCK + 1, a, 1), (1.0, 15 * BLOCK + 1, b, 1), (2.0, 10 * BLOCK + 1, a, 1)])
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet"),
        tiers=TierConfig(hbm_blocks=22, dram_blocks=100),
        admission="write_back",
        prefetch="on_arrival",
    )
    result = run(config, trace)
    assert result.requests.iloc[2]["hbm_hit_tokens"] == 10 * BLOCK
    assert result.summary["prefetch_staged_blocks"] == result.summary["prefetch_used_blocks"] == 4


def test_a_run_that_stalls_ends_and_reports_its_requests_unfinished(monkeypatch: pytest.MonkeyPatch) -> None:
    # Without the wake-up when a stage lands, nothing would ever move the waiting request.
    monkeypatch.setattr(Replica, "_unpin_later", lambda self, tier, blocks: self._unpin_all(tier, blocks))
    config, trace = staged_room_case()
    with pytest.warns(RuntimeWarning, match="stalled"):
        result = run(config, trace)
    assert result.summary["rejected_by_reason"]["unfinished"] >= 1
    assert result.summary["n_finished"] + result.summary["n_rejected"] == len(trace)


def test_a_request_swapped_out_for_its_next_chunk_is_not_swapped_straight_back() -> None:
    # Two 75-block prompts in a 100-block HBM, prefilled in 256-token chunks: the second cannot
    # get its next chunk and is swapped out. Swapping it back in before that chunk fits would
    # copy it out again every step.
    rows = [(0.0, 1200, list(range(1, 76)), 300), (0.0, 1200, list(range(100, 175)), 300)]
    config = SimConfig(
        tiers=TierConfig(hbm_blocks=100, dram_blocks=1000),
        engine=EngineConfig(preemption="swap", max_num_batched_tokens=256),
    )
    summary = run(config, chains_trace(rows)).summary
    assert summary["n_finished"] == 2
    assert 1 <= summary["preemptions_swap"] <= 2
    # PCIe D2H carries the swaps (at most one request's whole KV each) and HBM's write-backs.
    whole_kv = -(-(1200 + 300) // BLOCK)
    copied = summary["link_pcie_d2h_bytes"] // summary["bytes_per_block"]
    assert copied <= summary["preemptions_swap"] * whole_kv + summary["hbm_evictions"]


def swap_then_share_case(third: tuple[float, int, list[int], int], **hardware: float) -> tuple[SimConfig, Trace]:
    """An agent's 40-block prompt decodes until an urgent chat prompt (10 named blocks, 70
    private) swaps it out and evicts part of its prefix; ``third`` shares that prefix and is
    admitted in the round that swaps the agent back in, once the chat is done."""
    prefix = list(range(1000, 1040))
    rows = [(0.0, 640, prefix, 400), (0.3, 1280, list(range(2000, 2010)), 20), third]
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet", pcie_latency_s=1e-5, copies_per_block=1, **hardware),
        tiers=TierConfig(hbm_blocks=100, dram_blocks=500),
        engine=EngineConfig(preemption="swap"),
        scheduler="priority",
        admission="write_back",
    )
    return config, chains_trace(rows, categories=["agent", "chat", third[4]])


def test_a_request_sharing_blocks_a_swap_in_is_copying_waits_for_them() -> None:
    # The third request (an agent, behind the first) finds the prefix in HBM, put back there by
    # the swap-in's copy: it waits for that copy, as long as the swapped-in request does (it
    # evicts nothing: the chat's private blocks are free).
    prefix = list(range(1000, 1040))
    config, trace = swap_then_share_case((0.35, 720, [*prefix, *range(3000, 3005)], 5, "agent"), pcie_gbps=0.5)
    requests = run(config, trace).requests
    swapped, sharing = requests.iloc[0], requests.iloc[2]
    assert swapped["preemptions"] == 1 and sharing["hbm_hit_tokens"] == 40 * BLOCK
    assert sharing["kv_stall_s"] == pytest.approx(swapped["kv_stall_s"]) and sharing["kv_stall_s"] > 0


def test_a_swap_in_waits_for_its_blocks_still_being_copied_into_hbm() -> None:
    # Here the sharing request is urgent and admitted first: it loads most of the prefix's
    # evicted part from the shared pool (written through there; DRAM, full of the swap space,
    # keeps little of it) over a slow network, slower than the swap-in's own copy over PCIe;
    # the swapped-in request finds those blocks in HBM and waits for them.
    prefix = list(range(1000, 1040))
    config, trace = swap_then_share_case(
        (0.31, 720, [*prefix, *range(3000, 3005)], 5, "chat"), pcie_gbps=2.0, net_gbps=0.2
    )
    config.tiers.dram_blocks, config.tiers.remote_blocks = 50, 1000
    config.admission = "write_through"
    requests = run(config, trace).requests  # resuming before they land is an InvariantError
    swapped, sharing = requests.iloc[0], requests.iloc[2]
    assert swapped["preemptions"] == 1 and sharing["remote_hit_tokens"] > 0
    assert swapped["kv_stall_s"] == pytest.approx(sharing["kv_stall_s"])


def test_a_request_preempted_while_its_step_is_planned_gets_no_credit_for_that_steps_chunk() -> None:
    # Found by fuzzing: a prefill preempted (swapped out) while the step was planned, swapped
    # back in, and loaded before the step ended was credited with the step's chunk, and
    # releasing that chunk's blocks failed the reservation check. Many swaps under a small HBM.
    config = SimConfig(
        model=ModelConfig(name="llama-3-70b", kv_bytes_per_element=0.5),
        hardware=HardwareConfig(profile="h100-sxm-calibrated", tensor_parallel=2, hbm_gb=0.8136, dram_gb=28.6),
        engine=EngineConfig(preemption="swap"),
        admission="write_back",
        scheduler="priority",
    )
    # A seed that fails without the fix (re-found when the mixed generator changed; the
    # prompts beyond Llama-3's 8K context are refused, and the warning says so).
    trace = generate("default", seed=2, n_requests=348, rate=0.69)
    with pytest.warns(UserWarning, match="longer than llama-3-70b's context"):
        summary = run(config, trace).summary  # check_invariants is on by default
    assert summary["preemptions_swap"] > 100
    assert summary["n_finished"] + summary["n_rejected"] == len(trace)


def decoder_then_arrival_case() -> tuple[SimConfig, Trace]:
    # A long decode runs alone; a prompt that fits in HBM beside it arrives mid-run.
    rows = [(0.0, 16, [1], 2000), (0.5, 1000, list(range(100, 162)), 10)]
    return SimConfig(hardware=HardwareConfig(profile="datasheet"), tiers=TierConfig(hbm_blocks=150)), chains_trace(rows)


def urgent_arrival_swaps_a_decoder_case() -> tuple[SimConfig, Trace]:
    # An urgent prompt that does not fit beside a long decode arrives mid-run: the decoder is
    # swapped out, and copies to DRAM the KV it holds.
    rows = [(0.0, 16, [1], 2000), (0.5, 2300, list(range(100, 243)), 10)]
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet"),
        tiers=TierConfig(hbm_blocks=150, dram_blocks=500),
        engine=EngineConfig(preemption="swap"),
        scheduler="priority",
        admission="drop",
    )
    return config, chains_trace(rows, categories=["agent", "chat"])


def loaded_replica_case() -> tuple[SimConfig, Trace]:
    # Queues, evictions with write-backs, swaps and prefetch orders arriving mid-run.
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet"),
        tiers=TierConfig(hbm_blocks=400, dram_blocks=2000),
        engine=EngineConfig(preemption="swap"),
        scheduler="priority",
        prefetch="on_arrival",
    )
    return config, generate("default", seed=1, n_requests=120, rate=4.0)


def routed_write_through_case() -> tuple[SimConfig, Trace]:
    # Write-through over a slow PCIe, and a router that reads each replica's load mid-run.
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet", pcie_gbps=2.0, n_replicas=2),
        tiers=TierConfig(hbm_blocks=300, dram_blocks=2000),
        admission="write_through",
        routing="least_loaded",
    )
    return config, generate("default", seed=2, n_requests=120, rate=6.0)


def layerwise_loads_case() -> tuple[SimConfig, Trace]:
    # DRAM hits loaded layer by layer under the step that prefills them, over a slow PCIe that
    # stretches those steps (and the decoders in them), while SSD hits still load first.
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet", pcie_gbps=2.0, ssd_gb=50.0),
        tiers=TierConfig(hbm_blocks=300, dram_blocks=600),
        engine=EngineConfig(kv_load_overlap="layerwise"),
    )
    return config, generate("default", seed=4, n_requests=120, rate=4.0)


def recomputing_lower_hits_case() -> tuple[SimConfig, Trace]:
    # Lower-tier hits recomputed where that is faster than loading them over a slow PCIe,
    # weighed for a waiting request at every admission round.
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet", pcie_gbps=1.0),
        tiers=TierConfig(hbm_blocks=400, dram_blocks=2000),
        engine=EngineConfig(kv_load="if_faster"),
    )
    return config, generate("default", seed=3, n_requests=120, rate=4.0)


def pool_hit_from_another_replica_case() -> tuple[SimConfig, Trace]:
    # Replica 0 decodes a long answer; the prompt queued behind it does not fit there as a
    # computation, but does once replica 1 has written that prefix to the shared pool.
    shared = list(range(1000, 1100))
    rows = [(0.0, 1280, list(range(1, 81)), 1000), (0.001, 1600, shared, 1), (0.01, 2000, shared, 10)]
    config = SimConfig(
        hardware=HardwareConfig(profile="datasheet", n_replicas=2),
        tiers=TierConfig(hbm_blocks=200, remote_blocks=1000),
        admission="write_through",
        routing="round_robin",
    )
    return config, chains_trace(rows)


def assert_same_results(a: Result, b: Result) -> None:
    """Every request's row, the time series and the summary agree, times to rounding."""
    for x, y in ((a.requests, b.requests), (a.timeseries, b.timeseries)):
        assert list(x.columns) == list(y.columns) and len(x) == len(y)
        for column in x.columns:
            if x[column].dtype.kind == "f":
                np.testing.assert_allclose(x[column], y[column], rtol=1e-9, atol=1e-12, err_msg=column)
            else:
                assert x[column].equals(y[column]), column  # nulls (a trace without categories) equal too
    for key, value in a.summary.items():
        if isinstance(value, float):
            assert value == pytest.approx(b.summary[key], rel=1e-9, nan_ok=True), key
        else:
            assert value == b.summary[key], key


@pytest.mark.filterwarnings("ignore:overloaded")
@pytest.mark.parametrize(
    "case",
    [
        decoder_then_arrival_case,
        urgent_arrival_swaps_a_decoder_case,
        loaded_replica_case,
        routed_write_through_case,
        recomputing_lower_hits_case,
        pool_hit_from_another_replica_case,
        layerwise_loads_case,
    ],
)
def test_many_decode_steps_in_one_event_give_the_results_of_one_step_per_event(
    case, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Advancing a decode-only batch many steps per event is a shortcut: a wake-up mid-run
    (an arrival, a copy landing) must find HBM, the queue and the load as they are after
    the step in progress, and a run must not reserve, evict or skip a stall that the steps
    one by one would not have."""
    config, trace = case()
    many = run(config, trace)
    monkeypatch.setattr(sim.replica, "_MAX_DECODE_STEPS_PER_EVENT", 1)
    assert_same_results(many, run(config, trace))


@settings(max_examples=200, deadline=None)
@given(keys=st.lists(st.integers(0, 5), max_size=200), popped=st.integers(0, 200), n=st.integers(0, 40))
def test_the_queue_head_is_what_admission_would_take_first(keys: list[int], popped: int, n: int) -> None:
    """``head(n)`` (what a prefetch policy is shown) walks the heap instead of scanning the
    queue: it must still be the first ``n`` requests in admission order."""
    from types import SimpleNamespace

    from policies.scheduler.base import Scheduler
    from sim.queue import WaitingQueue

    class ByKey(Scheduler):
        def key(self, req: object, now: float) -> tuple:
            return (req.k, req.arrival_s)

    queue = WaitingQueue(ByKey())
    for i, k in enumerate(keys):
        queue.push(SimpleNamespace(k=k, arrival_s=float(i)), 0.0)
    for _ in range(min(popped, len(keys))):
        queue.pop(next(queue.candidates(0.0, lambda r: None)))
    head = queue.head(n, 0.0)
    admitted = []
    while len(admitted) < n and len(queue):
        req = next(queue.candidates(0.0, lambda r: None))
        queue.pop(req)
        admitted.append(req)
    assert head == admitted


@settings(max_examples=100, deadline=None)
@given(keys=st.lists(st.integers(0, 3), min_size=1, max_size=60), window=st.integers(1, 20))
def test_a_dynamic_queue_admits_the_window_by_key_then_the_rest_in_arrival_order(keys: list[int], window: int) -> None:
    """One admission round of a dynamic scheduler (prefix-aware) that admits every candidate:
    the window's requests by key, then those past it in arrival order, each exactly once, though
    the caller pops each one as it admits it (popping shifts the queue under the iteration)."""
    from types import SimpleNamespace

    from policies.scheduler.base import Scheduler
    from sim.queue import WaitingQueue

    class Windowed(Scheduler):
        dynamic = True

        def __init__(self) -> None:
            self.window = window

        def key(self, req: object, now: float) -> tuple:
            return (req.k, req.arrival_s)

    queue = WaitingQueue(Windowed())
    requests = [SimpleNamespace(k=k, arrival_s=float(i), index=i) for i, k in enumerate(keys)]
    for req in requests:
        queue.push(req, 0.0)
    admitted = []
    for req in queue.candidates(0.0, lambda r: None):
        queue.pop(req)
        admitted.append(req)
    expected = sorted(requests[:window], key=lambda r: (r.k, r.arrival_s)) + requests[window:]
    assert admitted == expected
