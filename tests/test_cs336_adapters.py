"""The CS336/CSE599-O adapter API: exact names and keyword arguments, float32 inputs as the assignment's
fixtures use, and results checked against PyTorch's own ops or independent references."""

from __future__ import annotations

import inspect
import io
import itertools
import json
import math
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.compat import cs336
from scratchlm.config import ModelConfig
from scratchlm.errors import ConfigError
from scratchlm.model import TransformerLM
from scratchlm.tokenizers import Tokenizer
from scratchlm.tokenizers.gpt2_files import unicode_to_byte
from scratchlm.tokenizers.pretokenize import PRETOKEN_RE

from .test_model import reference_lm
from .test_nn_positions import rope_via_complex

TOL = {"rtol": 1e-5, "atol": 1e-5}

SIGNATURES = {
    "run_linear": "d_in, d_out, weights, in_features",
    "run_embedding": "vocab_size, d_model, weights, token_ids",
    "run_swiglu": "d_model, d_ff, w1_weight, w2_weight, w3_weight, in_features",
    "run_scaled_dot_product_attention": "Q, K, V, mask",
    "run_multihead_self_attention": "d_model, num_heads, q_proj_weight, k_proj_weight, v_proj_weight, "
    "o_proj_weight, in_features",
    "run_multihead_self_attention_with_rope": "d_model, num_heads, max_seq_len, theta, q_proj_weight, "
    "k_proj_weight, v_proj_weight, o_proj_weight, in_features, token_positions",
    "run_rope": "d_k, theta, max_seq_len, in_query_or_key, token_positions",
    "run_transformer_block": "d_model, num_heads, d_ff, max_seq_len, theta, weights, in_features",
    "run_transformer_lm": "vocab_size, context_length, d_model, num_layers, num_heads, d_ff, rope_theta, "
    "weights, in_indices",
    "run_rmsnorm": "d_model, eps, weights, in_features",
    "run_silu": "in_features",
    "run_get_batch": "dataset, batch_size, context_length, device",
    "run_softmax": "in_features, dim",
    "run_cross_entropy": "inputs, targets",
    "run_gradient_clipping": "parameters, max_l2_norm",
    "get_adamw_cls": "",
    "run_get_lr_cosine_schedule": "it, max_learning_rate, min_learning_rate, warmup_iters, cosine_cycle_iters",
    "run_save_checkpoint": "model, optimizer, iteration, out",
    "run_load_checkpoint": "src, model, optimizer",
    "get_tokenizer": "vocab, merges, special_tokens",
    "run_train_bpe": "input_path, vocab_size, special_tokens, kwargs",
}


@pytest.mark.parametrize("name", sorted(SIGNATURES))
def test_adapter_names_and_keyword_arguments(name: str) -> None:
    params = list(inspect.signature(getattr(cs336, name)).parameters)
    assert params == [p for p in SIGNATURES[name].split(", ") if p]


def lm_weights(c: ModelConfig) -> dict[str, torch.Tensor]:
    model = TransformerLM(c)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if "ln" in name:
                p.uniform_(0.5, 1.5)
    return dict(model.state_dict())


def test_linear_embedding_swiglu_rmsnorm_silu_softmax() -> None:
    w = torch.randn(5, 3)
    x = torch.randn(2, 4, 3)
    torch.testing.assert_close(cs336.run_linear(d_in=3, d_out=5, weights=w, in_features=x), F.linear(x, w))
    emb = torch.randn(10, 6)
    ids = torch.randint(0, 10, (2, 7))
    torch.testing.assert_close(cs336.run_embedding(vocab_size=10, d_model=6, weights=emb, token_ids=ids), emb[ids])
    w1, w2, w3 = torch.randn(16, 8), torch.randn(8, 16), torch.randn(16, 8)
    h = torch.randn(3, 8)
    expected = F.linear(F.silu(F.linear(h, w1)) * F.linear(h, w3), w2)
    out = cs336.run_swiglu(d_model=8, d_ff=16, w1_weight=w1, w2_weight=w2, w3_weight=w3, in_features=h)
    torch.testing.assert_close(out, expected, **TOL)
    g = torch.rand(8) + 0.5
    torch.testing.assert_close(
        cs336.run_rmsnorm(d_model=8, eps=1e-5, weights=g, in_features=h), F.rms_norm(h, (8,), g, 1e-5), **TOL
    )
    torch.testing.assert_close(cs336.run_silu(in_features=h), F.silu(h))
    torch.testing.assert_close(cs336.run_softmax(in_features=h * 50, dim=0), F.softmax(h * 50, 0))


