"""The end-to-end reference model of ``calibrate/e2e.py``, on the CPU.

Its two engines must compute the same function: the compiled one only fuses the elementwise
ops, so a timing difference between them is the cost of fusion and nothing else.
"""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from calibrate import e2e  # noqa: E402
from calibrate.e2e import RandomLlama, check_prefix_attention, merge_attention, partial_attention  # noqa: E402
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


@pytest.mark.parametrize(
    ("batch", "tokens", "context", "decode"), [(1, 48, 48, False), (1, 16, 48, False), (3, 1, 17, True)]
)
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


def test_attention_in_two_merged_parts_is_attention_over_the_whole() -> None:
    # 5 new tokens on a prefix of 7: the prefix part in full and the new tokens causally,
    # merged, give what one masked softmax over all 12 keys gives.
    g = torch.Generator().manual_seed(6)
    q = torch.randn(1, 4, 5, 8, generator=g)
    k, v = torch.randn(1, 2, 12, 8, generator=g), torch.randn(1, 2, 12, 8, generator=g)
    merged = merge_attention(
        *partial_attention(q, k[:, :, :7], v[:, :, :7], causal=False),
        *partial_attention(q, k[:, :, 7:], v[:, :, 7:], causal=True),
    )
    kk, vv = k.repeat_interleave(2, dim=1), v.repeat_interleave(2, dim=1)
    scores = (q @ kk.transpose(-1, -2)) / 8**0.5
    visible = torch.ones(5, 12, dtype=torch.bool).tril(7)  # token i sees the prefix and new tokens <= i
    want = torch.softmax(scores.masked_fill(~visible, float("-inf")), dim=-1) @ vv
    assert torch.allclose(merged, want, atol=1e-5)
    # Each part alone is not the answer: the merge's weights matter.
    assert not torch.allclose(partial_attention(q, k[:, :, 7:], v[:, :, 7:], causal=True)[0], want, atol=1e-2)


def test_the_prefix_attention_check_passes_the_merge_and_fails_a_wrong_one(monkeypatch) -> None:
    assert check_prefix_attention(TINY, new_tokens=16, prefix=40, device="cpu") < 0.02

    def unweighted(out_a, lse_a, out_b, lse_b):  # averages the parts, ignoring their weights
        return ((out_a.float() + out_b.float()) / 2).to(out_a.dtype)

    monkeypatch.setattr(e2e, "merge_attention", unweighted)
    with pytest.raises(RuntimeError, match="differs from one call"):
        check_prefix_attention(TINY, new_tokens=16, prefix=40, device="cpu")


def test_the_prefix_attention_check_names_what_is_missing_when_the_parts_cannot_run(monkeypatch) -> None:
    def unavailable(*args, **kwargs):
        raise RuntimeError("No available kernel. Aborting execution.")

    monkeypatch.setattr(e2e, "partial_attention", unavailable)
    with pytest.raises(RuntimeError, match="cuDNN's fused attention.*No available kernel"):
        check_prefix_attention(TINY, new_tokens=16, prefix=40, device="cpu")


def _shard_weights(full: RandomLlama, part: RandomLlama, rank: int, tp: int) -> None:
    """Give ``part`` rank ``rank``'s slice of ``full``'s weights, as a TP engine splits them:
    QKV and gate/up by output columns (whole heads, gate and up apart), the output and down
    projections by input rows, the LM head by vocabulary columns."""
    spec = full.spec
    hd, q, kv, inter = spec.head_dim, spec.n_q_heads, spec.n_kv_heads, spec.intermediate_size

    def cols(w, offset: int, width: int):
        share = width // tp
        return w[:, offset + rank * share : offset + (rank + 1) * share]

    for whole, mine in zip(full.layers, part.layers, strict=True):
        qkv = whole["qkv"]
        mine["qkv"] = torch.cat(
            [cols(qkv, 0, q * hd), cols(qkv, q * hd, kv * hd), cols(qkv, (q + kv) * hd, kv * hd)], 1
        )
        mine["o"] = whole["o"][rank * q * hd // tp : (rank + 1) * q * hd // tp]
        mine["gate_up"] = torch.cat([cols(whole["gate_up"], 0, inter), cols(whole["gate_up"], inter, inter)], 1)
        mine["down"] = whole["down"][rank * inter // tp : (rank + 1) * inter // tp]
        mine["norm1"], mine["norm2"] = whole["norm1"], whole["norm2"]
    part.lm_head = cols(full.lm_head, 0, spec.vocab_size)


@pytest.mark.parametrize("decode", [False, True])
def test_a_model_split_two_ways_with_its_all_reduces_computes_the_whole_model(decode: bool) -> None:
    """The tensor-parallel steps ``kvsim-calibrate tp`` times (calibrate.collective) are real
    TP: two ranks, each holding its share of the heads and the MLP and summing partial outputs
    where :class:`RandomLlama` calls ``reduce``, give the whole model's logits (each its half of
    the vocabulary). The ranks run as threads; the all-reduce is a sum behind a barrier."""
    import threading

    from calibrate.collective import shard

    tp, batch, tokens, context = 2, (3 if decode else 1), (1 if decode else 24), (17 if decode else 24)
    full = _model("eager")
    x = _inputs(batch, tokens, seed=5)
    with torch.inference_mode():
        caches = _caches(batch, context)
        want = full.step(x, [(k.clone(), v.clone()) for k, v in caches], decode=decode).float()

    barrier, partial = threading.Barrier(tp), [None] * tp
    calls = [0] * tp

    def make_reduce(rank: int):
        def reduce(y):
            partial[rank] = y.clone()
            barrier.wait()
            total = sum(p.float() for p in partial).to(y.dtype)
            barrier.wait()
            calls[rank] += 1
            y.copy_(total)
            return y

        return reduce

    got = [None] * tp

    def run(rank: int) -> None:
        part = RandomLlama(shard(TINY, tp), TINY.n_layers, "eager", device="cpu", reduce=make_reduce(rank))
        _shard_weights(full, part, rank, tp)
        heads = TINY.n_kv_heads // tp
        mine = [(k[:, rank * heads : (rank + 1) * heads].clone(), v[:, rank * heads : (rank + 1) * heads].clone())
                for k, v in caches]  # fmt: skip
        with torch.inference_mode():
            got[rank] = part.step(x, mine, decode=decode).float()

    threads = [threading.Thread(target=run, args=(rank,)) for rank in range(tp)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert calls == [2 * TINY.n_layers] * tp  # after attention and after the MLP, every layer
    assert _close(torch.cat(got, dim=-1), want)


def test_a_model_that_does_not_split_evenly_is_refused() -> None:
    from calibrate.collective import group_sizes, shard

    assert shard(TINY, 2).n_q_heads == 2 and shard(TINY, 2).vocab_size == 250
    with pytest.raises(ValueError, match="n_kv_heads 2 does not split 4 ways"):
        shard(TINY, 4)
    assert group_sizes(1) == [] and group_sizes(2) == [2] and group_sizes(6) == [2, 4]
