"""Seeded synthetic workloads in canonical form: the embedded default and test fuel.

``generate(kind, seed=0, **params)`` with ``kind`` one of :data:`KINDS`; parameters are the
fields of the kind's parameter dataclass (an unknown one is an error listing the valid ones).
The same kind, seed and parameters give byte-identical traces.

Every kind takes ``n_requests``, ``rate`` (requests/s), ``arrival`` (``poisson``, ``gamma``
with ``cv``, ``on_off`` with ``on_s``/``off_s``) and ``block_size`` (tokens per hashed block;
16 as vLLM, the engine remaps to its own block size).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from traces.generators._common import make_params
from traces.generators.mixed import MixedParams, merge
from traces.generators.prompts import (
    LONG_CONTEXT_DEFAULTS,
    RAG_DEFAULTS,
    PromptParams,
    generate_rag,
    generate_shared_prefix,
)
from traces.generators.sessions import AGENT_DEFAULTS, SessionParams, generate_sessions
from traces.schema import Trace


def _multi_turn(seed: int, params: dict[str, Any]) -> Trace:
    return generate_sessions(make_params(SessionParams, "multi_turn", params), seed)


def _agent(seed: int, params: dict[str, Any]) -> Trace:
    return generate_sessions(make_params(SessionParams, "agent", {**AGENT_DEFAULTS, **params}), seed)


def _shared_prompt(seed: int, params: dict[str, Any]) -> Trace:
    return generate_shared_prefix(make_params(PromptParams, "shared_prompt", params), seed)


def _rag(seed: int, params: dict[str, Any]) -> Trace:
    return generate_rag(make_params(PromptParams, "rag", {**RAG_DEFAULTS, **params}), seed)


def _long_context(seed: int, params: dict[str, Any]) -> Trace:
    return generate_shared_prefix(make_params(PromptParams, "long_context", {**LONG_CONTEXT_DEFAULTS, **params}), seed)


_COMPONENTS: dict[str, Callable[[int, dict[str, Any]], Trace]] = {
    "chat": _multi_turn,
    "rag": _rag,
    "agent": _agent,
    "shared_prompt": _shared_prompt,
    "long_context": _long_context,
}


def _mixed(seed: int, params: dict[str, Any]) -> Trace:
    mix = make_params(MixedParams, "mixed", params)
    shares, counts = mix.shares(), mix.counts()
    seeds = np.random.SeedSequence(seed).spawn(len(_COMPONENTS))
    parts = []
    for (name, build), child in zip(_COMPONENTS.items(), seeds, strict=True):
        if counts.get(name, 0) == 0:
            continue
        common = dict(
            n_requests=counts[name],
            rate=mix.rate * shares[name],
            arrival=mix.arrival,
            cv=mix.cv,
            on_s=mix.on_s,
            off_s=mix.off_s,
            block_size=mix.block_size,
        )
        parts.append(build(int(child.generate_state(1)[0]), common))
    return merge(parts, block_size=mix.block_size, source=f"<mixed generator seed={seed}>")


def _default(seed: int, params: dict[str, Any]) -> Trace:
    return _mixed(seed, {**DEFAULT_WORKLOAD, **params})


#: The bundled workload ``kvsim`` runs with no arguments: a chat service with RAG and agent
#: traffic, 2,000 requests over about five minutes, sized so one H100 serving Llama-3-8B is
#: busy but not overloaded and the KV cache matters.
DEFAULT_WORKLOAD: dict[str, Any] = dict(n_requests=2000, rate=6.0, chat=0.55, rag=0.25, agent=0.2)

GENERATORS: dict[str, Callable[[int, dict[str, Any]], Trace]] = {
    "default": _default,
    "multi_turn": _multi_turn,
    "agent": _agent,
    "shared_prompt": _shared_prompt,
    "rag": _rag,
    "long_context": _long_context,
    "mixed": _mixed,
}
KINDS = tuple(GENERATORS)


def generate(kind: str, seed: int = 0, **params: Any) -> Trace:
    """A synthetic trace of ``kind``; see the module docstring."""
    if kind not in GENERATORS:
        raise ValueError(f"unknown generator {kind!r}; choose one of {', '.join(KINDS)}")
    return GENERATORS[kind](seed, params)


def default_workload(seed: int = 0) -> Trace:
    return generate("default", seed)


__all__ = ["DEFAULT_WORKLOAD", "GENERATORS", "KINDS", "default_workload", "generate"]
