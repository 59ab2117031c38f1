"""Single-shot prompts built from shared parts: system prompts, RAG documents, long contexts.

* ``shared_prompt`` — one of a few system prompts (Zipf-popular, of different lengths) and a
  unique user message: the reuse every chat front end has.
* ``rag`` — a shared instruction, ``k`` documents retrieved from a Zipf-popular pool in
  relevance order, and a question. Prefix caching reuses a document only where everything
  before it matches too, so popular *first* documents are reused far more than later ones;
  that is how prefix caches behave on RAG, and why CacheBlend-style reuse exists.
* ``long_context`` — a few very long documents (contracts, code bases), each asked many
  questions; the document is the shared prefix.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from traces.generators._common import TraceAssembler, arrival_process, lognormal_int, zipf_choice
from traces.generators._ids import block_ids, segment_key
from traces.schema import Trace


@dataclass(frozen=True)
class PromptParams:
    n_requests: int = 2000
    rate: float = 4.0
    arrival: str = "poisson"
    cv: float = 2.0
    on_s: float = 60.0
    off_s: float = 60.0
    block_size: int = 16
    n_prefixes: int = 8  # system prompts, documents in the pool, or long documents
    prefix_median_tokens: int = 1024  # each prefix is a whole number of blocks
    prefix_sigma: float = 0.8
    prefix_zipf: float = 1.1
    docs_per_request: int = 4  # rag only
    instruction_tokens: int = 256  # rag only: a shared instruction before the documents
    message_median: int = 200  # the unique part: user message or question
    message_sigma: float = 0.8
    output_median: int = 200
    output_sigma: float = 0.7
    category: str = "chat"

    def __post_init__(self) -> None:
        checks = {
            "n_requests": self.n_requests >= 1,
            "rate": 0 < self.rate < float("inf"),
            "block_size": self.block_size >= 1,
            "n_prefixes": self.n_prefixes >= 1,
            "prefix_median_tokens": self.prefix_median_tokens >= 1,
            "docs_per_request": self.docs_per_request >= 1,
            "instruction_tokens": self.instruction_tokens >= 0,
            "message_median": self.message_median >= 1,
            "output_median": self.output_median >= 1,
        }
        for name, ok in checks.items():
            if not ok:
                raise ValueError(f"prompt generator: {name}={getattr(self, name)!r} is out of range")


RAG_DEFAULTS = dict(
    n_prefixes=400, prefix_median_tokens=384, prefix_sigma=0.5, prefix_zipf=1.0, message_median=60, category="rag"
)
LONG_CONTEXT_DEFAULTS = dict(
    n_prefixes=12,
    prefix_median_tokens=48000,
    prefix_sigma=0.4,
    prefix_zipf=0.8,
    message_median=80,
    rate=0.5,
    output_median=300,
    category="long_context",
)


def _common_draws(
    params: PromptParams, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    arrivals = arrival_process(params.arrival, params.rate, params.cv, params.on_s, params.off_s).times(
        params.n_requests, rng
    )
    median_blocks = max(1.0, params.prefix_median_tokens / params.block_size)
    prefix_blocks = lognormal_int(rng, median_blocks, params.prefix_sigma, params.n_prefixes, 1, 1 << 24)
    messages = lognormal_int(rng, params.message_median, params.message_sigma, params.n_requests, 1, 1 << 20)
    outputs = lognormal_int(rng, params.output_median, params.output_sigma, params.n_requests, 1, 8192)
    return arrivals, prefix_blocks, messages, outputs


def generate_shared_prefix(params: PromptParams, seed: int) -> Trace:
    """A Zipf-popular shared prefix (system prompt or long document) and a unique suffix."""
    rng = np.random.default_rng(seed)
    bs = params.block_size
    arrivals, prefix_blocks, messages, outputs = _common_draws(params, rng)
    root = int(rng.integers(1, 2**63))
    keys = [segment_key(root, p) for p in range(params.n_prefixes)]
    prefix_ids = [block_ids(k, 0, int(n)) for k, n in zip(keys, prefix_blocks, strict=True)]
    chosen = zipf_choice(rng, params.n_prefixes, params.prefix_zipf, params.n_requests)
    uniques = rng.integers(1, 2**63, params.n_requests)
    out = TraceAssembler()
    for i in range(params.n_requests):
        p = int(chosen[i])
        head = int(prefix_blocks[p])
        n_in = head * bs + int(messages[i])
        tail = block_ids(segment_key(keys[p], int(uniques[i])), head, n_in // bs)
        out.add(float(arrivals[i]), n_in, int(outputs[i]), np.concatenate((prefix_ids[p], tail)))
    return out.build(
        block_size=bs,
        n_requests=params.n_requests,
        category=params.category,
        source=f"<{params.category} generator seed={seed}>",
    )


def generate_rag(params: PromptParams, seed: int) -> Trace:
    if params.docs_per_request > params.n_prefixes:
        raise ValueError(
            f"rag generator: docs_per_request={params.docs_per_request} exceeds n_prefixes={params.n_prefixes} "
            "(a request retrieves distinct documents from the pool)"
        )
    rng = np.random.default_rng(seed)
    bs = params.block_size
    arrivals, doc_blocks, questions, outputs = _common_draws(params, rng)
    root = int(rng.integers(1, 2**63))
    instruction = segment_key(root, 0)
    instruction_blocks = round(params.instruction_tokens / bs)
    weights = 1.0 / np.arange(1, params.n_prefixes + 1, dtype=np.float64) ** params.prefix_zipf
    weights /= weights.sum()
    uniques = rng.integers(1, 2**63, params.n_requests)
    out = TraceAssembler()
    retrieved = _distinct_draws(rng, weights, params.n_requests, params.docs_per_request)
    for i in range(params.n_requests):
        docs = retrieved[i]
        parts = [block_ids(instruction, 0, instruction_blocks)]
        key, position = instruction, instruction_blocks
        for d in docs:
            key = segment_key(key, int(d) + 1)  # +1: content 0 is the instruction
            n = int(doc_blocks[d])
            parts.append(block_ids(key, position, position + n))
            position += n
        n_in = position * bs + int(questions[i])
        parts.append(block_ids(segment_key(key, int(uniques[i])), position, n_in // bs))
        out.add(float(arrivals[i]), n_in, int(outputs[i]), np.concatenate(parts))
    return out.build(
        block_size=bs, n_requests=params.n_requests, category=params.category, source=f"<rag generator seed={seed}>"
    )


def _distinct_draws(rng: np.random.Generator, weights: np.ndarray, rows: int, k: int) -> np.ndarray:
    """``rows`` draws of ``k`` distinct indices each, weighted, in draw order (relevance order).

    Draws all rows with replacement at once and redraws only the rows that repeated an index,
    so a million requests cost a few vectorised passes instead of a million ``choice`` calls.
    """
    draws = rng.choice(len(weights), size=(rows, k), p=weights)
    while True:
        ordered = np.sort(draws, axis=1)
        repeated = np.flatnonzero((ordered[:, 1:] == ordered[:, :-1]).any(axis=1))
        if len(repeated) == 0:
            return draws
        if len(repeated) < 64:
            for r in repeated:
                draws[r] = rng.choice(len(weights), size=k, replace=False, p=weights)
            return draws
        draws[repeated] = rng.choice(len(weights), size=(len(repeated), k), p=weights)
