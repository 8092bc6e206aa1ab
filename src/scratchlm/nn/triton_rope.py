"""A Triton kernel for the fast path: split the fused QKV output into heads and rotate q and k in one pass.

Why this one kernel: in the compiled tinystories-17m step (benchmarks/NOTES.md §3a), inductor's own fused
kernels for RMSNorm and SwiGLU already move their bytes at 2.1-3.0 TB/s against the card's 3.0 TB/s copy
rate, so a hand kernel could not beat them; the kernel that splits (B, T, 3D) into q, k, v, rotates q and
k and permutes to (B, H, T, Dh) ran at about half that. Here one program moves a (BLOCK_T, Dh) tile of one
head for all of q, k and v: each pair (x[2i], x[2i+1]) is read once, rotated in float32 (float64 for
float64 data or tables), and written once in the input dtype, reads and writes in runs of Dh contiguous
elements.

The backward pass is the same move in reverse: gradients in (B, H, T, Dh) go back into the packed (B, T, 3D)
layout, q and k rotated by the negative angle (a rotation's inverse is its transpose).

`rope_split_heads` is what `CausalSelfAttention` calls when `ModelConfig.kernels = "triton"`; it is a
`torch.library.triton_op`, so torch.compile sees the kernel rather than an opaque call, and its autograd
formula is the backward kernel. It runs on CUDA devices, or on the CPU under `TRITON_INTERPRET=1` (Triton's
interpreter, which the tests use: slow, exact). Same numbers as the reference path: RotaryPositionalEmbedding
after `rearrange(..., "t (h d) -> h t d")`.

Shapes: N = flattened leading dims, T = positions, D = d_model, H = heads, Dh = head dim, P = Dh / 2 pairs.
"""

from __future__ import annotations

import os

import torch
import triton
import triton.language as tl
from torch import Tensor
from torch.library import triton_op, wrap_triton

from scratchlm.errors import ConfigError

# Positions per program: with Dh = 32 a tile is 64 x 32 elements per tensor, enough bytes in flight per
# program at this size without spilling registers.
BLOCK_T = 64
INTERPRETING = os.environ.get("TRITON_INTERPRET", "0") == "1"


@triton.jit
def _rotate_pairs(src_ptr, dst_ptr, src_rows, dst_rows, even, cos, sin, mask):
    # cos and sin arrive in the compute dtype (float32, or float64 when data or tables are float64).
    a = tl.load(src_ptr + src_rows + even, mask=mask, other=0.0).to(cos.dtype)
    b = tl.load(src_ptr + src_rows + even + 1, mask=mask, other=0.0).to(cos.dtype)
    out_ty = dst_ptr.dtype.element_ty
    tl.store(dst_ptr + dst_rows + even, (a * cos - b * sin).to(out_ty), mask=mask)
    tl.store(dst_ptr + dst_rows + even + 1, (a * sin + b * cos).to(out_ty), mask=mask)


@triton.jit
def _copy_pairs(src_ptr, dst_ptr, src_rows, dst_rows, even, mask):
    # v is only moved: no arithmetic, so inf/nan stay where they are, and the dtype is unchanged.
    tl.store(dst_ptr + dst_rows + even, tl.load(src_ptr + src_rows + even, mask=mask), mask=mask)
    tl.store(dst_ptr + dst_rows + even + 1, tl.load(src_ptr + src_rows + even + 1, mask=mask), mask=mask)


