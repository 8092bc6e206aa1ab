"""Linear, Embedding, norms and FFNs against PyTorch's own ops (float64), plus their initialization."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchlm.nn.ffn import MLP, SwiGLU, default_d_ff
from scratchlm.nn.layers import Embedding, LayerNorm, Linear, NoNorm, RMSNorm

TOL = {"rtol": 1e-12, "atol": 1e-12}
F64 = torch.float64


@pytest.mark.parametrize("batch_shape", [(), (4,), (2, 3), (2, 3, 5)])
def test_linear_matches_f_linear_with_weight_stored_out_by_in(batch_shape: tuple[int, ...]) -> None:
    layer = Linear(6, 9, dtype=F64)
    assert layer.weight.shape == (9, 6)
    x = torch.randn(*batch_shape, 6, dtype=F64)
    torch.testing.assert_close(layer(x), F.linear(x, layer.weight), **TOL)


def test_linear_init_is_truncated_glorot_normal() -> None:
    layer = Linear(300, 500)
    std = math.sqrt(2 / (300 + 500))
    w = layer.weight.detach()
    assert w.abs().max().item() <= 3 * std + 1e-7
    # a normal truncated at 3 sigma has std 0.9866 sigma
    assert w.std().item() == pytest.approx(0.9866 * std, rel=0.02)
    before = w.clone()
    layer.reset_parameters()
    assert not torch.equal(before, layer.weight)


def test_embedding_matches_f_embedding_and_init() -> None:
    emb = Embedding(50, 8, dtype=F64)
    ids = torch.randint(0, 50, (3, 7))
    torch.testing.assert_close(emb(ids), F.embedding(ids, emb.weight), **TOL)
    big = Embedding(1000, 256).weight.detach()
    assert big.abs().max().item() <= 3.0
    assert big.std().item() == pytest.approx(0.9866, rel=0.02)


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3), (2, 3, 4)])
def test_rmsnorm_matches_torch_rms_norm(batch_shape: tuple[int, ...]) -> None:
    norm = RMSNorm(16, eps=1e-5, dtype=F64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, dtype=F64))
    x = torch.randn(*batch_shape, 16, dtype=F64) * 3
    ref = x / torch.sqrt(x.pow(2).mean(-1, keepdim=True) + 1e-5) * norm.weight
    torch.testing.assert_close(norm(x), ref, **TOL)
    torch.testing.assert_close(norm(x), F.rms_norm(x, (16,), norm.weight, eps=1e-5), **TOL)


def test_rmsnorm_computes_in_float32_and_returns_the_input_dtype() -> None:
    norm = RMSNorm(64)
    x = (torch.randn(4, 64) * 300).to(torch.bfloat16)  # squares overflow nothing in fp32, but lose bits in bf16
    out = norm(x)
    assert out.dtype == torch.bfloat16
    expected = F.rms_norm(x.float(), (64,), norm.weight, eps=1e-5).to(torch.bfloat16)
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    for scale in (1e-6, 1e6):  # eps dominates tiny inputs, squares would overflow fp16 at huge ones
        x = torch.randn(8, 64) * scale
        x64 = x.double()
        expected = x64 / torch.sqrt(x64.pow(2).mean(-1, keepdim=True) + 1e-5)
        torch.testing.assert_close(norm(x).double(), expected, rtol=1e-5, atol=1e-9)


def test_no_norm_is_the_identity() -> None:
    x = torch.randn(3, 4)
    assert NoNorm()(x) is x


@pytest.mark.parametrize("batch_shape", [(7,), (2, 5), (2, 3, 4)])
def test_swiglu_and_the_mlps_match_torch_compositions(batch_shape: tuple[int, ...]) -> None:
    x = torch.randn(*batch_shape, 16, dtype=F64)
    swiglu = SwiGLU(16, 48, dtype=F64)
    ref = F.linear(F.silu(F.linear(x, swiglu.w1.weight)) * F.linear(x, swiglu.w3.weight), swiglu.w2.weight)
    torch.testing.assert_close(swiglu(x), ref, **TOL)
    mlp = MLP(16, 64, dtype=F64, activation="silu")
    torch.testing.assert_close(mlp(x), F.linear(F.silu(F.linear(x, mlp.w1.weight)), mlp.w2.weight), **TOL)
    gelu_mlp = MLP(16, 64, dtype=F64, activation="gelu")
    ref = F.linear(F.gelu(F.linear(x, gelu_mlp.w1.weight)), gelu_mlp.w2.weight)
    torch.testing.assert_close(gelu_mlp(x), ref, **TOL)


def test_mlp_rejects_an_unknown_activation() -> None:
    with pytest.raises(ValueError, match="unknown MLP activation 'relu'"):
        MLP(16, 64, activation="relu")


def test_default_d_ff_is_eight_thirds_rounded_to_64_and_matches_parameter_counts() -> None:
    assert default_d_ff(512) == 1344  # the CS336 TinyStories value
    assert default_d_ff(768) == 2048
    assert all(default_d_ff(d) % 64 == 0 for d in (32, 100, 256, 384, 1000))
    assert default_d_ff(256, "silu") == default_d_ff(256, "gelu") == 1024
    # SwiGLU (3 matrices at ~8/3 d) and the SiLU MLP (2 at 4 d) hold the same 8 d^2 parameters
    d = 768
    assert 3 * d * default_d_ff(d) == 2 * d * default_d_ff(d, "silu")


def _grads_match(
    ours: torch.nn.Module, reference_fn, x: torch.Tensor, params: dict[str, torch.Tensor], tol: dict = TOL
) -> None:
    """Backpropagate one random upstream gradient through `ours(x)` and `reference_fn(x, **params)` (the same
    values as leaf copies) and compare the gradients of x and of every parameter by name."""
    gen = torch.Generator().manual_seed(1)
    x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
    ref_params = {name: p.detach().clone().requires_grad_() for name, p in params.items()}
    out_ours, out_ref = ours(x_ours), reference_fn(x_ref, **ref_params)
    torch.testing.assert_close(out_ours, out_ref, **tol)
    grad_out = torch.randn(out_ref.shape, dtype=out_ref.dtype, generator=gen)
    out_ours.backward(grad_out)
    out_ref.backward(grad_out)
    torch.testing.assert_close(x_ours.grad, x_ref.grad, **tol, msg="input")
    own = dict(ours.named_parameters())
    assert own.keys() == ref_params.keys()
    for name, p in ref_params.items():
        torch.testing.assert_close(own[name].grad, p.grad, **tol, msg=name)


def test_linear_gradients_match_f_linear() -> None:
    layer = Linear(6, 9, dtype=F64)
    x = torch.randn(2, 3, 6, dtype=F64)
    _grads_match(layer, lambda x, weight: F.linear(x, weight), x, {"weight": layer.weight})


def test_embedding_gradient_accumulates_repeated_ids_like_f_embedding() -> None:
    emb = Embedding(10, 4, dtype=F64)
    ids = torch.tensor([[1, 3, 1, 1], [9, 3, 0, 1]])  # repeated ids must sum their gradients, unused rows get 0
    out, ref_weight = emb(ids), emb.weight.detach().clone().requires_grad_()
    ref = F.embedding(ids, ref_weight)
    grad_out = torch.randn(out.shape, dtype=F64)
    out.backward(grad_out)
    ref.backward(grad_out)
    torch.testing.assert_close(emb.weight.grad, ref_weight.grad, **TOL)
    assert emb.weight.grad[[2, 4, 5, 6, 7, 8]].abs().max() == 0


def test_rmsnorm_gradients_match_torch_rms_norm() -> None:
    norm = RMSNorm(16, eps=1e-5, dtype=F64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(16, dtype=F64))
    x = torch.randn(2, 3, 16, dtype=F64) * 3
    _grads_match(norm, lambda x, weight: F.rms_norm(x, (16,), weight, eps=1e-5), x, {"weight": norm.weight})


def test_layernorm_gradients_match_f_layer_norm() -> None:
    norm = LayerNorm(12, eps=1e-5, dtype=F64)
    with torch.no_grad():
        norm.weight.copy_(torch.randn(12, dtype=F64))
        norm.bias.copy_(torch.randn(12, dtype=F64))
    x = torch.randn(3, 5, 12, dtype=F64) * 2 + 1

    def reference(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        return F.layer_norm(x, (12,), weight, bias, eps=1e-5)

    _grads_match(norm, reference, x, {"weight": norm.weight, "bias": norm.bias})


def test_swiglu_and_the_mlps_gradients_match_torch_compositions() -> None:
    x = torch.randn(2, 5, 16, dtype=F64)
    swiglu = SwiGLU(16, 48, dtype=F64)

    def swiglu_ref(x: torch.Tensor, **w: torch.Tensor) -> torch.Tensor:
        return F.linear(F.silu(F.linear(x, w["w1.weight"])) * F.linear(x, w["w3.weight"]), w["w2.weight"])

    _grads_match(swiglu, swiglu_ref, x, dict(swiglu.named_parameters()))
    for activation, act in (("silu", F.silu), ("gelu", F.gelu)):
        mlp = MLP(16, 64, dtype=F64, activation=activation)

        def mlp_ref(x: torch.Tensor, act=act, **w: torch.Tensor) -> torch.Tensor:
            return F.linear(act(F.linear(x, w["w1.weight"])), w["w2.weight"])

        _grads_match(mlp, mlp_ref, x, dict(mlp.named_parameters()))


def test_fused_swiglu_shares_the_weights_and_agrees_forward_and_backward() -> None:
    plain = SwiGLU(16, 48, dtype=F64)
    fused = SwiGLU(16, 48, dtype=F64, fused=True)
    assert list(fused.state_dict()) == list(plain.state_dict())
    fused.load_state_dict(plain.state_dict())

    def plain_fn(x: torch.Tensor, **w: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(plain, w, (x,))

    # fused only while autograd records, which _grads_match's forward does: the one-matmul path is taken
    _grads_match(fused, plain_fn, torch.randn(3, 7, 16, dtype=F64), dict(plain.named_parameters()))


def test_a_norm_name_without_a_layer_is_an_error_not_a_silent_identity() -> None:
    from scratchlm.errors import ConfigError
    from scratchlm.nn.layers import NoNorm, build_norm

    assert isinstance(build_norm("none", 8, 1e-5, None, None), NoNorm)
    with pytest.raises(ConfigError, match="no norm layer is built for 'scalenorm'"):
        build_norm("scalenorm", 8, 1e-5, None, None)


def test_embedding_and_rope_read_narrow_integer_ids_as_ids_not_masks() -> None:
    from scratchlm.errors import ShapeError
    from scratchlm.nn.positions import RotaryPositionalEmbedding

    embedding = Embedding(5, 3)
    ids = torch.tensor([1, 0, 1, 1, 0])
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        assert torch.equal(embedding(ids.to(dtype)), embedding.weight[ids])  # uint8 once selected rows as a mask
    with pytest.raises(ShapeError, match="must be integers"):
        embedding(ids.float())
    rope = RotaryPositionalEmbedding(theta=10000.0, d_k=8, max_seq_len=16)
    x = torch.randn(2, 4, 8)
    positions = torch.tensor([3, 0, 2, 1])
    assert torch.equal(rope(x, positions.to(torch.uint8)), rope(x, positions))
