"""The fast path's fused operations (`ModelConfig.fast = true`), over the reference path's own parameters.

Each function takes the same weights the reference modules hold, so both paths share parameters, optimizer
state and the state-dict layout; only the order of the arithmetic changes:
- `qkv_projection`: one (D -> 3D) matmul against [W_q; W_k; W_v] instead of three (D -> D) ones;
- `swiglu_gate_up`: one (D -> 2F) matmul against [W_1; W_3] instead of two;
- `linear_cross_entropy`: the LM head and the loss chunk by chunk, so the (N, V) logits never exist at
  once (at vocab 10k and 128 x 256 tokens, fp32 logits alone are 1.3 GB).
Concatenating the weights costs one copy of them per call (autocast casts them to bf16 anyway), a small
price next to a training step's activations (3·D² elements against N·3·D for the QKV outputs) but not next
to a one-token decoding step, which reads each weight once: so the modules fuse per call only when autograd
is recording (`fuse_projections`). Decoding instead concatenates once per session
(`scratchlm.infer.packed_weights`) and calls the `packed_*` forms below, the same arithmetic without the copy.

Shapes: N = flattened tokens, D = d_model, F = d_ff, V = vocabulary. This file is outside the from-scratch
rule (it may use torch.nn.functional), like `sdpa.py`.
"""

from __future__ import annotations

from contextlib import nullcontext

import torch
import torch.nn.functional as F
from torch import Tensor

# Logit elements per chunk of the fused LM-head loss: 2^26 fp32 values = 256 MiB, 6,710 tokens at vocab
# 10k. Large enough that each chunk's three matmuls stay efficient, small enough to bound the memory.
LOSS_CHUNK_ELEMENTS = 1 << 26


def fuse_projections(fast: bool) -> bool:
    """Whether a fast-path module should take the fused projections now: in training, not in inference."""
    return fast and torch.is_grad_enabled()


