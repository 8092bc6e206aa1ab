"""Evaluation for action prediction: loss, next-action accuracy (exact and within ±2 bins), the v2 floor.

Every metric is over target positions only (targets != IGNORE_INDEX), which in both layouts are the
action tokens. Accuracy takes the argmax among the action ids alone, so a unified-sequence model is not
penalized for probability it puts on state ids, and "within ±2" counts predictions at most two action
bins away from the truth: on v2 data the course adds uniform {-2..2} noise to every token, so exact
accuracy is capped near 1/5 while a model that has found the underlying bin scores ~100% within ±2.
That same noise sets the loss floor ln 5 = 1.609 nats/token, reported beside the validation loss: a lower
bound, not the attainable loss: for a model of the actions alone (the course's layout) the joint noise no
action shows makes the clean token uncertain too (an oracle that sees the previous state and the target
pays ~1.656; benchmarks/trajectory_floor.py). The unified layout shows the state, so only ln 5 holds there.
"""

from __future__ import annotations

import math

import torch
from torch import Tensor, nn

from scratchlm.data.trajectory_dataset import TokenSequences, iterate_batches
from scratchlm.errors import ShapeError
from scratchlm.model import IGNORE_INDEX
from scratchlm.nn.functional import log_softmax, perplexity_from_loss

V2_LOSS_FLOOR = math.log(5)
WITHIN_TOLERANCE = 2


def loss_floor(version: str | None) -> float | None:
    """The loss no model can go below on the data version, nats/token: ln 5 for v2 (the action noise's
    entropy; a lower bound, the attainable loss is higher), None when unknown or none."""
    return V2_LOSS_FLOOR if version == "v2" else None


class ActionMetrics:
    """Accumulates next-action metrics over batches as sums, so the result is exact under any batching.

    Sums stay on the logits' device (no host sync per batch); `compute()` syncs once.
    """

    def __init__(self, action_offset: int = 0, action_vocab: int = 256, tolerance: int = WITHIN_TOLERANCE) -> None:
        self.action_offset = action_offset
        self.action_vocab = action_vocab
        self.tolerance = tolerance
        self._sums: Tensor | None = None  # [nll, exact, within, count]

    def update(self, logits_BLV: Tensor, targets_BL: Tensor) -> None:
        """Add one batch: logits (..., V) and targets (...) with IGNORE_INDEX at untracked positions."""
        if logits_BLV.shape[:-1] != targets_BL.shape:
            raise ShapeError(f"logits {tuple(logits_BLV.shape)} must be targets {tuple(targets_BL.shape)} + (V,).")
        keep = targets_BL != IGNORE_INDEX
        logits_MV = logits_BLV[keep].float()
        targets_M = targets_BL[keep]
        nll_M = -log_softmax(logits_MV, dim=-1).gather(-1, targets_M.unsqueeze(-1)).squeeze(-1)
        lo, hi = self.action_offset, self.action_offset + self.action_vocab
        predicted_M = logits_MV[:, lo:hi].argmax(dim=-1)
        distance_M = (predicted_M - (targets_M - lo)).abs()
        batch = torch.stack(
            [
                nll_M.sum(),
                (distance_M == 0).sum().float(),
                (distance_M <= self.tolerance).sum().float(),
                torch.tensor(float(targets_M.numel()), device=nll_M.device),
            ]
        ).double()
        self._sums = batch if self._sums is None else self._sums + batch

    def compute(self) -> dict[str, float]:
        """{'loss', 'perplexity', 'action_accuracy', 'action_within_<tol>', 'num_actions'} (loss in nats)."""
        if self._sums is None or self._sums[3].item() == 0:
            raise ShapeError("no action targets were seen; every target was IGNORE_INDEX.")
        nll, exact, within, count = self._sums.tolist()
        return {
            "loss": nll / count,
            "perplexity": perplexity_from_loss(nll / count),
            "action_accuracy": exact / count,
            f"action_within_{self.tolerance}": within / count,
            "num_actions": int(count),
        }


def action_metrics(
    logits_BLV: Tensor, targets_BL: Tensor, action_offset: int = 0, action_vocab: int = 256
) -> dict[str, float]:
    """ActionMetrics over a single batch."""
    metrics = ActionMetrics(action_offset, action_vocab)
    metrics.update(logits_BLV, targets_BL)
    return metrics.compute()


@torch.no_grad()
def evaluate_actions(
    model: nn.Module,
    sequences: TokenSequences,
    batch_size: int = 64,
    device: str | torch.device = "cpu",
    version: str | None = None,
) -> dict[str, float]:
    """ActionMetrics of `model` (forward(idx) -> (logits, loss)) over every row, in eval mode.

    With version "v2" the result also holds `loss_floor` (ln 5) and `loss_above_floor`.
    """
    was_training = model.training
    model.eval()
    metrics = ActionMetrics(sequences.action_offset, sequences.action_vocab)
    try:
        for inputs_BL, targets_BL in iterate_batches(sequences, batch_size, device):
            logits_BLV, _ = model(inputs_BL)
            metrics.update(logits_BLV, targets_BL)
    finally:
        model.train(was_training)
    result: dict[str, float] = dict(metrics.compute())
    floor = loss_floor(version)
    if floor is not None:
        result["loss_floor"] = floor
        result["loss_above_floor"] = result["loss"] - floor
    return result
