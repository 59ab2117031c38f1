"""Iteration time of one engine step, from the batch composition.

The engine describes a step as prefill chunks (new tokens and the prefix each one attends to)
plus decode sequences (their summed context). :class:`ExecutionModel` prices it layer by layer
with a :class:`~hwmodels.profile.GpuProfile`: the four linear projections of a layer as GEMMs
over all the step's tokens, attention per prefill chunk and for the decode batch, elementwise
kernels, a tensor-parallel all-reduce, then the LM head. The same composition serves the
datasheet and calibrated profiles.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from hwmodels.models import ModelSpec
from hwmodels.profile import GpuProfile


@dataclass(frozen=True)
class ExecutionModel:
    model: ModelSpec
    profile: GpuProfile
    tensor_parallel: int = 1
    iteration_overhead_s: float = 0.0  # host-side scheduling and launch per engine step

    def _linear_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        m, p, tp = self.model, self.profile, self.tensor_parallel
        h, hd = m.hidden_size, m.head_dim
        qkv = p.gemm_s(tokens, h, (m.n_q_heads + 2 * m.n_kv_heads) * hd // tp)
        out = p.gemm_s(tokens, m.n_q_heads * hd // tp, h)
        gate_up = p.gemm_s(tokens, h, 2 * m.intermediate_size // tp)
        down = p.gemm_s(tokens, m.intermediate_size // tp, h)
        return qkv + out + gate_up + down + self._elementwise_s(tokens) + self._allreduce_s(tokens)

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
        m, p, tp = self.model, self.profile, self.tensor_parallel
        q, kv = m.n_q_heads * m.head_dim // tp, m.n_kv_heads * m.head_dim // tp
        bytes_per_token = m.bytes_per_param * tokens
        kernels = (
            ("add_rms_norm", 4 * m.hidden_size),  # before attention
            ("add_rms_norm", 4 * m.hidden_size),  # before the MLP
            ("rope", 2 * (q + kv)),
            ("kv_write", 4 * kv),
            ("silu_mul", 3 * m.intermediate_size // tp),
        )
        return sum(p.layer_kernel_s(kernel, elements * bytes_per_token) for kernel, elements in kernels)

    def _allreduce_s(self, tokens: float | np.ndarray) -> float | np.ndarray:
        tp = self.tensor_parallel
        if tp == 1:
            return 0.0
        # Two ring all-reduces per layer (after attention and after the MLP).
        nbytes = tokens * self.model.hidden_size * self.model.bytes_per_param
        link_bps = self.profile.gpu.nvlink_gbps * 1e9
        return 2 * (2 * (tp - 1) / tp * nbytes / link_bps + 10e-6)

    def _heads(self) -> tuple[int, int]:
        tp = self.tensor_parallel
        return max(1, self.model.n_q_heads // tp), max(1, self.model.n_kv_heads // tp)

    def _lm_head_s(self, n_sequences: float | np.ndarray) -> float | np.ndarray:
        m = self.model
        return self.profile.gemm_s(n_sequences, m.hidden_size, m.vocab_size // self.tensor_parallel)

    def iteration_s(
        self,
        prefill_new_tokens: Sequence[int],
        prefill_prefix_tokens: Sequence[int],
        n_decode: int,
        decode_context_sum: int,
    ) -> float:
        """Seconds for one step with the given prefill chunks and decode sequences."""
        q_heads, kv_heads = self._heads()
        hd = self.model.head_dim
        tokens = int(sum(prefill_new_tokens)) + n_decode
        if tokens == 0:
            return 0.0
        attention = 0.0
        if len(prefill_new_tokens):
            new = np.asarray(prefill_new_tokens, dtype=np.float64)
            prefix = np.asarray(prefill_prefix_tokens, dtype=np.float64)
            attention += float(
                np.sum(self.profile.attention_prefill_s(new, q_heads, kv_heads, hd, prefix, float(new.sum())))
            )
        if n_decode:
            attention += float(
                self.profile.attention_decode_s(n_decode, decode_context_sum / n_decode, q_heads, kv_heads, hd)
            )
        per_layer = float(self._linear_s(tokens)) + attention
        n_sequences = len(prefill_new_tokens) + n_decode
        return self.model.n_layers * per_layer + float(self._lm_head_s(n_sequences)) + self.iteration_overhead_s

    def decode_steps_s(self, n_decode: int, decode_context_sum: int, n_steps: int) -> np.ndarray:
        """Seconds of each of ``n_steps`` consecutive decode-only steps.

        Step ``j`` sees every sequence's context grown by ``j`` tokens. Priced in one vectorised
        call so that advancing a stable batch by thousands of steps costs one event.
        """
        q_heads, kv_heads = self._heads()
        hd = self.model.head_dim
        mean_ctx = (decode_context_sum + np.arange(n_steps, dtype=np.float64) * n_decode) / n_decode
        attention = self.profile.attention_decode_s(n_decode, mean_ctx, q_heads, kv_heads, hd)
        fixed = self.model.n_layers * float(self._linear_s(n_decode)) + float(self._lm_head_s(n_decode))
        return self.model.n_layers * attention + fixed + self.iteration_overhead_s
