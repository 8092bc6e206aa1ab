"""Random training windows from one long token array (a NumPy array or a np.memmap over a token file).

The corpus is a single sequence x[0..n); any start i in [0, n - T - 1] gives a window x[i : i+T] whose
targets are x[i+1 : i+T+1]. Only the sampled windows are read, so a memmap of a multi-GB file is never
copied whole.
"""

from __future__ import annotations

import numpy as np
import torch

from scratchlm.device import resolve_device
from scratchlm.errors import DataError


def get_batch(
    x: np.ndarray,
    batch_size: int,
    context_length: int,
    device: str | torch.device,
    rng: np.random.Generator | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Sample `batch_size` windows uniformly over every valid start; returns (inputs, targets), each (B, T) int64.

    `rng` makes the draw reproducible and resumable; without it NumPy's global generator is used (as the
    handout's tests expect).
    """
    dev = resolve_device(device)
    if x.ndim != 1:
        raise DataError(f"get_batch: the token array must be 1-D, got shape {x.shape}.")
    if batch_size < 1 or context_length < 1:
        raise DataError(f"get_batch: batch_size and context_length must be >= 1, got {batch_size}, {context_length}.")
    num_starts = len(x) - context_length  # starts 0 .. n-T-1 leave room for the shifted targets
    if num_starts < 1:
        raise DataError(
            f"get_batch: {len(x)} tokens cannot fill one window of context_length {context_length} plus a "
            "target; use more data or a shorter context."
        )
    starts_B = (
        rng.integers(0, num_starts, size=batch_size)
        if rng is not None
        else np.random.randint(0, num_starts, size=batch_size)
    )
    return windows_at(x, starts_B, context_length, dev)


def windows_at(
    x: np.ndarray, starts_B: np.ndarray, context_length: int, device: torch.device
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, T) int64 on `device`, for windows starting at `starts_B`."""
    # One fancy-index read of (B, T+1) tokens; inputs and targets are two views of it.
    window_BT1 = torch.from_numpy(np.asarray(x[starts_B[:, None] + np.arange(context_length + 1)], dtype=np.int64))
    # Pinned host memory lets the copy to a GPU overlap with compute.
    pinned = device.type == "cuda"
    window_BT1 = (window_BT1.pin_memory() if pinned else window_BT1).to(device, non_blocking=pinned)
    return window_BT1[:, :-1], window_BT1[:, 1:]
