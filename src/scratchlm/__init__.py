"""scratchlm: decoder-only transformer LMs built from scratch, for text and robot-action tokens.

    from scratchlm import ModelConfig, TransformerLM, generate, load_model

    model = TransformerLM(ModelConfig(vocab_size=256, context_length=128, d_model=128, num_layers=4, num_heads=4))
    logits_BTV, loss = model(idx_BT, targets_BT)
    out = generate(model, [[1, 2, 3]], max_new_tokens=20, temperature=0.8, top_k=50, seed=0)
    model = load_model("runs/NAME")                 # a checkpoint file or a run directory

Elsewhere: scratchlm.optim (AdamW, get_lr_cosine_schedule, clip_grad_norm, weight_decay_param_groups),
scratchlm.tokenizers (Tokenizer: byte-level BPE, Tokenizer.from_gpt2_files; CharTokenizer; load_tokenizer),
scratchlm.train.checkpoint (save_checkpoint, load_checkpoint), scratchlm.errors (every error is a
ScratchLMError). The top-level names load lazily, so tokenizer-only users never import torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

__all__ = ["ModelConfig", "RunConfig", "ScratchLMError", "TransformerLM", "__version__", "generate", "load_model"]

_LAZY = {
    "ModelConfig": "scratchlm.config",
    "RunConfig": "scratchlm.config",
    "ScratchLMError": "scratchlm.errors",
    "TransformerLM": "scratchlm.model",
    "generate": "scratchlm.infer.generate",
    "load_model": "scratchlm.train.checkpoint",
}

if TYPE_CHECKING:
    from scratchlm.config import ModelConfig, RunConfig
    from scratchlm.errors import ScratchLMError
    from scratchlm.infer.generate import generate
    from scratchlm.model import TransformerLM
    from scratchlm.train.checkpoint import load_model


def __dir__() -> list[str]:
    # The lazy names live only in __getattr__; listing them lets dir() and notebook completion find them.
    return sorted(set(globals()) | set(__all__))


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scratchlm' has no attribute {name!r}")
