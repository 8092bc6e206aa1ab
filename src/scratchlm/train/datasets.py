"""From a DataConfig to what the loop consumes: a resumable training source, fixed validation batches,
and the data's own validation metrics.

- kind = "tokens": a directory from `scratchlm data text` (train.bin, val.bin, meta.json); training draws
  random windows of model.context_length tokens, validation uses fixed evenly spaced windows.
- kind = "trajectories": a trajectory pickle; split by trajectory, whole trajectories per sequence.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor

from scratchlm.config import STATE_SUBSETS, RunConfig
from scratchlm.train.distributed import DistInfo
from scratchlm.train.sources import BatchSource, TokenWindows, fixed_windows

Batch = tuple[Tensor, Tensor]


def _no_metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
    return {}


@dataclass
class TrainingData:
    train: BatchSource
    val_batches: Callable[[], Iterable[Batch]]  # a fresh pass over the same validation batches
    seq_len: int  # positions per training sequence
    vocab_size: int | None  # the data's vocabulary, when it knows it
    batches_per_epoch: int | None = None  # per-rank batches in one pass over the training split
    metrics: Callable[[Tensor, Tensor], dict[str, float]] = _no_metrics  # per-target-token means, "val_*" keys
    info: dict[str, Any] = field(default_factory=dict)  # facts for reports (split sizes, loss floor, ...)
    # A digest of what the data holds (not of file bytes or dates): checkpoints record it, and a resume refuses
    # data that changed under the same data.path, which would silently break the exact-resume promise.
    fingerprint: str | None = None


def build_training_data(config: RunConfig, device: torch.device, dist: DistInfo) -> TrainingData:
    if config.data.kind == "tokens":
        return _token_data(config, device, dist)
    return _trajectory_data(config, device, dist)


def _token_data(config: RunConfig, device: torch.device, dist: DistInfo) -> TrainingData:
    from scratchlm.data.text import load_token_dir

    corpus = load_token_dir(config.data.path)
    t, context = config.train, config.model.context_length
    for split, tokens in (("train", corpus.train), ("val", corpus.val)):
        if len(tokens) <= context:
            raise_short(split, len(tokens), context, config.data.path)
    train_check, val_check = (_ids_to_check(tokens, corpus.vocab_size) for tokens in (corpus.train, corpus.val))
    train = TokenWindows(
        corpus.train, t.batch_size, context, device, t.seed, dist.rank, dist.world_size, check_ids_below=train_check
    )
    # Validation uses global-batch-sized batches (rank 0 evaluates alone), so its set does not depend on
    # how many processes train.
    val_batch = t.batch_size * dist.world_size
    return TrainingData(
        train=train,
        val_batches=lambda: fixed_windows(corpus.val, val_batch, context, t.eval_batches, device, val_check),
        seq_len=context,
        vocab_size=corpus.vocab_size,
        info={"train_tokens": len(corpus.train), "val_tokens": len(corpus.val)},
        fingerprint=_corpus_fingerprint(corpus.meta, corpus.tokenizer_dir),
    )


def _corpus_fingerprint(meta: dict[str, Any], tokenizer_dir: Path) -> str:
    """What a corpus holds, from meta.json and its tokenizer's files: the sources by content (sha256, not
    path, so a copy of the same text elsewhere is the same corpus), the split, the token counts and the
    tokenizer itself (retrained in place, it is another corpus). Timings and writer version are left out."""
    sources = [entry for entry in meta.get("sources") or [] if isinstance(entry, dict)]
    sha_of = {entry.get("path"): entry.get("sha256") for entry in sources}
    val_split = dict(meta.get("val_split") or {})
    if "file" in val_split:
        val_split["file"] = sha_of.get(val_split["file"], val_split["file"])
    if "paths" in val_split:
        val_split["paths"] = [sha_of.get(path, path) for path in val_split["paths"]]
    tokenizer = hashlib.sha256()
    for path in sorted(p for p in tokenizer_dir.rglob("*") if p.is_file()):
        tokenizer.update(path.relative_to(tokenizer_dir).as_posix().encode() + b"\0" + path.read_bytes())
    kept = {
        "vocab_size": meta.get("vocab_size"),
        "dtype": meta.get("dtype"),
        "splits": meta.get("splits"),
        "sources": [[entry.get("sha256"), entry.get("bytes")] for entry in sources],
        "val_split": val_split,
        "tokenizer": tokenizer.hexdigest(),
    }
    return "sha256:" + hashlib.sha256(json.dumps(kept, sort_keys=True).encode("utf-8")).hexdigest()


def _trajectory_fingerprint(states_NTS: np.ndarray, actions_NT: np.ndarray) -> str:
    """The arrays themselves: a regenerated pickle of the same trajectories has other bytes (torch writes
    storage addresses into it) but the same digest."""
    digest = hashlib.sha256(f"{states_NTS.dtype}{states_NTS.shape}{actions_NT.dtype}{actions_NT.shape}".encode())
    for array in (states_NTS, actions_NT):
        digest.update(np.ascontiguousarray(array).data)
    return "sha256:" + digest.hexdigest()


def _ids_to_check(tokens: Any, vocab_size: int) -> int | None:
    """The bound each batch's ids are checked against: set only for a file opened with a sampled id check."""
    from scratchlm.data import token_files

    return None if token_files.fully_checked(len(tokens)) else vocab_size


