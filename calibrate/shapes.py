"""What to measure: the GEMM shapes of the calibration models and the size grids.

Each grid has a *fit* part and a *held-out* part (sizes between the fit points and shapes the
fit never sees); fits use only the first, and their error is reported on the second.
"""

from __future__ import annotations

from hwmodels.models import MODELS, ModelSpec

# The models whose shapes a calibration measures: the shipped profiles were measured with
# exactly these. Other shipped models (and any read from a config.json) are priced from the
# nearest measured shapes, which `kvsim-calibrate e2e --e2e-model ...` checks (README, "Models
# the calibration never saw"); a model added here is measured from the next calibration on.
CALIBRATION_MODELS = ("llama-3-8b", "llama-3-70b", "qwen-2.5-7b", "qwen-2.5-32b")


def calibration_specs() -> list[ModelSpec]:
    return [MODELS[name] for name in CALIBRATION_MODELS]


# The microbenchmark families, in the order ``kvsim-calibrate run`` measures them.
FAMILIES = ("gemm", "prefill_attention", "decode_attention", "copies", "elementwise", "layer_kernels", "file_io")

# Token counts per GEMM: powers of two to fit, in-between values held out. 544, 1,088 and 2,064
# are not multiples of 128 (a chunk with some decodes, as engine steps are): they check the row
# rounding of ``hwmodels.calibrated.tile_rows``.
GEMM_M_FIT = [1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 2048, 4096, 8192, 16384]
GEMM_M_HELDOUT = [3, 24, 96, 384, 544, 1088, 1536, 2064, 6144, 12288]

PREFILL_SEQ_FIT = [128, 256, 512, 1024, 2048, 4096, 8192, 16384]
PREFILL_SEQ_HELDOUT = [384, 1536, 6144, 12288]
PREFILL_PREFIX_FIT = [(512, 2048), (1024, 8192), (2048, 4096), (256, 16384)]  # (new, prefix)
PREFILL_PREFIX_HELDOUT = [(768, 3072), (1536, 12288)]

DECODE_BATCH_FIT = [1, 4, 16, 64, 256]
DECODE_CTX_FIT = [128, 512, 2048, 8192, 32768]
DECODE_HELDOUT = [(2, 1024), (8, 6144), (32, 3072), (128, 1536), (48, 12288)]
DECODE_MAX_TOKENS = 2_500_000  # batch x context cap: KV of 2.5 M tokens fits next to the rest

COPY_BYTES_FIT = [4 << 10, 16 << 10, 64 << 10, 256 << 10, 1 << 20, 4 << 20, 16 << 20, 64 << 20, 256 << 20, 1 << 30]
COPY_BYTES_HELDOUT = [8 << 10, 128 << 10, 2 << 20, 32 << 20, 512 << 20]
COPY_MANY_FIT = [(256, 16 << 10), (256, 64 << 10), (256, 256 << 10), (64, 1 << 20)]  # (n, bytes each)
COPY_MANY_HELDOUT = [(128, 32 << 10), (512, 128 << 10)]

ELEMENTWISE_BYTES = [1 << 20, 8 << 20, 64 << 20, 512 << 20]

# Token counts for a layer's fused memory-bound kernels (norms, rotary, KV write, SiLU-and-mul).
LAYER_KERNEL_TOKENS_FIT = [1, 4, 16, 64, 256, 1024, 4096, 16384]
LAYER_KERNEL_TOKENS_HELDOUT = [8, 128, 512, 2048, 8192]


def gemm_shapes(model: ModelSpec, tp: int = 1) -> dict[str, tuple[int, int]]:
    """``(k, n)`` of each linear layer of ``model`` (what ``ExecutionModel`` asks for)."""
    h, hd = model.hidden_size, model.head_dim
    return {
        "qkv": (h, (model.n_q_heads + 2 * model.n_kv_heads) * hd // tp),
        "o": (model.n_q_heads * hd // tp, h),
        "gate_up": (h, 2 * model.intermediate_size // tp),
        "down": (model.intermediate_size // tp, h),
        "lm_head": (h, model.vocab_size // tp),
    }


def all_gemm_shapes() -> list[tuple[int, int]]:
    return sorted({kn for model in calibration_specs() for kn in gemm_shapes(model).values()})


def attention_heads() -> list[tuple[int, int, int]]:
    """``(q_heads, kv_heads, head_dim)`` of every calibration model at tensor parallel 1."""
    return sorted({(m.n_q_heads, m.n_kv_heads, m.head_dim) for m in calibration_specs()})
