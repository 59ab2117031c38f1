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
    """Every component at its share of the rate over one stretch of time: the first
    ``n_requests`` arrivals of their merged streams. Generating each by its share of the count
    instead would end them at different times (a conversation's turns trail its start by
    minutes), leaving the last part of the trace to whichever lasts longest."""
    mix = make_params(MixedParams, "mixed", params)
    shares = mix.shares()
    seeds = dict(zip(_COMPONENTS, np.random.SeedSequence(seed).spawn(len(_COMPONENTS)), strict=True))
    oversample = 1.5  # each component generated with this many times its share of the requests
    while True:
        parts = [_component(name, shares[name], oversample, mix, seeds[name]) for name in _COMPONENTS if name in shares]
        merged = merge(parts, block_size=mix.block_size, source=f"<mixed generator seed={seed}>")
        if len(merged) >= mix.n_requests:
            cut = float(merged.arrival_s[mix.n_requests - 1])
            if all(float(part.arrival_s[-1]) >= cut for part in parts):  # none ran out before the cut
                return merged.select(slice(0, mix.n_requests))
        oversample *= 2


def _component(name: str, share: float, oversample: float, mix: MixedParams, seed: np.random.SeedSequence) -> Trace:
    build = _COMPONENTS[name]
    common: dict[str, Any] = dict(
        n_requests=max(1, int(np.ceil(mix.n_requests * share * oversample))),
        rate=mix.rate * share,
        arrival=mix.arrival,
        cv=mix.cv,
        on_s=mix.on_s,
        off_s=mix.off_s,
        block_size=mix.block_size,
    )
    if build in (_multi_turn, _agent):
        common["warmup_s"] = mix.warmup_s
    return build(int(seed.generate_state(1)[0]), common)


def _default(seed: int, params: dict[str, Any]) -> Trace:
    return _mixed(seed, {**DEFAULT_WORKLOAD, **params})


#: The bundled workload ``kvsim`` runs with no arguments: a chat service with RAG and agent
#: traffic, 2,000 requests over about six minutes, sized so one H100 serving
#: Llama-3.1-8B is busy but not overloaded and the KV cache matters. Like every mix it opens
#: mid-stream, conversations of every age under way (MixedParams.warmup_s), as a slice of a
#: running service's log would.
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
