"""The end-to-end reference model of ``calibrate/e2e.py``, on the CPU.

Its two engines must compute the same function: the compiled one only fuses the elementwise
ops, so a timing difference between them is the cost of fusion and nothing else.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from calibrate.e2e import RandomLlama  # noqa: E402
from hwmodels.models import ModelSpec  # noqa: E402

TINY = ModelSpec("tiny", n_layers=2, hidden_size=128, n_q_heads=4, n_kv_heads=2, head_dim=32,
                 intermediate_size=256, vocab_size=500)  # fmt: skip


def _caches(batch: int, context: int) -> list[tuple]:
    g = torch.Generator().manual_seed(1)
    shape = (batch, TINY.n_kv_heads, context, TINY.head_dim)
    return [
        (torch.randn(*shape, generator=g, dtype=torch.bfloat16), torch.randn(*shape, generator=g, dtype=torch.bfloat16))
        for _ in range(TINY.n_layers)
    ]


def _model(engine: str) -> RandomLlama:
    torch.manual_seed(0)
    return RandomLlama(TINY, TINY.n_layers, engine, device="cpu")


@pytest.mark.parametrize(("batch", "tokens", "context", "decode"), [(1, 48, 48, False), (3, 1, 17, True)])
def test_compiled_and_eager_engines_compute_the_same_step(batch: int, tokens: int, context: int, decode: bool) -> None:
    eager, compiled = _model("eager"), _model("compiled")
    x = torch.randn(batch, tokens, TINY.hidden_size, generator=torch.Generator().manual_seed(2), dtype=torch.bfloat16)
    with torch.inference_mode():
        caches_eager, caches_compiled = _caches(batch, context), _caches(batch, context)
        want = eager.step(x, caches_eager, decode=decode).float()
        got = compiled.step(x, caches_compiled, decode=decode).float()
    assert got.shape == (batch, TINY.vocab_size)
    assert (got - want).abs().max() <= 0.05 * want.abs().mean()
    # The step wrote its K and V into the cache, both engines alike.
    k_eager, k_compiled = caches_eager[0][0].float(), caches_compiled[0][0].float()
    assert (k_eager - k_compiled).abs().max() <= 0.02 * k_eager.abs().mean()
    assert not torch.equal(caches_eager[0][0], _caches(batch, context)[0][0])


def test_an_unknown_engine_is_refused() -> None:
    with pytest.raises(ValueError, match="compiled, eager"):
        RandomLlama(TINY, 1, "tensorrt", device="cpu")


def _inputs(batch: int, tokens: int, seed: int):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(batch, tokens, TINY.hidden_size, generator=g, dtype=torch.bfloat16)


def _close(got, want) -> bool:
    got, want = got.float(), want.float()
    return bool((got - want).abs().max() <= 0.05 * want.abs().mean())


def test_a_prefill_on_a_cached_prefix_computes_what_the_whole_prefill_does() -> None:
    # The last 16 of 48 tokens, run on the K and V the first 32 left in the cache, give the same
    # logits as the 48 run together: the new tokens see the whole prefix and each other causally.
    model, x = _model("eager"), _inputs(1, 48, 3)
    with torch.inference_mode():
        caches = _caches(1, 48)
        whole = model.step(x, caches, decode=False)
        on_prefix = model.step(x[:, 32:], caches, decode=False)
        # Without its prefix (a cache of its own length) the same tokens give other logits.
        alone = model.step(x[:, 32:], _caches(1, 16), decode=False)
    assert _close(on_prefix, whole)
    assert not _close(alone, whole)


def test_a_chunked_prefill_step_computes_what_its_prefill_and_decodes_do_apart() -> None:
    model = _model("eager")
    chunk, decodes = _inputs(1, 24, 4), _inputs(3, 1, 5)
    with torch.inference_mode():
        apart = torch.cat(
            (model.step(chunk, _caches(1, 24), decode=False), model.step(decodes, _caches(3, 17), decode=True))
        )
        together = model.mixed_step(chunk, decodes, _caches(1, 24), _caches(3, 17))
    assert together.shape == (4, TINY.vocab_size)
    assert _close(together, apart)
