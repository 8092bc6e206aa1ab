"""The from-scratch math ops against PyTorch's own, in float64, on fresh random inputs of several shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from scratchlm.errors import ShapeError
from scratchlm.nn.functional import (
    causal_mask,
    cross_entropy,
    dropout,
    gelu,
    log_softmax,
    perplexity,
    scaled_dot_product_attention,
    silu,
    softmax,
)

SHAPES = [(7,), (3, 5), (2, 4, 9), (2, 3, 4, 6)]
TOL = {"rtol": 1e-12, "atol": 1e-12}
F64 = torch.float64


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax_match_torch_on_every_dim(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64) * 5
    for dim in range(-len(shape), len(shape)):
        torch.testing.assert_close(softmax(x, dim), F.softmax(x, dim), **TOL)
        torch.testing.assert_close(log_softmax(x, dim), F.log_softmax(x, dim), **TOL)


def test_softmax_is_stable_for_huge_logits() -> None:
    x = torch.tensor([[1000.0, 1001.0, 1002.0], [-1e4, 0.0, 1e4]])
    out = softmax(x, -1)
    assert torch.isfinite(out).all()
    torch.testing.assert_close(out, F.softmax(x, -1))
    torch.testing.assert_close(log_softmax(x, -1), F.log_softmax(x, -1))


@pytest.mark.parametrize("shape", SHAPES)
def test_silu_matches_torch_values_and_gradients(shape: tuple[int, ...]) -> None:
    x = torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(silu(x), F.silu(x_ref), **TOL)
    silu(x).sum().backward()
    F.silu(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)


@pytest.mark.parametrize("shape", SHAPES)
def test_gelu_matches_torch_exact_gelu_values_and_gradients(shape: tuple[int, ...]) -> None:
    x = 3 * torch.randn(shape, dtype=torch.float64, requires_grad=True)
    x = x.detach().requires_grad_()
    x_ref = x.detach().clone().requires_grad_()
    torch.testing.assert_close(gelu(x), F.gelu(x_ref), **TOL)  # the erf form, not the tanh approximation
    gelu(x).sum().backward()
    F.gelu(x_ref).sum().backward()
    torch.testing.assert_close(x.grad, x_ref.grad, **TOL)


@pytest.mark.parametrize("batch_shape", [(5,), (2, 3), (2, 3, 4)])
def test_cross_entropy_matches_torch_over_any_batch_dims(batch_shape: tuple[int, ...]) -> None:
    vocab = 11
    logits = (torch.randn(*batch_shape, vocab, dtype=torch.float64) * 3).requires_grad_()
    targets = torch.randint(0, vocab, batch_shape)
    logits_ref = logits.detach().clone().requires_grad_()
    ours = cross_entropy(logits, targets)
    ref = F.cross_entropy(logits_ref.reshape(-1, vocab), targets.reshape(-1))
    torch.testing.assert_close(ours, ref, **TOL)
    ours.backward()
    ref.backward()
    torch.testing.assert_close(logits.grad, logits_ref.grad, **TOL)


def test_cross_entropy_ignores_ignore_index_like_torch() -> None:
    logits = torch.randn(4, 6, 9, dtype=torch.float64)
    targets = torch.randint(0, 9, (4, 6))
    targets[:, ::2] = -100
    ref = F.cross_entropy(logits.reshape(-1, 9), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(cross_entropy(logits, targets), ref, **TOL)


def test_cross_entropy_is_stable_and_upcasts_low_precision() -> None:
    logits = torch.tensor([[1e4, 0.0, -1e4], [0.0, 0.0, 1e4]])
    targets = torch.tensor([0, 1])
    loss = cross_entropy(logits, targets)
    assert torch.isfinite(loss)
    torch.testing.assert_close(loss, F.cross_entropy(logits, targets))
    bf16 = torch.randn(8, 50).to(torch.bfloat16)
    t = torch.randint(0, 50, (8,))
    assert cross_entropy(bf16, t).dtype == torch.float32
    torch.testing.assert_close(cross_entropy(bf16, t), F.cross_entropy(bf16.float(), t))


@pytest.mark.parametrize(
    ("logits", "targets", "names"),
    [
        (torch.randn(4, 5), torch.randint(0, 5, (3,)), "`logits`"),
        (torch.randn(4, 5), torch.rand(4), "`targets`"),
        (torch.randn(4, 5), torch.tensor([0, 1, 5, 2]), "`targets`"),
        (torch.randn(4, 5), torch.tensor([0, 1, -2, 2]), "`targets`"),
        (torch.tensor([[0.0, float("nan")], [1.0, 2.0]]), torch.tensor([0, 1]), "NaN"),
        (torch.randint(0, 3, (4, 5)), torch.randint(0, 5, (4,)), "`logits`"),
    ],
)
def test_cross_entropy_rejects_bad_inputs_naming_the_argument(
    logits: torch.Tensor, targets: torch.Tensor, names: str
) -> None:
    with pytest.raises(ShapeError, match=names):
        cross_entropy(logits, targets)


def test_perplexity_is_exp_of_mean_loss() -> None:
    losses = torch.tensor([1.0, 2.0, 3.0])
    assert perplexity(losses).item() == pytest.approx(math.exp(2.0))


def test_dropout_keeps_expectation_and_is_identity_in_eval() -> None:
    x = torch.ones(200_000, dtype=torch.float64)
    out = dropout(x, 0.25, training=True)
    assert set(out.unique().tolist()) <= {0.0, 1.0 / 0.75}
    assert out.mean().item() == pytest.approx(1.0, abs=0.01)
    assert (out == 0).float().mean().item() == pytest.approx(0.25, abs=0.01)
    assert dropout(x, 0.25, training=False) is x


def test_causal_mask_aligns_queries_to_the_last_keys() -> None:
    full = causal_mask(4, 4)
    assert torch.equal(full, torch.ones(4, 4, dtype=torch.bool).tril())
    # two new queries against six keys (cached decoding): query i sits at absolute position 4 + i
    partial = causal_mask(2, 6)
    assert torch.equal(partial, torch.ones(6, 6, dtype=torch.bool).tril()[4:])


@pytest.mark.parametrize("batch_shape", [(), (3,), (2, 4)])
@pytest.mark.parametrize("use_mask", [False, True])
def test_attention_matches_torch_sdpa(batch_shape: tuple[int, ...], use_mask: bool) -> None:
    q = torch.randn(*batch_shape, 5, 8, dtype=torch.float64, requires_grad=True)
    k = torch.randn(*batch_shape, 7, 8, dtype=torch.float64, requires_grad=True)
    v = torch.randn(*batch_shape, 7, 6, dtype=torch.float64, requires_grad=True)
    mask = torch.rand(5, 7) > 0.4 if use_mask else None
    if mask is not None:
        mask[:, 0] = True  # every query keeps at least one key (torch gives NaN rows otherwise)
    refs = [t.detach().clone().requires_grad_() for t in (q, k, v)]
    ours = scaled_dot_product_attention(q, k, v, mask)
    ref = F.scaled_dot_product_attention(*refs, attn_mask=mask)
    torch.testing.assert_close(ours, ref, **TOL)
    ours.square().sum().backward()
    ref.square().sum().backward()
    for mine, theirs in zip((q, k, v), refs, strict=True):
        torch.testing.assert_close(mine.grad, theirs.grad, **TOL)


def test_attention_masked_keys_get_zero_weight_and_full_masked_rows_stay_finite() -> None:
    q, k = torch.randn(3, 4), torch.randn(5, 4)
    v = torch.eye(5)  # the output row is then the attention distribution itself
    mask = torch.tensor([[1, 1, 0, 0, 0], [1, 0, 1, 0, 1], [0, 0, 0, 0, 0]], dtype=torch.bool)
    probs = scaled_dot_product_attention(q, k, v, mask)
    assert torch.all(probs[:2][~mask[:2]] == 0)
    torch.testing.assert_close(probs[:2].sum(-1), torch.ones(2))
    assert torch.isfinite(probs[2]).all()


def test_attention_rejects_mismatched_shapes_and_float_masks() -> None:
    with pytest.raises(ShapeError, match="`Q`"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(2, 5), torch.randn(2, 5))
    with pytest.raises(ShapeError, match="`V`"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(3, 4), torch.randn(2, 4))
    with pytest.raises(ShapeError, match="boolean"):
        scaled_dot_product_attention(torch.randn(2, 4), torch.randn(2, 4), torch.randn(2, 4), torch.ones(2, 2))


@pytest.mark.parametrize("shape", SHAPES)
def test_softmax_and_log_softmax_gradients_match_torch_on_every_dim(shape: tuple[int, ...]) -> None:
    # A random upstream gradient: with .sum() the softmax gradient is identically zero and proves nothing.
    gen = torch.Generator().manual_seed(len(shape))
    x = torch.randn(shape, dtype=F64, generator=gen) * 5
    grad_out = torch.randn(shape, dtype=F64, generator=gen)
    for ours_fn, ref_fn in ((softmax, F.softmax), (log_softmax, F.log_softmax)):
        for dim in range(-len(shape), len(shape)):
            x_ours, x_ref = x.clone().requires_grad_(), x.clone().requires_grad_()
            ours_fn(x_ours, dim).backward(grad_out)
            ref_fn(x_ref, dim).backward(grad_out)
            torch.testing.assert_close(x_ours.grad, x_ref.grad, **TOL, msg=f"{ours_fn.__name__} dim={dim}")


def test_cross_entropy_gradient_with_ignored_targets_and_tied_maxima_matches_torch() -> None:
    gen = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 6, 9, dtype=F64, generator=gen) * 3
    logits[0, 0, 2:5] = logits[0, 0].max() + 1.0  # three tied maxima: the detached shift must stay exact
    targets = torch.randint(0, 9, (4, 6), generator=gen)
    targets[:, ::2] = -100
    ours_in, ref_in = logits.clone().requires_grad_(), logits.clone().requires_grad_()
    ours = cross_entropy(ours_in, targets)
    ref = F.cross_entropy(ref_in.reshape(-1, 9), targets.reshape(-1), ignore_index=-100)
    torch.testing.assert_close(ours, ref, **TOL)
    (2.5 * ours).backward()  # a non-unit upstream gradient, so a missing chain-rule factor shows
    (2.5 * ref).backward()
    torch.testing.assert_close(ours_in.grad, ref_in.grad, **TOL)
    # the mean is over kept positions only, and an ignored position gets exactly no gradient
    assert ours_in.grad[:, ::2].abs().max() == 0


def test_dropout_gradient_is_the_kept_mask_rescaled() -> None:
    x = torch.randn(4000, dtype=F64, requires_grad=True)
    out = dropout(x, 0.25, training=True)
    out.backward(torch.ones_like(out))
    kept = out.detach() != 0
    torch.testing.assert_close(x.grad, kept.to(F64) / 0.75, rtol=0, atol=0)
    torch.testing.assert_close(out.detach()[kept], x.detach()[kept] / 0.75, **TOL)


def test_dropout_draws_the_mask_pytorch_draws_from_the_same_seed() -> None:
    # Relies on PyTorch's CPU dropout drawing its mask as one bernoulli_(1 - p) over an input-shaped tensor
    # (true since at least 2.4): then the same seed gives the same mask, and the outputs agree to rounding
    # (we divide x * keep by 1 - p, PyTorch multiplies x by keep / (1 - p)).
    x = torch.randn(3, 50, dtype=F64)
    torch.manual_seed(7)
    ours = dropout(x, 0.3, training=True)
    torch.manual_seed(7)
    ref = F.dropout(x, 0.3, training=True)
    torch.testing.assert_close(ours, ref, **TOL)


def test_cross_entropy_takes_masked_classes_and_narrow_integer_targets() -> None:
    logits = torch.tensor([[0.0, 1.0, float("-inf")], [2.0, float("-inf"), 0.5]])
    targets = torch.tensor([1, 0])
    assert torch.allclose(cross_entropy(logits, targets), F.cross_entropy(logits, targets))
    scores = torch.randn(4, 5)
    for dtype in (torch.uint8, torch.int8, torch.int16, torch.int32):
        narrow = torch.tensor([1, 2, 0, 4], dtype=dtype)
        assert torch.allclose(cross_entropy(scores, narrow), F.cross_entropy(scores, narrow.long()))
    for bad in (float("nan"), float("inf")):
        with pytest.raises(ShapeError, match="NaN or \\+Inf"):
            cross_entropy(torch.tensor([[0.0, bad]]), torch.tensor([0]))
