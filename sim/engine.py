"""Serve mode: replay a trace at its arrival times through replicas behind a router.

Wires the pieces together — tiers and policies per replica, links, the router, a sampler for
the time series — runs the SimPy environment to completion, checks the run's accounting, and
returns a :class:`~sim.result.Result`.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import simpy

from hwmodels.models import longer_context_model
from policies.eviction.base import EvictionPolicy, RequestContext, WorkloadView
from policies.registry import policy_class, policy_label
from sim.blocks import AccessOracle, remap_blocks
from sim.build import Setup, bind_policy, build_setup
from sim.config import SHARED_TIERS, SimConfig
from sim.kvcache import InvariantError, Tier, TieredCache, build_tiers
from sim.links import Link, Medium
from sim.metrics import GpuPower, RequestLog, RunTotals, request_labels, requests_frame, summarise
from sim.progress import SimProgress
from sim.replica import Replica
from sim.request import Request
from sim.result import Result
from traces.schema import Trace


def overload_queue_s(requests: pd.DataFrame, ttft_objective_s: float) -> float | None:
    """The median time finished requests queued, where it exceeds the TTFT objective (else
    ``None``): the mark of an overloaded run, whose backlog grows throughout and whose
    latencies measure that backlog more than any policy. ``requests``: a result's per-request
    frame."""
    done = requests[requests["finished"]]
    if not len(done):
        return None
    queue_p50 = float(done["queue_s"].median())
    return queue_p50 if queue_p50 > ttft_objective_s else None


def run_serve(config: SimConfig, trace: Trace, *, progress: bool = False, progress_label: str = "") -> Result:
    setup = build_setup(config, trace)
    last_arrival = float(trace.arrival_s[-1]) if len(trace) else 0.0
    tracker = SimProgress(last_arrival, len(trace), progress_label) if progress else None
    return _ServeRun(config, trace, setup, tracker).run()


class _ServeRun:
    def __init__(self, config: SimConfig, trace: Trace, setup: Setup, progress: SimProgress | None) -> None:
        self.config = config
        self.trace = trace
        self.setup = setup
        self.env = simpy.Environment()
        self.offsets, self.keys = remap_blocks(trace, setup.block_tokens)
        needs_future = any(
            getattr(policy_class(factory), "offline", False)
            for factory in (setup.policies["eviction"], *setup.tier_eviction.values())
        )
        self.oracle = AccessOracle(self.keys) if needs_future else None
        prefetch = setup.policies["prefetch"]
        if getattr(policy_class(prefetch), "acts_on_sessions", False) and (trace.session_id < 0).all():
            warnings.warn(
                f"prefetch={policy_label(prefetch)} acts on a session's turns, and {trace.source} has no sessions: it "
                "stages and holds nothing, and the run equals prefetch=none",
                UserWarning,
                stacklevel=3,
            )
        self.recompute_s = self._recompute_cost_by_position()
        self.tier_names = tuple(name for name, _ in setup.tier_blocks)
        self.log = RequestLog(len(trace), self.tier_names)
        self.pool = self._build_pool()
        # Copies in flight into the pool, seen by every replica: (tier, block) -> completion
        # event, and when each is expected to land (see Replica._flights).
        self.pool_flights: tuple[dict, dict] | None = ({}, {}) if self.pool is not None else None
        self.pool_links = self._build_pool_links()
        self.remaining = len(trace)
        self.arrived = 0
        self.pool_replicas: list[Replica] = []  # the replicas sharing the pool, for each of them
        self.replicas = [self._build_replica(i) for i in range(config.hardware.n_replicas)]
        if self.pool is not None:
            self.pool_replicas.extend(self.replicas)
        self.router = setup.policies["routing"]()
        self.timeseries_rows: list[dict[str, float]] = []
        self.progress = progress

    # ------------------------------------------------------------------ construction
    def _recompute_cost_by_position(self) -> np.ndarray:
        """GPU seconds to recompute one block at each chain position (deeper = longer prefix)."""
        counts = np.diff(self.offsets)
        longest = int(counts.max()) if len(counts) else 1
        bt = self.setup.block_tokens
        execution = self.setup.execution
        return np.array(
            [
                execution.iteration_s([bt], [p * bt], 0, 0) - execution.iteration_overhead_s
                for p in range(max(longest, 1))
            ]
        )

    def _make_policy(self, tier: str, capacity: int) -> EvictionPolicy:
        key = f"tier_eviction.{tier}" if tier in self.setup.tier_eviction else "eviction"
        policy = self.setup.tier_eviction.get(tier, self.setup.policies["eviction"])()
        bind_policy(
            key,
            policy,
            capacity,
            WorkloadView(
                tier=tier,
                block_bytes=self.setup.bytes_per_block,
                categories=self.trace.categories,
                next_use=self.oracle.next_use if self.oracle else None,
                next_access=self.oracle.next_access if self.oracle else None,
                recompute_s_by_position=self.recompute_s,
            ),
        )
        return policy

    def _build_pool(self) -> Tier | None:
        """The KV pool every replica shares (the last tier), if the hardware has one: one
        :class:`Tier`, with one eviction policy, that each replica's cache lists last."""
        name, capacity = self.setup.tier_blocks[-1]
        if name not in SHARED_TIERS:
            return None
        index = len(self.setup.tier_blocks) - 1
        return Tier(name, index, capacity, self._make_policy(name, capacity))

    def _build_pool_links(self) -> dict[str, Link]:
        """The pool servers' ports, one Link per direction in every replica's table: what all
        replicas' copies to and from the pool queue on together (none: the servers keep up)."""
        setup, bucket = self.setup, self.config.timeseries_interval_s
        if self.pool is None or setup.pool_read is None or setup.pool_write is None:
            return {}
        return {
            "pool_read": Link(self.env, "pool_read", setup.pool_read, bucket),
            "pool_write": Link(self.env, "pool_write", setup.pool_write, bucket),
        }

    def _build_replica(self, index: int) -> Replica:
        setup, config, env = self.setup, self.config, self.env
        bucket = config.timeseries_interval_s
        links = {
            "pcie_h2d": Link(env, "pcie_h2d", setup.pcie_h2d, bucket),
            "pcie_d2h": Link(env, "pcie_d2h", setup.pcie_d2h, bucket),
        }
        if "ssd" in self.tier_names:
            # One drive: its reads and writes take turns on the same flash (sim.links).
            ssd, drive = setup.ssd_latency_s, Medium()
            links["ssd_read"] = Link(env, "ssd_read", setup.ssd_read, bucket, latency_s=ssd, medium=drive)
            links["ssd_write"] = Link(env, "ssd_write", setup.ssd_write, bucket, latency_s=ssd, medium=drive)
        if self.pool is not None:
            net = setup.net_latency_s
            links["net_read"] = Link(env, "net_read", setup.net_read, bucket, latency_s=net)
            links["net_write"] = Link(env, "net_write", setup.net_write, bucket, latency_s=net)
            links.update(self.pool_links)
        local = [(name, capacity) for name, capacity in setup.tier_blocks if name not in SHARED_TIERS]
        tiers = build_tiers(local, self._make_policy) + ([self.pool] if self.pool is not None else [])
        cache = TieredCache(
            tiers,
            setup.policies["admission"](),
            check_invariants=config.check_invariants,
            # A tier below HBM keeps a demoted block's slot until its copy has read it. HBM's
            # slots go to the step that evicted, which waits for the copies (Replica._pay).
            hold_demoted=range(1, len(tiers)),
        )
        scheduler = setup.policies["scheduler"]()
        bind_policy("scheduler", scheduler, self.trace.categories)
        return Replica(
            env,
            index,
            cache=cache,
            links=links,
            execution=setup.execution,
            scheduler=scheduler,
            prefetch=setup.policies["prefetch"](),
            log=self.log,
            context_of=self._context_of,
            bytes_per_block=setup.bytes_per_block,
            copies_per_block=setup.copies_per_block,
            max_num_seqs=config.engine.max_num_seqs,
            max_num_batched_tokens=config.engine.max_num_batched_tokens,
            preemption=config.engine.preemption,
            kv_load=config.engine.kv_load,
            kv_load_overlap=config.engine.kv_load_overlap,
            on_done=self._on_done,
            clock=setup.execution.profile.clock if config.hardware.power_cap else None,
            pool_flights=self.pool_flights,
            pool_replicas=self.pool_replicas,
        )

    def _context_of(self, req: Request) -> RequestContext:
        return RequestContext(
            request_index=req.index,
            now_s=self.env.now,
            arrival_s=req.arrival_s,
            session_id=req.session_id,
            turn=req.turn,
            category=req.category,
            n_blocks=len(req.blocks),
            access_offset=req.access_offset,
        )

    # ------------------------------------------------------------------ processes
    def _arrivals(self):
        trace, env = self.trace, self.env
        arrival, inputs, outputs = trace.arrival_s, trace.input_tokens, trace.output_tokens
        sessions, turns, categories = trace.session_id, trace.turn, trace.category_code
        offsets, keys = self.offsets, self.keys
        for i in range(len(trace)):
            at = float(arrival[i])
            if at > env.now:
                yield env.timeout(at - env.now)
            start, end = int(offsets[i]), int(offsets[i + 1])
            req = Request(
                i,
                at,
                int(inputs[i]),
                int(outputs[i]),
                keys[start:end].tolist(),
                self.setup.block_tokens,
                start,
                int(sessions[i]),
                int(turns[i]),
                int(categories[i]),
            )
            choice = self.router.route(req, self.replicas) if len(self.replicas) > 1 else 0
            if not 0 <= choice < len(self.replicas):
                raise ValueError(
                    f"{type(self.router).__name__}.route returned {choice!r}; replicas are 0..{len(self.replicas) - 1}"
                )
            self.replicas[choice].submit(req)
            self.arrived += 1

    def _on_done(self, req: Request) -> None:
        self.remaining -= 1
        req.blocks = []  # the block list is the largest part of a request; free it now

    def _sampler(self):
        env, interval = self.env, self.config.timeseries_interval_s
        bucket = self._idle_until_bucket(interval)  # a trace that starts late is idle until then
        last_time = -1.0
        while self.remaining > 0:
            yield env.timeout(max((bucket + 1) * interval - env.now, 0.0))
            if self.remaining > 0 and env.peek() == float("inf"):
                self._stalled()
                return
            if env.now < last_time:
                raise InvariantError(f"simulated time went backwards: {env.now} after {last_time}")
            last_time = env.now
            for replica in self.replicas:
                row: dict[str, float] = {"time_s": env.now, "replica": replica.index}
                for tier, used in zip(replica.cache.tiers, replica.occupancy(), strict=True):
                    row[f"{tier.name}_used_blocks"] = used
                    row[f"{tier.name}_pinned_blocks"] = len(tier.pinned)
                row["running"] = len(replica.running)
                row["waiting"] = replica.n_waiting
                row["loading"] = replica.n_loading
                row["decoding"] = replica.n_decode
                for name, link in replica.links.items():
                    row[f"{name}_utilisation"] = link.utilisation(bucket)
                self.timeseries_rows.append(row)
            bucket = max(bucket + 1, self._idle_until_bucket(interval))
            if self.progress:
                self.progress.update(env.now, len(self.trace) - self.remaining)

    def _stalled(self) -> None:
        """Nothing but this sampler is scheduled, yet requests remain: no event can ever move
        them. End the run (they are reported as ``unfinished``) instead of sampling forever."""
        warnings.warn(
            f"serve run stalled at t={self.env.now:.3f} s with {self.remaining} requests unfinished "
            "(no event pending; an engine or policy bug): they are reported as unfinished",
            RuntimeWarning,
            stacklevel=2,
        )

    def _idle_until_bucket(self, interval: float) -> int:
        """The sampling bucket of the next arrival while no request is in the system, else 0.

        An idle stretch has nothing to sample, and a trace with hours between bursts (or times
        that start at a Unix epoch) would otherwise get a row per interval of it."""
        in_system = self.arrived - (len(self.trace) - self.remaining)
        if in_system > 0 or self.arrived >= len(self.trace):
            return 0
        return int(float(self.trace.arrival_s[self.arrived]) // interval)

    # ------------------------------------------------------------------ run
    def run(self) -> Result:
        env = self.env
        env.process(self._arrivals())
        env.process(self._sampler())
        try:
            env.run()
        finally:
            if self.progress:
                self.progress.close(env.now, len(self.trace) - self.remaining)
        return self._result()

    def _result(self) -> Result:
        log, trace = self.log, self.trace
        unfinished = ~log.finished & (log.reject_reason == 0)
        log.reject_reason[unfinished] = 2
        columns = {
            "request_id": trace.request_id,
            "arrival_s": trace.arrival_s,
            "input_tokens": trace.input_tokens.astype(np.int64),
            "output_tokens": trace.output_tokens.astype(np.int64),
            **request_labels(trace),
        }
        frame = requests_frame(columns, log)
        totals = self._totals(frame)
        if self.config.check_invariants:
            self._check_accounting(frame)
        summary = summarise(
            frame,
            log,
            totals,
            ttft_slo_s=self.config.slo.ttft_s,
            tpot_slo_s=self.config.slo.tpot_s,
            power=GpuPower.resolve(self.config.power, self.setup.gpu),
        )
        summary = {**self._describe(), **summary}
        self._warn_if_too_long(summary)
        self._warn_if_kv_too_big(summary)
        self._warn_if_overloaded(frame)
        return Result(summary, frame, pd.DataFrame(self.timeseries_rows))

    def _warn_if_too_long(self, summary: dict) -> None:
        """Requests longer than the model's context were refused, as vLLM refuses them; said
        once with the share, since a trace written for a longer-context model loses its
        longest (and most cache-hungry) requests this way and its hit ratios shift with them."""
        refused = summary["rejected_by_reason"]["exceeds_context"]
        if not refused:
            return
        model = self.setup.model
        lengths = self.trace.input_tokens.astype(np.int64) + self.trace.output_tokens
        too_long = lengths[lengths > model.max_context_tokens]
        suggestion = longer_context_model(model, too_long.tolist())
        if self.config.model.max_context_tokens is not None:
            advice = "model.max_context_tokens set that limit; raise it, up to the model's own, to keep them"
        elif suggestion is not None:
            other, served = suggestion
            share = "all of them" if served == len(too_long) else f"{served:,} of them"
            advice = (
                f"serve a longer-context model (model={other.name} serves {other.max_context_tokens:,} tokens: {share})"
            )
        else:
            advice = f"no shipped model serves them (the longest is {int(too_long.max()):,} tokens)"
        warnings.warn(
            f"{refused:,} of {len(self.trace):,} requests ({refused / len(self.trace):.1%}) are longer than "
            f"{model.name}'s context of {model.max_context_tokens:,} tokens and were refused; {advice}",
            UserWarning,
            stacklevel=3,
        )

    def _warn_if_kv_too_big(self, summary: dict) -> None:
        """Requests whose KV (prompt and output) could never fit in one replica's HBM were
        refused; said once with the share, as a summary's rejected count is easy to miss and the
        refused requests are the longest, whose absence flatters every latency."""
        refused = summary["rejected_by_reason"]["kv_exceeds_hbm"]
        if not refused:
            return
        blocks, block_tokens = summary["hbm_capacity_blocks"], summary["block_tokens"]
        warnings.warn(
            f"{refused:,} of {len(self.trace):,} requests ({refused / len(self.trace):.1%}) need more KV than "
            f"one replica's HBM holds for {self.setup.model.name} ({blocks:,} blocks of {block_tokens:,} tokens) "
            "and were refused; give the KV cache more (hardware.hbm_gb, hardware.tensor_parallel) or serve a "
            "smaller model",
            UserWarning,
            stacklevel=3,
        )

    def _warn_if_overloaded(self, frame: pd.DataFrame) -> None:
        """Half the requests queued for longer than the TTFT objective: the replicas could not
        keep up, the backlog grew through the run, and its latencies measure the backlog more
        than any policy. Said once, as a comparison of policies on such a run misleads."""
        queue_p50 = overload_queue_s(frame, self.config.slo.ttft_s)
        if queue_p50 is None:
            return
        done = frame[frame["finished"]]
        last_arrival = float(self.trace.arrival_s[-1])
        drain = float((done["arrival_s"] + done["e2e_s"]).max()) - last_arrival
        warnings.warn(
            f"overloaded: half the requests queued over {queue_p50:.3g} s (TTFT objective {self.config.slo.ttft_s} s) "
            f"and the last finished {drain:.4g} s after the last arrival; latencies measure the backlog: lower "
            "the load (trace.time_scale > 1) or add replicas (hardware.n_replicas)",
            UserWarning,
            stacklevel=3,
        )

    def _totals(self, frame: pd.DataFrame) -> RunTotals:
        finish = frame["e2e_s"].to_numpy() + frame["arrival_s"].to_numpy()
        start = float(self.trace.arrival_s[0]) if len(self.trace) else 0.0
        makespan = float(np.nanmax(finish) - start) if np.isfinite(finish).any() else 0.0
        link_bytes: dict[str, int] = {}
        link_busy: dict[str, float] = {}
        link_transfers: dict[str, int] = {}
        for name, links in self._distinct_links().items():
            link_bytes[name] = sum(link.bytes_moved for link in links)
            link_busy[name] = sum(link.busy_s for link in links) / len(links)
            link_transfers[name] = sum(link.transfers for link in links)
        tp = self.config.hardware.tensor_parallel
        last_copy = max((link.done_at for links in self._distinct_links().values() for link in links), default=start)
        return RunTotals(
            makespan_s=makespan,
            link_span_s=max(makespan, last_copy - start),
            gpu_busy_s=sum(r.busy_s for r in self.replicas) * tp,
            gpu_prefill_busy_s=sum(r.prefill_busy_s for r in self.replicas) * tp,
            gpu_full_clock_busy_s=sum(r.full_clock_busy_s for r in self.replicas) * tp,
            gpu_allreduce_busy_s=sum(r.allreduce_busy_s for r in self.replicas) * tp,
            gpu_sequence_busy_s=sum(r.sequence_busy_s for r in self.replicas) * tp,
            n_gpus=len(self.replicas) * tp,
            link_bytes=link_bytes,
            link_busy_s=link_busy,
            link_transfers=link_transfers,
            tier_capacity_blocks={name: cap for name, cap in self.setup.tier_blocks},
            tier_peak_blocks={
                name: max(r.peak_blocks[i] for r in self.replicas) for i, name in enumerate(self.tier_names)
            },
            evictions={
                name: sum(tier.evictions for tier in self._distinct_tiers(i)) for i, name in enumerate(self.tier_names)
            },
            preemptions_recompute=sum(r.preemptions_recompute for r in self.replicas),
            preemptions_swap=sum(r.preemptions_swap for r in self.replicas),
            swap_fallbacks=sum(r.swap_fallbacks for r in self.replicas),
            loads_declined_blocks=sum(r.loads_declined_blocks for r in self.replicas),
            prefetch_staged_blocks=sum(r.prefetch_staged_blocks for r in self.replicas),
            prefetch_used_blocks=sum(r.prefetch_used_blocks for r in self.replicas),
            prefetch_wasted_blocks=sum(r.prefetch_wasted_blocks for r in self.replicas),
            bytes_per_block=self.setup.bytes_per_block,
        )

    def _distinct_tiers(self, index: int) -> list[Tier]:
        """Tier ``index`` of every replica, the shared pool (one Tier in every cache) once."""
        if self.pool is not None and index == self.pool.index:
            return [self.pool]
        return [replica.cache.tiers[index] for replica in self.replicas]

    def _distinct_links(self) -> dict[str, list[Link]]:
        """Each link name's Link objects: one per replica, the pool servers' one once."""
        by_name: dict[str, list[Link]] = {}
        for replica in self.replicas:
            for name, link in replica.links.items():
                if name not in self.pool_links:
                    by_name.setdefault(name, []).append(link)
        return by_name | {name: [link] for name, link in self.pool_links.items()}

    def _check_accounting(self, frame: pd.DataFrame) -> None:
        """Invariants that close over the whole run; a violation is an engine bug."""
        for replica in self.replicas:
            for name, link in replica.links.items():
                if name not in self.pool_links and link.bytes_moved != replica.issued_bytes[name]:
                    raise InvariantError(
                        f"replica {replica.index} link {name}: {link.bytes_moved} bytes moved but "
                        f"{replica.issued_bytes[name]} issued"
                    )
        for name, link in self.pool_links.items():
            issued = sum(replica.issued_bytes[name] for replica in self.replicas)
            if link.bytes_moved != issued:
                raise InvariantError(f"pool link {name}: {link.bytes_moved} bytes moved but {issued} issued")
        log = self.log
        hits = log.hit_tokens.sum(axis=0)
        inputs = frame["input_tokens"].to_numpy()
        done = log.finished
        mismatch = done & (hits + log.recomputed_tokens != inputs)
        if mismatch.any():
            i = int(np.flatnonzero(mismatch)[0])
            raise InvariantError(
                f"request {i}: hit tokens {hits[i]} + recomputed {log.recomputed_tokens[i]} != prompt {inputs[i]}"
            )

    def _describe(self) -> dict[str, object]:
        return {
            "mode": "serve",
            "model": self.setup.model.name,
            "gpu": self.setup.gpu.name,
            "profile": self.setup.profile.name,
            "tensor_parallel": self.config.hardware.tensor_parallel,
            "n_replicas": self.config.hardware.n_replicas,
            "block_tokens": self.setup.block_tokens,
            **{family: policy_label(factory) for family, factory in self.setup.policies.items()},
            **{f"eviction_{tier}": policy_label(factory) for tier, factory in self.setup.tier_eviction.items()},
        }