@triton.jit
def _rope_move_kernel(
    packed_ptr, q_ptr, k_ptr, v_ptr, cos_ptr, sin_ptr, pos_ptr,
    T, D, packed_sn, packed_st, heads_sn, heads_sh, heads_st, pos_sn, sign,
    H: tl.constexpr, PAIRS: tl.constexpr, PAIRS_P2: tl.constexpr, BLOCK: tl.constexpr, FP64: tl.constexpr,
    TO_HEADS: tl.constexpr,
):  # fmt: skip
    # One program: positions [BLOCK * pid0, + BLOCK) of head (pid1 % H) of row (pid1 // H), for q, k and v.
    # Element (n, h, t, 2i) of q lives at packed[n, t, h·Dh + 2i] (k at + D, v at + 2D) and at
    # q[n, h, t, 2i]; the strides say where, and the last dim is contiguous on both sides.
    # TO_HEADS: packed -> heads (forward); else heads -> packed (backward, with sign = -1).
    nh = tl.program_id(1).to(tl.int64)
    n, h = nh // H, nh % H
    t = tl.program_id(0) * BLOCK + tl.arange(0, BLOCK)
    pair = tl.arange(0, PAIRS_P2)
    t_ok = t < T
    mask = t_ok[:, None] & (pair[None, :] < PAIRS)
    positions = tl.load(pos_ptr + n * pos_sn + t, mask=t_ok, other=0)
    table = positions[:, None] * PAIRS + pair[None, :]
    cos = tl.load(cos_ptr + table, mask=mask, other=1.0)
    sin = tl.load(sin_ptr + table, mask=mask, other=0.0) * sign
    # The compute dtype, as the reference path's: float32 at least, float64 if data or tables are float64.
    if FP64:
        cos, sin = cos.to(tl.float64), sin.to(tl.float64)
    else:
        cos, sin = cos.to(tl.float32), sin.to(tl.float32)
    packed_rows = (n * packed_sn + t * packed_st)[:, None] + h * (2 * PAIRS)
    heads_rows = (n * heads_sn + h * heads_sh + t * heads_st)[:, None]
    even = 2 * pair[None, :]
    if TO_HEADS:
        _rotate_pairs(packed_ptr, q_ptr, packed_rows, heads_rows, even, cos, sin, mask)
        _rotate_pairs(packed_ptr + D, k_ptr, packed_rows, heads_rows, even, cos, sin, mask)
        _copy_pairs(packed_ptr + 2 * D, v_ptr, packed_rows, heads_rows, even, mask)
    else:
        _rotate_pairs(q_ptr, packed_ptr, heads_rows, packed_rows, even, cos, sin, mask)
        _rotate_pairs(k_ptr, packed_ptr + D, heads_rows, packed_rows, even, cos, sin, mask)
        _copy_pairs(v_ptr, packed_ptr + 2 * D, heads_rows, packed_rows, even, mask)


def _launch(
    packed_NT3D: Tensor,
    heads: tuple[Tensor, Tensor, Tensor],
    cos_TP: Tensor,
    sin_TP: Tensor,
    positions: Tensor,
    *,
    to_heads: bool,
) -> None:
    """Move (and rotate) between the packed (N, T, 3D) tensor and the three (N, H, T, Dh) ones.

    The kernel gets raw pointers and the strides read here: the packed tensor and positions ((T,) shared
    by every row, or (N, T)) must be contiguous; the three head tensors share one layout with a contiguous
    last dim (freshly allocated ones in the forward, the incoming gradients in the backward).
    """
    n_rows, num_heads, seq_len, _ = heads[0].shape
    pairs = cos_TP.shape[-1]
    grid = (triton.cdiv(seq_len, BLOCK_T), n_rows * num_heads)
    q = heads[0]
    wrap_triton(_rope_move_kernel)[grid](
        packed_NT3D, *heads, cos_TP, sin_TP, positions,
        seq_len, packed_NT3D.shape[-1] // 3, packed_NT3D.stride(0), packed_NT3D.stride(1),
        q.stride(0), q.stride(1), q.stride(2), 0 if positions.dim() == 1 else seq_len,
        1.0 if to_heads else -1.0,
        H=num_heads, PAIRS=pairs, PAIRS_P2=triton.next_power_of_2(pairs), BLOCK=BLOCK_T,
        FP64=torch.float64 in (packed_NT3D.dtype, cos_TP.dtype),
        TO_HEADS=to_heads,
    )  # fmt: skip


