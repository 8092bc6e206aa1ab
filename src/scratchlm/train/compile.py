"""torch.compile for training, applied in place so the model keeps its own state dict.

Two scopes:
- "blocks" (default): each transformer Block is compiled on its own, plus the fast path's fused head +
  loss. All blocks share one compiled graph (same code, same shapes), so compile time is that of one
  block, not of the whole depth; the model object stays the plain TransformerLM (no `_orig_mod.` prefix
  in its state dict).
- "model": one graph for the whole forward (fusions across block boundaries, compile time grows with
  depth). Returned as a separate wrapper: training calls it, saving and evaluation use the plain model.

mode: torch.compile's mode; "reduce-overhead" adds CUDA graphs, which pay when kernel launches dominate
(small models, short sequences).
"""

from __future__ import annotations

import torch
from torch import nn

from scratchlm.config import COMPILE_SCOPES
from scratchlm.model import TransformerLM


def compile_for_training(model: TransformerLM, scope: str = "blocks", mode: str = "default") -> nn.Module:
    """Compile `model` for training; returns the module the training step should call."""
    if scope not in COMPILE_SCOPES:
        raise ValueError(f"unknown compile scope {scope!r}; choose one of {COMPILE_SCOPES}.")
    if scope == "model":
        return torch.compile(model, mode=mode)
    for block in model.layers:
        block.compile(mode=mode)
    if model.config.fast:
        model.head_loss = torch.compile(model.head_loss, mode=mode)
    return model