@pytest.mark.parametrize("batch_dims", [(2,), (2, 3)])
def test_scaled_dot_product_attention_3d_and_4d(batch_dims: tuple[int, ...]) -> None:
    q, k, v = torch.randn(*batch_dims, 5, 4), torch.randn(*batch_dims, 6, 4), torch.randn(*batch_dims, 6, 4)
    mask = torch.rand(5, 6) > 0.3
    mask[:, 0] = True
    out = cs336.run_scaled_dot_product_attention(Q=q, K=k, V=v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), **TOL)


def test_multihead_attention_with_and_without_rope() -> None:
    d, heads, seq = 16, 4, 9
    ws = [torch.randn(d, d) / 4 for _ in range(4)]
    x = torch.randn(2, seq, d)

    def expected(positions: torch.Tensor | None) -> torch.Tensor:
        q, k, v = (F.linear(x, w).unflatten(-1, (heads, d // heads)).transpose(1, 2) for w in ws[:3])
        if positions is not None:
            q, k = rope_via_complex(q, positions, 100.0), rope_via_complex(k, positions, 100.0)
        o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(-2)
        return F.linear(o, ws[3])

    names = ("q_proj_weight", "k_proj_weight", "v_proj_weight", "o_proj_weight")
    kwargs = dict(zip(names, ws, strict=True))
    out = cs336.run_multihead_self_attention(d_model=d, num_heads=heads, in_features=x, **kwargs)
    torch.testing.assert_close(out, expected(None), **TOL)
    positions = torch.arange(seq).unsqueeze(0)  # (1, seq), as the assignment passes them
    out = cs336.run_multihead_self_attention_with_rope(
        d_model=d, num_heads=heads, max_seq_len=32, theta=100.0, in_features=x, token_positions=positions, **kwargs
    )
    torch.testing.assert_close(out, expected(torch.arange(seq)), **TOL)


def test_rope_adapter() -> None:
    x = torch.randn(3, 7, 8)
    positions = torch.randint(0, 20, (3, 7))
    out = cs336.run_rope(d_k=8, theta=10000.0, max_seq_len=20, in_query_or_key=x, token_positions=positions)
    torch.testing.assert_close(out, rope_via_complex(x, positions, 10000.0).float(), **TOL)


def test_transformer_block_and_lm_adapters_match_the_reference_including_short_inputs() -> None:
    c = ModelConfig(vocab_size=50, context_length=16, d_model=32, num_layers=2, num_heads=4, d_ff=64, rope_theta=500.0)
    weights = lm_weights(c)
    idx = torch.randint(0, 50, (3, 11))  # shorter than context_length
    logits = cs336.run_transformer_lm(
        vocab_size=50,
        context_length=16,
        d_model=32,
        num_layers=2,
        num_heads=4,
        d_ff=64,
        rope_theta=500.0,
        weights=weights,
        in_indices=idx,
    )
    torch.testing.assert_close(logits, reference_lm(weights, c, idx), **TOL)
    # one block on its own
    block_weights = {k.removeprefix("layers.0."): v for k, v in weights.items() if k.startswith("layers.0.")}
    x = torch.randn(3, 11, 32)
    out = cs336.run_transformer_block(
        d_model=32, num_heads=4, d_ff=64, max_seq_len=16, theta=500.0, weights=block_weights, in_features=x
    )
    torch.testing.assert_close(out, one_block_reference(block_weights, c, x), **TOL)


def one_block_reference(w: dict[str, torch.Tensor], c: ModelConfig, x: torch.Tensor) -> torch.Tensor:
    positions = torch.arange(x.shape[1])
    h = F.rms_norm(x, (c.d_model,), w["ln1.weight"], eps=1e-5)
    q, k, v = (
        F.linear(h, w[f"attn.{n}_proj.weight"]).unflatten(-1, (c.num_heads, c.head_dim)).transpose(1, 2) for n in "qkv"
    )
    q, k = rope_via_complex(q, positions, c.rope_theta), rope_via_complex(k, positions, c.rope_theta)
    o = F.scaled_dot_product_attention(q, k, v, is_causal=True).transpose(1, 2).flatten(-2)
    x = x + F.linear(o, w["attn.output_proj.weight"])
    h = F.rms_norm(x, (c.d_model,), w["ln2.weight"], eps=1e-5)
    return x + F.linear(F.silu(F.linear(h, w["ffn.w1.weight"])) * F.linear(h, w["ffn.w3.weight"]), w["ffn.w2.weight"])


def test_cross_entropy_and_gradient_clipping() -> None:
    logits, targets = torch.randn(8, 5), torch.randint(0, 5, (8,))
    torch.testing.assert_close(
        cs336.run_cross_entropy(inputs=logits, targets=targets), F.cross_entropy(logits, targets)
    )
    a = [torch.nn.Parameter(torch.randn(4, 3)) for _ in range(3)]
    b = [torch.nn.Parameter(p.detach().clone()) for p in a]
    for pa, pb in zip(a, b, strict=True):
        pa.grad = torch.randn_like(pa)
        pb.grad = pa.grad.clone()
    cs336.run_gradient_clipping(parameters=a, max_l2_norm=0.01)
    torch.nn.utils.clip_grad_norm_(b, 0.01)
    for pa, pb in zip(a, b, strict=True):
        torch.testing.assert_close(pa.grad, pb.grad)


def _optimize(opt_class: type[torch.optim.Optimizer]) -> torch.Tensor:
    """The assignment's AdamW check: fit a 3->2 linear map for 1000 steps."""
    torch.manual_seed(42)
    model = torch.nn.Linear(3, 2, bias=False)
    opt = opt_class(model.parameters(), lr=1e-3, weight_decay=0.01, betas=(0.9, 0.999), eps=1e-8)
    for _ in range(1000):
        opt.zero_grad()
        x = torch.rand(model.in_features)
        y = torch.tensor([x[0] + x[1], -x[2]])
        loss = ((y - model(x)) ** 2).sum()
        loss.backward()
        opt.step()
    return model.weight.detach()


def test_adamw_passes_the_assignment_style_check() -> None:
    torch.testing.assert_close(_optimize(cs336.get_adamw_cls()), _optimize(torch.optim.AdamW), rtol=0, atol=1e-4)


def test_checkpoint_adapters_round_trip(tmp_path: Path) -> None:
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    opt = cs336.get_adamw_cls()(model.parameters(), lr=1e-2)
    for _ in range(5):
        opt.zero_grad()
        model(torch.randn(3, 4)).square().sum().backward()
        opt.step()
    path = tmp_path / "ck.pt"
    cs336.run_save_checkpoint(model=model, optimizer=opt, iteration=5, out=path)
    fresh = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    fresh_opt = cs336.get_adamw_cls()(fresh.parameters(), lr=1e-2)
    assert cs336.run_load_checkpoint(src=path, model=fresh, optimizer=fresh_opt) == 5
    for a, b in zip(model.state_dict().values(), fresh.state_dict().values(), strict=True):
        assert torch.equal(a, b)
    assert fresh_opt.state_dict()["state"].keys() == opt.state_dict()["state"].keys()


def test_get_batch_adapter_and_invalid_device() -> None:
    x, y = cs336.run_get_batch(dataset=np.arange(100), batch_size=4, context_length=6, device="cpu")
    assert torch.equal(y, x + 1)
    with pytest.raises((RuntimeError, AssertionError)):
        cs336.run_get_batch(dataset=np.arange(100), batch_size=4, context_length=6, device="cuda:99")


def test_lr_schedule_adapter() -> None:
    assert cs336.run_get_lr_cosine_schedule(
        it=14, max_learning_rate=1.0, min_learning_rate=0.1, warmup_iters=7, cosine_cycle_iters=21
    ) == pytest.approx(0.55)


def test_lr_schedule_adapter_at_every_boundary() -> None:
    """The assignment's 25 iterations: warmup (t < Tw), cosine (Tw <= t <= Tc, min exactly at Tc), after."""
    expected = (
        [i / 7 for i in range(7)]
        + [0.1 + 0.45 * (1 + math.cos(math.pi * (t - 7) / 14)) for t in range(7, 22)]
        + [0.1] * 3
    )
    got = [
        cs336.run_get_lr_cosine_schedule(
            it=t, max_learning_rate=1.0, min_learning_rate=0.1, warmup_iters=7, cosine_cycle_iters=21
        )
        for t in range(25)
    ]
    assert got == pytest.approx(expected, rel=1e-12, abs=1e-12)
    assert got[7] == 1.0 and got[21] == pytest.approx(0.1, abs=1e-15)


@pytest.mark.parametrize("batch_dims", [(4,), (2, 3)])
def test_attention_mask_with_batch_dims_and_fully_masked_rows_give_zero(batch_dims: tuple[int, ...]) -> None:
    """The assignment's masks carry the batch dims; a query with no key to attend to outputs zeros, as
    F.scaled_dot_product_attention does (the handout: masked keys get probability zero)."""
    d = torch.float64
    q, k, v = (torch.randn(*batch_dims, n, 8, dtype=d) for n in (5, 7, 7))
    mask = torch.rand(*batch_dims, 5, 7) > 0.5
    mask[..., 1, :] = False  # query 1 attends to nothing, in every batch element
    mask[..., 0, 0] = True
    out = cs336.run_scaled_dot_product_attention(Q=q, K=k, V=v, mask=mask)
    torch.testing.assert_close(out, F.scaled_dot_product_attention(q, k, v, attn_mask=mask), rtol=1e-12, atol=1e-12)
    assert torch.equal(out[..., 1, :], torch.zeros_like(out[..., 1, :]))


def test_get_batch_invalid_device_raises_pytorchs_own_error() -> None:
    """The assignment's test looks for PyTorch's error text, which the library's DeviceError does not use."""
    with pytest.raises((RuntimeError, AssertionError)) as excinfo:
        cs336.run_get_batch(dataset=np.arange(100), batch_size=4, context_length=6, device="cuda:99")
    message = str(excinfo.value)
    assert "CUDA error" in message or "Torch not compiled with CUDA enabled" in message


def test_softmax_cross_entropy_and_rope_shapes_the_assignment_uses() -> None:
    x = torch.randn(2, 3, 5, dtype=torch.float64)
    for dim in (-1, -2, 0):
        torch.testing.assert_close(cs336.run_softmax(in_features=x + 100, dim=dim), F.softmax(x, dim))
    # cross entropy over (batch, seq, vocab) inputs, and the same logits times 1000
    targets = torch.randint(0, 5, (2, 3))
    for scale in (1.0, 1000.0):
        expected = F.cross_entropy((x * scale).view(-1, 5), targets.view(-1))
        torch.testing.assert_close(cs336.run_cross_entropy(inputs=x * scale, targets=targets), expected)
    # RoPE with 1-D positions (seq,) broadcast over the batch, as the assignment's fixture passes them
    q = torch.randn(4, 12, 16)
    positions = torch.arange(12)
    out = cs336.run_rope(d_k=16, theta=10000.0, max_seq_len=12, in_query_or_key=q, token_positions=positions)
    torch.testing.assert_close(out, rope_via_complex(q, positions, 10000.0).float(), **TOL)


def test_gradient_clipping_skips_frozen_parameters_and_accepts_a_generator() -> None:
    """As the assignment's test: one parameter frozen (grad None), the rest clipped in place like PyTorch's."""
    tensors = [torch.randn(5, 5) for _ in range(4)]
    ours = [torch.nn.Parameter(t.clone()) for t in tensors]
    theirs = [torch.nn.Parameter(t.clone()) for t in tensors]
    for group in (ours, theirs):
        group[-1].requires_grad_(False)
        torch.stack(group).mul(torch.arange(100.0).view(4, 5, 5)).sum().backward()
    grad_objects = [p.grad for p in ours]
    cs336.run_gradient_clipping(parameters=(p for p in ours), max_l2_norm=1e-2)
    torch.nn.utils.clip_grad_norm_(theirs, 1e-2)
    assert ours[-1].grad is None
    for a, b, obj in zip(ours[:-1], theirs[:-1], grad_objects, strict=False):
        assert a.grad is obj
        torch.testing.assert_close(a.grad, b.grad)


def test_checkpoint_adapters_accept_a_binary_file_object() -> None:
    model = torch.nn.Linear(3, 2)
    opt = cs336.get_adamw_cls()(model.parameters(), lr=1e-3)
    model(torch.randn(4, 3)).sum().backward()
    opt.step()
    buffer = io.BytesIO()
    cs336.run_save_checkpoint(model=model, optimizer=opt, iteration=7, out=buffer)
    buffer.seek(0)
    fresh = torch.nn.Linear(3, 2)
    fresh_opt = cs336.get_adamw_cls()(fresh.parameters(), lr=1e-3)
    assert cs336.run_load_checkpoint(src=buffer, model=fresh, optimizer=fresh_opt) == 7
    assert torch.equal(fresh.weight, model.weight)
    assert fresh_opt.state_dict()["param_groups"] == opt.state_dict()["param_groups"]


def _toy_vocab_and_merges() -> tuple[dict[int, bytes], list[tuple[bytes, bytes]]]:
    vocab = {i: bytes([i]) for i in range(256)}
    merges = [(b"t", b"h"), (b"th", b"e"), (b" ", b"the")]
    for a, b in merges:
        vocab[len(vocab)] = a + b
    return vocab, merges


def test_get_tokenizer_ignores_the_merges_txt_header_the_assignment_parses_as_a_merge() -> None:
    vocab, merges = _toy_vocab_and_merges()
    plain = cs336.get_tokenizer(vocab=vocab, merges=merges, special_tokens=["<|endoftext|>"])
    with_header = cs336.get_tokenizer(
        vocab=vocab, merges=[(b"#version:", b"0.2"), *merges], special_tokens=["<|endoftext|>"]
    )
    text = "the other theme<|endoftext|> the end"
    assert with_header.encode(text) == plain.encode(text)
    assert with_header.decode(with_header.encode(text)) == text
    # any other merge outside the vocabulary still means vocab and merges do not belong together
    with pytest.raises(ConfigError):
        cs336.get_tokenizer(vocab=vocab, merges=[*merges, (b"#version:", b"0.2")])


def test_get_tokenizer_on_gpt2_files_read_the_assignments_way(shared_data: Path) -> None:
    """The assignment's helper: keep every two-word line of merges.txt (header included), map GPT-2's
    printable alphabet back to bytes, and append the special token; encodings must equal those of the
    library's own reader of GPT-2's files."""
    decoder = unicode_to_byte()
    encoder = json.loads((shared_data / "gpt2" / "encoder.json").read_text(encoding="utf-8"))
    vocab = {index: bytes(decoder[c] for c in token) for token, index in encoder.items()}
    merges = []
    for line in (shared_data / "gpt2" / "vocab.bpe").read_text(encoding="utf-8").splitlines():
        parts = line.rstrip().split(" ")
        if len(parts) == 2:
            merges.append(tuple(bytes(decoder[c] for c in part) for part in parts))
    assert merges[0] == (b"#version:", b"0.2")
    tokenizer = cs336.get_tokenizer(vocab=vocab, merges=merges, special_tokens=["<|endoftext|>"])
    text = "Héllò hôw <|endoftext|><|endoftext|> are ü? 🙃<|endoftext|>"
    reference = Tokenizer.from_gpt2_files(shared_data / "gpt2" / "encoder.json", shared_data / "gpt2" / "vocab.bpe")
    assert tokenizer.encode(text) == reference.encode(text)
    assert tokenizer.encode(text).count(50256) == 3
    assert tokenizer.decode(tokenizer.encode(text)) == text


def _naive_bpe(text: str, vocab_size: int, special: str) -> list[tuple[bytes, bytes]]:
    """The handout's algorithm spelled out: recount every pair each merge, ties to the greatest pair."""
    counts: Counter[tuple[bytes, ...]] = Counter()
    for part in text.split(special):
        for match in PRETOKEN_RE.finditer(part):
            counts[tuple(bytes([b]) for b in match.group().encode("utf-8"))] += 1
    merges: list[tuple[bytes, bytes]] = []
    while 257 + len(merges) < vocab_size:
        pairs: Counter[tuple[bytes, bytes]] = Counter()
        for word, n in counts.items():
            for pair in itertools.pairwise(word):
                pairs[pair] += n
        best = max(pairs.items(), key=lambda kv: (kv[1], kv[0]))[0]
        merges.append(best)
        merged: Counter[tuple[bytes, ...]] = Counter()
        for word, n in counts.items():
            out, i = [], 0
            while i < len(word):
                if word[i : i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(word[i])
                    i += 1
            merged[tuple(out)] += n
        counts = merged
    return merges


def test_train_bpe_adapter_matches_the_handouts_algorithm_and_keeps_special_tokens_whole(tmp_path: Path) -> None:
    text = "<|endoftext|>".join(
        f"Once upon a time, {name} saw {n} cats. They said: 'we'll play!'\n\n{name} smiled."
        for name, n in [("Lily", 3), ("Ben", 12), ("Lily", 7), ("Tom", 3), ("Sue", 40)] * 4
    )
    path = tmp_path / "stories.txt"
    path.write_text(text, encoding="utf-8")
    vocab, merges = cs336.run_train_bpe(input_path=path, vocab_size=300, special_tokens=["<|endoftext|>"])
    assert merges == _naive_bpe(text, 300, "<|endoftext|>")
    assert len(vocab) == 300 and b"<|endoftext|>" in vocab.values()
    assert not [t for t in vocab.values() if b"<|" in t and t != b"<|endoftext|>"]