@triton_op("scratchlm::rope_split_heads", mutates_args=())
def _rope_split_heads(
    qkv_NT3D: Tensor, cos_TP: Tensor, sin_TP: Tensor, positions: Tensor, num_heads: int
) -> tuple[Tensor, Tensor, Tensor]:
    n_rows, seq_len, three_d = qkv_NT3D.shape
    head_dim = three_d // 3 // num_heads
    q, k, v = (qkv_NT3D.new_empty(n_rows, num_heads, seq_len, head_dim) for _ in range(3))
    _launch(qkv_NT3D, (q, k, v), cos_TP, sin_TP, positions, to_heads=True)
    return q, k, v


@triton_op("scratchlm::rope_split_heads_backward", mutates_args=())
def _rope_split_heads_backward(
    grad_q: Tensor, grad_k: Tensor, grad_v: Tensor, cos_TP: Tensor, sin_TP: Tensor, positions: Tensor
) -> Tensor:
    n_rows, num_heads, seq_len, head_dim = grad_q.shape
    grad_qkv = grad_q.new_empty(n_rows, seq_len, 3 * num_heads * head_dim)
    _launch(grad_qkv, (grad_q, grad_k, grad_v), cos_TP, sin_TP, positions, to_heads=False)
    return grad_qkv


def _setup_context(ctx: torch.autograd.function.FunctionCtx, inputs: tuple, output: tuple) -> None:
    _, cos_TP, sin_TP, positions, _ = inputs
    ctx.save_for_backward(cos_TP, sin_TP, positions)


def _backward(ctx: torch.autograd.function.FunctionCtx, grad_q: Tensor, grad_k: Tensor, grad_v: Tensor) -> tuple:
    cos_TP, sin_TP, positions = ctx.saved_tensors  # type: ignore[attr-defined]
    grads = [grad_q, grad_k, grad_v]
    reference = next(g for g in grads if g is not None)
    grads = [torch.zeros_like(reference) if g is None else g for g in grads]
    # The kernel wants one layout for the three gradients, each with a contiguous last dim.
    if len({g.stride() for g in grads}) > 1 or grads[0].stride(-1) != 1:
        grads = [g.contiguous() for g in grads]
    return _rope_split_heads_backward(*grads, cos_TP, sin_TP, positions), None, None, None, None


_rope_split_heads.register_autograd(_backward, setup_context=_setup_context)


def rope_split_heads(
    qkv_BT3D: Tensor, cos_TP: Tensor, sin_TP: Tensor, token_positions: Tensor | None, num_heads: int
) -> tuple[Tensor, Tensor, Tensor]:
    """(q, k, v), each (..., H, T, Dh), from the fused projection's (..., T, 3D) output; q and k rotated.

    cos_TP / sin_TP: RoPE's (max_seq_len, P) tables; token_positions: (..., T) or (T,) absolute positions,
    default 0..T-1. They must lie in [0, max_seq_len), and the kernel does not check (that would cost a
    host sync per call): the model's own positions, 0..T-1 with T <= context_length, always do.
    """
    if qkv_BT3D.device.type != "cuda" and not INTERPRETING:
        raise ConfigError(
            f"model.kernels = 'triton' runs on a CUDA device, not on {qkv_BT3D.device.type} "
            "(on the CPU only under TRITON_INTERPRET=1, for tests); set model.kernels = 'torch' here."
        )
    *lead, seq_len, three_d = qkv_BT3D.shape
    qkv_NT3D = qkv_BT3D.reshape(-1, seq_len, three_d)
    if not qkv_NT3D.is_contiguous():
        qkv_NT3D = qkv_NT3D.contiguous()
    if token_positions is None:
        positions = torch.arange(seq_len, device=qkv_BT3D.device)
    elif token_positions.dim() == 1:
        positions = token_positions.contiguous()
    else:
        positions = token_positions.expand(*lead, seq_len).reshape(-1, seq_len).contiguous()
    q, k, v = _rope_split_heads(qkv_NT3D, cos_TP, sin_TP, positions, num_heads)
    head_dim = three_d // 3 // num_heads
    shape = (*lead, num_heads, seq_len, head_dim)
    return q.view(shape), k.view(shape), v.view(shape)
