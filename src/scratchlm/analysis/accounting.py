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


# Dense (no 2:4 sparsity) peak tensor-core throughput in FLOP/s, from the vendors' datasheets, by dtype.
# Keys are matched as substrings of torch.cuda.get_device_name(), most specific first.
PEAK_FLOPS: list[tuple[str, dict[str, float]]] = [
    ("H200", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),
    ("H100 PCIe", {"bf16": 756e12, "fp16": 756e12, "tf32": 378e12, "fp32": 51e12}),
    ("H100", {"bf16": 989e12, "fp16": 989e12, "tf32": 494e12, "fp32": 67e12}),  # SXM
    ("A100", {"bf16": 312e12, "fp16": 312e12, "tf32": 156e12, "fp32": 19.5e12}),
    ("L40S", {"bf16": 362e12, "fp16": 362e12, "tf32": 183e12, "fp32": 91.6e12}),
    ("A10G", {"bf16": 70e12, "fp16": 70e12, "tf32": 35e12, "fp32": 31.2e12}),
    ("RTX 4090", {"bf16": 165e12, "fp16": 165e12, "tf32": 82.6e12, "fp32": 82.6e12}),
    ("RTX 3090", {"bf16": 71e12, "fp16": 71e12, "tf32": 35.6e12, "fp32": 35.6e12}),
    ("V100", {"fp16": 125e12, "fp32": 15.7e12}),
    ("T4", {"fp16": 65e12, "fp32": 8.1e12}),
]


def peak_flops(device_name: str, dtype: str = "bf16") -> float | None:
    """Datasheet peak FLOP/s for a GPU name and compute dtype, or None when unknown (CPUs included)."""
    for key, peaks in PEAK_FLOPS:
        if key in device_name:
            return peaks.get(dtype)
    return None