def raise_short(split: str, num_tokens: int, context: int, path: str) -> None:
    from scratchlm.errors import DataError

    raise DataError(
        f"{path}: the {split} split has {num_tokens} tokens, too few for one window of model.context_length "
        f"{context} plus a target; use more data or a shorter context."
    )


def _trajectory_data(config: RunConfig, device: torch.device, dist: DistInfo) -> TrainingData:
    from scratchlm.data.actions import ActionLayout, UnifiedLayout, UniformBinner
    from scratchlm.data.trajectories import TrajectoryData
    from scratchlm.data.trajectory_dataset import EpochBatches, iterate_batches, make_sequences, split_trajectories
    from scratchlm.data.trajectory_io import load_trajectories
    from scratchlm.data.trajectory_metrics import action_metrics, loss_floor

    d, t = config.data, config.train
    trajectories = load_trajectories(d.path, None if d.version == "auto" else d.version)
    train_split, val_split = split_trajectories(trajectories, d.val_fraction, d.split_seed)
    if d.layout == "unified":  # state bins are fitted on the training split only
        columns = list(STATE_SUBSETS[d.states])
        state_dim = trajectories.states_NTS.shape[-1]
        if max(columns) >= state_dim:
            from scratchlm.errors import DataError

            raise DataError(
                f"data.states = {d.states!r} takes state columns {columns[0]}..{columns[-1]} of the course's "
                f"10-dim state, but {d.path} holds {state_dim} per step; use a file with the full state, or "
                'data.layout = "actions" (actions only).'
            )
        train_split, val_split = (
            TrajectoryData(split.states_NTS[..., columns], split.actions_NT, split.version)
            for split in (train_split, val_split)
        )
        layout: ActionLayout | UnifiedLayout = UnifiedLayout(UniformBinner.fit(train_split.states_NTS, d.state_bins))
    else:
        layout = ActionLayout()
    train_seq, val_seq = make_sequences(train_split, layout), make_sequences(val_split, layout)
    _check_batch_fits(len(train_seq), t.batch_size, dist.world_size, d.path)
    # Every rank walks the same global batch order and keeps its own rows (see sources.py).
    global_batches = EpochBatches(train_seq, t.batch_size * dist.world_size, seed=t.seed, device="cpu")
    train = RankSlice(global_batches, dist.rank, t.batch_size, device, tokens_per_row=train_seq.seq_len - 1)
    val_batch = t.batch_size * dist.world_size  # the validation set does not depend on the process count
    val_rows = len(val_seq) if t.eval_batches == 0 else min(len(val_seq), t.eval_batches * val_batch)
    val_head = val_seq if val_rows == len(val_seq) else _first_rows(val_seq, val_rows)

    def metrics(logits: Tensor, targets: Tensor) -> dict[str, float]:
        found = action_metrics(logits, targets, layout.action_offset, layout.action_vocab)
        return {"val_action_acc": found["action_accuracy"], "val_action_within2": found["action_within_2"]}

    floor = loss_floor(trajectories.version)
    return TrainingData(
        train=train,
        val_batches=lambda: iterate_batches(val_head, val_batch, device),
        seq_len=train_seq.seq_len - 1,
        vocab_size=layout.vocab_size,
        batches_per_epoch=global_batches.steps_per_epoch,
        metrics=metrics,
        info={
            "train_trajectories": len(train_seq),
            "val_trajectories": len(val_seq),
            "version": trajectories.version,
            "loss_floor": floor,
            "layout": layout.to_dict(),
        },
        fingerprint=_trajectory_fingerprint(trajectories.states_NTS, trajectories.actions_NT),
    )


def _check_batch_fits(num_train: int, batch_size: int, world_size: int, path: str) -> None:
    """Every step takes a whole (global) batch of distinct training trajectories, so it needs that many."""
    from scratchlm.errors import ConfigError

    if batch_size * world_size <= num_train:
        return
    processes = f" x {world_size} processes" if world_size > 1 else ""
    fix = (
        f"set train.batch_size <= {num_train // world_size}"
        if num_train >= world_size
        else f"run on at most {num_train} processes"
    )
    raise ConfigError(
        f"train.batch_size = {batch_size}{processes} needs {batch_size * world_size} training trajectories per "
        f"step, but {path} has {num_train} in its training split; {fix} or generate more trajectories."
    )


def _first_rows(sequences: Any, rows: int) -> Any:
    from scratchlm.data.trajectory_dataset import TokenSequences

    return TokenSequences(
        sequences.tokens_NL[:rows],
        sequences.is_target_NL[:rows],
        sequences.vocab_size,
        sequences.action_offset,
        sequences.action_vocab,
    )


class RankSlice:
    """This rank's rows of a global batch source (all rows in a single process)."""

    def __init__(self, source: Any, rank: int, batch_size: int, device: torch.device, tokens_per_row: int) -> None:
        self.source, self.rank, self.batch_size, self.device = source, rank, batch_size, device
        self.tokens_per_batch = batch_size * tokens_per_row  # positions the model processes, targets or not

    def next_batch(self) -> Batch:
        inputs, targets = self.source.next_batch()
        rows = slice(self.rank * self.batch_size, (self.rank + 1) * self.batch_size)
        pinned = self.device.type == "cuda"
        return (
            inputs[rows].to(self.device, non_blocking=pinned),
            targets[rows].to(self.device, non_blocking=pinned),
        )

    def epoch(self) -> float:
        return self.source.epoch + self.source.position / max(self.source.steps_per_epoch, 1)

    def state_dict(self) -> dict[str, Any]:
        return self.source.state_dict()

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.source.load_state_dict(state)
