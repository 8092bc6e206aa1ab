"""Trajectory rollouts: from the first k steps of each trajectory, predict every later action in turn.

Shapes: N = trajectories, T = steps, K = tokens per step, L = T * K tokens per row, H = T - k horizons.

A row is one trajectory in its layout (`scratchlm.data.actions`): actions only (K = 1), or per step the
state's binned dims then the action (K = D + 1). Given the true first k steps, the model predicts step k's
action, which is fed back in place of the true one, then step k+1's, and so on: a free-running rollout in
which mistakes compound. In the unified layout each later step's true state tokens are fed before its
action is predicted (states come from the environment, actions from the model). Predictions are taken
among the action ids only. One KV cache serves a batch of rows: a prefill, then one forward per step.

Metrics by horizon h = 1..H (the h-th predicted action): exact accuracy and accuracy within ±2 bins; for
the course's v2 actions (token = octant * 32 + distance bin, plus uniform noise in {-2..2}) also the
decoded octant's accuracy and the mean absolute error of the distance ("magnitude") bin. The truth is the
recorded, noisy token, so the ±2 noise caps exact accuracy near 1/5 even for a perfect model, and can
move a true token across an octant boundary.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import Tensor

from scratchlm.data.trajectory_metrics import WITHIN_TOLERANCE
from scratchlm.errors import ConfigError, ShapeError
from scratchlm.infer.kv_cache import KVCache
from scratchlm.infer.sampling import check_sampling_args, sample_next_token
from scratchlm.model import TransformerLM

V2_BINS_PER_OCTANT = 32


@dataclass(frozen=True)
class Rollout:
    """predicted_NH and true_NH: action tokens (ids minus the action offset) of steps k .. T-1."""

    predicted_NH: np.ndarray
    true_NH: np.ndarray
    context_steps: int


@torch.no_grad()
def rollout_actions(
    model: TransformerLM,
    tokens_NL: np.ndarray | Tensor,
    *,
    tokens_per_step: int,
    action_offset: int,
    action_vocab: int,
    context_steps: int,
    temperature: float = 0.0,
    top_k: int | None = None,
    top_p: float | None = None,
    generator: torch.Generator | None = None,
    batch_size: int = 64,
    use_cache: bool = True,
) -> Rollout:
    """Roll every row out from its first `context_steps` steps (greedy by default); see the module docstring.

    tokens_NL: (N, T*K) token ids, each step's K tokens ending in its action id (action_offset + action).
    Sampling as in `sampling.sample_next_token` (temperature 0 = greedy), among the action ids only.
    use_cache=False reruns the plain forward over the whole row so far at every step (the reference).
    """
    check_sampling_args(temperature, top_k, top_p)
    tokens_NL = torch.as_tensor(np.asarray(tokens_NL), dtype=torch.long)
    if tokens_NL.dim() != 2 or tokens_NL.shape[1] % tokens_per_step:
        raise ShapeError(f"rollout rows must be (N, steps * {tokens_per_step}), got {tuple(tokens_NL.shape)}.")
    steps = tokens_NL.shape[1] // tokens_per_step
    if not 1 <= context_steps < steps:
        raise ConfigError(
            f"context steps must be in [1, {steps - 1}] for {steps}-step trajectories, got {context_steps}."
        )
    if tokens_NL.shape[1] - 1 > model.config.context_length:
        raise ConfigError(
            f"a {steps}-step rollout needs {tokens_NL.shape[1] - 1} positions but the model's context_length "
            f"is {model.config.context_length}."
        )
    was_training = model.training
    model.eval()
    try:
        sampling = (temperature, top_k, top_p, generator)
        predicted = []
        for lo in range(0, len(tokens_NL), batch_size):
            rows_BL = tokens_NL[lo : lo + batch_size]
            actions = (action_offset, action_vocab)
            predicted.append(
                _rollout_batch(model, rows_BL, tokens_per_step, actions, context_steps, sampling, use_cache)
            )
    finally:
        model.train(was_training)
    true_NH = tokens_NL[:, context_steps * tokens_per_step + tokens_per_step - 1 :: tokens_per_step] - action_offset
    return Rollout(torch.cat(predicted).numpy(), true_NH.numpy(), context_steps)


def _rollout_batch(
    model: TransformerLM,
    tokens_BL: Tensor,
    per_step: int,
    actions: tuple[int, int],
    context_steps: int,
    sampling: tuple[float, int | None, float | None, torch.Generator | None],
    use_cache: bool,
) -> Tensor:
    """Predicted actions (B, H) of one batch of rows; actions = (action_offset, action_vocab)."""
    action_offset, action_vocab = actions
    device = model.token_embeddings.weight.device
    tokens_BL = tokens_BL.to(device)
    batch, length = tokens_BL.shape
    cache = KVCache.for_model(model, batch, length - 1) if use_cache else None  # the last action is never fed
    fed_BT = tokens_BL[:, :0]

    def feed(new_BT: Tensor) -> Tensor:
        """The last position's logits (B, V) after feeding new_BT."""
        nonlocal fed_BT
        fed_BT = torch.cat([fed_BT, new_BT], dim=1)
        logits_BTV, _ = model(new_BT, kv_cache=cache) if use_cache else model(fed_BT)
        return logits_BTV[:, -1]

    # Prefill: the true context steps, plus the state tokens of the first step to predict (none when K = 1).
    logits_BV = feed(tokens_BL[:, : context_steps * per_step + per_step - 1])
    predicted: list[Tensor] = []
    while True:
        action_B = sample_next_token(logits_BV[:, action_offset : action_offset + action_vocab], *sampling)
        predicted.append(action_B)
        done = fed_BT.shape[1]
        if done + 1 >= length:
            return torch.stack(predicted, dim=1).cpu()
        # Our action in place of the true one, then the next step's true states: K tokens in one forward.
        logits_BV = feed(
            torch.cat([(action_B + action_offset).unsqueeze(1), tokens_BL[:, done + 1 : done + per_step]], 1)
        )


def rollout_metrics(rollout: Rollout, *, v2_actions: bool, tolerance: int = WITHIN_TOLERANCE) -> dict:
    """Per-horizon lists (index 0 = horizon 1) and their means over every predicted action.

    Keys: horizon, exact, within_<tol>, and with v2_actions also octant and magnitude_abs_error.
    """
    predicted_NH, true_NH = rollout.predicted_NH.astype(np.int64), rollout.true_NH.astype(np.int64)
    per_horizon: dict[str, np.ndarray] = {
        "exact": (predicted_NH == true_NH).mean(axis=0),
        f"within_{tolerance}": (np.abs(predicted_NH - true_NH) <= tolerance).mean(axis=0),
    }
    if v2_actions:
        per_horizon["octant"] = (predicted_NH // V2_BINS_PER_OCTANT == true_NH // V2_BINS_PER_OCTANT).mean(axis=0)
        magnitude_error_NH = np.abs(predicted_NH % V2_BINS_PER_OCTANT - true_NH % V2_BINS_PER_OCTANT)
        per_horizon["magnitude_abs_error"] = magnitude_error_NH.mean(axis=0)
    result: dict = {
        "context_steps": rollout.context_steps,
        "num_trajectories": int(predicted_NH.shape[0]),
        "horizon": list(range(1, predicted_NH.shape[1] + 1)),
    }
    for name, values_H in per_horizon.items():
        result[name] = [round(float(v), 6) for v in values_H]
        result[f"mean_{name}"] = round(float(values_H.mean()), 6)
    return result
