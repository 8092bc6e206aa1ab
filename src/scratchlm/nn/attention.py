"""Causal multi-head self-attention with swappable attention backends.

Shapes: B... = any leading batch dims, T = query positions, S = key positions, H = heads,
D = d_model, Dh = head dim (D / H; a lower-case `d` in name suffixes, as in q_BHTd). Heads are one more
batch dim: attention runs on (..., H, T, Dh).

Backends compute softmax(q k^T / sqrt(Dh)) v from already-projected, already-rotated q/k/v, so they share
every parameter and the state-dict layout; `ModelConfig.attention_backend` picks one:
- "reference": the explicit masked softmax of `functional.scaled_dot_product_attention`;
- "sdpa": PyTorch's fused kernel (flash attention on a GPU), in `scratchlm.nn.sdpa`.
Both take an optional explicit boolean `mask` (..., T, S) that replaces the causal one: a KV cache with
padded rows or static shapes supplies it (`scratchlm.infer.kv_cache`); training never does.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, NoReturn

import torch
from einops import rearrange
from torch import Tensor, nn

from scratchlm.errors import ConfigError
from scratchlm.nn.functional import causal_mask, scaled_dot_product_attention
from scratchlm.nn.fused import fuse_projections, qkv_matmul, qkv_projection
from scratchlm.nn.layers import Linear
from scratchlm.nn.positions import RotaryPositionalEmbedding
from scratchlm.nn.sdpa import sdpa_attention

if TYPE_CHECKING:
    from scratchlm.infer.kv_cache import LayerKVCache

AttentionBackend = Callable[..., Tensor]


def reference_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float, mask: Tensor | None = None
) -> Tensor:
    """(..., T, Dh) queries against (..., S, Dh) keys/values, through the from-scratch softmax."""
    if mask is None and causal:
        mask = causal_mask(q.shape[-2], k.shape[-2], device=q.device)
    return scaled_dot_product_attention(q, k, v, mask, dropout_p=dropout_p, training=dropout_p > 0)


ATTENTION_BACKENDS: dict[str, AttentionBackend] = {
    "reference": reference_attention,
    "sdpa": sdpa_attention,
}


class CausalSelfAttention(nn.Module):
    """W_O · MultiHead(W_Q x, W_K x, W_V x), with RoPE applied to q and k only.

    `causal=False` drops the mask (the causal-mask audit trains such a model on purpose). `fused=True`
    (the fast path) computes q, k and v with one matmul over the same three weights; while decoding, over
    the copy concatenated once per session that the KV cache holds (`scratchlm.infer.packed_weights`).
    `kernels="triton"` (with fused and RoPE) then splits heads and rotates in one kernel while training
    (`scratchlm.nn.triton_rope`).
    """

    def __init__(
        self,
        d_model: int,
        num_heads: int,
        *,
        rope: RotaryPositionalEmbedding | None = None,
        causal: bool = True,
        backend: str = "reference",
        dropout: float = 0.0,
        fused: bool = False,
        kernels: str = "torch",
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if d_model % num_heads:
            raise ValueError(
                f"`d_model` ({d_model}) must be divisible by `num_heads` ({num_heads}) to split it into heads."
            )
        if backend not in ATTENTION_BACKENDS:
            raise ValueError(f"unknown attention backend {backend!r}; choose one of {sorted(ATTENTION_BACKENDS)}.")
        self.num_heads = num_heads
        self.causal = causal
        self.backend = backend
        self.dropout = dropout
        self.fused = fused
        self.kernels = kernels
        self._triton_rope_split_heads = _load_triton_rope() if kernels == "triton" else None
        self.rope = rope
        self.q_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.k_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.v_proj = Linear(d_model, d_model, device=device, dtype=dtype)
        self.output_proj = Linear(d_model, d_model, device=device, dtype=dtype)

    def forward(
        self, x_BTD: Tensor, token_positions: Tensor | None = None, kv_cache: LayerKVCache | None = None
    ) -> Tensor:
        """x: (..., T, D); token_positions: (..., T) or (T,), default 0..T-1. Returns (..., T, D).

        With `kv_cache` (decoding), x holds only the T newest positions: their keys/values join the cache
        and the queries attend to every cached position (the positions must then be the true ones, which
        `TransformerLM.forward` takes from the cache).
        """
        q_BHTd, k_BHTd, v_BHTd = self._project_heads(x_BTD, token_positions, kv_cache)
        k_BHSd, v_BHSd = (k_BHTd, v_BHTd) if kv_cache is None else kv_cache.append(k_BHTd, v_BHTd)
        mask = None if kv_cache is None else kv_cache.mask_B1TS
        dropout_p = self.dropout if self.training else 0.0
        attend = ATTENTION_BACKENDS[self.backend]
        o_BHTd = attend(q_BHTd, k_BHSd, v_BHSd, causal=self.causal, dropout_p=dropout_p, mask=mask)
        return self.output_proj(rearrange(o_BHTd, "... h t d -> ... t (h d)"))

    def _project_heads(
        self, x_BTD: Tensor, token_positions: Tensor | None, kv_cache: LayerKVCache | None
    ) -> tuple[Tensor, Tensor, Tensor]:
        """q, k, v, each (..., H, T, Dh), with RoPE applied to q and k."""
        packed = None if kv_cache is None else kv_cache.packed
        if packed is not None:  # decoding a fast-path model: [W_q; W_k; W_v] concatenated once per session
            q_BTD, k_BTD, v_BTD = packed.qkv(x_BTD)
        elif fuse_projections(self.fused):
            if self.kernels == "triton" and self.rope is not None and kv_cache is None:
                rope_split_heads = self._triton_rope_split_heads or _missing_triton()
                qkv_BT3D = qkv_matmul(x_BTD, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)
                rope = self.rope
                return rope_split_heads(qkv_BT3D, rope.cos_TP, rope.sin_TP, token_positions, self.num_heads)
            q_BTD, k_BTD, v_BTD = qkv_projection(x_BTD, self.q_proj.weight, self.k_proj.weight, self.v_proj.weight)
            if self.rope is not None and not torch.compiler.is_compiling():
                # RoPE gives q and k storage of their own, so attention's backward would keep the (..., T, 3D)
                # matmul output alive only through v, a view of its last third: a copy of v (T·D) frees 2·T·D.
                # Eager only: under torch.compile the partitioner chooses what the backward keeps.
                v_BTD = v_BTD.contiguous()
        else:
            q_BTD, k_BTD, v_BTD = self.q_proj(x_BTD), self.k_proj(x_BTD), self.v_proj(x_BTD)
        q_BHTd = rearrange(q_BTD, "... t (h d) -> ... h t d", h=self.num_heads)
        k_BHTd = rearrange(k_BTD, "... t (h d) -> ... h t d", h=self.num_heads)
        v_BHTd = rearrange(v_BTD, "... t (h d) -> ... h t d", h=self.num_heads)
        if self.rope is not None:
            if token_positions is None:
                token_positions = torch.arange(x_BTD.shape[-2], device=x_BTD.device)
            positions_B1T = token_positions.unsqueeze(-2)  # one rotation shared by every head
            q_BHTd = self.rope(q_BHTd, positions_B1T)
            k_BHTd = self.rope(k_BHTd, positions_B1T)
        return q_BHTd, k_BHTd, v_BHTd


def _load_triton_rope() -> Callable[..., tuple[Tensor, Tensor, Tensor]] | None:
    # Imported only for kernels = "triton", and only a failure to use it is an error: a checkpoint trained
    # with the kernel still loads, evaluates and decodes (through the PyTorch ops) where triton is absent.
    try:
        from scratchlm.nn.triton_rope import rope_split_heads
    except ImportError:
        return None
    return rope_split_heads


def _missing_triton() -> NoReturn:
    raise ConfigError(
        "model.kernels = 'triton' needs the triton package (CUDA builds of PyTorch ship it; else pip install "
        "triton), or set model.kernels = 'torch'."
    )
