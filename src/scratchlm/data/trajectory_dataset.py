"""Trajectory datasets for training: whole-trajectory token sequences, a split by trajectory, resumable batches.

A trajectory is one training sequence (a batch never holds a window that spans two trajectories), so
batches are (inputs, targets) = (tokens[:, :-1], tokens[:, 1:]) over whole rows, with targets set to
IGNORE_INDEX (-100) wherever the next token is not one the loss should count (the state tokens of a
unified sequence). The train/validation split is by trajectory, from a seed.

Typical use (see also `trajectory_metrics`):

    data = load_trajectories("data/trajectories.pkl")                 # or generate_trajectories(...)
    train, val = split_trajectories(data, val_fraction=0.1, seed=0)
    train_seq, val_seq = make_sequences(train), make_sequences(val)   # actions only, vocab 256
    batches = EpochBatches(train_seq, batch_size=64, seed=0, device="cuda")
    x, y = batches.next_batch()                                       # (64, 49) each; state_dict() to resume

Shapes: N = trajectories (rows), L = tokens per row, B = batch size.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scratchlm.data.actions import ActionLayout, TokenLayout
from scratchlm.data.trajectories import TrajectoryData
from scratchlm.device import resolve_device
from scratchlm.errors import ConfigError, DataError
from scratchlm.model import IGNORE_INDEX


def split_trajectories(
    data: TrajectoryData, val_fraction: float = 0.1, seed: int = 0
) -> tuple[TrajectoryData, TrajectoryData]:
    """(train, val): a seeded random split by whole trajectory; val gets round(N * val_fraction), at least 1."""
    if not 0.0 < val_fraction < 1.0:
        raise ConfigError(f"val_fraction must be strictly between 0 and 1, got {val_fraction}.")
    num = data.num_trajectories
    if num < 2:
        raise DataError(f"cannot split {num} trajectory into train and validation; generate at least 2.")
    num_val = min(max(1, round(num * val_fraction)), num - 1)
    order = np.random.default_rng(seed).permutation(num)
    # Sorted indices keep each split in file order: reading is sequential and the split reproducible.
    return data.subset(np.sort(order[num_val:])), data.subset(np.sort(order[:num_val]))


@dataclass(frozen=True, eq=False)
class TokenSequences:
    """One token row per trajectory: tokens_NL int64, is_target_NL bool (positions whose prediction counts).

    Action token a has id action_offset + a; ids lie in [0, vocab_size).
    """

    tokens_NL: np.ndarray
    is_target_NL: np.ndarray
    vocab_size: int
    action_offset: int = 0
    action_vocab: int = 256

    def __post_init__(self) -> None:
        if self.tokens_NL.ndim != 2 or self.tokens_NL.shape != self.is_target_NL.shape:
            raise DataError(
                f"tokens {self.tokens_NL.shape} and target mask {self.is_target_NL.shape} must be equal 2-D shapes."
            )
        if self.tokens_NL.shape[1] < 2:
            raise DataError(f"each sequence needs at least 2 tokens (an input and a target), got {self.seq_len}.")

    def __len__(self) -> int:
        return self.tokens_NL.shape[0]

    @property
    def seq_len(self) -> int:
        """Tokens per row, L; a model sees L - 1 of them at a time."""
        return self.tokens_NL.shape[1]

    def batch(self, indices: np.ndarray, device: str | torch.device = "cpu") -> tuple[Tensor, Tensor]:
        """Rows `indices` as (inputs, targets), each (B, L-1) int64; untracked targets are IGNORE_INDEX."""
        rows_BL = self.tokens_NL[indices]
        targets_BL1 = np.where(self.is_target_NL[indices, 1:], rows_BL[:, 1:], IGNORE_INDEX)
        pair_2BL1 = torch.from_numpy(np.stack([rows_BL[:, :-1], targets_BL1]))
        dev = resolve_device(device)
        pair_2BL1 = pair_2BL1.pin_memory().to(dev, non_blocking=True) if dev.type == "cuda" else pair_2BL1.to(dev)
        return pair_2BL1[0], pair_2BL1[1]


def make_sequences(data: TrajectoryData, layout: TokenLayout | None = None) -> TokenSequences:
    """Token rows for `data` under `layout` (default: the course's actions-only sequence, vocab 256)."""
    layout = layout if layout is not None else ActionLayout()
    tokens_NL, is_action_NL = layout.encode(data.states_NTS, data.actions_NT)
    return TokenSequences(tokens_NL, is_action_NL, layout.vocab_size, layout.action_offset, layout.action_vocab)


class EpochBatches:
    """Batches of whole trajectories, epoch after epoch, in a seeded order that resumes exactly.

    Epoch e visits the rows in `np.random.default_rng([seed, e]).permutation(N)` order (0..N-1 when
    shuffle=False), batch_size rows at a time; `position` counts the batches already taken from epoch e.
    (epoch, position) is the whole state: put `state_dict()` in a checkpoint and `load_state_dict()` it
    into a fresh EpochBatches over the same data to continue with the very batch that would have come next.
    drop_last=True (the default, for training) skips the last partial batch so every step has B rows.
    """

    def __init__(
        self,
        sequences: TokenSequences,
        batch_size: int,
        *,
        seed: int = 0,
        shuffle: bool = True,
        drop_last: bool = True,
        device: str | torch.device = "cpu",
    ) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
            raise ConfigError(f"batch_size must be a positive integer, got {batch_size!r}.")
        if drop_last and batch_size > len(sequences):
            raise ConfigError(
                f"batch_size {batch_size} exceeds the {len(sequences)} trajectories of this split; lower it."
            )
        self.sequences = sequences
        self.batch_size = batch_size
        self.seed = seed
        self.shuffle = shuffle
        self.drop_last = drop_last
        self.device = device
        self.epoch = 0
        self.position = 0
        self._order_epoch = -1
        self._order = np.arange(len(sequences))

    @property
    def steps_per_epoch(self) -> int:
        num = len(self.sequences)
        return num // self.batch_size if self.drop_last else math.ceil(num / self.batch_size)

    def epoch_order(self, epoch: int) -> np.ndarray:
        """The row order of `epoch` (a pure function of seed and epoch)."""
        if not self.shuffle:
            return np.arange(len(self.sequences))
        return np.random.default_rng([self.seed, epoch]).permutation(len(self.sequences))

    def next_batch(self) -> tuple[Tensor, Tensor]:
        """The next (inputs, targets) pair, rolling over into the next epoch when this one is done."""
        if self.position >= self.steps_per_epoch:
            self.epoch += 1
            self.position = 0
        if self._order_epoch != self.epoch:
            self._order, self._order_epoch = self.epoch_order(self.epoch), self.epoch
        lo = self.position * self.batch_size
        indices = self._order[lo : lo + self.batch_size]
        self.position += 1
        return self.sequences.batch(indices, self.device)

    def __iter__(self) -> Iterator[tuple[Tensor, Tensor]]:
        """The remaining batches of the current epoch (all of them on a fresh epoch)."""
        if self.position >= self.steps_per_epoch:
            self.epoch, self.position = self.epoch + 1, 0
        while self.position < self.steps_per_epoch:
            yield self.next_batch()

    def state_dict(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "position": self.position,
            "seed": self.seed,
            "batch_size": self.batch_size,
            "num_sequences": len(self.sequences),
            "shuffle": self.shuffle,
            "drop_last": self.drop_last,
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; refuses a state taken over different data or settings."""
        for key in ("seed", "batch_size", "num_sequences", "shuffle", "drop_last"):
            mine = self.state_dict()[key]
            if state.get(key) != mine:
                raise ConfigError(
                    f"cannot resume batches: the saved {key} is {state.get(key)!r} but this run has {mine!r}; "
                    "resume with the same data split and batch settings."
                )
        if not 0 <= int(state["position"]) <= self.steps_per_epoch or int(state["epoch"]) < 0:
            raise ConfigError(f"cannot resume batches from epoch {state['epoch']}, position {state['position']}.")
        self.epoch, self.position = int(state["epoch"]), int(state["position"])


def iterate_batches(
    sequences: TokenSequences, batch_size: int, device: str | torch.device = "cpu"
) -> Iterator[tuple[Tensor, Tensor]]:
    """One pass over every row in order, the last batch possibly smaller: for evaluation."""
    yield from EpochBatches(sequences, batch_size, shuffle=False, drop_last=False, device=device)
