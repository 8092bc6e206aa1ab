"""Parameter and FLOP accounting from a ModelConfig alone (no model needs to be built).

Conventions (those of Kaplan et al. and PaLM, as nanoGPT's MFU uses them):
- N, the matmul parameters, is every parameter except the embedding lookup tables (a lookup costs no
  FLOPs) plus the LM head (a V x D matmul even when its matrix is tied to the embeddings).
- A matmul of (m x n) by (n x p) costs 2mnp FLOPs. Per token, the forward pass costs 2N for the weights and
  4·L·D·T for attention (q·k scores and the weighted sum of v over T positions; D = H·Q).
- Training (forward + backward) is 3x the forward: 6N + 12·L·H·Q·T per token.
The causal mask makes half the attention scores useless, but, as in the papers, they are counted.
"""

from __future__ import annotations

from dataclasses import dataclass

from scratchlm.config import ModelConfig


@dataclass(frozen=True)
class ParamCounts:
    total: int  # distinct parameters (a tied matrix counts once)
    embedding: int  # token (and learned position) lookup tables
    non_embedding: int  # total - embedding
    matmul: int  # N of the FLOP formulas: non_embedding plus the LM head when it is tied


def param_counts(config: ModelConfig) -> ParamCounts:
    c = config
    d, f, v = c.d_model, c.d_ff, c.vocab_size
    assert f is not None  # filled in by ModelConfig.__post_init__
    norm_params = {"rmsnorm": d, "layernorm": 2 * d, "none": 0}[c.norm]
    ffn_matrices = 3 if c.ffn == "swiglu" else 2
    per_layer = 4 * d * d + ffn_matrices * d * f + 2 * norm_params
    final_norm = norm_params if c.norm_position == "pre" else 0
    embedding = v * d + (c.context_length * d if c.positional == "learned" else 0)
    head = 0 if c.tie_embeddings else v * d
    total = embedding + c.num_layers * per_layer + final_norm + head
    non_embedding = total - embedding
    matmul = non_embedding + (v * d if c.tie_embeddings else 0)
    return ParamCounts(total=total, embedding=embedding, non_embedding=non_embedding, matmul=matmul)


def flops_per_token(config: ModelConfig, seq_len: int | None = None, *, training: bool = True) -> float:
    """FLOPs per token at sequence length `seq_len` (default: the full context).

    Training: 6N + 12·L·H·Q·T. Forward only: 2N + 4·L·H·Q·T.
    """
    c = config
    seq = c.context_length if seq_len is None else seq_len
    n = param_counts(c).matmul
    attention = c.num_layers * c.num_heads * c.head_dim * seq
    return float(6 * n + 12 * attention) if training else float(2 * n + 4 * attention)
