"""Random training windows from one long token array (a NumPy array or a np.memmap over a token file).

The corpus is a single sequence x[0..n); any start i in [0, n - T - 1] gives a window x[i : i+T] whose
targets are x[i+1 : i+T+1]. Only the sampled windows are read, so a memmap of a multi-GB file is never
copied whole. From a memmap of a whole file the windows are read with pread, not through the mapping:
pages touched through a mapping stay in the process's resident set (with the kernel's read-ahead, most
of a multi-GB file after a few thousand random batches), while pread leaves them to the page cache.
"""

from __future__ import annotations

import mmap
import os

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
    x: np.ndarray, starts_B: np.ndarray, context_length: int, device: torch.device, ids_below: int | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """(inputs, targets), each (B, T) int64 on `device`, for windows starting at `starts_B`.

    `ids_below`: refuse an id >= it (DataError), checked on the host before the copy. The trainer asks for
    it on files that opening checked only in samples (`token_files.fully_checked`), where a bad id would
    otherwise reach a GPU, whose model skips its own id check (a host sync per step), as a device assert.
    """
    # One read of (B, T+1) tokens.
    raw_BT1 = _read_windows(x, starts_B, context_length + 1)
    if ids_below is not None:
        _check_window_ids(x, raw_BT1, starts_B, ids_below)
    # Inputs and targets side by side in one (2, B, T) tensor: one copy to the device, and each half is
    # contiguous and apart from the other (two shifted views of the (B, T+1) read would break
    # `targets.view(-1)` and alias: writing to an input would change a target).
    pair_2BT = torch.from_numpy(np.stack([raw_BT1[:, :-1], raw_BT1[:, 1:]]).astype(np.int64))
    # Pinned host memory lets the copy to a GPU overlap with compute.
    pinned = device.type == "cuda"
    pair_2BT = (pair_2BT.pin_memory() if pinned else pair_2BT).to(device, non_blocking=pinned)
    return pair_2BT[0], pair_2BT[1]


def _check_window_ids(x: np.ndarray, raw_BT1: np.ndarray, starts_B: np.ndarray, ids_below: int) -> None:
    bad = np.argwhere(raw_BT1 >= ids_below)
    if len(bad):
        row, col = (int(i) for i in bad[0])
        raise DataError(
            f"{getattr(x, 'filename', 'the token array')}: token {int(starts_B[row]) + col} has id "
            f"{int(raw_BT1[row, col])}, not below the vocabulary size {ids_below}; the file was made with another "
            "tokenizer -- prepare it again."
        )


def _read_windows(x: np.ndarray, starts_B: np.ndarray, length: int) -> np.ndarray:
    """x[start : start + length] for each start, as a (B, length) array of x's dtype."""
    if not _whole_file_memmap(x):
        return np.asarray(x[starts_B[:, None] + np.arange(length)])
    out_BL = np.empty((len(starts_B), length), dtype=x.dtype)
    with open(x.filename, "rb", buffering=0) as fh:
        for row, start in zip(out_BL, starts_B.tolist(), strict=True):
            if os.preadv(fh.fileno(), [row], x.offset + start * x.itemsize) != row.nbytes:
                raise DataError(f"{x.filename} became shorter while it was being read; prepare it again.")
    return out_BL


def _whole_file_memmap(x: np.ndarray) -> bool:
    # A slice of a memmap keeps its parent's `offset`, so only the memmap that owns the mapping qualifies; a
    # copy-on-write one ("c") may hold writes the file does not, so it is read as an array.
    return (
        isinstance(x, np.memmap)
        and isinstance(x.base, mmap.mmap)
        and x.ndim == 1
        and getattr(x, "mode", None) in ("r", "r+")
        and hasattr(os, "preadv")
    )
