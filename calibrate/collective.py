"""Tensor parallelism on a host with several GPUs: the all-reduce and whole TP steps.

A tensor-parallel engine (vLLM's and SGLang's ``tensor_parallel_size``) splits every layer's
heads and MLP columns over the GPUs and sums their partial outputs twice a layer, after the
attention output projection and after the down projection. That sum, an all-reduce of
``tokens x hidden`` bf16 values, is the only thing TP adds to a step, and the only part of the
execution model a single GPU cannot measure:

* :func:`allreduce_records`: NCCL's all-reduce by message size, replayed from a CUDA graph
  (engines capture their steps, collectives included, in graphs), over every power-of-two
  group of the host's GPUs from 2 up. The fit (:func:`calibrate.fit.fit_allreduce`) keeps the
  curve per group size.
* :func:`tp_step_records`: prefill, prefix, chunked and decode steps of Llama-shaped models
  split over all the host's GPUs (the :class:`~calibrate.e2e.RandomLlama` of the single-GPU check, each
  rank holding its share of the heads and the MLP, with the two all-reduces), timed from rest
  on rank 0, to check the execution model's TP step against.

Engines differ in the all-reduce they call for small messages (vLLM's own one-shot kernel over
NVLink for decode-sized tensors, NCCL above); this measures NCCL's, which is what both fall
back to and what SGLang calls by default.

Every rank runs the same calls in the same order (a collective waits for all of them), so the
loops here count calls, never time, and each timed call starts after a barrier.
"""

from __future__ import annotations

import json
import os
import socket
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from calibrate.timing import capture_graph, event_seconds
from hwmodels.models import ModelSpec, get_model

ALLREDUCE_ROWS = [1, 2, 4, 8, 16, 32, 64, 128, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096, 8192, 16384]
ALLREDUCE_HIDDEN = (4096, 8192)  # Llama-3-8B's and Llama-3-70B's residual stream
#: Models and layers for the TP steps: Llama-3-8B whole, Llama-3-70B cut to 20 of its 80
#: layers (each layer is priced alike, so the layers only scale the step).
TP_MODELS = (("llama-3-8b", 32), ("llama-3-70b", 20))
TP_PREFILL = [1024, 4096]
TP_PREFIX = [(1024, 7168)]
TP_MIXED = [(1024, 64, 1024)]
TP_DECODE = [(1, 1024), (64, 1024), (256, 512)]
GRAPH_CALLS = 50  # all-reduces per captured graph: the ranks' start skew is spread over them
REST_S = 0.3  # idle before a step's timed calls, as in calibrate.e2e


def shard(spec: ModelSpec, tp: int) -> ModelSpec:
    """One rank's part of ``spec`` under ``tp``-way tensor parallelism: its heads, MLP columns
    and vocabulary slice (the hidden size is whole on every rank)."""
    for field in ("n_q_heads", "n_kv_heads", "intermediate_size", "vocab_size"):
        if getattr(spec, field) % tp:
            raise ValueError(f"{spec.name}: {field} {getattr(spec, field)} does not split {tp} ways")
    return spec.with_overrides(
        n_q_heads=spec.n_q_heads // tp,
        n_kv_heads=spec.n_kv_heads // tp,
        intermediate_size=spec.intermediate_size // tp,
        vocab_size=spec.vocab_size // tp,
    )


def group_sizes(n_gpus: int) -> list[int]:
    """The TP sizes a host of ``n_gpus`` can measure: powers of two from 2 up."""
    sizes, tp = [], 2
    while tp <= n_gpus:
        sizes.append(tp)
        tp *= 2
    return sizes


# ---------------------------------------------------------------------------- one rank
def _timed_after_barrier(run: Callable[[], object], group: Any = None, repeat: int = 7, rest_s: float = 0.0) -> float:
    """Median seconds of ``run()`` on this rank, each call started after a barrier of
    ``group`` so that its ranks begin together (a collective's wait for a late rank is not its
    cost); ``rest_s`` idles the GPU first, so that the calls start at full clock."""
    import torch
    import torch.distributed as dist

    dist.barrier(group=group)
    torch.cuda.synchronize()
    time.sleep(rest_s)
    times = []
    for _ in range(repeat):
        dist.barrier(group=group)
        torch.cuda.synchronize()
        times.append(event_seconds(run))
    return statistics.median(times)


def allreduce_records(rank: int, n_gpus: int) -> list[dict[str, Any]]:
    """Seconds per all-reduce of ``rows x hidden`` bf16 for every group size (rank 0's)."""
    import torch
    import torch.distributed as dist

    records = []
    for tp in group_sizes(n_gpus):
        group = dist.new_group(list(range(tp)))  # every rank takes part in making it
        if rank < tp:
            for hidden in ALLREDUCE_HIDDEN:
                for rows in ALLREDUCE_ROWS:
                    x = torch.randn(rows, hidden, device="cuda", dtype=torch.bfloat16)
                    dist.all_reduce(x, group=group)  # the communicator's first use, outside the graph

                    def calls(x=x, group=group) -> None:
                        for _ in range(GRAPH_CALLS):
                            dist.all_reduce(x, group=group)

                    seconds = _timed_after_barrier(capture_graph(calls).replay, group) / GRAPH_CALLS
                    records.append(
                        {"op": "allreduce", "tp": tp, "rows": rows, "hidden": hidden,
                         "nbytes": rows * hidden * 2, "seconds": seconds}
                    )  # fmt: skip
        dist.barrier()
    return records


