"""The KV cache is exact: cached decoding reproduces the cacheless forward, and the classic bugs are caught.

Every check compares against the plain `model(idx)` forward over the whole sequence (no cache object at
all) in float32 on the CPU, to 1e-5 relative, for every positional scheme and both attention backends.
The three bugs course submissions had each get a test that asserts the property the bug breaks and shows
that a deliberately broken decoder fails the same comparison the real one passes.
"""

from __future__ import annotations

import pytest
import torch

from scratchlm.config import POSITIONALS, ModelConfig
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.infer.generate import decode_steps
from scratchlm.infer.kv_cache import KVCache
from scratchlm.model import TransformerLM
from scratchlm.nn.attention import ATTENTION_BACKENDS

CONTEXT = 24
VOCAB = 37
RTOL = 1e-5


def make_model(positional: str = "rope", backend: str = "reference", **overrides: object) -> TransformerLM:
    config = ModelConfig(
        vocab_size=VOCAB,
        context_length=CONTEXT,
        d_model=32,
        num_layers=2,
        num_heads=4,
        positional=positional,
        attention_backend=backend,
        **overrides,
    )
    return TransformerLM(config).eval()


def assert_logits_close(actual: torch.Tensor, expected: torch.Tensor) -> None:
    """1e-5 relative to the logits' scale (an elementwise relative test is meaningless for logits near 0)."""
    scale = expected.abs().max().item()
    torch.testing.assert_close(actual, expected, rtol=RTOL, atol=RTOL * scale)


def max_relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).abs().max() / expected.abs().max()).item()


@torch.no_grad()
def cached_logits(model: TransformerLM, seq_1T: torch.Tensor, prefill: int, *, static: bool = False) -> torch.Tensor:
    """Logits (1, T, V) for seq: the first `prefill` tokens in one cached forward, then one token at a time."""
    cache = KVCache.for_model(model, 1, seq_1T.shape[1], static=static)
    chunks = [model(seq_1T[:, :prefill], kv_cache=cache)[0]]
    for t in range(prefill, seq_1T.shape[1]):
        chunks.append(model(seq_1T[:, t : t + 1], kv_cache=cache)[0])
    return torch.cat(chunks, dim=1)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
@pytest.mark.parametrize("positional", POSITIONALS)
def test_cached_logits_equal_the_full_forward_at_every_position_up_to_the_context(
    positional: str, backend: str, static: bool
) -> None:
    model = make_model(positional, backend)
    seq_1T = torch.randint(0, VOCAB, (1, CONTEXT))
    with torch.no_grad():
        expected = model(seq_1T)[0]
    # The prefill positions check the prompt pass (causal, fed through); the rest check each decode step.
    assert_logits_close(cached_logits(model, seq_1T, prefill=7, static=static), expected)


def test_a_prefill_from_an_empty_cache_is_the_training_forward_bit_for_bit() -> None:
    model = make_model()
    idx_BT = torch.randint(0, VOCAB, (3, 10))
    with torch.no_grad():
        plain = model(idx_BT)[0]
        prefilled = model(idx_BT, kv_cache=KVCache.for_model(model, 3, 10))[0]
    assert torch.equal(prefilled, plain)


@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
@pytest.mark.parametrize("positional", POSITIONALS)
def test_greedy_decoding_with_and_without_the_cache_agrees_for_batched_prompts_of_different_lengths(
    positional: str, backend: str
) -> None:
    model = make_model(positional, backend)
    prompts = [torch.randint(0, VOCAB, (n,)).tolist() for n in (5, 1, 9)]
    new_tokens = CONTEXT - 9  # the longest row fills the context exactly
    runs = {
        use_cache: list(decode_steps(model, prompts, max_new_tokens=new_tokens, temperature=0.0, use_cache=use_cache))
        for use_cache in (True, False)
    }
    cached_BN = torch.stack([s.tokens_B for s in runs[True]], 1)
    uncached_BN = torch.stack([s.tokens_B for s in runs[False]], 1)
    assert torch.equal(cached_BN, uncached_BN)
    for cached, uncached in zip(runs[True], runs[False], strict=True):
        assert_logits_close(cached.logits_BV, uncached.logits_BV)
    # And each padded row against its own sequence alone, through the plain forward: padding is invisible.
    with torch.no_grad():
        for b, prompt in enumerate(prompts):
            seq_1T = torch.tensor([prompt + cached_BN[b].tolist()])
            expected = model(seq_1T)[0][0, len(prompt) - 1 : -1]
            actual = torch.stack([step.logits_BV[b] for step in runs[True]])
            assert_logits_close(actual, expected)


@pytest.mark.parametrize("static", [False, True], ids=["dynamic", "static"])
def test_padded_rows_use_their_own_positions_and_never_see_padding(static: bool) -> None:
    model = make_model("learned")
    prompts_BP = torch.tensor([[0, 0, 0, 5, 6], [1, 2, 3, 4, 5]])
    cache = KVCache.for_model(model, 2, 8, pad_B=torch.tensor([3, 0]), static=static)
    positions_BT = cache.reserve(prompts_BP)
    assert positions_BT.tolist() == [[0, 0, 0, 0, 1], [0, 1, 2, 3, 4]]  # padding slots get a harmless 0
    mask_BTS = cache.mask_B1TS[:, 0, :, :5]
    assert not mask_BTS[0, 3:, :3].any()  # real queries of row 0 see no padding key
    assert torch.equal(mask_BTS[0, :3, :3], torch.eye(3, dtype=torch.bool))  # a padding query sees itself only
    assert torch.equal(mask_BTS[1], torch.ones(5, 5, dtype=torch.bool).tril())
    assert cache.reserve(torch.tensor([[7], [8]])).tolist() == [[2], [5]]


