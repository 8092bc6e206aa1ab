"""The CS336/CSE599-O adapter API: exact names and keyword arguments, float32 inputs as the assignment's
fixtures use, and results checked against PyTorch's own ops or independent references."""

from __future__ import annotations

import inspect
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from scratchlm.compat import cs336
from scratchlm.config import ModelConfig
from scratchlm.model import TransformerLM

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