def _identity(x: Any) -> Any:
    return x


def _tp_steps(spec: ModelSpec, layers: int) -> list[tuple[dict[str, Any], Callable[[Any], Callable[[], object]]]]:
    """Each step's record fields and a builder that, given the model, makes its inputs and
    returns the call to capture."""
    import torch

    from calibrate.e2e import _kv_caches

    def tokens(*shape: int):
        return torch.randn(*shape, spec.hidden_size, device="cuda", dtype=torch.bfloat16)

    def prefill(seq: int, prefix: int):
        def build(model):
            x, caches = tokens(1, seq), _kv_caches(spec, layers, 1, prefix + seq)
            return lambda: model.step(x, caches, decode=False)

        return build

    def decode(batch: int, ctx: int):
        def build(model):
            x, caches = tokens(batch, 1), _kv_caches(spec, layers, batch, ctx + 1)
            return lambda: model.step(x, caches, decode=True)

        return build

    def mixed(seq: int, batch: int, ctx: int):
        def build(model):
            x = tokens(1, seq + batch)
            pc, dc = _kv_caches(spec, layers, 1, seq), _kv_caches(spec, layers, batch, ctx + 1)
            return lambda: model.mixed_step(x[:, :seq], x[0, seq:].view(batch, 1, -1), pc, dc)

        return build

    return (
        [({"op": "e2e_prefill", "seq": seq}, prefill(seq, 0)) for seq in TP_PREFILL]
        + [({"op": "e2e_prefix_prefill", "seq": s, "prefix": p}, prefill(s, p)) for s, p in TP_PREFIX]
        + [({"op": "e2e_mixed", "seq": s, "batch": b, "ctx": c}, mixed(s, b, c)) for s, b, c in TP_MIXED]
        + [({"op": "e2e_decode", "batch": b, "ctx": c}, decode(b, c)) for b, c in TP_DECODE]
    )


def tp_step_records(tp: int, log: Callable[[str], None]) -> list[dict[str, Any]]:
    """Whole steps of each of :data:`TP_MODELS`, split over all ``tp`` ranks, from rest."""
    import torch
    import torch.distributed as dist

    from calibrate.e2e import RandomLlama

    def allreduce(x):
        dist.all_reduce(x)
        return x

    records = []
    for name, layers in TP_MODELS:
        spec = shard(get_model(name), tp)
        model = RandomLlama(spec, layers, "compiled", reduce=allreduce)
        with torch.inference_mode():
            for fields, build in _tp_steps(spec, layers):
                step = build(model)
                seconds = _timed_after_barrier(capture_graph(step).replay, rest_s=REST_S)
                # The same rank's share without the all-reduces: what the step costs beyond
                # its compute, for telling the collective's error from the GEMMs'.
                model.reduce = _identity
                alone = _timed_after_barrier(capture_graph(step).replay, rest_s=REST_S)
                model.reduce = allreduce
                records.append({"engine": "compiled", "model": name, "layers": layers, "tp": tp} | fields |
                               {"seconds": seconds, "without_allreduce_seconds": alone})  # fmt: skip
                log(f"  tp {tp} {name} {fields}: {seconds * 1e3:.3f} ms ({alone * 1e3:.3f} without all-reduce)")
                del step
                torch.cuda.empty_cache()
        del model
        torch.cuda.empty_cache()
    return records


def _worker(rank: int, n_gpus: int, port: int, result_path: str) -> None:
    import torch
    import torch.distributed as dist

    torch.cuda.set_device(rank)
    dist.init_process_group(
        "nccl", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=n_gpus,
        device_id=torch.device("cuda", rank),
    )  # fmt: skip
    try:
        log = (lambda s: print(s, flush=True)) if rank == 0 else (lambda s: None)
        records = allreduce_records(rank, n_gpus)
        log(f"all-reduce: {len(records)} sizes timed")
        records += tp_step_records(n_gpus, log)
        if rank == 0:
            Path(result_path).write_text(json.dumps(records))
    finally:
        dist.destroy_process_group()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def measure() -> list[dict[str, Any]]:
    """Every record, from one process per GPU: as many of the visible GPUs as a power of two
    allows (engines split heads and MLP evenly, so TP sizes are powers of two)."""
    import torch
    import torch.multiprocessing as mp

    visible = torch.cuda.device_count()
    if visible < 2:
        raise RuntimeError(f"tensor-parallel measurements need at least 2 GPUs; {visible} visible")
    n_gpus = group_sizes(visible)[-1]
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")  # no NVLink multicast (shared hosts)
    with tempfile.TemporaryDirectory() as tmp:
        result = Path(tmp) / "records.json"
        mp.spawn(_worker, args=(n_gpus, _free_port(), str(result)), nprocs=n_gpus, join=True)
        return json.loads(result.read_text())
