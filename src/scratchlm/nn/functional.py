"""Reference math for a transformer LM, written from tensor primitives.

The from-scratch rule holds in this file: nothing from `torch.nn.functional`, `torch.nn` layers or
`torch.optim` (tests/test_from_scratch_rule.py checks it). Shapes: `...` is any number of leading batch
dims; in names, Q = query positions, K = key positions, D = feature dim, V = vocabulary.
"""

from __future__ import annotations

import math

import torch
from einops import einsum
from torch import Tensor

from scratchlm.errors import ShapeError


def softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable softmax along `dim`: x of any shape -> the same shape, each slice along `dim`
    summing to 1."""
    # Subtracting the max makes the largest exponent exp(0) = 1: no overflow to inf, and softmax is
    # invariant to the shift.
    exp = (x - x.amax(dim=dim, keepdim=True)).exp()
    return exp / exp.sum(dim=dim, keepdim=True)


def log_softmax(x: Tensor, dim: int = -1) -> Tensor:
    """Numerically stable log-softmax along `dim`, same shape as x: x - max - log(sum(exp(x - max))).

    Never log(softmax(x)): a probability that underflows to 0 would give -inf where the answer is finite.
    """
    shifted = x - x.amax(dim=dim, keepdim=True)
    return shifted - shifted.exp().sum(dim=dim, keepdim=True).log()


def silu(x: Tensor) -> Tensor:
    """SiLU / swish: x * sigmoid(x)."""
    return x * torch.sigmoid(x)


def gelu(x: Tensor) -> Tensor:
    """GELU, the exact form x * Phi(x) = x/2 * (1 + erf(x / sqrt 2)) (GPT-2's MLP; nanoGPT's `nn.GELU()`)."""
    return 0.5 * x * (1.0 + torch.erf(x * (1.0 / math.sqrt(2.0))))


def dropout(x: Tensor, p: float, training: bool) -> Tensor:
    """Inverted dropout, any shape: zero each element with probability p, rescale survivors by 1/(1-p).

    Rescaling at training time keeps every element's expectation, so evaluation is the identity.
    """
    if not training or p == 0.0:
        return x
    keep = torch.empty_like(x).bernoulli_(1.0 - p)
    return x * keep / (1.0 - p)


def cross_entropy(logits: Tensor, targets: Tensor, *, ignore_index: int = -100, validate: bool = True) -> Tensor:
    """Mean negative log-likelihood of `targets` under `logits`.

    logits: (..., V) unnormalized scores; targets: (...) integer class ids. Positions whose target equals
    `ignore_index` are left out of the mean (padding, or non-action tokens in a unified sequence).
    With every target ignored the mean is 0/0 = nan, as in torch. `validate` checks ids and finiteness (two
    host syncs); hot loops that validated their inputs upstream pass False.
    """
    if validate:
        _check_cross_entropy_inputs(logits, targets, ignore_index)
    if targets.dtype not in (torch.int32, torch.int64):
        targets = targets.long()  # gather takes no uint8 / int8 / int16 index
    if logits.dtype in (torch.float16, torch.bfloat16):
        logits = logits.float()  # log-sum-exp over a 10k vocabulary is not safe in 8 mantissa bits
    # The max is detached: log-sum-exp's derivative w.r.t. the shift is exactly zero, so this is exact
    # and spares autograd the ties of amax.
    shifted_V = logits - logits.amax(dim=-1, keepdim=True).detach()
    log_normalizer = shifted_V.exp().sum(dim=-1).log()
    keep = targets != ignore_index
    safe_targets = torch.where(keep, targets, torch.zeros_like(targets))
    target_score = shifted_V.gather(-1, safe_targets.unsqueeze(-1)).squeeze(-1)
    nll = (log_normalizer - target_score) * keep
    return nll.sum() / keep.sum()


def _check_cross_entropy_inputs(logits: Tensor, targets: Tensor, ignore_index: int) -> None:
    if not logits.is_floating_point():
        raise ShapeError(f"cross_entropy: `logits` must be a float tensor, got {logits.dtype}.")
    if targets.is_floating_point() or targets.dtype == torch.bool:
        raise ShapeError(
            f"cross_entropy: `targets` must hold integer class ids, got {targets.dtype}; convert with targets.long()."
        )
    if logits.shape[:-1] != targets.shape:
        raise ShapeError(
            f"cross_entropy: `logits` {tuple(logits.shape)} must be `targets` {tuple(targets.shape)} "
            "plus a trailing vocabulary dim."
        )
    if torch.compiler.is_compiling():
        return  # data-dependent checks would break the graph; eager runs catch these mistakes
    vocab = logits.shape[-1]
    real = targets[targets != ignore_index]
    if real.numel() and (int(real.min()) < 0 or int(real.max()) >= vocab):
        raise ShapeError(
            f"cross_entropy: `targets` holds ids in [{int(real.min())}, {int(real.max())}] but `logits` "
            f"has a vocabulary of {vocab}; every id must lie in [0, {vocab})."
        )
    # -inf is a masked-out class (as in F.cross_entropy); NaN and +inf say something went wrong.
    if bool((torch.isnan(logits) | torch.isposinf(logits)).any()):
        raise ShapeError(
            "cross_entropy: `logits` contains NaN or +Inf; the model diverged or its inputs are corrupt "
            "(lower the learning rate or check the data)."
        )


MAX_LOG_PERPLEXITY = 50.0  # exp(50) ~ 5e21 already says "diverged"; math.exp overflows past ~709


def perplexity_from_loss(loss: float) -> float:
    """exp(loss) of a mean loss in nats, capped at exp(MAX_LOG_PERPLEXITY) so a diverged run's loss reports a
    huge perplexity instead of raising OverflowError."""
    return math.exp(min(loss, MAX_LOG_PERPLEXITY))


def perplexity(losses: Tensor) -> Tensor:
    """exp of the mean of (...) per-token cross-entropies, in float32 (a scalar mean loss is accepted as is)."""
    return losses.float().mean().exp()


def causal_mask(num_queries: int, num_keys: int, device: torch.device | str | None = None) -> Tensor:
    """(Q, K) boolean mask, True where a query may attend.

    Queries are the last `num_queries` of the `num_keys` positions (aligned bottom-right), so the same
    mask serves full training sequences (Q == K) and cached decoding (Q < K).
    """
    query_pos_Q1 = torch.arange(num_keys - num_queries, num_keys, device=device).unsqueeze(-1)
    key_pos_1K = torch.arange(num_keys, device=device).unsqueeze(0)
    return key_pos_1K <= query_pos_Q1


def scaled_dot_product_attention(
    q_QD: Tensor,
    k_KD: Tensor,
    v_KD: Tensor,
    mask_QK: Tensor | None = None,
    *,
    dropout_p: float = 0.0,
    training: bool = False,
) -> Tensor:
    """softmax(q k^T / sqrt(D), masked) v over any leading batch dims.

    q: (..., Q, D), k: (..., K, D), v: (..., K, Dv); mask: boolean, broadcastable to (..., Q, K),
    True = may attend. Returns (..., Q, Dv).
    """
    if q_QD.shape[-1] != k_KD.shape[-1]:
        raise ShapeError(f"attention: `Q` feature dim {q_QD.shape[-1]} differs from `K` feature dim {k_KD.shape[-1]}.")
    if k_KD.shape[-2] != v_KD.shape[-2]:
        raise ShapeError(
            f"attention: `K` has {k_KD.shape[-2]} positions but `V` has {v_KD.shape[-2]}; they must match."
        )
    scores_QK = einsum(q_QD, k_KD, "... q d, ... k d -> ... q k") / math.sqrt(q_QD.shape[-1])
    if mask_QK is not None:
        if mask_QK.dtype != torch.bool:
            raise ShapeError(f"attention: `mask` must be boolean (True = may attend), got {mask_QK.dtype}.")
        # A finite fill instead of -inf: a query with every key masked (a left-padding query) softmaxes to a
        # uniform row instead of NaNs that would poison the whole batch (other masked keys get exactly 0).
        scores_QK = scores_QK.masked_fill(~mask_QK, torch.finfo(scores_QK.dtype).min)
    probs_QK = dropout(softmax(scores_QK, dim=-1), dropout_p, training)
    out_QD = einsum(probs_QK, v_KD, "... q k, ... k d -> ... q d")
    if mask_QK is None:
        return out_QD
    # ...and that query then reads nothing (output 0), as torch's sdpa returns: zeroed on the (Q, D) output,
    # not on the (Q, K) probabilities, which would cost a second full-size pass on every training step.
    return out_QD * mask_QK.any(dim=-1, keepdim=True)
