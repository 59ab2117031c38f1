"""One GPU-backed serving engine: an iteration-level scheduler over a tiered KV cache.

Each step is built as vLLM builds it: every running decode contributes one token, running
prefills continue in chunks, and waiting requests are admitted in the scheduler's order while
the token budget (``max_num_batched_tokens``), the sequence limit (``max_num_seqs``) and KV
memory allow. Admission looks the prompt's prefix up tier by tier: HBM hits are pinned,
lower-tier hits are copied up over the links (the request waits in ``LOADING``, which is
recorded as KV stall; or, with layer-wise loads, a DRAM hit is prefilled in the step that
loads it, which ends no earlier than the copy's landing), misses are prefilled. A step whose
plan evicted from HBM or swapped a request out waits for those copies to leave HBM before it
runs, as vLLM's cache engine swaps out before the model executes; that wait is KV stall of the
step's requests too. Memory is
allocated per step; when a running request cannot grow, the scheduler's preemption victim is
preempted by recompute or swap.

Cost is O(events), not O(tokens): while the batch is decode-only, the replica advances many
decode steps in one SimPy timeout, up to the next completion or the last step HBM's free room
covers, priced in one vectorised call. Decode progress is kept implicitly against a
per-replica step counter (``generated = joined_generated + counter - joined_counter``), so a
step does not touch every running request. An arrival or a finished copy wakes the replica at
the next step boundary, exactly when a real engine would see it. The run is a shortcut of its
steps planned one by one, and gives the same results: a step that must evict, or that waits
for write-backs, is planned on its own, and a wake-up gives back the blocks reserved
for the steps after the one in progress.
"""

from __future__ import annotations

import functools
import heapq
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import simpy

from hwmodels.clock import ClockModel
from hwmodels.execution import ExecutionModel
from policies.eviction.base import RequestContext
from policies.prefetch.base import Hold, Order, PrefetchPolicy, Stage
from policies.scheduler.base import Scheduler
from sim.kvcache import DROPPED, InvariantError, Move, TieredCache
from sim.links import SERVER_SIDE, Link
from sim.metrics import REJECT_REASONS, RequestLog
from sim.queue import WaitingQueue
from sim.request import Request, State

HBM = 0
_MAX_DECODE_STEPS_PER_EVENT = 4096
# The links a copy crosses, in order. SSD data passes through host memory; the shared pool's
# reaches the GPU over the NIC and then the GPU's PCIe link (GPUDirect RDMA crosses it too).
_PATHS = {
    ("dram", "hbm"): ("pcie_h2d",),
    ("ssd", "dram"): ("ssd_read",),
    ("ssd", "hbm"): ("ssd_read", "pcie_h2d"),
    ("remote", "hbm"): ("net_read", "pcie_h2d"),
    ("remote", "dram"): ("net_read",),
    ("remote", "ssd"): ("net_read", "ssd_write"),
    ("hbm", "dram"): ("pcie_d2h",),
    ("dram", "ssd"): ("ssd_write",),
    ("hbm", "ssd"): ("pcie_d2h", "ssd_write"),
    ("hbm", "remote"): ("pcie_d2h", "net_write"),
    ("dram", "remote"): ("net_write",),
    ("ssd", "remote"): ("ssd_read", "net_write"),
}
Hop = tuple[Link, ...]  # the links one hop of a copy holds at the same time


