"""Batch sources: what the loop draws (inputs, targets) from, with a resumable position.

Under data parallelism every rank draws the same *global* batch from the same seeded generator and keeps
its own slice, so N ranks with batch B see exactly the data of one process with batch N·B.
Shapes: B = per-rank batch, T = sequence length.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import numpy as np
import torch
from torch import Tensor

from scratchlm.data.tokens import windows_at


class BatchSource(Protocol):
    """The loop's view of training data."""

    tokens_per_batch: int  # target positions per (per-rank) batch, for throughput accounting

    def next_batch(self) -> tuple[Tensor, Tensor]: ...

    def epoch(self) -> float: ...

    def state_dict(self) -> dict[str, Any]: ...

    def load_state_dict(self, state: dict[str, Any]) -> None: ...


class TokenWindows:
    """Uniformly random windows of one long token array (usually a np.memmap of train.bin)."""

    def __init__(
        self,
        tokens: np.ndarray,
        batch_size: int,
        context_length: int,
        device: torch.device,
        seed: int,
        rank: int = 0,
        world_size: int = 1,
        check_ids_below: int | None = None,
    ) -> None:
        self.tokens = tokens
        self.check_ids_below = check_ids_below  # set when opening the file checked only a sample of its ids
        self.batch_size = batch_size
        self.context_length = context_length
        self.device = device
        self.rank, self.world_size = rank, world_size
        self.rng = np.random.default_rng(seed)
        self.tokens_per_batch = batch_size * context_length
        self.batches_drawn = 0

    def next_batch(self) -> tuple[Tensor, Tensor]:
        num_starts = len(self.tokens) - self.context_length
        starts_G = self.rng.integers(0, num_starts, size=self.batch_size * self.world_size)
        starts_B = starts_G[self.rank * self.batch_size : (self.rank + 1) * self.batch_size]
        self.batches_drawn += 1
        return windows_at(self.tokens, starts_B, self.context_length, self.device, self.check_ids_below)

    def epoch(self) -> float:
        """Tokens drawn so far over the corpus size: 'epochs' in the loose sense used for random windows."""
        return self.batches_drawn * self.tokens_per_batch * self.world_size / len(self.tokens)

    def state_dict(self) -> dict[str, Any]:
        return {"bit_generator": self.rng.bit_generator.state, "batches_drawn": self.batches_drawn}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.rng.bit_generator.state = state["bit_generator"]
        self.batches_drawn = state["batches_drawn"]


def fixed_windows(
    tokens: np.ndarray,
    batch_size: int,
    context_length: int,
    num_batches: int,
    device: torch.device,
    check_ids_below: int | None = None,
) -> Iterator[tuple[Tensor, Tensor]]:
    """The validation batches: evenly spaced windows, identical at every evaluation.

    num_batches = 0 covers the whole array with non-overlapping windows; `check_ids_below`: see `windows_at`.
    """
    last_start = len(tokens) - context_length - 1
    if num_batches == 0:
        starts = np.arange(0, last_start + 1, context_length)
    else:
        starts = np.linspace(0, last_start, num=min(num_batches * batch_size, last_start + 1)).astype(np.int64)
    for i in range(0, len(starts), batch_size):
        yield windows_at(tokens, starts[i : i + batch_size], context_length, device, check_ids_below)
