"""Saving and loading training state: model weights, optimizer state, iteration, and the model config.

Checkpoints hold only tensors and plain Python values, so loading uses `torch.load(weights_only=True)`:
a checkpoint from a stranger cannot run code. It cannot make us allocate more than it holds either:
tensors whose shape claims more elements than their stored data (broadcast views) are refused, and
`load_model` checks the stored config against the stored weights on the meta device before it allocates
a model. Saving to a path is atomic (`fileio.atomic_write`): a crash mid-write leaves the previous
checkpoint intact, and Ctrl-C / SIGTERM during the write take effect once it is complete. The model's
state dict is taken from the unwrapped module, never from a torch.compile or DDP wrapper, so keys never
carry `_orig_mod.`/`module.`.
"""

from __future__ import annotations

import os
import re
import warnings
from typing import IO, Any

import torch
from torch import nn

from scratchlm.config import ModelConfig
from scratchlm.errors import CheckpointError, first_line
from scratchlm.fileio import atomic_write, signals_deferred
from scratchlm.model import TransformerLM

PathOrFile = str | os.PathLike | IO[bytes]
# How torch's weights-only unpickler names the callable or class it refused.
_REFUSED_GLOBAL = re.compile(r"(?:unsupported GLOBAL|Unsupported global: GLOBAL) ([\w.]+)")
# Tables a model derives from its config (RoPE / sinusoidal positions) may exceed its weights only up to this.
MAX_DERIVED_BYTES = 1 << 30


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
        atomic_save(state, os.fspath(out))
    else:
        with signals_deferred():
            _torch_save(state, out)


def atomic_save(state: dict[str, Any], path: str | os.PathLike) -> None:
    """torch.save `state` to `path` atomically; Ctrl-C waits for it, and a refused write says what failed."""
    with signals_deferred(), atomic_write(path, "wb") as fh:
        _torch_save(state, fh)


def _torch_save(state: dict[str, Any], fh: IO[bytes]) -> None:
    """torch.save, raising what actually went wrong when a write into `fh` fails.

    torch's zip writer finishes the archive even after a failed write, and that raises a RuntimeError
    ("unexpected pos N vs M") whose context is the real failure: a refused write (disk full) or an interrupt.
    """
    try:
        torch.save(state, fh)
    except RuntimeError as exc:
        cause = exc.__context__
        if isinstance(cause, OSError) or (cause is not None and not isinstance(cause, Exception)):
            raise cause from None
        raise


def load_safely(src: PathOrFile, map_location: str | torch.device | None = "cpu") -> Any:
    """What a .pt file holds, loaded with `weights_only=True` (nothing in it can run); CheckpointError, in one
    sentence, for a missing file, a directory, a refused global or a truncated or corrupt file."""
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<file object>"
    if isinstance(src, (str, os.PathLike)) and os.path.isdir(src):
        raise CheckpointError(
            f"checkpoint {name!r} is a directory; pass a .pt file (a run's are in its checkpoints/, or give "
            "load_model the run directory itself)."
        )
    if isinstance(src, (str, os.PathLike)) and not os.path.isfile(src):
        raise CheckpointError(f"checkpoint {name!r} does not exist; check the path.")
    try:
        with warnings.catch_warnings():
            # A plain pickle (a trajectory file given as a checkpoint) makes torch warn about its protocol
            # before failing; the one-sentence error below says what the file is not.
            warnings.filterwarnings("ignore", message="Detected pickle protocol", category=UserWarning)
            state = torch.load(src, map_location=map_location, weights_only=True)
    except Exception as exc:  # torch raises UnpicklingError, RuntimeError, EOFError... for bad files
        refused = _REFUSED_GLOBAL.search(str(exc))
        if refused:  # torch's own text goes on to suggest weights_only=False, the one thing not to do here
            raise CheckpointError(
                f"checkpoint {name!r} cannot be loaded safely: it refers to `{refused.group(1)}`, which a checkpoint "
                "of tensors and plain values never needs; it was refused and nothing in it ran."
            ) from None
        # torch's first sentence says what failed; its zip reader goes on with advice cut off mid-sentence.
        what = first_line(exc).split(". ")[0]
        raise CheckpointError(
            f"checkpoint {name!r} cannot be loaded safely ({type(exc).__name__}: {what}); "
            "it is truncated, corrupt, or holds objects other than tensors and plain values."
        ) from None
    return state


def read_checkpoint(src: PathOrFile, map_location: str | torch.device | None = "cpu") -> dict[str, Any]:
    """Load a checkpoint dict safely (tensors and plain values only) with a clear error if it is unusable."""
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<file object>"
    state = load_safely(src, map_location)
    if isinstance(state, dict) and state and all(isinstance(v, torch.Tensor) for v in state.values()):
        # torch.save(model.state_dict(), path): weights without the config that would rebuild their model.
        raise CheckpointError(
            f"{name!r} is not a scratchlm checkpoint but a bare state dict (weights, no config to rebuild their "
            "model from); load it with "
            "model.load_state_dict(torch.load(path)) into a TransformerLM of its ModelConfig, or save with "
            "scratchlm.train.checkpoint.save_checkpoint."
        )
    if isinstance(state, dict) and "model_state_dict" in state and "model" not in state:
        raise CheckpointError(
            f"{name!r} is a checkpoint of the course's training script (scratchlm.compat.scratch1), not of "
            "scratchlm train; draw its attention maps with "
            "python -m scratchlm.compat.scratch1 visualize --checkpoint PATH."
        )
    if not isinstance(state, dict) or "model" not in state:
        raise CheckpointError(f"checkpoint {name!r} is not a scratchlm checkpoint (no 'model' entry).")
    if not isinstance(state["model"], dict):
        found = type(state["model"]).__name__
        raise CheckpointError(f"checkpoint {name!r}: 'model' must be a state dict of tensors, got {found}.")
    _refuse_broadcast_tensors(state, name)
    return state


