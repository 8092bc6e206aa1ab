"""Evaluate a model the way generation uses it: each prediction sees only the tokens before its target.

Teacher-forced evaluation runs a whole sequence at once; with a causal mask position t then sees tokens
<= t and nothing else, but a model trained without the mask sees the future too, including token t+1, its
own target. `prefix_evaluate` removes that possibility by construction: the logits for target t come from
running the model on the prefix tokens[:t+1] alone and reading its last position. For a masked model both
evaluations agree (up to float rounding), which is the check that the procedure is sound.

Shapes: B = batch, T = positions, V = vocabulary.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import Tensor

from scratchlm.model import IGNORE_INDEX, TransformerLM
from scratchlm.nn.functional import cross_entropy
from scratchlm.train.datasets import Batch, TrainingData


@torch.no_grad()
def prefix_logits(model: TransformerLM, inputs_BT: Tensor, targets_BT: Tensor) -> Tensor:
    """(B, T, V) logits where position t is computed from inputs[:, :t+1] only (positions without targets: 0)."""
    batch, seq = inputs_BT.shape
    logits_BTV = torch.zeros(batch, seq, model.config.vocab_size, device=inputs_BT.device)
    has_target_T = (targets_BT != IGNORE_INDEX).any(dim=0)
    for t in range(seq):
        if bool(has_target_T[t]):  # the unified layout predicts only action positions: skip the others
            logits_BTV[:, t] = model(inputs_BT[:, : t + 1])[0][:, -1].float()
    return logits_BTV


@torch.no_grad()
def compare_evaluations(
    model: TransformerLM, data: TrainingData, *, max_rows: int | None = None
) -> dict[str, dict[str, float]]:
    """Teacher-forced and prefix-only ("causal") loss and data metrics over the validation batches.

    Returns {"teacher_forced": {...}, "causal": {...}}, each with "loss" and the data's own metrics
    (e.g. "val_action_acc") as means per target token, plus "rows" evaluated.
    """
    was_training = model.training
    model.eval()
    sums: dict[str, dict[str, float]] = {"teacher_forced": {}, "causal": {}}
    count = rows = 0
    try:
        for inputs_BT, targets_BT in _limited(data.val_batches(), max_rows):
            n = int((targets_BT != IGNORE_INDEX).sum())
            full_BTV = model(inputs_BT)[0].float()
            for name, logits_BTV in (
                ("teacher_forced", full_BTV),
                ("causal", prefix_logits(model, inputs_BT, targets_BT)),
            ):
                found = {"loss": float(cross_entropy(logits_BTV, targets_BT, ignore_index=IGNORE_INDEX))}
                found.update(data.metrics(logits_BTV, targets_BT))
                for key, value in found.items():
                    sums[name][key] = sums[name].get(key, 0.0) + value * n
            count += n
            rows += len(inputs_BT)
    finally:
        model.train(was_training)
    result = {name: {k: v / max(count, 1) for k, v in values.items()} for name, values in sums.items()}
    for values in result.values():
        values["rows"] = rows
    return result


def _limited(batches: Iterable[Batch], max_rows: int | None) -> Iterable[Batch]:
    left = max_rows
    for inputs_BT, targets_BT in batches:
        if left is not None:
            if left <= 0:
                return
            inputs_BT, targets_BT = inputs_BT[:left], targets_BT[:left]
            left -= len(inputs_BT)
        yield inputs_BT, targets_BT
