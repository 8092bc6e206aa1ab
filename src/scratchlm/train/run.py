"""What one training run is: its `Run` (model, optimizer, data, device, precision) and the `TrainState`
counters a checkpoint restores, plus the pieces derived from the config alone: the learning rate of a step,
the autocast dtype, and the number of steps the budget comes to. `trainer.py` builds and drives a Run;
`resume.py` restores one from its checkpoint."""

from __future__ import annotations

import math
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from scratchlm.analysis.accounting import peak_flops
from scratchlm.config import OptimConfig, RunConfig
from scratchlm.fileio import atomic_write
from scratchlm.model import TransformerLM
from scratchlm.optim import AdamW, get_lr_cosine_schedule
from scratchlm.presets import BUDGET_KEYS, to_toml
from scratchlm.train.datasets import TrainingData
from scratchlm.train.distributed import DistInfo
from scratchlm.train.tracking import MetricsLogger

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}


@dataclass
class TrainState:
    """The counters a checkpoint restores (with the model, optimizer, sampler and RNG states)."""

    step: int = 0  # optimizer updates completed
    tokens: int = 0  # target tokens trained on, over all ranks
    best_val_loss: float = math.inf
    best_step: int = 0  # the step best.pt holds
    elapsed_s: float = 0.0  # training wall time, summed over resumed sessions
    skipped_steps: int = 0
    window: dict[str, float] = field(default_factory=dict)  # a log interval cut short by --stop-after
    last_eval: dict[str, float] = field(default_factory=dict)  # the latest validation metrics


@dataclass
class Run:
    """Everything the loop needs for one run; built by `trainer.setup`."""

    config: RunConfig
    run_dir: Path
    model: TransformerLM  # the plain module: saved, evaluated, restored
    step_model: nn.Module  # what the training step calls (maybe compiled / DDP-wrapped)
    optimizer: AdamW
    data: TrainingData
    total_steps: int
    device: torch.device
    autocast_dtype: torch.dtype | None
    dist: DistInfo
    scaler: torch.amp.GradScaler | None = None
    state: TrainState = field(default_factory=TrainState)
    logger: MetricsLogger | None = None
    saved_step: int | None = None  # the step of the newest checkpoint on disk, once there is one

    @property
    def checkpoint_dir(self) -> Path:
        return self.run_dir / "checkpoints"

    @property
    def step_checkpoint_path(self) -> Path:
        """The periodic copy of the current step's checkpoint (step_000001000.pt)."""
        return self.checkpoint_dir / f"step_{self.state.step:09d}.pt"

    @property
    def tokens_per_step(self) -> int:
        return self.data.train.tokens_per_batch * self.config.train.grad_accum * self.dist.world_size

    def autocast(self) -> Any:
        if self.autocast_dtype is None:
            return nullcontext()
        return torch.autocast(self.device.type, dtype=self.autocast_dtype)


def lr_at(step: int, optim: OptimConfig, total_steps: int) -> float:
    """The learning rate of update `step` (0-based): warmup, then cosine reaching min_lr at the last update.

    A run no longer than its warmup has no cosine phase: the warmup is cut to the run and ends at the peak
    rate on the last update (`fit` warns about it).
    """
    warmup = min(optim.warmup_steps, max(total_steps - 1, 0))
    if optim.schedule == "constant":
        return optim.lr if step >= warmup else step / warmup * optim.lr
    return get_lr_cosine_schedule(step, optim.lr, optim.final_lr, warmup, max(total_steps - 1, warmup))


def resolve_autocast_dtype(setting: str, device: torch.device) -> torch.dtype | None:
    """None means plain float32. "auto" is bf16 autocast on GPUs that support it, fp32 elsewhere."""
    if setting == "auto":
        cuda_bf16 = device.type == "cuda" and torch.cuda.is_bf16_supported()
        return torch.bfloat16 if cuda_bf16 else None
    return AUTOCAST_DTYPES.get(setting)


def step_peak_flops(device: torch.device, autocast_dtype: torch.dtype | None) -> float | None:
    """The datasheet peak a training step's matmuls run against, for MFU: the autocast dtype's (bf16 or
    fp16), else TF32 (`configure_cuda` turns it on), else FP32 on GPUs without TF32; None on a CPU or an
    unknown GPU."""
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    dtype = {torch.bfloat16: "bf16", torch.float16: "fp16"}.get(autocast_dtype, "tf32")  # type: ignore[arg-type]
    peak = peak_flops(name, dtype)
    return peak_flops(name, "fp32") if peak is None and autocast_dtype is None else peak


def total_steps_for(run: Run, budget: dict[str, Any] | None = None) -> int:
    """The optimizer updates the run's budget (or `budget`, {key: value} of BUDGET_KEYS) comes to."""
    t = run.config.train
    budget = budget if budget is not None else budget_of(run.config.to_tables())
    if budget.get("max_steps") is not None:
        return int(budget["max_steps"])
    if budget.get("max_tokens") is not None:
        return max(1, math.ceil(budget["max_tokens"] / run.tokens_per_step))
    assert budget.get("epochs") is not None and run.data.batches_per_epoch is not None
    return max(1, math.ceil(budget["epochs"] * run.data.batches_per_epoch / t.grad_accum))


def budget_of(tables: dict[str, Any]) -> dict[str, Any]:
    """{key: value} of the training budget (BUDGET_KEYS) in a run's config tables; {} without a [train] table."""
    train = tables.get("train")
    return {key: train.get(key) for key in BUDGET_KEYS} if isinstance(train, dict) else {}


def fallback_checkpoint(checkpoint_dir: Path) -> Path | None:
    """What can stand in for a lost or damaged last.pt: the newest step_*.pt (their zero-padded names sort
    by step), else best.pt, else None. best.pt may be newer than every step_*.pt, but it is not always
    the run's latest state, so it is only the last resort."""
    steps = sorted(checkpoint_dir.glob("step_*.pt")) if checkpoint_dir.is_dir() else []
    for path in [*reversed(steps), checkpoint_dir / "best.pt"]:
        if path.is_file():
            return path
    return None


def write_config(run: Run) -> None:
    """The run's fully resolved config.toml (rewritten when a resume changes the budget)."""
    with atomic_write(run.run_dir / "config.toml", "w", encoding="utf-8") as fh:
        fh.write(to_toml(run.config.to_tables()))
