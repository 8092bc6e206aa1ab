"""From-scratch layers. The reference path uses no torch.nn layers, torch.nn.functional or torch.optim."""

from scratchlm.nn.attention import ATTENTION_BACKENDS, CausalSelfAttention
from scratchlm.nn.ffn import MLP, SwiGLU, default_d_ff
from scratchlm.nn.functional import (
    causal_mask,
    cross_entropy,
    gelu,
    log_softmax,
    perplexity,
    scaled_dot_product_attention,
    silu,
    softmax,
)
from scratchlm.nn.layers import Embedding, LayerNorm, Linear, NoNorm, RMSNorm
from scratchlm.nn.positions import (
    LearnedPositionalEmbedding,
    RotaryPositionalEmbedding,
    SinusoidalPositionalEmbedding,
)

__all__ = [
    "ATTENTION_BACKENDS",
    "MLP",
    "CausalSelfAttention",
    "Embedding",
    "LayerNorm",
    "LearnedPositionalEmbedding",
    "Linear",
    "NoNorm",
    "RMSNorm",
    "RotaryPositionalEmbedding",
    "SinusoidalPositionalEmbedding",
    "SwiGLU",
    "causal_mask",
    "cross_entropy",
    "default_d_ff",
    "gelu",
    "log_softmax",
    "perplexity",
    "scaled_dot_product_attention",
    "silu",
    "softmax",
]