def qkv_projection(x_BTD: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(q, k, v), each (..., T, D), from one matmul; identical to x @ W_q.T, x @ W_k.T, x @ W_v.T."""
    return qkv_matmul(x_BTD, w_q, w_k, w_v).split((w_q.shape[0], w_k.shape[0], w_v.shape[0]), dim=-1)  # type: ignore[return-value]


def qkv_matmul(x_BTD: Tensor, w_q: Tensor, w_k: Tensor, w_v: Tensor) -> Tensor:
    """x @ [W_q; W_k; W_v].T, (..., T, 3D): q, k and v side by side, as the Triton RoPE kernel reads them."""
    return x_BTD @ torch.cat((w_q, w_k, w_v)).T


def packed_qkv_projection(x_BTD: Tensor, w_qkv: Tensor, sizes: tuple[int, int, int]) -> tuple[Tensor, Tensor, Tensor]:
    """`qkv_projection` over an already concatenated [W_q; W_k; W_v]; sizes are the three row counts."""
    return (x_BTD @ w_qkv.T).split(sizes, dim=-1)  # type: ignore[return-value]


def swiglu_gate_up(x_BTD: Tensor, w_1: Tensor, w_3: Tensor) -> Tensor:
    """SiLU(x W_1.T) * (x W_3.T), (..., T, F), from one (D -> 2F) matmul."""
    return packed_swiglu_gate_up(x_BTD, torch.cat((w_1, w_3)))


def packed_swiglu_gate_up(x_BTD: Tensor, w_13: Tensor) -> Tensor:
    """`swiglu_gate_up` over an already concatenated [W_1; W_3] (2F, D)."""
    gate_up_BT2F = x_BTD @ w_13.T
    if gate_up_BT2F.requires_grad and not torch.compiler.is_compiling():
        return _SiLUGateTimesUp.apply(gate_up_BT2F)
    gate_BTF, up_BTF = gate_up_BT2F.chunk(2, dim=-1)
    return F.silu(gate_BTF) * up_BTF


class _SiLUGateTimesUp(torch.autograd.Function):
    """SiLU(gate) * up over the (..., 2F) gate|up matmul output, keeping only that output for backward.

    Autograd over `silu(gate) * up` with the from-scratch SiLU keeps gate|up (2F per token, alive through
    the chunk views) plus sigmoid(gate) and silu(gate) (F each): 4F, and 5F with the product W_2's matmul
    keeps. Recomputing SiLU in the backward (pointwise work on F elements, against the 2·D·F-FLOP matmuls
    on either side) keeps 3F, a third less of the FFN's activations. Eager runs only: under torch.compile,
    inductor's partitioner chooses what to keep and recompute itself (and Dynamo cannot trace the `out=`
    views below). The backward writes both halves of the gradient into one (..., 2F) buffer, where a `cat`
    would copy them again; its first version, separate pointwise ops and a `cat`, was 20% slower on CPU
    than autograd's (NOTES.md §8).
    """

    @staticmethod
    def forward(ctx: torch.autograd.function.FunctionCtx, gate_up_BT2F: Tensor) -> Tensor:  # type: ignore[override]
        ctx.save_for_backward(gate_up_BT2F)
        gate_BTF, up_BTF = gate_up_BT2F.chunk(2, dim=-1)
        return F.silu(gate_BTF) * up_BTF

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_BTF: Tensor) -> Tensor:  # type: ignore[override]
        (gate_up_BT2F,) = ctx.saved_tensors  # type: ignore[attr-defined]
        gate_BTF, up_BTF = gate_up_BT2F.chunk(2, dim=-1)
        f = gate_BTF.shape[-1]
        grad_BT2F = torch.empty_like(gate_up_BT2F)
        torch.mul(grad_BTF, F.silu(gate_BTF), out=grad_BT2F[..., f:])
        # d silu(g)/dg = s·(1 + g·(1 - s)), s = sigmoid(g), times d/d silu = grad · up, in one kernel.
        torch.ops.aten.silu_backward.grad_input(grad_BTF * up_BTF, gate_BTF, grad_input=grad_BT2F[..., :f])
        return grad_BT2F


class _LinearCrossEntropy(torch.autograd.Function):
    """Mean cross-entropy of (h W.T) against targets, with both gradients computed in the forward pass.

    For each chunk of tokens: logits in the compute dtype (fp32 accumulation inside the matmul), then in
    fp32 the log-sum-exp, the loss, and d(loss_sum)/d(logits) = softmax - onehot; the two gradient matmuls
    follow at once, so only the chunk's logits are ever alive. The backward pass only scales the saved
    gradients by d(out)/d(loss) / n_valid. Same FLOPs as the unfused head (one forward and two backward
    matmuls per chunk), a fraction of the memory.
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: torch.autograd.function.FunctionCtx,
        h_ND: Tensor,
        w_VD: Tensor,
        targets_N: Tensor,
        ignore_index: int,
        compute_dtype: torch.dtype,
        chunk_tokens: int,
        with_grad: bool,
    ) -> Tensor:
        h_c_ND, w_c_VD = h_ND.to(compute_dtype), w_VD.to(compute_dtype)
        accumulate_dtype = torch.promote_types(compute_dtype, torch.float32)
        grad_h_ND = torch.empty_like(h_c_ND) if with_grad else h_c_ND.new_empty(0)
        grad_w_VD = torch.zeros(w_VD.shape if with_grad else 0, dtype=accumulate_dtype, device=w_VD.device)
        loss_sum = torch.zeros((), dtype=accumulate_dtype, device=h_ND.device)
        valid_N = targets_N != ignore_index
        safe_targets_N1 = torch.where(valid_N, targets_N, 0).unsqueeze(-1)
        for start in range(0, h_ND.shape[0], chunk_tokens):
            rows = slice(start, start + chunk_tokens)
            logits_CV = (h_c_ND[rows] @ w_c_VD.T).to(accumulate_dtype)
            lse_C = torch.logsumexp(logits_CV, dim=-1)
            target_logit_C = logits_CV.gather(-1, safe_targets_N1[rows]).squeeze(-1)
            loss_sum = loss_sum + torch.where(valid_N[rows], lse_C - target_logit_C, 0.0).sum()
            if not with_grad:  # evaluation: the loss alone, a third of the matmuls
                continue
            # softmax - onehot, with ignored rows zeroed: the gradient of this chunk's summed loss.
            grad_logits_CV = (logits_CV - lse_C.unsqueeze(-1)).exp()
            grad_logits_CV = grad_logits_CV.scatter_add(
                -1, safe_targets_N1[rows], torch.full_like(target_logit_C, -1.0).unsqueeze(-1)
            )
            grad_logits_CV = (grad_logits_CV * valid_N[rows].unsqueeze(-1)).to(compute_dtype)
            grad_h_ND[rows] = grad_logits_CV @ w_c_VD
            grad_w_VD += (grad_logits_CV.T @ h_c_ND[rows]).to(accumulate_dtype)
        n_valid = valid_N.sum().to(accumulate_dtype)
        ctx.save_for_backward(grad_h_ND, grad_w_VD, n_valid)
        ctx.input_dtypes = (h_ND.dtype, w_VD.dtype)
        return loss_sum / n_valid  # 0/0 = nan when every target is ignored, as the reference loss

    @staticmethod
    def backward(ctx: torch.autograd.function.FunctionCtx, grad_loss: Tensor):  # type: ignore[override]
        grad_h_ND, grad_w_VD, n_valid = ctx.saved_tensors  # type: ignore[attr-defined]
        h_dtype, w_dtype = ctx.input_dtypes  # type: ignore[attr-defined]
        scale = grad_loss / n_valid
        return (grad_h_ND * scale).to(h_dtype), (grad_w_VD * scale).to(w_dtype), None, None, None, None, None


def autocast_dtype(device_type: str) -> torch.dtype | None:
    """The dtype autocast runs matmuls in on this device type, or None when it is off. "meta" (which
    `analysis.activations` runs the model on) has no autocast at all, where asking would raise."""
    if torch.amp.is_autocast_available(device_type) and torch.is_autocast_enabled(device_type):
        return torch.get_autocast_dtype(device_type)
    return None


def linear_cross_entropy(
    h_BTD: Tensor, w_VD: Tensor, targets_BT: Tensor, *, ignore_index: int = -100, chunk_tokens: int | None = None
) -> Tensor:
    """cross_entropy(h @ w.T, targets) without the full logits; under autocast the matmuls run in its dtype.

    h: (..., D) final hidden states; w: (V, D) the LM head; targets: (...) ids or `ignore_index`.
    """
    device_type = h_BTD.device.type
    compute_dtype = autocast_dtype(device_type) or torch.promote_types(h_BTD.dtype, w_VD.dtype)
    if chunk_tokens is None:
        chunk_tokens = max(1, LOSS_CHUNK_ELEMENTS // w_VD.shape[0])
    h_ND = h_BTD.reshape(-1, h_BTD.shape[-1])
    targets_N = targets_BT.reshape(-1)
    # Autocast off inside: the function casts explicitly, and its fp32 softmax must stay fp32.
    no_autocast = torch.autocast(device_type, enabled=False) if autocast_dtype(device_type) else nullcontext()
    with no_autocast:
        with_grad = torch.is_grad_enabled() and (h_ND.requires_grad or w_VD.requires_grad)
        loss = _LinearCrossEntropy.apply(h_ND, w_VD, targets_N, ignore_index, compute_dtype, chunk_tokens, with_grad)
    return loss
