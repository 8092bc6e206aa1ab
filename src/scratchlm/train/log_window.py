"""The metrics row of one log interval, summed on the device so training never waits on the host."""

from __future__ import annotations

import time
from typing import Any

import torch
from torch import Tensor

from scratchlm.nn.functional import perplexity_from_loss
from scratchlm.train.distributed import DistInfo
from scratchlm.train.run import Run, lr_at


class LogWindow:
    """Sums over the steps since the last metrics row, kept on the device (no host sync per step)."""

    def __init__(self, device: torch.device, saved: dict[str, float]) -> None:
        self.loss_sum = torch.tensor(saved.get("loss_sum", 0.0), device=device)
        self.norm_sum = torch.tensor(saved.get("norm_sum", 0.0), device=device)
        self.norm_max = torch.tensor(saved.get("norm_max", 0.0), device=device)
        self.steps = int(saved.get("steps", 0))
        self.timed_steps, self.start = 0, time.perf_counter()  # throughput counts only this session's steps
        self.seconds = 0.0

    def add(self, loss: Tensor, grad_norm: Tensor) -> None:
        self.loss_sum += loss
        self.norm_sum += grad_norm.float()
        self.norm_max = torch.maximum(self.norm_max, grad_norm.float())
        self.steps += 1
        self.timed_steps += 1

    def lap(self) -> float:
        """Wall seconds since this window started (called once per window, before row() or a stop)."""
        self.seconds = time.perf_counter() - self.start
        return self.seconds

    def row(self, run: Run, flops: float, peak: float | None) -> dict[str, Any]:
        if run.dist.enabled:  # log the global batch's loss, not rank 0's share of it
            torch.distributed.all_reduce(self.loss_sum)
            self.loss_sum /= run.dist.world_size
        loss = float(self.loss_sum) / self.steps
        tokens_per_s = self.timed_steps * run.tokens_per_step / max(self.seconds, 1e-9)
        return {
            "step": run.state.step,
            "tokens": run.state.tokens,
            "epoch": round(run.data.train.epoch(), 4),
            "train_loss": loss,
            "train_ppl": perplexity_from_loss(loss),
            "lr": lr_at(run.state.step - 1, run.config.optim, run.total_steps),
            "grad_norm": float(self.norm_sum) / self.steps,
            "grad_norm_max": float(self.norm_max),
            "tokens_per_s": round(tokens_per_s, 1),
            # tokens_per_s is every rank's; peak is one device's
            "mfu": round(flops * tokens_per_s / (peak * run.dist.world_size), 4) if peak else None,
            "elapsed_s": round(run.state.elapsed_s, 3),
        }

    def state_dict(self, dist: DistInfo | None = None) -> dict[str, float]:
        """The partial window a checkpoint keeps. Under DDP the loss sum is the ranks' mean (a collective:
        every rank calls this), so every rank restores the same share and row()'s mean stays the global one,
        whatever the number of processes that resume."""
        loss_sum = self.loss_sum
        if dist is not None and dist.enabled:
            loss_sum = loss_sum.clone()
            torch.distributed.all_reduce(loss_sum)
            loss_sum /= dist.world_size
        return {
            "loss_sum": float(loss_sum),
            "norm_sum": float(self.norm_sum),
            "norm_max": float(self.norm_max),
            "steps": self.steps,
        }

    def reset(self) -> None:
        self.loss_sum.zero_()
        self.norm_sum.zero_()
        self.norm_max.zero_()
        self.steps = self.timed_steps = 0
        self.start = time.perf_counter()