def _refuse_broadcast_tensors(value: Any, name: str) -> None:
    """A tensor whose shape needs more bytes than its storage holds (stride-0 views) would expand on first copy."""
    stack = [value]
    while stack:
        item = stack.pop()
        if isinstance(item, torch.Tensor):
            needed = _nbytes(item)
            if needed and item.untyped_storage().nbytes() < needed:
                raise CheckpointError(
                    f"checkpoint {name!r} holds a tensor of shape {tuple(item.shape)} backed by only "
                    f"{item.untyped_storage().nbytes()} bytes (a broadcast view); scratchlm never writes those, "
                    "so the file is damaged or crafted."
                )
        elif isinstance(item, dict):
            stack.extend(item.values())
        elif isinstance(item, (list, tuple)):
            stack.extend(item)


def load_checkpoint(src: PathOrFile, model: nn.Module, optimizer: torch.optim.Optimizer | None = None) -> int:
    """Restore model (and optimizer) state from `src`; return the saved iteration."""
    state = read_checkpoint(src)
    module = unwrap_model(model)
    try:
        module.load_state_dict(state["model"])
    except RuntimeError as exc:
        raise CheckpointError(
            f"checkpoint weights do not fit this model: {first_line(exc)} "
            "(build the model from the checkpoint's own config)."
        ) from None
    if optimizer is not None:
        if "optimizer" not in state:
            raise CheckpointError("checkpoint holds no optimizer state; pass optimizer=None to load weights only.")
        optimizer.load_state_dict(state["optimizer"])
    return int(state["iteration"])


def load_model(src: PathOrFile, device: str | torch.device = "cpu", dtype: torch.dtype | None = None) -> TransformerLM:
    """Rebuild a TransformerLM from a checkpoint alone (its stored config plus weights), in eval mode.

    `src`: a checkpoint file, or a run directory (its checkpoints/best.pt, else last.pt). `dtype`: None
    keeps the checkpoint's own precision (a float64 checkpoint stays float64). Call `.train()` on the
    result to fine-tune it. The config is checked against the stored weights on the meta device first, so a
    checkpoint whose config claims a model larger than the weights it holds is refused before anything is
    allocated.
    """
    src = checkpoint_in_run_dir(src)
    name = os.fspath(src) if isinstance(src, (str, os.PathLike)) else "<file object>"
    state = read_checkpoint(src, map_location=device)
    if "config" not in state:
        raise CheckpointError("checkpoint has no model config, so it cannot rebuild a model by itself.")
    config = ModelConfig.from_dict(state["config"])
    with torch.device("meta"):  # the default device too: derived tables are computed on meta, not the CPU
        skeleton = TransformerLM(config, device="meta")
    _check_weights_fit_config(skeleton, state["model"], name)
    stored = next((t.dtype for t in state["model"].values() if t.is_floating_point()), torch.float32)
    model = TransformerLM(config, device=device, dtype=stored)
    model.load_state_dict(state["model"])
    if dtype is not None and dtype != stored:
        model = model.to(dtype)
    return model.eval()  # dropout off: what loading a trained model is for, as with HF's from_pretrained


def checkpoint_in_run_dir(src: PathOrFile) -> PathOrFile:
    """A run directory stands for its best checkpoint (else its last); anything else is returned as given."""
    if not isinstance(src, (str, os.PathLike)) or not os.path.isdir(src):
        return src
    for name in ("best.pt", "last.pt"):
        candidate = os.path.join(src, "checkpoints", name)
        if os.path.isfile(candidate):
            return candidate
    return src  # read_checkpoint says it is a directory


def _check_weights_fit_config(skeleton: nn.Module, weights: dict[str, Any], name: str) -> None:
    expected = skeleton.state_dict()
    missing, unexpected = sorted(set(expected) - set(weights)), sorted(set(weights) - set(expected))
    if missing or unexpected:
        raise CheckpointError(
            f"checkpoint {name!r}: the weights do not match the stored model config (missing {missing[:3]}, "
            f"unexpected {unexpected[:3]}); the file is damaged or was not written by scratchlm."
        )
    for key, meta in expected.items():
        value = weights[key]
        if not isinstance(value, torch.Tensor) or value.shape != meta.shape:
            found = tuple(value.shape) if isinstance(value, torch.Tensor) else type(value).__name__
            raise CheckpointError(
                f"checkpoint {name!r}: weight {key!r} is {found}, but the stored config needs {tuple(meta.shape)}; "
                "the file is damaged or was not written by scratchlm."
            )
    weight_bytes = sum(_nbytes(t) for t in expected.values())
    derived_bytes = sum(_nbytes(b) for key, b in skeleton.named_buffers() if key not in expected)
    if derived_bytes > max(weight_bytes, MAX_DERIVED_BYTES):
        raise CheckpointError(
            f"checkpoint {name!r}: its config (context_length {skeleton.config.context_length}) would need "
            f"{derived_bytes / 2**30:.1f} GiB of position tables for {weight_bytes / 2**20:.1f} MiB of weights; "
            "the config is damaged or crafted."
        )


def _nbytes(tensor: torch.Tensor) -> int:
    return tensor.numel() * tensor.element_size()
