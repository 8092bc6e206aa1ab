"""How much memory is left, and whether a model's training state can fit in it (checked before allocating).

Without a check a model too large for the machine is either a MemoryError deep inside torch or, worse, an
allocation the kernel grants lazily and then kills the process for (exit 137, no message at all).
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

from scratchlm.analysis.accounting import param_counts
from scratchlm.analysis.activations import activation_estimate
from scratchlm.config import ModelConfig
from scratchlm.errors import OutOfMemoryError

# fp32 weights + their gradients + AdamW's two moments: what training holds per parameter.
GRADIENT_BYTES_PER_PARAM = 4
TRAINING_BYTES_PER_PARAM = 4 + GRADIENT_BYTES_PER_PARAM + 8


def available_memory_bytes() -> int | None:
    """Memory this process can still take without swapping (MemAvailable, within a cgroup v2 limit); None when
    the system does not say."""
    available = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    available = int(line.split()[1]) * 1024
                    break
    except (OSError, ValueError, IndexError):
        pass
    if available is None:
        try:
            available = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, OSError, ValueError):
            return None
    # In a container the host may have memory to spare that the container's limit does not allow.
    cgroup = Path("/sys/fs/cgroup")
    try:
        limit = (cgroup / "memory.max").read_text(encoding="ascii").strip()
        if limit != "max":
            used = int((cgroup / "memory.current").read_text(encoding="ascii").strip())
            available = min(available, max(0, int(limit) - used))
    except (OSError, ValueError):
        pass
    return available


def device_memory_bytes(device: torch.device) -> int | None:
    """Free memory of `device`: a CUDA device's free bytes, the host's for cpu; None where unknown (mps)."""
    if device.type == "cuda":
        try:
            free = int(torch.cuda.mem_get_info(device)[0])
        except RuntimeError:
            return None
        # Memory PyTorch's caching allocator holds but no tensor uses (an earlier run of a sweep in this
        # process) is free to this process though the driver counts it as used.
        return free + torch.cuda.memory_reserved(device) - torch.cuda.memory_allocated(device)
    return available_memory_bytes() if device.type == "cpu" else None


def state_bytes(model: ModelConfig) -> int:
    """Bytes of the training state: weights, gradients and AdamW's moments (TRAINING_BYTES_PER_PARAM per
    parameter), plus the fixed position tables (buffers in no parameter count: RoPE's cos and sin, the
    sinusoidal table), float32."""
    width = {"rope": model.head_dim, "sinusoidal": model.d_model}.get(model.positional, 0)
    tables = model.context_length * width * 4
    return param_counts(model).total * TRAINING_BYTES_PER_PARAM + tables


def activation_bytes_lower_bound(
    model: ModelConfig, batch_size: int, element_bytes: int, seq_len: int | None = None
) -> int:
    """Half the textbook count of the activations a step keeps for its backward pass over `seq_len`
    positions (default: the context), at `element_bytes` each, without the attention-score and vocabulary
    terms (flash attention and a fused loss never save those); the halving leaves room for what a compiler
    recomputes instead of saving."""
    kept = activation_estimate(model, batch_size, seq_len)
    activations = kept.total - kept.attention_scores - kept.attention_softmax - kept.logits - kept.cross_entropy
    return element_bytes * activations // 2


def check_training_fits(
    model: ModelConfig,
    batch_size: int,
    device: torch.device,
    element_bytes: int = 4,
    *,
    seq_len: int | None = None,
    gradients_overlap: bool = True,
) -> None:
    """OutOfMemoryError, before the model is built, when the training state alone, or with a lower bound of
    one step's activations over `seq_len` positions, exceeds the free memory of `device`: a request that
    cannot fit is refused, not left to the kernel's OOM killer.

    `gradients_overlap=False` (one micro-batch a step, one process): the gradients are freed after each
    step and the backward pass frees activations as it makes gradients, so the peak is weights, AdamW state
    and the larger of the two; with accumulation or DDP's buckets both are held at once.
    """
    available = device_memory_bytes(device)
    if available is None:
        return
    state = state_bytes(model)
    free = f"only {format_bytes(available)} of {device.type} memory is free"
    if state > available:
        raise OutOfMemoryError(
            f"the model ({param_counts(model).total:,} parameters) needs at least {format_bytes(state)} for its "
            f"weights, gradients and AdamW state, but {free}; choose a smaller model (model.d_model, "
            "model.num_layers, model.vocab_size; model.context_length sizes its position tables) or a device "
            "with more memory."
        )
    gradients = param_counts(model).total * GRADIENT_BYTES_PER_PARAM

    def step_bytes(batch: int) -> int:
        activations = activation_bytes_lower_bound(model, batch, element_bytes, seq_len)
        if gradients_overlap:
            return state + activations
        return state - gradients + max(gradients, activations)

    if step_bytes(batch_size) > available:
        if step_bytes(1) > available:
            fix = "even train.batch_size=1 would not fit, so shorten the sequences or choose a smaller model"
        else:
            fix = "lower train.batch_size (raise train.grad_accum by the same factor to keep the tokens per step)"
        raise OutOfMemoryError(
            f"a training step at train.batch_size={batch_size} needs at least {format_bytes(step_bytes(batch_size))} "
            f"(the model's weights, gradients and AdamW state, and the activations the step keeps), but {free}; "
            f"{fix}."
        )


def format_bytes(n: int) -> str:
    """n bytes in the largest binary unit that keeps the number at least 1, e.g. '1.5 GiB'."""
    for unit, size in (("TiB", 2**40), ("GiB", 2**30), ("MiB", 2**20), ("KiB", 2**10)):
        if n >= size:
            return f"{n / size:,.1f} {unit}"
    return f"{n} bytes"
