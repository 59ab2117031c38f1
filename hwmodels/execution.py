"""Iteration time of one engine step, from the batch composition.

The engine describes a step as prefill chunks (new tokens and the prefix each one attends to)
plus decode sequences (their summed context). :class:`ExecutionModel` prices it layer by layer
with a :class:`~hwmodels.profile.GpuProfile`: the four linear projections of a layer as GEMMs
over all the step's tokens (a mixture of experts' MLP as its router and grouped expert GEMMs,
:mod:`hwmodels.moe`), attention per prefill chunk and for the decode batch, elementwise
kernels, a tensor-parallel all-reduce, then the LM head. The same composition serves the
datasheet and calibrated profiles.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from hwmodels import moe
from hwmodels.models import ModelSpec
from hwmodels.profile import LAYER_KERNELS, QUERY_TILE, GpuProfile


@dataclass(frozen=True)
class ExecutionModel:
    model: ModelSpec
    profile: GpuProfile
    tensor_parallel: int = 1
    iteration_overhead_s: float = 0.0  # host-side scheduling and launch per engine step
    # Per-layer costs by token count: a simulation prices the same few counts over and over.
    _memo: dict[tuple[str, int], float] = field(default_factory=dict, init=False, repr=False, compare=False)
    # The last step's prefill attention: a step asks for it up to three times (its time, its
    # clock-bound and its power-bound share), and its chunks' lengths rarely repeat across steps.
    _last_prefill: list[Any] = field(default_factory=lambda: [None, 0.0], init=False, repr=False, compare=False)

    def _memoised(self, kind: str, count: int, price: Callable[[int], float | np.ndarray]) -> float:
        key = (kind, count)
        value = self._memo.get(key)
        if value is None:
            value = self._memo[key] = float(price(count))
        return value

    def _layer_gemms(self, tokens: float | np.ndarray) -> tuple[tuple[float | np.ndarray, int, int], ...]:
        """``(rows, k, n)`` of a layer's GEMMs for a step of ``tokens``: QKV and attention
        output, then gate/up and down of a dense MLP, or a mixture's (:func:`hwmodels.moe.mlp_gemms`)."""
        m, tp = self.model, self.tensor_parallel
        h, hd = m.hidden_size, m.head_dim
        attention = (
            (tokens, h, (m.n_q_heads + 2 * m.n_kv_heads) * hd // tp),
            (tokens, m.n_q_heads * hd // tp, h),
        )
        if m.is_moe:
            return attention + moe.mlp_gemms(m, tokens, tp)
        return attention + ((tokens, h, 2 * m.intermediate_size // tp), (tokens, m.intermediate_size // tp, h))

    def _linear_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        gemms = sum(self.profile.gemm_s(rows, k, n) for rows, k, n in self._layer_gemms(tokens))
        return gemms + self._elementwise_s(tokens) + self._allreduce_per_layer_s(tokens)

    def _beyond_streaming(self, seconds: float | np.ndarray, nbytes: float | np.ndarray) -> float | np.ndarray:
        """Seconds a kernel takes beyond moving its bytes at the streaming bandwidth: the part
        that follows the SM clock (:mod:`hwmodels.clock`)."""
        assert self.profile.clock is not None
        return np.maximum(0.0, seconds - nbytes / self.profile.clock.stream_bytes_per_s)

    def _gemm_clock_bound_s(
        self, rows: float | np.ndarray, k: int, n: int, fraction: float | np.ndarray | None = None
    ) -> float | np.ndarray:
        """A GEMM's clock-bound seconds: beyond streaming its operands, and at least the share
        measured for its row count (:meth:`hwmodels.clock.ClockModel.gemm_clock_bound_fraction`,
        or ``fraction`` where the caller has it for these rows)."""
        assert self.profile.clock is not None
        seconds = self.profile.gemm_s(rows, k, n)
        beyond = self._beyond_streaming(seconds, self.model.bytes_per_param * (rows * k + k * n + rows * n))
        if fraction is None:
            fraction = self.profile.clock.gemm_clock_bound_fraction(rows)
        return np.maximum(beyond, seconds * fraction)

    def _linear_clock_bound_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        """The clock-bound seconds of :meth:`_linear_s` (the all-reduce has none)."""
        p, b = self.profile, self.model.bytes_per_param
        assert p.clock is not None
        # Most GEMMs have the step's rows (a mixture's experts have their own): look their
        # clock-bound fraction up once; the others look theirs up, which gives the same bits.
        fraction = p.clock.gemm_clock_bound_fraction(tokens)
        out = sum(
            self._gemm_clock_bound_s(rows, k, n, fraction if rows is tokens else None)
            for rows, k, n in self._layer_gemms(tokens)
        )
        for kernel, elements in self._layer_kernels():
            nbytes = elements * b * tokens
            out = out + self._beyond_streaming(self._kernel_s(kernel, nbytes), nbytes)
        return out

    def _elementwise_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        """The memory-bound kernels of one layer, as a serving engine fuses them (vLLM's and
        SGLang's custom ops, or what ``torch.compile`` makes of the same code): each is priced
        by the profile from the bytes it moves, so small decode batches pay each kernel's
        latency floor and large prefills its achieved bandwidth.

        Elements moved per token, by kernel: two residual-add + RMSNorm (read the input and
        the residual, write both: 4 x hidden each); rotary embedding of Q and K (read, write);
        K and V written into the cache (read, write); SiLU-and-multiply (read gate and up,
        write their product: 3 x the MLP width, which is 3.5 x hidden in Llama-3, the largest
        of them).
        """
        bytes_per_token = self.model.bytes_per_param * tokens
        return sum(self._kernel_s(kernel, elements * bytes_per_token) for kernel, elements in self._layer_kernels())

    def _kernel_s(self, kernel: str, nbytes: float | np.ndarray) -> float | np.ndarray:
        """A calibrated layer kernel, or a mixture's routing kernel priced as plain streaming."""
        if kernel in LAYER_KERNELS:
            return self.profile.layer_kernel_s(kernel, nbytes)
        return self.profile.elementwise_s(nbytes)

    def _layer_kernels(self) -> tuple[tuple[str, int], ...]:
        """``(kernel, elements moved per token)`` of :meth:`_elementwise_s`; a mixture's MLP
        has its own (:func:`hwmodels.moe.mlp_kernels`)."""
        m, tp = self.model, self.tensor_parallel
        q, kv = m.n_q_heads * m.head_dim // tp, m.n_kv_heads * m.head_dim // tp
        mlp = moe.mlp_kernels(m, tp) if m.is_moe else (("silu_mul", 3 * m.intermediate_size // tp),)
        return (
            ("add_rms_norm", 4 * m.hidden_size),  # before attention
            ("add_rms_norm", 4 * m.hidden_size),  # before the MLP
            ("rope", 2 * (q + kv)),
            ("kv_write", 4 * kv),
            *mlp,
        )

    def _allreduce_per_layer_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        tp = self.tensor_parallel
        if tp == 1:
            return 0.0
        # Two all-reduces per layer, of the residual stream (after attention and after the MLP).
        nbytes = tokens * self.model.hidden_size * self.model.bytes_per_param
        return 2 * self.profile.allreduce_s(nbytes, tp)

    def allreduce_s(self, tokens: int) -> float:
        """Seconds of a step of ``tokens`` spent in its all-reduces (every layer's two; none
        without tensor parallelism): the GPUs' time waiting on each other."""
        if self.tensor_parallel == 1:
            return 0.0
        return self.model.n_layers * float(self._memoised("allreduce", tokens, self._allreduce_per_layer_s))

    def _heads(self) -> tuple[int, int]:
        tp = self.tensor_parallel
        return max(1, self.model.n_q_heads // tp), max(1, self.model.n_kv_heads // tp)

    def _lm_head_s(self, n_sequences: float | np.ndarray) -> float | np.ndarray:
        m = self.model
        return self.profile.gemm_s(n_sequences, m.hidden_size, m.vocab_size // self.tensor_parallel)

    def _lm_head_clock_bound_s(self, n_sequences: float | np.ndarray) -> float | np.ndarray:
        return self._gemm_clock_bound_s(
            n_sequences, self.model.hidden_size, self.model.vocab_size // self.tensor_parallel
        )

    def iteration_s(
        self,
        prefill_new_tokens: Sequence[int],
        prefill_prefix_tokens: Sequence[int],
        n_decode: int,
        decode_context_sum: int,
    ) -> float:
        """Seconds for one step with the given prefill chunks and decode sequences, at full
        clock (see :meth:`clock_bound_s` for what a power-capped clock stretches)."""
        tokens = int(sum(prefill_new_tokens)) + n_decode
        if tokens == 0:
            return 0.0
        attention = self._prefill_attention_s(prefill_new_tokens, prefill_prefix_tokens)
        if n_decode:
            q_heads, kv_heads = self._heads()
            attention += float(
                self.profile.attention_decode_s(
                    n_decode, decode_context_sum / n_decode, q_heads, kv_heads, self.model.head_dim
                )
            )
        per_layer = self._memoised("linear", tokens, self._linear_s) + attention
        n_sequences = len(prefill_new_tokens) + n_decode
        lm_head = self._memoised("lm_head", n_sequences, self._lm_head_s)
        return self.model.n_layers * per_layer + lm_head + self.iteration_overhead_s

    def _prefill_attention_s(self, new_tokens: Sequence[int], prefix_tokens: Sequence[int]) -> float:
        if not len(new_tokens):
            return 0.0
        key = (tuple(new_tokens), tuple(prefix_tokens))
        if self._last_prefill[0] == key:
            return self._last_prefill[1]
        q_heads, kv_heads = self._heads()
        new = np.asarray(new_tokens, dtype=np.float64)
        prefix = np.asarray(prefix_tokens, dtype=np.float64)
        step = _tiled_tokens(new_tokens)  # the ints: iterating the array would box each one
        seconds = float(
            np.sum(self.profile.attention_prefill_s(new, q_heads, kv_heads, self.model.head_dim, prefix, step))
        )
        self._last_prefill[:] = [key, seconds]
        return seconds

    def clock_bound_s(
        self, prefill_new_tokens: Sequence[int], prefill_prefix_tokens: Sequence[int], n_decode: int
    ) -> float:
        """Of :meth:`iteration_s`, the GPU seconds that follow the SM clock: prefill attention
        (compute-bound) and each GEMM's and fused kernel's time beyond moving its bytes at the
        streaming bandwidth; decode attention (reading the KV cache), the all-reduce and the
        host overhead do not. Needs a profile with a clock model."""
        tokens = int(sum(prefill_new_tokens)) + n_decode
        if tokens == 0:
            return 0.0
        per_layer = self._memoised("linear_clock_bound", tokens, self._linear_clock_bound_s)
        per_layer += self._prefill_attention_s(prefill_new_tokens, prefill_prefix_tokens)
        n_sequences = len(prefill_new_tokens) + n_decode
        lm_head = self._memoised("lm_head_clock_bound", n_sequences, self._lm_head_clock_bound_s)
        return self.model.n_layers * per_layer + lm_head

    def power_bound_s(
        self,
        prefill_new_tokens: Sequence[int],
        prefill_prefix_tokens: Sequence[int],
        n_decode: int,
        clock_bound_s: float | None = None,
    ) -> float:
        """Of :meth:`clock_bound_s`, the seconds that draw power as if the whole GPU computed:
        prefill attention counts only in proportion to the share of SMs it keeps busy. What the
        power limiter responds to is the draw, and a short prefill on a long cached prefix
        (256 new tokens: 64 thread blocks on 132 SMs) computes for long on half the chip: measured
        on H100 and H200, such a step hardly slows when run back to back, though nearly all of it
        is clock-bound. The clock model takes its steady multiplier from this share and stretches
        all the clock-bound seconds by it. ``clock_bound_s``: the step's, where already priced."""
        bound = clock_bound_s
        if bound is None:
            bound = self.clock_bound_s(prefill_new_tokens, prefill_prefix_tokens, n_decode)
        if not len(prefill_new_tokens):
            return bound
        q_heads, _ = self._heads()
        idle = 1.0 - self.profile.attention_wave_fill(_tiled_tokens(prefill_new_tokens), q_heads)
        return bound - idle * self.model.n_layers * self._prefill_attention_s(prefill_new_tokens, prefill_prefix_tokens)

    def decode_steps_s(self, n_decode: int, decode_context_sum: int, n_steps: int) -> np.ndarray:
        """Seconds of each of ``n_steps`` consecutive decode-only steps.

        Step ``j`` sees every sequence's context grown by ``j`` tokens. Priced in one vectorised
        call so that advancing a stable batch by thousands of steps costs one event.
        """
        q_heads, kv_heads = self._heads()
        hd = self.model.head_dim
        mean_ctx = (decode_context_sum + np.arange(n_steps, dtype=np.float64) * n_decode) / n_decode
        attention = self.profile.attention_decode_s(n_decode, mean_ctx, q_heads, kv_heads, hd)
        fixed = self.model.n_layers * self._memoised("linear", n_decode, self._linear_s) + self._memoised(
            "lm_head", n_decode, self._lm_head_s
        )
        return self.model.n_layers * attention + fixed + self.iteration_overhead_s


def _tiled_tokens(new_tokens: Sequence[int] | np.ndarray) -> float:
    """A step's prefill chunks as its attention kernel's thread blocks see them, in tokens: a
    varlen kernel runs all chunks in one launch but tiles each on its own, so eight 100-token
    chunks fill eight query tiles, not the seven their 800 tokens would (``wave_fill``)."""
    return float(sum(math.ceil(max(float(tokens), 1.0) / QUERY_TILE) for tokens in new_tokens) * QUERY_TILE)
