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

import dataclasses
from dataclasses import dataclass

from scratchlm.config import ModelConfig
from scratchlm.nn.ffn import ffn_matrices


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
    per_layer = 4 * d * d + ffn_matrices(c.ffn) * d * f + 2 * norm_params
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


@dataclass(frozen=True)
class FlopsBreakdown:
    """Forward FLOPs of one sequence of T tokens, by component (2mnp per matmul; norms and softmax ignored)."""

    attention_projections: float  # q, k, v and output projections: 8·T·d² per layer
    attention_scores: float  # q·k^T: 2·T²·d per layer
    attention_mixing: float  # probabilities · v: 2·T²·d per layer
    ffn: float  # 2·T·d·d_ff per matrix (3 for SwiGLU, 2 for the SiLU MLP) per layer
    lm_head: float  # 2·T·d·V

    @property
    def total(self) -> float:
        return self.attention_projections + self.attention_scores + self.attention_mixing + self.ffn + self.lm_head

    def shares(self) -> dict[str, float]:
        parts = dataclasses.asdict(self)
        return {name: value / self.total for name, value in parts.items()}


def forward_flops(config: ModelConfig, seq_len: int | None = None) -> FlopsBreakdown:
    c = config
    t = c.context_length if seq_len is None else seq_len
    d, layers = c.d_model, c.num_layers
    assert c.d_ff is not None
    return FlopsBreakdown(
        attention_projections=float(layers * 8 * t * d * d),
        attention_scores=float(layers * 2 * t * t * d),
        attention_mixing=float(layers * 2 * t * t * d),
        ffn=float(layers * ffn_matrices(c.ffn) * 2 * t * d * c.d_ff),
        lm_head=float(2 * t * d * c.vocab_size),
    )


@dataclass(frozen=True)
class TrainingMemory:
    """Bytes of model state for training with AdamW (activations excluded: they depend on batch and length)."""

    weights: int
    gradients: int
    adamw_state: int  # two moments per parameter

    @property
    def total(self) -> int:
        return self.weights + self.gradients + self.adamw_state


def training_memory(config: ModelConfig, bytes_per_value: int = 4) -> TrainingMemory:
    """fp32 (4 bytes) or bf16 (2 bytes) everywhere; mixed precision keeps fp32 moments, so use 4 for those."""
    n = param_counts(config).total
    return TrainingMemory(n * bytes_per_value, n * bytes_per_value, 2 * n * bytes_per_value)


# The shapes the CS336 / CSE599-O accounting problem asks about (our architecture: SwiGLU with d_ff = 4·d_model,
# as the handout's GPT-2 XL config gives; vocabulary 50,257; context 1,024).
GPT2_SHAPES: dict[str, dict[str, int]] = {
    "gpt2-small": {"num_layers": 12, "d_model": 768, "num_heads": 12},
    "gpt2-medium": {"num_layers": 24, "d_model": 1024, "num_heads": 16},
    "gpt2-large": {"num_layers": 36, "d_model": 1280, "num_heads": 20},
    "gpt2-xl": {"num_layers": 48, "d_model": 1600, "num_heads": 25},
}


def gpt2_config(name: str, context_length: int = 1024) -> ModelConfig:
    shape = GPT2_SHAPES[name]
    return ModelConfig(
        vocab_size=50257,
        context_length=context_length,
        d_ff=4 * shape["d_model"],
        **shape,
    )


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
