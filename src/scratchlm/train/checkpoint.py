"""Saving and loading training state: model weights, optimizer state, iteration, and the model config.

Checkpoints hold only tensors and plain Python values, so loading uses `torch.load(weights_only=True)`:
a checkpoint from a stranger cannot run code. Saving to a path is atomic (`fileio.atomic_write`):
a crash mid-write leaves the previous checkpoint intact. The model's state dict is taken from the
unwrapped module, never from a torch.compile or DDP wrapper, so keys never carry `_orig_mod.`/`module.`.
"""

from __future__ import annotations

import os
from typing import IO, Any

import torch
from torch import nn

from scratchlm.config import ModelConfig
from scratchlm.errors import CheckpointError
from scratchlm.fileio import atomic_write
from scratchlm.model import TransformerLM

PathOrFile = str | os.PathLike | IO[bytes]


def unwrap_model(model: nn.Module) -> nn.Module:
    """The plain module under torch.compile (`_orig_mod`) and DDP/FSDP-style (`module`) wrappers."""
    while True:
        if hasattr(model, "_orig_mod"):
            model = model._orig_mod
        elif isinstance(model, nn.parallel.DistributedDataParallel):
            model = model.module
        else:
            return model


def save_checkpoint(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None,
    iteration: int,
    out: PathOrFile,
    extra: dict[str, Any] | None = None,
) -> None:
    """Write model + optimizer state and `iteration` to a path (atomically) or a binary file object.

    When the model has a `config` with `to_dict()` (a TransformerLM), it is stored too, so the checkpoint
    alone rebuilds the model. `extra` holds anything else the caller needs on resume (plain values/tensors).
    """
    module = unwrap_model(model)
    state: dict[str, Any] = {"model": module.state_dict(), "iteration": int(iteration)}
    if optimizer is not None:
        state["optimizer"] = optimizer.state_dict()
    config = getattr(module, "config", None)
    if config is not None and hasattr(config, "to_dict"):
        state["config"] = config.to_dict()
    if extra:
        state.update(extra)
    if isinstance(out, (str, os.PathLike)):
        _atomic_save(state, os.fspath(out))
    else:
        torch.save(state, out)


def _atomic_save(state: dict[str, Any], path: str) -> None:
    with atomic_write(path, "wb") as fh:
        torch.save(state, fh)


def read_checkpoint(src: PathOrFile, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors and plain values only) with a clear error if it is unusable."""
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<file object>"
    if isinstance(src, (str, os.PathLike)) and not os.path.isfile(src):
        raise CheckpointError(f"checkpoint {name!r} does not exist; check the path.")
    try:
        state = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        raise CheckpointError(
            f"checkpoint {name!r} cannot be loaded safely ({type(exc).__name__}: {str(exc).splitlines()[0][:200]}); "
            "it is truncated, corrupt, or holds objects other than tensors and plain values."
        ) from None
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {name!r} is not a scratchlm checkpoint (no 'model' entry).")
    return state


def load_checkpoint(src: PathOrFile, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state from `src`; return the saved iteration."""
    state = read_checkpoint(src)
    module = unwrap_model(model)
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit this model: {str(exc).splitlines()[0]} "
            "(build the model from the checkpoint's own config)."
        ) from None
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError("checkpoint holds no optimizer state; pass optimizer=None to load weights only.")
        optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])


def load_model(src: PathOrFile, device: str | torch.device = "cpu") -> TransformerLM:
    """Rebuild a TransformerLM from a checkpoint alone (its stored config plus weights)."""
    state = read_checkpoint(src, map_location=device)
    if "config" not in state:
        raise CheckpointError("checkpoint has no model config, so it cannot rebuild a model by itself.")
    model = TransformerLM(ModelConfig.from_dict(state["config"]), device=device)
    model.load_state_dict(state["model"])
    return model
