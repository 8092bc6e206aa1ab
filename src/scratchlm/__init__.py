"""scratchlm: decoder-only transformer LMs built from scratch, for text and robot-action tokens.

The top-level names load lazily, so tokenizer-only users never import torch.
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


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'scratchlm' has no attribute {name!r}")
