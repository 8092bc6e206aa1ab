"""The "sdpa" attention backend: PyTorch's fused scaled_dot_product_attention.

This file is part of the fast path, so it may use torch.nn.functional; on a CUDA GPU with bf16/fp16
inputs PyTorch dispatches it to the flash-attention kernel. Same contract as `reference_attention`:
q (..., T, Dh), k and v (..., S, Dh), queries aligned to the last T of the S key positions, or an explicit
boolean `mask` (..., T, S) (True = may attend) in place of the causal one.
"""

from __future__ import annotations

import torch.nn.functional as F
from torch import Tensor

from scratchlm.nn.functional import causal_mask


def sdpa_attention(
    q: Tensor, k: Tensor, v: Tensor, *, causal: bool, dropout_p: float, mask: Tensor | None = None
) -> Tensor:
    if mask is not None:  # an explicit mask (a padded or static KV cache) already encodes causality
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, dropout_p=dropout_p)
    num_queries, num_keys = q.shape[-2], k.shape[-2]
    if causal and num_queries != num_keys:
        # PyTorch's is_causal aligns the mask top-left; cached decoding (T < S) needs it bottom-right.
        # A single new query may see every key, so it needs no mask at all.
        mask_TS = None if num_queries == 1 else causal_mask(num_queries, num_keys, device=q.device)
        return F.scaled_dot_product_attention(q, k, v, attn_mask=mask_TS, dropout_p=dropout_p)
    return F.scaled_dot_product_attention(q, k, v, dropout_p=dropout_p, is_causal=causal)
