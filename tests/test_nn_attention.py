"""Causal multi-head self-attention: against an independent reference, across backends, and for causality."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from scratchlm.nn.attention import ATTENTION_BACKENDS, CausalSelfAttention, reference_attention
from scratchlm.nn.positions import RotaryPositionalEmbedding
from scratchlm.nn.sdpa import sdpa_attention

from .test_nn_positions import rope_via_complex

F64 = torch.float64


def independent_mha(
    attn: CausalSelfAttention, x: torch.Tensor, positions: torch.Tensor | None, theta: float | None
) -> torch.Tensor:
    """Per-head loop with F.linear and F.scaled_dot_product_attention: no code shared with the module."""
    heads = attn.num_heads
    q, k, v = (F.linear(x, proj.weight) for proj in (attn.q_proj, attn.k_proj, attn.v_proj))
    d_head = q.shape[-1] // heads
    outs = []
    for h in range(heads):
        sl = slice(h * d_head, (h + 1) * d_head)
        qh, kh, vh = q[..., sl], k[..., sl], v[..., sl]
        if theta is not None:
            qh, kh = rope_via_complex(qh, positions, theta), rope_via_complex(kh, positions, theta)
        outs.append(F.scaled_dot_product_attention(qh, kh, vh, is_causal=attn.causal))
    return F.linear(torch.cat(outs, -1), attn.output_proj.weight)


@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
@pytest.mark.parametrize("use_rope", [False, True])
@pytest.mark.parametrize("causal", [True, False])
def test_mha_matches_an_independent_per_head_reference(backend: str, use_rope: bool, causal: bool) -> None:
    rope = RotaryPositionalEmbedding(10000.0, 8, 32) if use_rope else None
    attn = CausalSelfAttention(32, 4, rope=rope, causal=causal, backend=backend).double()
    x = torch.randn(2, 11, 32, dtype=F64)
    positions = torch.arange(11)
    expected = independent_mha(attn, x, positions, 10000.0 if use_rope else None)
    torch.testing.assert_close(attn(x), expected, rtol=1e-10, atol=1e-10)


def test_mha_accepts_extra_batch_dims_and_per_row_positions() -> None:
    rope = RotaryPositionalEmbedding(10000.0, 4, 64)
    attn = CausalSelfAttention(16, 4, rope=rope).double()
    x = torch.randn(2, 3, 7, 16, dtype=F64)
    positions = torch.randint(0, 64, (2, 3, 7))
    out = attn(x, positions)
    assert out.shape == x.shape
    torch.testing.assert_close(out[1, 2], attn(x[1, 2], positions[1, 2]), rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_reference_and_sdpa_backends_agree_forward_and_backward(dtype: torch.dtype) -> None:
    # float64 agrees to rounding; float32 to the stated 1e-5 (fused kernels reorder the sums)
    tol = {"rtol": 1e-10, "atol": 1e-10} if dtype == torch.float64 else {"rtol": 1e-5, "atol": 1e-5}
    rope = RotaryPositionalEmbedding(10000.0, 16, 64)
    ref = CausalSelfAttention(64, 4, rope=rope, backend="reference").to(dtype)
    fast = CausalSelfAttention(64, 4, rope=rope, backend="sdpa").to(dtype)
    fast.load_state_dict(ref.state_dict())
    assert ref.state_dict().keys() == fast.state_dict().keys()
    x = torch.randn(3, 20, 64, dtype=dtype)
    x_ref, x_fast = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_ref, out_fast = ref(x_ref), fast(x_fast)
    torch.testing.assert_close(out_fast, out_ref, **tol)
    grad_out = torch.randn_like(out_ref)
    out_ref.backward(grad_out)
    out_fast.backward(grad_out)
    torch.testing.assert_close(x_fast.grad, x_ref.grad, **tol)
    for (name, p_ref), p_fast in zip(ref.named_parameters(), fast.parameters(), strict=True):
        torch.testing.assert_close(p_fast.grad, p_ref.grad, **tol, msg=name)


def test_backends_agree_when_queries_are_the_tail_of_the_keys() -> None:
    # the cached-decoding shape: T new queries at the end of S positions
    q = torch.randn(2, 4, 3, 8, dtype=F64)
    k, v = torch.randn(2, 4, 10, 8, dtype=F64), torch.randn(2, 4, 10, 8, dtype=F64)
    for num_queries in (1, 3):
        qt = q[..., :num_queries, :]
        torch.testing.assert_close(
            sdpa_attention(qt, k, v, causal=True, dropout_p=0.0),
            reference_attention(qt, k, v, causal=True, dropout_p=0.0),
            rtol=1e-12,
            atol=1e-12,
        )


def test_backends_agree_on_an_explicit_padding_mask_forward_and_backward() -> None:
    # The left-padded KV-cache mask: row 0's first query may see no key at all, and reads nothing (zero), so
    # the pad positions' hidden states, and so their keys and values in the next layer, match across backends.
    torch.manual_seed(0)
    q, k, v = (torch.randn(2, 3, 4, 8, dtype=F64, requires_grad=True) for _ in range(3))
    mask_B1TS = torch.ones(2, 1, 4, 4, dtype=torch.bool).tril()
    mask_B1TS[0, :, :, :2] = False
    outs = {
        name: attend(q, k, v, causal=True, dropout_p=0.0, mask=mask_B1TS)
        for name, attend in (("reference", reference_attention), ("sdpa", sdpa_attention))
    }
    assert torch.equal(outs["reference"][0, :, :2], torch.zeros(3, 2, 8, dtype=F64))
    torch.testing.assert_close(outs["reference"], outs["sdpa"], rtol=1e-12, atol=1e-12)
    grads = {name: torch.autograd.grad(out.square().sum(), (q, k, v)) for name, out in outs.items()}
    for ours, theirs in zip(grads["reference"], grads["sdpa"], strict=True):
        torch.testing.assert_close(ours, theirs, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", sorted(ATTENTION_BACKENDS))
def test_changing_future_tokens_leaves_earlier_outputs_unchanged(backend: str) -> None:
    rope = RotaryPositionalEmbedding(10000.0, 8, 32)
    attn = CausalSelfAttention(32, 4, rope=rope, backend=backend).double()
    x = torch.randn(2, 12, 32, dtype=F64)
    perturbed = x.clone()
    perturbed[:, 7:] = torch.randn(2, 5, 32, dtype=F64) * 10
    out, out_perturbed = attn(x), attn(perturbed)
    torch.testing.assert_close(out[:, :7], out_perturbed[:, :7], rtol=0, atol=1e-12)
    assert not torch.allclose(out[:, 7:], out_perturbed[:, 7:])


def test_without_the_mask_earlier_outputs_see_the_future() -> None:
    attn = CausalSelfAttention(32, 4, causal=False).double()
    x = torch.randn(1, 6, 32, dtype=F64)
    perturbed = x.clone()
    perturbed[:, -1] += 5
    assert not torch.allclose(attn(x)[:, 0], attn(perturbed)[:, 0])


def test_bad_head_split_and_unknown_backend_are_rejected() -> None:
    with pytest.raises(ValueError, match="divisible"):
        CausalSelfAttention(30, 4)
    with pytest.raises(ValueError, match="backend"):
        CausalSelfAttention(32, 4, backend="flash9000")


def test_mha_gradients_match_the_independent_per_head_reference() -> None:
    rope = RotaryPositionalEmbedding(10000.0, 8, 32)
    attn = CausalSelfAttention(32, 4, rope=rope).double()
    x = torch.randn(2, 11, 32, dtype=F64)
    grad_out = torch.randn(2, 11, 32, dtype=F64)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    attn(x_ours).backward(grad_out)
    ours_grads = {name: p.grad.clone() for name, p in attn.named_parameters()}
    attn.zero_grad()
    # independent_mha reads the module's own parameter tensors, so after zeroing they hold its gradients
    independent_mha(attn, x_ref, torch.arange(11), 10000.0).backward(grad_out)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, rtol=1e-10, atol=1e-10)
    for name, p in attn.named_parameters():
        torch.testing.assert_close(ours_grads[name], p.grad, rtol=1e-10, atol=1e-10, msg=name)


@pytest.mark.parametrize("use_rope", [False, True])
def test_fused_qkv_shares_the_weights_and_agrees_forward_and_backward(use_rope: bool) -> None:
    rope = RotaryPositionalEmbedding(10000.0, 8, 32) if use_rope else None
    plain = CausalSelfAttention(32, 4, rope=rope).double()
    fused = CausalSelfAttention(32, 4, rope=rope, fused=True).double()
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())
    x = torch.randn(2, 9, 32, dtype=F64)
    grad_out = torch.randn(2, 9, 32, dtype=F64)
    x_plain, x_fused = x.clone().requires_grad_(), x.clone().requires_grad_()
    out_plain, out_fused = plain(x_plain), fused(x_fused)  # autograd records: the one-matmul path runs
    torch.testing.assert_close(out_fused, out_plain, rtol=1e-12, atol=1e-12)
    out_plain.backward(grad_out)
    out_fused.backward(grad_out)
    torch.testing.assert_close(x_fused.grad, x_plain.grad, rtol=1e-12, atol=1e-12)
    for (name, a), b in zip(plain.named_parameters(), fused.parameters(), strict=True):
        torch.testing.assert_close(b.grad, a.grad, rtol=1e-12, atol=1e-12, msg=name)