# ------------------------------------------------------------------------------------------ classic bugs


@pytest.mark.parametrize("positional", ["rope", "sinusoidal", "learned"])
def test_decode_steps_run_at_their_true_positions_and_a_missing_offset_is_caught(positional: str) -> None:
    model = make_model(positional)
    seq_1T = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        expected = model(seq_1T)[0][:, 8:]
        # The property: after a prefill of 8, the cache hands out positions 8, 9, ... (not 0 again).
        cache = KVCache.for_model(model, 1, 16)
        model(seq_1T[:, :8], kv_cache=cache)
        assert [int(cache.reserve(seq_1T[:, t : t + 1])) for t in range(8, 11)] == [8, 9, 10]
        # The bug: every decode step at position 0, as a decoder that forgets the offset would run it.
        broken = KVCache.for_model(model, 1, 16)
        model(seq_1T[:, :8], kv_cache=broken)
        at_zero = torch.zeros(1, dtype=torch.long)
        steps = [model(seq_1T[:, t : t + 1], kv_cache=broken, token_positions=at_zero)[0] for t in range(8, 16)]
    assert max_relative_error(torch.cat(steps, 1), expected) > 1e-2
    assert_logits_close(cached_logits(model, seq_1T, prefill=8)[:, 8:], expected)


def test_the_prompt_pass_is_causal_and_a_prefill_without_the_mask_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    model = make_model("rope", "reference")
    seq_1T = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        expected = model(seq_1T)[0]
    # The property: prefill logits at every prompt position (not only the last) equal the causal forward's.
    assert_logits_close(cached_logits(model, seq_1T, prefill=10)[:, :10], expected[:, :10])
    reference = ATTENTION_BACKENDS["reference"]

    def unmasked_prompt(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, **kwargs: object) -> torch.Tensor:
        if q.shape[-2] > 1:  # the bug: a multi-token prompt pass with no causal mask
            kwargs = {**kwargs, "causal": False}
        return reference(q, k, v, **kwargs)

    monkeypatch.setitem(ATTENTION_BACKENDS, "reference", unmasked_prompt)
    broken = cached_logits(model, seq_1T, prefill=10)
    # The last prompt position sees every key either way; the damage shows in the steps after it.
    assert max_relative_error(broken[:, 10:], expected[:, 10:]) > 1e-2


def test_the_whole_prompt_is_fed_through_and_a_decoder_that_skips_it_is_caught() -> None:
    model = make_model("rope")
    seq_1T = torch.randint(0, VOCAB, (1, 16))
    with torch.no_grad():
        expected = model(seq_1T)[0][:, 9:]
        # The property: after the prefill the cache holds every prompt position ...
        cache = KVCache.for_model(model, 1, 16)
        model(seq_1T[:, :10], kv_cache=cache)
        assert cache.length == 10
        # ... and the next token's logits depend on the first prompt token.
        changed_1T = seq_1T.clone()
        changed_1T[0, 0] = (seq_1T[0, 0] + 1) % VOCAB
        other = KVCache.for_model(model, 1, 16)
        model(changed_1T[:, :10], kv_cache=other)
        step = seq_1T[:, 10:11]
        assert max_relative_error(model(step, kv_cache=other)[0], model(step, kv_cache=cache)[0]) > 1e-3
        # The bug: decoding starts from the last prompt token alone (at its true position), the rest unseen.
        broken = KVCache.for_model(model, 1, 16)
        position_9 = torch.tensor([9])
        steps = [model(seq_1T[:, 9:10], kv_cache=broken, token_positions=position_9)[0]]
        steps += [
            model(seq_1T[:, t : t + 1], kv_cache=broken, token_positions=position_9 + t - 9)[0] for t in range(10, 16)
        ]
    assert max_relative_error(torch.cat(steps, 1), expected) > 1e-2
    assert_logits_close(cached_logits(model, seq_1T, prefill=10)[:, 9:], expected)


# ------------------------------------------------------------------------------------------ misuse


def test_cache_misuse_is_a_clear_error() -> None:
    model = make_model()
    cache = KVCache.for_model(model, 2, 4)
    with pytest.raises(ShapeError, match="batch 2"):
        model(torch.zeros(1, 3, dtype=torch.long), kv_cache=cache)
    model(torch.zeros(2, 4, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ShapeError, match="4 slots, 4 used"):
        model(torch.zeros(2, 1, dtype=torch.long), kv_cache=cache)
    with pytest.raises(ConfigError, match="context_length"):
        KVCache.for_model(model, 1, CONTEXT + 1)
    with pytest.raises(ConfigError, match="without the cache"):
        KVCache.for_model(make_model(causal=False), 1, 4)


@pytest.mark.cuda
@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
def test_cuda_graph_decoding_matches_eager_cached_decoding(backend: str) -> None:
    model = make_model("rope", backend).cuda()
    prompts = [torch.randint(0, VOCAB, (n,)).tolist() for n in (4, 9)]
    runs = {
        graphed: list(decode_steps(model, prompts, max_new_tokens=CONTEXT - 9, temperature=0.0, cuda_graph=graphed))
        for graphed in (False, True)
    }
    for eager, graphed in zip(runs[False], runs[True], strict=True):
        assert torch.equal(eager.tokens_B, graphed.tokens_B)
        assert_logits_close(graphed.logits_BV, eager.logits_BV)