class Replica:
    def __init__(
        self,
        env: simpy.Environment,
        index: int,
        *,
        cache: TieredCache,
        links: dict[str, Link],
        execution: ExecutionModel,
        scheduler: Scheduler,
        prefetch: PrefetchPolicy,
        log: RequestLog,
        context_of: Callable[[Request], RequestContext],
        bytes_per_block: int,
        copies_per_block: int,
        max_num_seqs: int,
        max_num_batched_tokens: int,
        preemption: str,
        on_done: Callable[[Request], None],
        kv_load: str = "always",
        kv_load_overlap: str = "none",
        clock: ClockModel | None = None,
        pool_flights: tuple[dict[tuple[int, int], simpy.Event], dict[tuple[int, int], float]] | None = None,
        pool_replicas: Sequence[Replica] = (),
    ) -> None:
        self.env = env
        self.index = index
        self.cache = cache
        self.links = links
        self.execution = execution
        self.scheduler = scheduler
        self.prefetch = prefetch
        self.log = log
        self._context_of = context_of
        self.bytes_per_block = bytes_per_block
        self.copies_per_block = copies_per_block
        self.max_num_seqs = max_num_seqs
        self.token_budget = max_num_batched_tokens
        self.preemption = preemption
        self.kv_load = kv_load
        # Layer-wise loads (engine.kv_load_overlap): a request whose lower-tier prefix is one
        # hop away (DRAM) prefills in the step that loads it; the step's last layer waits for
        # the copies issued while it was planned, which land at this time.
        self._layerwise = kv_load_overlap == "layerwise"
        self._layer_loads_until = 0.0
        self.max_context_tokens = execution.model.max_context_tokens
        # GPU seconds per prompt token in a full chunked-prefill step (weights amortised):
        # what recomputing a token costs once it is the GPU's turn.
        full_step = execution.iteration_s([max_num_batched_tokens], [0], 0, 0) - execution.iteration_overhead_s
        self._prefill_token_s = full_step / max_num_batched_tokens
        self._on_done = on_done
        self.hbm = cache.tiers[HBM]
        self.block_tokens = 0  # set from the first request
        self.waiting = WaitingQueue(scheduler)
        self.running: list[Request] = []  # admission order: LOADING, PREFILL and DECODE
        # Decode bookkeeping (see the module docstring).
        self.counter = 0
        self.n_decode = 0
        self.decode_ctx_base = 0
        self._finish_heap: list[tuple[int, int, int, Request]] = []
        self._alloc_heap: list[tuple[int, int, int, Request]] = []
        # Copies in flight into a tier: (tier, block) -> completion event. Up into HBM (a
        # request using the block waits for it) and down into DRAM or SSD (a load of the
        # block from there, or a copy further down, starts only once it has landed).
        self._inflight: dict[tuple[int, int], simpy.Event] = {}
        # When each copy down in flight is expected to land (its hops priced as queued when
        # it was issued): what a load of the block weighs against recomputing it.
        self._lands_at: dict[tuple[int, int], float] = {}
        # The same two for the shared pool (the last tier), held by every replica alike: a
        # block another replica is still writing there is read once it has landed.
        self._pool_tier = len(cache.tiers) - 1 if pool_flights is not None else -1
        self._pool_inflight, self._pool_lands_at = pool_flights if pool_flights is not None else ({}, {})
        # Every replica sharing the pool (filled in once all are built): what one puts there
        # or evicts changes the others' lookups.
        self._pool_replicas = pool_replicas
        self._stall_until = 0.0  # the step planned next runs once the write-backs freeing its slots are done
        # The multi-step decode run in progress: (start time, start counter, cumulative step
        # seconds); a wake-up cuts it short after its step in progress (_notify).
        self._run: tuple[float, int, np.ndarray] | None = None
        self._resuming: list[Request] = []  # swapped-in decoders; they rejoin at a step boundary
        self._prefill_plan: list[tuple[Request, int]] = []  # the prefill chunks of the step being planned
        self._holds: list[list[int]] = []
        self._held_blocks = 0
        self._queue_dirty = False
        # Showing the queue costs a partial sort; skip it for policies that ignore it.
        self._watches_queue = type(prefetch).on_queue_change is not PrefetchPolicy.on_queue_change
        # Listing the preemptable requests scans the batch at every admission that does not
        # fit; the default preempt_for never preempts, so skip it for schedulers that keep it.
        self._preempts_for = type(scheduler).preempt_for is not Scheduler.preempt_for
        self._wake = env.event()
        self.outstanding_tokens_total = 0
        # Totals for the summary.
        # The SM clock under the power cap (hwmodels.clock): a multiplier on the clock-bound
        # seconds of each step, GPU state that rises under compute-heavy steps and falls back
        # when idle. None: every step at full clock.
        self.clock = clock
        self._multiplier = 1.0
        self._multiplier_at = 0.0  # sim time the multiplier was last brought up to date
        self._step_target = 1.0  # the planned steps' steady multiplier
        self._full_clock_s = np.zeros(0)  # the planned steps' durations at full clock
        self.busy_s = 0.0
        self.full_clock_busy_s = 0.0  # what busy_s would be at full clock
        self.prefill_busy_s = 0.0  # of busy_s, in steps with prefill work (the rest decode only)
        self.allreduce_busy_s = 0.0  # of busy_s, in tensor-parallel all-reduces
        self.sequence_busy_s = 0.0  # sequences in each step x its seconds (the mean batch, over busy_s)
        self._step_allreduce_s = 0.0  # of each planned step
        self.steps = 0
        self.preemptions_recompute = 0
        self.preemptions_swap = 0
        self.swap_fallbacks = 0
        self.loads_declined_blocks = 0
        # Prefetch accounting: blocks a Stage order copied up, by (tier, block), until a request
        # looks one up there (used) or the tier evicts it first (wasted).
        self._staged: dict[tuple[int, int], None] = {}
        self.prefetch_staged_blocks = 0
        self.prefetch_used_blocks = 0
        self.prefetch_wasted_blocks = 0
        self.issued_bytes: dict[str, int] = {name: 0 for name in links}
        self._paths: dict[tuple[int, int], tuple[Hop, ...]] = {}  # _path's answers: the links are fixed
        self.peak_blocks = [0] * len(cache.tiers)
        env.process(self._loop())

    # ================================================================== views for policies
    def outstanding_tokens(self) -> int:
        """Tokens still to compute, as of now: a multi-step decode run in progress has made a
        token for every decoder at each step it has completed (counted at its end)."""
        if self._run is None:
            return self.outstanding_tokens_total
        start, _, cumulative = self._run
        completed = int(np.searchsorted(cumulative, self.env.now - start, side="right"))
        return self.outstanding_tokens_total - self.n_decode * completed

    def cached_prefix_blocks(self, request: Any) -> int:
        return len(self.cache.match_prefix(request.blocks))

    def free_blocks(self, tier: str) -> int:
        return self.cache.tiers[self.cache.tier_index(tier)].free if tier in self.cache.names else 0

    def has_tier(self, tier: str) -> bool:
        return tier in self.cache.names

    def blocks_below(self, request: Any, tier: str) -> int:
        if tier not in self.cache.names:
            return 0
        t = self.cache.tier_index(tier)
        return sum(1 for where in self.cache.match_prefix(request.blocks) if where > t)

    # ================================================================== arrivals
    def submit(self, req: Request) -> None:
        """A request routed here; rejected at once if it is longer than the model serves (as
        vLLM's API server answers 400 to prompt + max_tokens over max_model_len) or if its KV
        could never fit in HBM."""
        if self.block_tokens == 0:
            self.block_tokens = req.block_tokens
        req.replica = self.index
        self.log.replica[req.index] = self.index
        length = req.input_tokens + req.output_tokens
        if self.max_context_tokens is not None and length > self.max_context_tokens:
            self._reject(req, REJECT_REASONS.index("exceeds_context"))
            return
        if req.kv_blocks_for(length) > self.hbm.capacity:
            self._reject(req, REJECT_REASONS.index("kv_exceeds_hbm"))
            return
        self.outstanding_tokens_total += req.input_tokens + req.output_tokens
        self.waiting.push(req, self.env.now)
        self._queue_dirty = True
        # Wake first: a decode run cut short gives back the blocks reserved for its steps not
        # run, so that a prefetch order sees HBM as it is at this step.
        self._notify()
        self._execute(self.prefetch.on_arrival(req, self))

    def _reject(self, req: Request, reason: int) -> None:
        req.state = State.REJECTED
        self.log.reject_reason[req.index] = reason
        self._on_done(req)

    def _notify(self) -> None:
        """Wake the step loop at the next step boundary. A multi-step decode run it is in is
        cut short there, so the blocks reserved for the steps after it are given back now:
        one step per event would not have reserved them yet."""
        if not self._wake.triggered:
            self._wake.succeed()
            if self._run is not None:
                start, start_counter, cumulative = self._run
                done = self._steps_begun(start, cumulative)
                self._run = (start, start_counter, cumulative[:done])
                self._return_blocks_ahead(start_counter + done)

    # ================================================================== the step loop
    def _loop(self):  # noqa: C901 - the loop reads best in one place
        env = self.env
        while True:
            if self._wake.triggered:
                self._wake = env.event()
            plan = self._plan()
            if plan is None:
                yield self._wake
                continue
            prefill, k = plan
            if self._stall_until > env.now:
                # Its slots are free once the write-backs have left HBM: the step runs then.
                stalled_at = env.now
                yield env.timeout(self._stall_until - env.now)
                self._charge_stall(env.now - stalled_at, prefill)
            durations = self._price(prefill, k)
            if self._layer_loads_until:
                durations = self._after_layer_loads(durations, prefill)
            batch = self.n_decode + len(prefill)
            start, start_counter = env.now, self.counter
            cumulative = durations.cumsum()
            if k == 1:
                yield env.timeout(float(cumulative[0]))
                done = 1
            else:
                timeout = env.timeout(float(cumulative[-1]))
                self._run = (start, start_counter, cumulative)
                yield timeout | self._wake
                # Woken mid-run: finish the step in progress, then re-plan.
                done = self._steps_begun(start, cumulative)
                rest = float(cumulative[done - 1]) - (env.now - start)
                if rest > 0:
                    yield env.timeout(rest)
                self._run = None
            elapsed = float(cumulative[done - 1])
            self.busy_s += elapsed
            self.sequence_busy_s += batch * elapsed
            if self.clock is None:
                self.full_clock_busy_s += elapsed
            else:
                self.full_clock_busy_s += float(self._full_clock_s[:done].sum())
                self._multiplier = self.clock.relax(self._multiplier, self._step_target, elapsed)
                self._multiplier_at = env.now
            if prefill:
                self.prefill_busy_s += elapsed
            self.allreduce_busy_s += done * self._step_allreduce_s
            self.steps += done
            self._complete(prefill, start, start_counter, cumulative[:done])

    def _charge_stall(self, waited: float, prefill: list[tuple[Request, int]]) -> None:
        """The planned step waited ``waited`` seconds on KV copies (write-backs freeing its HBM
        slots, or layer-wise loads): KV stall of every request it runs (its decoders and its
        prefill chunks)."""
        stall_s = self.log.stall_s
        for req in self.running:
            if req.state is State.DECODE:
                req.stall_s += waited
                stall_s[req.index] += waited
        for req, _ in prefill:
            req.stall_s += waited
            stall_s[req.index] += waited

    def _after_layer_loads(self, durations: np.ndarray, prefill: list[tuple[Request, int]]) -> np.ndarray:
        """The step's durations once it waits for the layer-wise loads issued while it was
        planned: each layer's attention reads its layer of the loaded KV, so the step's last
        layer starts no earlier than the copy has landed (SGLang HiCache's per-layer events).
        The stretch is KV stall of all the step's requests, decoders included, as the whole
        forward pass waits."""
        loads_until, self._layer_loads_until = self._layer_loads_until, 0.0
        if not prefill:  # the loading request was preempted while the step was planned
            return durations
        compute = float(durations[0])
        ends = max(compute, loads_until - self.env.now + compute / self.execution.model.n_layers)
        if ends <= compute:
            return durations
        self._charge_stall(ends - compute, prefill)
        return np.array([ends])

    def _steps_begun(self, start: float, cumulative: np.ndarray) -> int:
        """Steps of the run that began at ``start`` (of cumulative durations ``cumulative``)
        begun by now: the step in progress is completed before the loop re-plans."""
        now = self.env.now
        if now >= start + cumulative[-1]:
            return len(cumulative)
        return min(int(np.searchsorted(cumulative, now - start, side="left")) + 1, len(cumulative))

    def _plan(self) -> tuple[list[tuple[Request, int]], int] | None:
        """Build the next step: ``(prefill chunks, decode steps)``, or ``None`` if there is no
        work. Priced by :meth:`_price` once it starts, after any wait for write-backs."""
        for req in self._resuming:
            self._join_decode(req)
        self._resuming.clear()
        # Decodes first: each needs room for one more token.
        while self.n_decode and self._grow_decoders(1, evict=True) == 0:
            if not self._relieve_pressure(None):
                break
        budget = self.token_budget - self.n_decode
        prefill: list[tuple[Request, int]] = []
        self._prefill_plan = prefill  # a request preempted while the step is planned leaves it
        # The batch is mostly decoders: pick the prefills out in one pass. A request is
        # checked again as its turn comes, for one this loop preempted; none becomes a prefill
        # meanwhile (a finished load does so only in a later event).
        prefilling = [req for req in self.running if req.state is State.PREFILL]
        for req in prefilling:
            if budget <= 0:
                break
            if req.state is not State.PREFILL:
                continue
            chunk = min(req.prompt_target - req.computed, budget)
            if not self._allocate_for(req, req.computed + chunk):
                continue  # it was preempted
            prefill.append((req, chunk))
            budget -= chunk
        budget = self._admit(budget, prefill)
        if self._queue_dirty:
            self._queue_dirty = False
            if self._watches_queue and len(self.waiting):
                self._execute(self.prefetch.on_queue_change(self.waiting.head(32, self.env.now), self))
        self._track_peaks()
        if prefill:
            return prefill, 1
        if not self.n_decode:
            return None
        k = self._finish_heap[0][0] - self.counter + 1 if self._finish_heap else 1
        k = max(1, min(k, _MAX_DECODE_STEPS_PER_EVENT))
        if self._stall_until > self.env.now:
            # This step waits for write-backs before it runs: what arrives meanwhile is seen
            # after it, which a run, cut short only by a wake-up while it runs, would miss.
            k = 1
        # The later steps of a run take only free room: one step per event would evict for a
        # step only when it plans it, so a run stops where eviction would be needed.
        return prefill, max(1, self._grow_decoders(k, evict=False))

    def _price(self, prefill: list[tuple[Request, int]], k: int) -> np.ndarray:
        """The seconds of each of the ``k`` steps planned, as they start now (the power-cap
        clock has relaxed over any wait before them)."""
        ctx = self.decode_ctx_base + self.n_decode * self.counter
        if prefill:
            new = [chunk for _, chunk in prefill]
            prefix = [req.computed for req, _ in prefill]
            full = np.array([self.execution.iteration_s(new, prefix, self.n_decode, ctx)])
            self._step_allreduce_s = self.execution.allreduce_s(sum(new) + self.n_decode)
            return self._at_clock(full, lambda: self._bounds(new, prefix))
        full = self.execution.decode_steps_s(self.n_decode, ctx, k)
        self._step_allreduce_s = self.execution.allreduce_s(self.n_decode)
        return self._at_clock(full, lambda: self._bounds([], []))

    def _bounds(self, new: list[int], prefix: list[int]) -> tuple[float, float]:
        """The planned step's clock-bound and full-power seconds (:mod:`hwmodels.clock`)."""
        clock_bound = self.execution.clock_bound_s(new, prefix, self.n_decode)
        return clock_bound, self.execution.power_bound_s(new, prefix, self.n_decode, clock_bound)

    def _at_clock(self, full_s: np.ndarray, bounds: Callable[[], tuple[float, float]]) -> np.ndarray:
        """The planned steps' durations at the GPU's clock: ``full_s`` stretched by the power
        cap (:mod:`hwmodels.clock`), from the multiplier the GPU has now, after any idle
        since the last step. The host overhead of each step is not GPU time and is kept."""
        self._full_clock_s = full_s
        if self.clock is None:
            return full_s
        now = self.env.now
        self._multiplier = self.clock.relax(self._multiplier, 1.0, now - self._multiplier_at)
        self._multiplier_at = now
        overhead = self.execution.iteration_overhead_s
        gpu_s = full_s - overhead
        clock_bound, power_bound = bounds()
        if len(gpu_s) == 1:
            seconds, self._step_target = self.clock.step_s(self._multiplier, float(gpu_s[0]), clock_bound, power_bound)
            return np.array([seconds + overhead])
        # Decode-only steps run no prefill attention: their power-bound seconds are their clock-bound.
        stretched, self._step_target = self.clock.steps_s(self._multiplier, gpu_s, clock_bound)
        return stretched + overhead

    # ================================================================== admission
    def _admit(self, budget: int, prefill: list[tuple[Request, int]]) -> int:
        now = self.env.now
        for req in self.waiting.candidates(now, self._refresh_cached_tokens):
            if budget <= 0 or len(self.running) >= self.max_num_seqs:
                break
            chunk = self._try_admit(req, budget)
            while chunk is None:
                if self._holds:
                    # A hold keeps a session's blocks for a turn that may come; a request here
                    # now comes first (as under decode pressure, _relieve_pressure).
                    self._release_holds()
                    chunk = self._try_admit(req, budget)
                    continue
                candidates = self._preemptable() if self._preempts_for else []
                victim = self.scheduler.preempt_for(req, candidates) if candidates else None
                if victim is None:
                    break
                self._preempt(victim)
                chunk = self._try_admit(req, budget)
            if chunk is None:
                break
            self.waiting.pop(req)
            self._queue_dirty = True
            if chunk:
                prefill.append((req, chunk))
                budget -= chunk
        return budget

    def _refresh_cached_tokens(self, req: Request) -> None:
        """Prompt tokens of ``req`` whose prefix is resident in HBM (what SGLang matches)."""
        blocks_in_hbm = self.hbm.blocks
        m = 0
        for block in req.blocks:
            if block not in blocks_in_hbm:
                break
            m += 1
        req.cached_tokens = req.tokens_in_first(m)

    def _try_admit(self, req: Request, budget: int) -> int | None:
        """Admit ``req`` if memory allows; return the prefill chunk it runs in this step
        (0 if it waits for KV copies first), or ``None`` if it does not fit."""
        if req.swapped_blocks:
            return self._swap_in(req, budget)
        cache, now = self.cache, self.env.now
        if cache.wants_request_context:
            cache.begin(self._context_of(req))
        tiers = cache.match_prefix(req.blocks)
        m = len(tiers)
        hit_tokens = req.tokens_in_first(m)
        # At least one token is computed so that the step produces logits (vLLM's rule).
        while m and hit_tokens >= req.prompt_target:
            m -= 1
            hit_tokens = req.tokens_in_first(m)
        declined = 0
        if self.kv_load == "if_faster" and m:
            use = self._prefix_worth_loading(req, tiers, m)
            declined = sum(1 for t in tiers[use:m] if t != HBM)
            m, hit_tokens = use, req.tokens_in_first(use)
        hbm_hits = [j for j in range(m) if tiers[j] == HBM]
        lower = [j for j in range(m) if tiers[j] != HBM]
        layerwise = bool(lower) and self._layerwise and self._one_hop_up(req.blocks, tiers, lower)
        chunk = min(req.prompt_target - hit_tokens, budget) if not lower or layerwise else 0
        need_new = len(lower) + req.kv_blocks_for(hit_tokens + chunk) - m
        # Room is checked before the hits are pinned: pinning them takes those not pinned yet
        # out of what eviction may free. A request that does not fit (tried again at later
        # steps) then leaves the pin table and the policy as they were.
        room = self.hbm.free + self.hbm.evictable
        if room < need_new or (
            room - len(hbm_hits) < need_new  # only then can the hits' new pins decide it
            and room - len({req.blocks[j] for j in hbm_hits} - self.hbm.pinned.keys()) < need_new
        ):
            return None
        # Counted once admitted: a request that does not fit is weighed again at later steps.
        self.loads_declined_blocks += declined
        if self._staged:
            self._count_staged_hits(req.blocks[:m], tiers[:m])
        for j in hbm_hits:
            cache.pin(HBM, req.blocks[j])
        sources = [(j, tiers[j]) for j in lower]
        self._pin_sources(req.blocks, sources)
        moves: list[Move] = []
        for j in lower:
            cache.insert(HBM, req.blocks[j], j, moves, pin=True)
        private = req.kv_blocks_for(hit_tokens + chunk) - m
        if private and not cache.reserve(HBM, private, moves):
            raise InvariantError("admission reserved less than it checked")
        req.held_named, req.held_private = m, private
        self._set_computed(req, hit_tokens)
        if not req.looked_up:
            self._record_lookup(req, tiers[:m], hit_tokens)
        else:
            self.log.preempt_recomputed_tokens[req.index] += req.prompt_target - hit_tokens
        req.admitted_s = now
        if req.first_scheduled_s < 0:
            req.first_scheduled_s = now
            self.log.first_scheduled_s[req.index] = now
        self.running.append(req)
        waits = self._until(self._pay(moves))
        for j in hbm_hits:
            pending = self._inflight.get((HBM, req.blocks[j]))
            if pending is not None:
                waits.append(pending)
        if layerwise and not waits:
            self._layer_loads_until = max(self._layer_loads_until, self._load_up_now(req.blocks, sources))
            req.state = State.PREFILL
            return chunk
        if lower:
            waits.extend(self._load_up(req.blocks, sources, HBM))
        if waits:
            self._wait_for(req, waits)
            return 0
        req.state = State.PREFILL
        return chunk

    def _prefix_worth_loading(self, req: Request, tiers: Sequence[int], m: int) -> int:
        """How much of a matched prefix of ``m`` blocks to use when lower-tier hits are loaded
        only if that is faster than recomputing them.

        From the first block not in HBM on, the prefix is either loaded (every lower-tier
        block of it crosses its links, queued behind the copies already on them) or recomputed
        (its tokens prefilled on top of the HBM part before it). Attention needs the whole
        prefix, so a recomputed block makes every block after it recomputed too: the choice is
        the whole tail or none of it, whichever is ready first. A busy GPU makes recomputing
        late (its queue comes first), a congested link makes loading late; a tie loads, which
        spends no GPU time.
        """
        first = next((j for j in range(m) if tiers[j] != HBM), m)
        if first == m:
            return m
        now = self.env.now
        per_source: dict[int, int] = {}
        ready: dict[int, float] = {}  # a source copy still on its way down is read once it lands
        for j in range(first, m):
            t = tiers[j]
            if t != HBM:
                per_source[t] = per_source.get(t, 0) + 1
                ready[t] = max(ready.get(t, now), self._flights(t)[1].get((t, req.blocks[j]), now))
        loaded_at = now
        for source, n in per_source.items():
            at = ready[source]
            for hop in self._path(source, HBM):
                at = self._completion_if_queued(hop, n, at)
            loaded_at = max(loaded_at, at)
        # Recomputed tokens join the replica's prefill work: they are done once the GPU has
        # worked through what is outstanding (this request's prompt included), at the
        # per-token cost of a full step. A lower bound when decodes share the steps.
        recomputed_at = now + self.outstanding_tokens_total * self._prefill_token_s
        return m if recomputed_at >= loaded_at else first

    def _record_lookup(self, req: Request, tiers: Sequence[int], hit_tokens: int) -> None:
        req.looked_up = True
        log, i = self.log, req.index
        log.named_blocks[i] = len(req.blocks)
        for j, t in enumerate(tiers):
            log.hit_tokens[t, i] += req.block_token_count(j)
            log.hit_blocks[t, i] += 1
        log.recomputed_tokens[i] = req.input_tokens - hit_tokens

    def _set_computed(self, req: Request, tokens: int) -> None:
        self.outstanding_tokens_total -= tokens - req.computed
        req.computed = tokens

    def _preemptable(self) -> list[Request]:
        return [r for r in self.running if r.state in (State.PREFILL, State.DECODE)]

    # ================================================================== KV copies
    def _pin_sources(self, blocks: Sequence[int], sources: Sequence[tuple[int, int]]) -> None:
        """Pin the lower-tier copies a load will read, before anything can evict them."""
        for j, t in sources:
            self.cache.touch(t, blocks[j])
            self.cache.pin(t, blocks[j])

    def _load_up(self, blocks: Sequence[int], sources: Sequence[tuple[int, int]], dest: int) -> list[simpy.Event]:
        """Copy ``blocks[j]`` from tier ``t`` up to ``dest`` for each ``(j, t)``. The
        destination slots must be held and the sources pinned (:meth:`_pin_sources`); the
        sources are unpinned when their copy lands."""
        by_source: dict[int, list[int]] = {}
        for j, t in sources:
            by_source.setdefault(t, []).append(blocks[j])
        events = []
        for t, moved in sorted(by_source.items()):
            done = self.env.process(self._copy_up(self._path(t, dest), t, dest, moved))
            inflight = self._flights(dest)[0]
            for block in moved:
                inflight[(dest, block)] = done
            events.append(done)
        return events

    def _one_hop_up(self, blocks: Sequence[int], tiers: Sequence[int], lower: Sequence[int]) -> bool:
        """Whether every lower-tier block ``blocks[j]`` (``j`` in ``lower``, in tier
        ``tiers[j]``) is one copy from HBM and there already (DRAM, not a copy on its way down):
        what a layer-wise load can stream while the step runs. SGLang HiCache prefetches from
        its storage tier into host memory before it schedules the request."""
        for j in lower:
            t = tiers[j]
            if len(self._path(t, HBM)) != 1 or (t, blocks[j]) in self._flights(t)[0]:
                return False
        return True

    def _load_up_now(self, blocks: Sequence[int], sources: Sequence[tuple[int, int]]) -> float:
        """Queue the one-hop copies of ``blocks[j]`` from tier ``t`` into HBM for each ``(j,
        t)`` now (:meth:`_one_hop_up`); return when the last lands. As :meth:`_load_up`, with
        the destination slots held and the sources pinned, unpinned as their copy lands."""
        by_source: dict[int, list[int]] = {}
        for j, t in sources:
            by_source.setdefault(t, []).append(blocks[j])
        landed_at = self.env.now
        for t, moved in sorted(by_source.items()):
            n = len(moved)
            end = self._transfer(self._path(t, HBM)[0], n * self.bytes_per_block, n)
            done = self.env.timeout(end - self.env.now)
            done.callbacks.append(functools.partial(self._landed_up_now, t, moved))
            for block in moved:
                self._inflight[(HBM, block)] = done
            landed_at = max(landed_at, end)
        return landed_at

    def _landed_up_now(self, src: int, blocks: list[int], copy: simpy.Event) -> None:
        for block in blocks:
            self.cache.unpin(src, block)
        self._landed_up(HBM, blocks, copy)

    def _copy_up(self, path: Sequence[Hop], src: int, dest: int, blocks: list[int]):
        """Process: the copy hop by hop (SSD -> host -> HBM), each hop queued on its link
        when the previous one lands; then the sources are unpinned. A source block whose own
        copy down into ``src`` is still in flight is read once that copy has landed: the
        tier counts it as present from the moment its write was queued (so that nothing
        else claims the slot), but its bytes are not there yet."""
        landing = self._landing(src, blocks)
        if landing:
            yield self.env.all_of(landing)
        n = len(blocks)
        for hop in path:
            end = self._transfer(hop, n * self.bytes_per_block, n)
            yield self.env.timeout(end - self.env.now)
        for block in blocks:
            self.cache.unpin(src, block)
        self._landed_up(dest, blocks, self.env.active_process)

    def _landed_up(self, dest: int, blocks: list[int], copy: simpy.Event) -> None:
        """A copy up has landed: its blocks in ``dest`` are ready for use, unless a later copy
        of a block into ``dest`` has taken its place."""
        inflight = self._flights(dest)[0]
        for block in blocks:
            if inflight.get((dest, block)) is copy:
                del inflight[(dest, block)]

    def _copy_down(self, after: simpy.Event, path: Sequence[Hop], n: int, on_read: Callable[[], None] | None = None):
        """Process: a downward copy's later hops (host -> SSD after PCIe) of ``n`` blocks, each
        queued on its link once ``after`` (the hop before) fires. ``on_read``: called once its
        first hop has read the blocks out of their source tier."""
        yield after
        for hop in path:
            end = self._transfer(hop, n * self.bytes_per_block, n)
            yield self.env.timeout(end - self.env.now)
            if on_read is not None:
                on_read()
                on_read = None

    def _landed_down(self, dst: int, blocks: list[int], copy: simpy.Event) -> None:
        """Callback of a copy down: its blocks are in ``dst`` now, unless a later copy of a
        block into ``dst`` has taken its place."""
        inflight, lands_at = self._flights(dst)
        for block in blocks:
            if inflight.get((dst, block)) is copy:
                del inflight[(dst, block)]
                del lands_at[(dst, block)]

    def _landing(self, tier: int, blocks: Sequence[int]) -> list[simpy.Event]:
        """The copies into ``tier`` of any of ``blocks`` that have not landed yet: a copy's
        entry leaves ``_inflight`` as it lands (a timeout is "triggered" from the start, so
        presence, not ``triggered``, tells)."""
        inflight = self._flights(tier)[0]
        events = [inflight.get((tier, block)) for block in blocks]
        return [event for event in events if event is not None]

    def _flights(self, tier: int) -> tuple[dict[tuple[int, int], simpy.Event], dict[tuple[int, int], float]]:
        """The copies in flight into ``tier`` and when each lands: this replica's own, or, for
        the shared pool, every replica's."""
        if tier == self._pool_tier:
            return self._pool_inflight, self._pool_lands_at
        return self._inflight, self._lands_at

    def _path(self, src: int, dst: int) -> tuple[Hop, ...]:
        """The hops a copy from tier ``src`` to tier ``dst`` makes, in order. SSD data always
        passes through host memory, whether or not DRAM is a cache tier."""
        path = self._paths.get((src, dst))
        if path is None:
            pair = (self.cache.names[src], self.cache.names[dst])
            path = self._paths[src, dst] = tuple(self._hop(name) for name in _PATHS[pair])
        return path

    def _hop(self, name: str) -> Hop:
        server_side = self.links.get(SERVER_SIDE.get(name, ""))
        return (self.links[name],) if server_side is None else (self.links[name], server_side)

    def _transfer(self, hop: Hop, nbytes: int, n_blocks: int) -> float:
        """Queue a copy of ``n_blocks`` blocks on each link of ``hop`` now; return when the
        last of them completes. Each link queues it FIFO behind its own earlier copies, so a
        shared server port spreads its bandwidth over the replicas first come, first served."""
        end = self.env.now
        for link in hop:
            self.issued_bytes[link.name] += nbytes
            end = max(end, link.reserve(nbytes, self._copies(link, n_blocks)))
        return end

    def _completion_if_queued(self, hop: Hop, n_blocks: int, ready_at: float) -> float:
        """When a copy of ``n_blocks`` over ``hop`` queued at ``ready_at`` would land,
        reserving nothing."""
        nbytes = n_blocks * self.bytes_per_block
        return max(link.completion_if_queued(nbytes, self._copies(link, n_blocks), ready_at) for link in hop)

    def _copies(self, link: Link, n_blocks: int) -> int:
        """Copy calls for ``n_blocks`` on ``link``: PCIe copies a block layer by layer, K and V
        apart (``copies_per_block``); an SSD or pool read or write moves a block in one request."""
        return n_blocks * self.copies_per_block if link.name.startswith("pcie") else n_blocks

    def _pay(self, moves: Sequence[Move]) -> float:
        """Issue the copies evictions caused; return when the HBM slots they freed are
        reusable (once their old contents have left HBM), or now if none was written."""
        if not moves:
            return self.env.now  # most steps evict nothing
        down: dict[tuple[int, int], list[int]] = {}
        staged, pool = self._staged, self._pool_tier
        pool_changed = False
        for move in moves:
            if staged and (move.src, move.block) in staged:
                del staged[move.src, move.block]
                self.prefetch_wasted_blocks += 1
            if move.dst != DROPPED:
                down.setdefault((move.src, move.dst), []).append(move.block)
            if pool >= 0 and not pool_changed:
                pool_changed = pool in (move.src, move.dst)
        if pool_changed:
            self._pool_changed()
        slots_free_at = self.env.now
        for (src, dst), blocks in sorted(down.items()):
            # A lower tier kept the victims' slots (TieredCache.hold_demoted): free them once
            # the copy has read them.
            vacate = functools.partial(self.cache.vacate, src, len(blocks)) if self.cache.holds_demoted(src) else None
            end = self._write_down(src, dst, blocks, on_read=vacate)
            if src == HBM:
                slots_free_at = max(slots_free_at, end)
        return slots_free_at

    def _pool_changed(self) -> None:
        """Blocks entered or left the shared pool: the other replicas with requests waiting
        look them up again at their next step boundary, as they would at every step (a hit
        there can make a request fit: its KV is loaded, not computed in chunks)."""
        for replica in self._pool_replicas:
            if replica is not self and len(replica.waiting):
                replica._notify()

    def _write_down(self, src: int, dst: int, blocks: list[int], *, on_read: Callable[[], None] | None = None) -> float:
        """Copy ``blocks`` from tier ``src`` down to ``dst``; return when they have left
        ``src`` (the first hop), later hops following in the background. Blocks still landing
        in ``src`` (a DRAM copy on its way when DRAM evicts it to SSD) leave once they have
        arrived; the time returned then is now, which only HBM sources' callers use.
        ``on_read``: called when the first hop has read the blocks out of ``src`` (what frees
        or unpins the slots they held there)."""
        path, n, now = self._path(src, dst), len(blocks), self.env.now
        landing = self._landing(src, blocks)
        if landing:
            left_src = now
            src_lands_at = self._flights(src)[1]
            lands_at, later_hops = max(src_lands_at.get((src, b), now) for b in blocks), path
            done = self.env.process(self._copy_down(self.env.all_of(landing), path, n, on_read))
        else:
            first, *later_hops = path
            left_src = lands_at = self._transfer(first, n * self.bytes_per_block, n)
            done = self.env.timeout(left_src - now)
            if on_read is not None:
                done.callbacks.append(lambda _event: on_read())
            if later_hops:
                done = self.env.process(self._copy_down(done, later_hops, n))
        # A copy of one hop (HBM -> DRAM, the common case) needs no process: its landing is
        # the hop's timeout, and the bookkeeping is a callback on it.
        done.callbacks.append(functools.partial(self._landed_down, dst, blocks))
        for hop in later_hops:
            lands_at = self._completion_if_queued(hop, n, lands_at)
        inflight, dst_lands_at = self._flights(dst)
        for block in blocks:
            inflight[(dst, block)] = done
            dst_lands_at[(dst, block)] = lands_at
        return left_src

    def _until(self, at: float) -> list[simpy.Event]:
        """Events to wait on for time ``at`` (none if it is now)."""
        return [self.env.timeout(at - self.env.now)] if at > self.env.now else []

    def _wait_for(self, req: Request, events: list[simpy.Event]) -> None:
        req.state = State.LOADING
        req.load_started_s = self.env.now
        self.env.all_of(events).callbacks.append(lambda _event, req=req: self._loaded(req))

    def _loaded(self, req: Request) -> None:
        if req.state is not State.LOADING:
            return
        if self.cache.check_invariants and self._landing(HBM, req.blocks[: req.held_named]):
            raise InvariantError(f"request {req.index} runs on KV blocks still being copied into HBM")
        waited = self.env.now - req.load_started_s
        req.stall_s += waited
        self.log.stall_s[req.index] += waited
        if req.swapped_blocks:
            self.cache.unreserve(self.cache.tier_index("dram"), req.swapped_blocks)
            req.swapped_blocks = 0
        if req.computed >= req.prompt_target:
            self._resuming.append(req)
        else:
            req.state = State.PREFILL
        self._notify()

    # ================================================================== memory
    def _allocate_for(self, req: Request, tokens: int) -> bool:
        """Reserve private blocks so ``req`` can hold ``tokens`` tokens; preempt if needed.
        ``False`` if ``req`` itself was preempted."""
        need = req.kv_blocks_for(tokens) - req.held_named - req.held_private
        if need <= 0:
            return True
        moves: list[Move] = []
        while not self.cache.reserve(HBM, need, moves):
            if not self._relieve_pressure(req):
                return False
        req.held_private += need
        self._stall_until = max(self._stall_until, self._pay(moves))
        return True

    def _relieve_pressure(self, requester: Request | None) -> bool:
        """Free HBM: drop prefetch holds first, then preempt a victim. ``False`` when the
        requester itself was preempted (or nothing could be freed)."""
        if self._holds:
            self._release_holds()
            return True
        candidates = self._preemptable()
        if not candidates:
            return False
        victim = self.scheduler.preemption_victim(candidates)
        self._preempt(victim)
        return victim is not requester

    def _grow_decoders(self, k: int, *, evict: bool) -> int:
        """Reserve blocks so every decoder can run ``k`` more steps; return how many steps
        are covered (fewer than ``k`` when HBM runs out, or, unless ``evict``, when its free
        room does)."""
        limit = self.counter + k
        heap = self._alloc_heap
        moves: list[Move] = []
        covered = k
        while heap and heap[0][0] < limit:
            at, _, epoch, req = heap[0]
            if epoch != req.decode_epoch or req.state is not State.DECODE:
                heapq.heappop(heap)
                continue
            if (not evict and self.hbm.free < 1) or not self.cache.reserve(HBM, 1, moves):
                covered = at - self.counter
                break
            req.held_private += 1
            heapq.heapreplace(heap, (at + self.block_tokens, req.index, epoch, req))
        self._stall_until = max(self._stall_until, self._pay(moves))
        return covered

    def _blocks_ahead(self, limit: int) -> list[tuple[int, int]]:
        """``(position in the allocation heap, blocks)`` of each decoder holding blocks for
        steps from ``limit`` on."""
        block_tokens = self.block_tokens
        out = []
        for i, (at, _, epoch, req) in enumerate(self._alloc_heap):
            ahead = (at - limit) // block_tokens
            if ahead > 0 and epoch == req.decode_epoch and req.state is State.DECODE:
                out.append((i, ahead))
        return out

    def _return_blocks_ahead(self, limit: int) -> None:
        """Give back the blocks decoders hold for steps from ``limit`` on (a run cut short
        before them): each keeps room up to its next block boundary at or after ``limit``,
        what it would hold had every step been planned on its own."""
        heap, block_tokens = self._alloc_heap, self.block_tokens
        returned = 0
        for i, ahead in self._blocks_ahead(limit):
            at, index, epoch, req = heap[i]
            req.held_private -= ahead
            returned += ahead
            heap[i] = (at - ahead * block_tokens, index, epoch, req)
        if returned:
            heapq.heapify(heap)
            self.cache.unreserve(HBM, returned)

    # ================================================================== decode bookkeeping
    def _join_decode(self, req: Request) -> None:
        req.state = State.DECODE
        req.decode_epoch += 1
        c0 = self.counter
        req.decode_join_counter = c0
        req.decode_join_generated = req.generated
        kv = req.computed
        capacity_tokens = req.named_tokens + req.held_private * self.block_tokens
        self.n_decode += 1
        self.decode_ctx_base += kv + 1 - c0
        finish_step = c0 + (req.output_tokens - req.generated) - 1
        heapq.heappush(self._finish_heap, (finish_step, req.index, req.decode_epoch, req))
        heapq.heappush(self._alloc_heap, (c0 + capacity_tokens - kv, req.index, req.decode_epoch, req))

    def _leave_decode(self, req: Request) -> None:
        """Bring ``req``'s counters up to date and take it out of the decode batch."""
        steps = self.counter - req.decode_join_counter
        req.generated = req.decode_join_generated + steps
        req.computed += steps
        req.prompt_target = max(req.prompt_target, req.computed)
        self.n_decode -= 1
        self.decode_ctx_base -= (req.computed - steps) + 1 - req.decode_join_counter
        req.decode_epoch += 1  # invalidates its heap entries

    # ================================================================== step completion
    def _complete(
        self,
        prefill: list[tuple[Request, int]],
        start: float,
        start_counter: int,
        cumulative: np.ndarray,
    ) -> None:
        # The run's last step held the most: its finishers have not released their KV yet.
        self._track_peaks()
        steps = len(cumulative)
        self.counter = start_counter + steps
        self.outstanding_tokens_total -= self.n_decode * steps
        while self._finish_heap and self._finish_heap[0][0] < self.counter:
            finish_step, _, epoch, req = heapq.heappop(self._finish_heap)
            if epoch != req.decode_epoch or req.state is not State.DECODE:
                continue
            self._leave_decode(req)
            self._finish(req, start + float(cumulative[finish_step - start_counter]))
        end = start + float(cumulative[-1])
        for req, chunk in prefill:
            if req.state is not State.PREFILL:
                continue  # preempted while the step ran
            self._set_computed(req, req.computed + chunk)
            self._name_completed_blocks(req)
            if req.computed < req.prompt_target:
                continue
            if req.first_token_s < 0:
                req.first_token_s = end
                self.log.first_token_s[req.index] = end
            if req.generated < req.output_tokens:
                req.generated += 1
                self.outstanding_tokens_total -= 1
            if req.generated >= req.output_tokens:
                self._finish(req, end)
            else:
                self._join_decode(req)

    def _name_completed_blocks(self, req: Request) -> None:
        """Computed chain blocks become named cached blocks (pinned by ``req``), and are
        written through to lower tiers where the placement policy says so."""
        complete = req.complete_named(req.computed)
        if complete <= req.held_named:
            return
        cache, moves = self.cache, []
        through: dict[tuple[int, int], list[int]] = {}  # (from tier, to tier) -> blocks
        for j in range(req.held_named, complete):
            block = req.blocks[j]
            cache.unreserve(HBM, 1)
            req.held_private -= 1
            if block in self.hbm.blocks:
                cache.pin(HBM, block)
            else:
                cache.insert(HBM, block, j, moves, pin=True)
            # Each copy is written from the nearest tier above it that got one (HBM -> DRAM ->
            # pool crosses PCIe once), once that copy has landed there.
            through_tiers = self._write_through_tiers(j)
            if not through_tiers:
                continue  # the default placements write nothing through
            source = HBM
            for t in sorted(through_tiers):
                if block in cache.tiers[t].blocks:
                    source = t
                elif cache.insert(t, block, j, moves, pin=False):
                    through.setdefault((source, t), []).append(block)
                    source = t
        req.held_named = complete
        self._stall_until = max(self._stall_until, self._pay(moves))
        for (source, t), written in sorted(through.items()):
            # HBM's blocks stay pinned until the copy has read them, so that nothing evicts
            # them and takes their slots before (a lower tier's slots are not timed here).
            read = None
            if source == HBM:
                for block in written:
                    self.cache.pin(HBM, block)
                read = functools.partial(self._source_read, HBM, written)
            self._write_down(source, t, written, on_read=read)
            if t == self._pool_tier:
                self._pool_changed()

    def _write_through_tiers(self, position: int) -> list[int]:
        """Tier indices the placement policy writes a new block at ``position`` through to."""
        cache = self.cache
        out = []
        for tier_name in cache.admission.write_through_tiers(position):
            t = cache.tier_index(tier_name) if tier_name in cache.names else -1
            if t <= HBM:
                raise ValueError(
                    f"{type(cache.admission).__name__}.write_through_tiers named {tier_name!r}, not a tier below hbm"
                )
            out.append(t)
        return out

    def _finish(self, req: Request, at: float) -> None:
        self.running.remove(req)
        self._release_kv(req)
        req.state = State.DONE
        log, i = self.log, req.index
        log.finish_s[i] = at
        log.finished[i] = True
        log.generated[i] = req.generated
        log.preemptions[i] = req.preemptions
        if req.first_token_s < 0:
            log.first_token_s[i] = at
        self._execute(self.prefetch.on_finish(req, self))
        self._on_done(req)

    def _release_kv(self, req: Request) -> None:
        if req.held_private:
            self.cache.unreserve(HBM, req.held_private)
            req.held_private = 0
        if req.held_named:
            ctx = self._context_of(req) if self.cache.wants_request_context else None
            self.cache.release(HBM, req.blocks[: req.held_named], ctx)
            req.held_named = 0

    # ================================================================== preemption
    def _preempt(self, req: Request) -> None:
        # Its chunk in the step being planned is void: were it swapped back in and its load
        # landed before the step ended, the step would count the chunk as computed.
        self._prefill_plan[:] = [entry for entry in self._prefill_plan if entry[0] is not req]
        was_decoding = req.state is State.DECODE
        if was_decoding:
            self._leave_decode(req)
        self.running.remove(req)
        req.preemptions += 1
        if self.preemption == "swap" and self._swap_out(req):
            self.preemptions_swap += 1
        else:
            before = (req.prompt_target - req.computed) + (req.output_tokens - req.generated)
            self._release_kv(req)
            req.prompt_target = req.input_tokens + req.generated
            req.computed = 0
            self.outstanding_tokens_total += (req.prompt_target + req.output_tokens - req.generated) - before
            self.preemptions_recompute += 1
        req.state = State.WAITING
        self.waiting.push(req, self.env.now)
        self._queue_dirty = True

    def _swap_out(self, req: Request) -> bool:
        dram = self.cache.tier_index("dram")
        n = req.held_named + req.held_private
        moves: list[Move] = []
        if not self.cache.reserve(dram, n, moves):
            self.swap_fallbacks += 1
            return False
        self._pay(moves)
        copied_out = self._transfer((self.links["pcie_d2h"],), n * self.bytes_per_block, n)
        self._stall_until = max(self._stall_until, copied_out)
        self._release_kv(req)
        req.swapped_blocks = n
        return True

    def _swap_in(self, req: Request, budget: int) -> int | None:
        """Bring a swapped request's KV back: chain blocks still in HBM are pinned, the rest
        is copied from its DRAM swap space.

        Only when its next step fits too (the next prefill chunk, or one more decoded token),
        as vLLM swaps in only above a watermark: a request swapped out because its next step
        did not fit would otherwise be copied back and out again every step, stalling the
        replica for each copy and making no progress."""
        cache = self.cache
        named = req.complete_named(req.computed)
        in_hbm = [j for j in range(named) if req.blocks[j] in self.hbm.blocks]
        private = req.kv_blocks_for(req.computed) - named
        need = (named - len(in_hbm)) + private
        if req.computed < req.prompt_target:
            next_step = req.computed + max(1, min(req.prompt_target - req.computed, budget))
        else:
            next_step = req.computed + 1
        growth = req.kv_blocks_for(next_step) - req.kv_blocks_for(req.computed)
        for j in in_hbm:
            cache.pin(HBM, req.blocks[j])
        if self.hbm.free + self.hbm.evictable < need + growth:
            for j in in_hbm:
                cache.unpin(HBM, req.blocks[j])
            return None
        moves: list[Move] = []
        resident = set(in_hbm)
        for j in range(named):
            if j not in resident:
                cache.insert(HBM, req.blocks[j], j, moves, pin=True)
        if private:
            cache.reserve(HBM, private, moves)
        req.held_named, req.held_private = named, private
        req.admitted_s = self.env.now
        self.running.append(req)
        copied_in = self._transfer((self.links["pcie_h2d"],), need * self.bytes_per_block, need)
        waits = self._until(max(self._pay(moves), copied_in))
        copied = [req.blocks[j] for j in range(named) if j not in resident]
        if copied:
            # Until the copy lands, a request finding these blocks in HBM waits for it too.
            (landed,) = waits
            for block in copied:
                self._inflight[(HBM, block)] = landed
            landed.callbacks.append(functools.partial(self._landed_up, HBM, copied))
        # Blocks found in HBM may still be on their way there (a stage, another's load).
        waits.extend(self._landing(HBM, [req.blocks[j] for j in in_hbm]))
        self._wait_for(req, waits)
        return 0

    # ================================================================== prefetch orders
    def _execute(self, orders: Sequence[Order]) -> None:
        for order in orders:
            if isinstance(order, Stage):
                self._stage(order)
            elif isinstance(order, Hold):
                self._hold(order)
            else:
                raise TypeError(f"{type(self.prefetch).__name__} returned {order!r}, not a Stage or Hold")

    def _stage(self, order: Stage) -> None:
        if order.to_tier not in self.cache.names:
            return
        dest = self.cache.tier_index(order.to_tier)
        blocks = order.request.blocks
        matched = self.cache.match_prefix(blocks)
        below = [(j, t) for j, t in enumerate(matched) if t > dest]
        if not below:
            return
        # The prefix's blocks already in the tier are what the staged ones complete: pinned
        # while room is made, so that it is not made by evicting them (admission pins its
        # hits first too).
        resident = [blocks[j] for j, t in enumerate(matched) if t == dest]
        for block in resident:
            self.cache.pin(dest, block)
        tier = self.cache.tiers[dest]
        room = tier.free + (tier.evictable if order.evict else 0)
        below = below[:room]
        self._pin_sources(blocks, below)
        moves: list[Move] = []
        placed = []
        for j, t in below:
            if self.cache.insert(dest, blocks[j], j, moves, pin=True):
                placed.append((j, t))
            else:
                self.cache.unpin(t, blocks[j])
        self._unpin_all(dest, resident)
        self._stall_until = max(self._stall_until, self._pay(moves))
        for j, _ in placed:
            self._staged[dest, blocks[j]] = None
        self.prefetch_staged_blocks += len(placed)
        loads = self._load_up(blocks, placed, dest)
        if loads:
            # One load per source tier; the staged blocks stay pinned until every one has landed.
            moved = [blocks[j] for j, _ in placed]
            done = loads[0] if len(loads) == 1 else self.env.all_of(loads)
            done.callbacks.append(lambda _e: self._unpin_later(dest, moved))

    def _count_staged_hits(self, blocks: Sequence[int], tiers: Sequence[int]) -> None:
        """An admitted request uses staged blocks where a prefetch put them: it was used."""
        for block, tier in zip(blocks, tiers, strict=False):
            if (tier, block) in self._staged:
                del self._staged[tier, block]
                self.prefetch_used_blocks += 1

    def _unpin_all(self, tier: int, blocks: list[int]) -> None:
        for block in blocks:
            self.cache.unpin(tier, block)

    def _unpin_later(self, tier: int, blocks: list[int]) -> None:
        """Unpin ``blocks`` when a stage lands or a hold ends, and wake the step loop: a request
        waiting for room may fit now, and with nothing running nothing else would wake it."""
        self._unpin_all(tier, blocks)
        self._notify()

    def _source_read(self, tier: int, blocks: list[int]) -> None:
        """A write-through copy has read ``blocks``: unpin them, and wake the step loop if a
        request waits (it may fit now); with none, the next step's own eviction finds them."""
        self._unpin_all(tier, blocks)
        if len(self.waiting):
            self._notify()

    def _hold(self, order: Hold) -> None:
        req = order.request
        limit = int(self.prefetch.max_hold_fraction * self.hbm.capacity)
        blocks = [b for b in req.blocks[: req.complete_named(req.computed)] if b in self.hbm.blocks]
        if not blocks or self._held_blocks + len(blocks) > limit:
            return
        for block in blocks:
            self.cache.pin(HBM, block)
        self._holds.append(blocks)
        self._held_blocks += len(blocks)
        self.env.timeout(order.seconds).callbacks.append(lambda _e, blocks=blocks: self._end_hold(blocks))

    def _end_hold(self, blocks: list[int]) -> None:
        for i, held in enumerate(self._holds):
            if held is blocks:
                del self._holds[i]
                self._held_blocks -= len(blocks)
                self._unpin_later(HBM, blocks)
                return

    def _release_holds(self) -> None:
        for blocks in self._holds:
            self._unpin_all(HBM, blocks)
        self._holds.clear()
        self._held_blocks = 0

    # ================================================================== accounting
    def _track_peaks(self) -> None:
        peaks, check = self.peak_blocks, self.cache.check_invariants
        for i, tier in enumerate(self.cache.tiers):
            used = len(tier.blocks) + tier.reserved + tier.leaving  # Tier.used, twice a step
            if used > peaks[i]:
                peaks[i] = used
            if check and used > tier.capacity:
                raise InvariantError(f"{tier.name}: {used} blocks held, capacity {tier.capacity}")

    def occupancy(self) -> list[int]:
        """Blocks held in each tier now, as one step per event would hold them: the blocks a
        decode run in progress reserved for its steps not begun yet are not counted."""
        used = self.cache.occupancy()
        if self._run is not None:
            start, start_counter, cumulative = self._run
            limit = start_counter + self._steps_begun(start, cumulative)
            used[HBM] -= sum(ahead for _, ahead in self._blocks_ahead(limit))
        return used

    @property
    def n_waiting(self) -> int:
        return len(self.waiting)

    @property
    def n_loading(self) -> int:
        return sum(1 for r in self.running if r.state is State.LOADING)
