"""The training loop as plain functions: `setup` -> `fit` (-> `train_step`, `evaluate`, `save`).

One Run holds what the loop needs; TrainState holds the counters a checkpoint must restore. The model is
trained through `run.step_model` (compiled and/or DDP-wrapped when asked) but saved, evaluated and
restored through the plain `run.model`, so checkpoints always carry the reference state-dict layout.

Crash safety: `train` holds the run directory's lock (`lock.py`). Every file is written atomically and
`last.pt` is the commit point of a save: a process killed at any moment resumes from the newest complete
last.pt, drops metrics rows logged after it, and redoes the step_*.pt / best.pt copies the kill may have
cut off, so an interrupted run ends exactly where an uninterrupted one does. Ctrl-C / SIGTERM during a save
take effect once the save is complete.

Extending a run: resumed with a larger budget (train.max_steps / max_tokens / epochs, nothing else changed),
it continues from its checkpoint to the new total, with the learning-rate schedule recomputed over that
total, and its config.toml records the new budget.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import shutil
import sys
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchlm.analysis.accounting import flops_per_token, param_counts, peak_flops
from scratchlm.config import OptimConfig, RunConfig, with_defaults
from scratchlm.device import configure_cuda
from scratchlm.errors import CheckpointError, ConfigError, NonFiniteLossError, OutOfMemoryError, first_line
from scratchlm.fileio import atomic_write, signals_deferred
from scratchlm.model import IGNORE_INDEX, TransformerLM
from scratchlm.nn.functional import cross_entropy, perplexity_from_loss
from scratchlm.optim import AdamW, clip_grad_norm, get_lr_cosine_schedule, weight_decay_param_groups
from scratchlm.presets import BUDGET_KEYS, load_toml_file, to_toml, without_budget
from scratchlm.train.checkpoint import read_checkpoint, save_checkpoint
from scratchlm.train.compile import compile_for_training
from scratchlm.train.datasets import TrainingData, build_training_data
from scratchlm.train.distributed import DistInfo, init_distributed, is_main_process, shutdown_distributed
from scratchlm.train.lock import exclusive_run_dir
from scratchlm.train.state import capture_rng_state, restore_rng_state
from scratchlm.train.tracking import MetricsLogger, dumps_strict, strict_json, truncate_metrics_after

log = logging.getLogger(__name__)

AUTOCAST_DTYPES = {"bfloat16": torch.bfloat16, "float16": torch.float16}
__all__ = [
    "Monitor",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "Run",
    "TrainState",
    "evaluate",
    "fit",
    "setup",
    "train",
]

# Called with every metrics row as it is logged; a returned string stops the run there (the reason is kept
# in summary.json as "stopped"). Under DDP every rank calls it with the same training fields, but only rank 0
# sees the validation ones, so a monitor must decide from training fields alone.
Monitor = Callable[[dict[str, Any]], str | None]


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


# ------------------------------------------------------------------------------------------------ setup


def setup(config: RunConfig, run_dir: str | Path, *, resume: bool = False) -> Run:
    """Build everything for a run in `run_dir` (a new one, or the one there when resuming).

    Resuming a run that was stopped before its first checkpoint (its config.toml exists, last.pt does not)
    starts it again from step 0. Callers that may race with another writer hold the run's lock (`train`).
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if resume and not last.is_file():
        saved_config = run_dir / "config.toml"
        if not saved_config.is_file():
            raise CheckpointError(
                f"cannot resume: {last} does not exist; start the run without --resume (or check --out/--resume)."
            )
        _check_same_config(RunConfig.from_tables(load_toml_file(str(saved_config))).to_tables(), config, run_dir)
        log.warning("%s has no checkpoint yet (it stopped before the first one): starting it from step 0", run_dir)
        resume = False
    if not resume and last.exists():
        raise ConfigError(
            f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose another --out."
        )
    dist, device = init_distributed(config.train.device)
    configure_cuda(device, config.train.sdpa_kernel)
    if device.type == "cpu" and dist.enabled:
        torch.set_num_threads(max(1, torch.get_num_threads() // dist.world_size))
    torch.manual_seed(config.train.seed)

    data = build_training_data(config, device, dist)
    if data.vocab_size is not None and data.vocab_size > config.model.vocab_size:
        raise ConfigError(
            f"the data uses a vocabulary of {data.vocab_size} tokens but model.vocab_size is "
            f"{config.model.vocab_size}; set model.vocab_size >= {data.vocab_size}."
        )
    if data.seq_len > config.model.context_length:
        raise ConfigError(
            f"the data's sequences have {data.seq_len} positions but model.context_length is "
            f"{config.model.context_length}; raise model.context_length to at least {data.seq_len}."
        )
    model, step_model, optimizer, autocast_dtype, scaler = build_model_and_optimizer(config, device, dist)
    if device.type == "cuda" and data.vocab_size is not None:
        model.check_token_ids = False  # ids < data.vocab_size <= model.vocab_size, checked above
    run = Run(
        config=config,
        run_dir=run_dir,
        model=model,
        step_model=step_model,
        optimizer=optimizer,
        data=data,
        total_steps=0,
        device=device,
        autocast_dtype=autocast_dtype,
        dist=dist,
        scaler=scaler,
    )
    run.total_steps = total_steps_for(run)
    if resume:
        _restore(run, last)
        if dist.is_main:
            _redo_checkpoint_copies(run)
    elif dist.is_main:
        run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        _write_config(run)
        truncate_metrics_after(run_dir / "metrics.jsonl", 0)  # rows of an earlier attempt that never checkpointed
    return run


def build_model_and_optimizer(
    config: RunConfig, device: torch.device, dist: DistInfo
) -> tuple[TransformerLM, nn.Module, AdamW, torch.dtype | None, torch.amp.GradScaler | None]:
    """The model, its training view (compiled / DDP-wrapped as configured), AdamW, and the precision setup."""
    model = TransformerLM(config.model, device=device)
    optimizer = AdamW(
        weight_decay_param_groups(model, config.optim.weight_decay),
        lr=config.optim.lr,
        betas=config.optim.betas,
        eps=config.optim.eps,
        foreach=config.optim.foreach,
        fused=config.optim.fused if config.optim.fused is not None else (config.model.fast and device.type == "cuda"),
    )
    step_model: nn.Module = model
    if config.train.compile:
        step_model = compile_for_training(model, config.train.compile_scope, config.train.compile_mode)
    if dist.enabled:
        device_ids = [device.index] if device.type == "cuda" else None
        step_model = nn.parallel.DistributedDataParallel(step_model, device_ids=device_ids)
    autocast_dtype = resolve_autocast_dtype(config.train.dtype, device)
    scaler = torch.amp.GradScaler(device.type) if autocast_dtype == torch.float16 else None
    return model, step_model, optimizer, autocast_dtype, scaler


def _warn_if_warmup_covers_the_run(run: Run) -> None:
    optim = run.config.optim
    if optim.schedule == "cosine" and optim.warmup_steps >= run.total_steps - 1 and run.dist.is_main:
        log.warning(
            "optim.warmup_steps = %d covers the whole %d-step run, so the learning rate ends at its peak and "
            "never decays to its minimum; lower optim.warmup_steps (say to %d) to give it a cosine phase",
            optim.warmup_steps, run.total_steps, max(run.total_steps // 10, 1),
        )  # fmt: skip


def _write_config(run: Run) -> None:
    with atomic_write(run.run_dir / "config.toml", "w", encoding="utf-8") as fh:
        fh.write(to_toml(run.config.to_tables()))


def total_steps_for(run: Run, budget: dict[str, Any] | None = None) -> int:
    """The optimizer updates the run's budget (or `budget`, {key: value} of BUDGET_KEYS) comes to."""
    t = run.config.train
    budget = budget if budget is not None else _budget_of(run.config.to_tables())
    if budget.get("max_steps") is not None:
        return int(budget["max_steps"])
    if budget.get("max_tokens") is not None:
        return max(1, math.ceil(budget["max_tokens"] / run.tokens_per_step))
    assert budget.get("epochs") is not None and run.data.batches_per_epoch is not None
    return max(1, math.ceil(budget["epochs"] * run.data.batches_per_epoch / t.grad_accum))


def _budget_of(tables: dict[str, Any]) -> dict[str, Any]:
    train = tables.get("train")
    return {key: train.get(key) for key in BUDGET_KEYS} if isinstance(train, dict) else {}


def _check_same_config(saved: Any, config: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose config differs from the run's in anything but the budget (see `_check_budget`)."""
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"the saved config of the run in {run_dir} is not a table; the run directory is damaged.")
    # All but the budget must match the checkpoint's config.
    mine, theirs = without_budget(config.to_tables()), without_budget(with_defaults(saved))
    if mine == theirs:
        return
    changed = sorted(
        f"{section}.{key}"
        for section, values in mine.items()
        for key, value in values.items()
        if not isinstance(theirs.get(section), dict) or theirs[section].get(key) != value
    )
    raise ConfigError(
        f"the run in {run_dir} was started with a different config ({', '.join(changed)} differ); "
        "resume it without overrides (only the budget, train.max_steps / max_tokens / epochs, may change), or "
        "start a new run with --out."
    )


def _restore(run: Run, path: Path) -> None:
    ckpt = read_checkpoint(path, map_location=run.device)
    _check_same_config(ckpt.get("run_config"), run.config, run.run_dir)
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.data.train.load_state_dict(ckpt["sampler"])
        if run.scaler is not None and "scaler" in ckpt:
            run.scaler.load_state_dict(ckpt["scaler"])
        run.state = TrainState(**ckpt["train_state"])
        restore_rng_state(ckpt["rng"])
        run.saved_step = run.state.step
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else first_line(exc)
        raise CheckpointError(
            f"cannot resume from {path}: {what}; it was not written by `scratchlm train` for this run, or it is "
            "damaged -- restore the run directory or start a new run with --out."
        ) from None
    saved = ckpt.get("run_config")
    old_budget = _budget_of(saved) if isinstance(saved, dict) else _budget_of(run.config.to_tables())
    old_total = total_steps_for(run, old_budget)
    _check_budget(run, old_total)
    if run.dist.is_main:
        truncate_metrics_after(run.run_dir / "metrics.jsonl", run.state.step)
    _announce_resume(run, old_total)
    if old_budget != _budget_of(run.config.to_tables()) and run.dist.is_main:
        _write_config(run)  # the new budget; last.pt records it too from the next save on


def _check_budget(run: Run, old_total: int) -> None:
    """A changed budget may extend or shorten a run, but not below the steps it has already done."""
    if run.total_steps >= run.state.step:
        return
    key, value = _budget_setting(run.config)
    steps = "" if key == "max_steps" else f" ({run.total_steps} steps)"
    raise ConfigError(
        f"train.{key} = {_format_budget(value)}{steps} is fewer than the {run.state.step} steps the run in "
        f"{run.run_dir} has already done; give it a budget of at least {run.state.step} steps (it had "
        f"{old_total}), or start a new run with --out."
    )


def _announce_resume(run: Run, old_total: int) -> None:
    """One line for the resume (a finished run: how to train it longer), and one more for a changed budget."""
    step, total = run.state.step, run.total_steps
    if step >= total:
        key, value = _budget_setting(run.config)
        log.info(
            "resumed %s at step %d of %d: the run has already finished; to train it longer, resume it with a "
            "larger budget, e.g. --resume %s --set train.%s=%s",
            run.run_dir, step, total, run.run_dir, key, _format_budget(value * 2),
        )  # fmt: skip
        return
    log.info("resumed %s at step %d of %d", run.run_dir, step, total)
    if old_total == total:
        return
    optim = run.config.optim
    log.warning(
        "%s now trains for %d steps instead of %d: the learning-rate schedule is computed over the new total, so "
        "the lr at step %d is %.3g (the old schedule's: %.3g) and the result is not identical to a run started "
        "with this budget",
        run.run_dir, total, old_total, step + 1, lr_at(step, optim, total), lr_at(step, optim, old_total),
    )  # fmt: skip


def _budget_setting(config: RunConfig) -> tuple[str, Any]:
    """(key, value) of the run's training budget, e.g. ("max_steps", 50)."""
    return next((key, value) for key, value in _budget_of(config.to_tables()).items() if value is not None)


def _format_budget(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


# ------------------------------------------------------------------------------------------------- step


def train_step(run: Run) -> tuple[Tensor, Tensor]:
    """One optimizer update over grad_accum micro-batches. Returns (mean loss, pre-clip grad norm), on device."""
    t, model, opt = run.config.train, run.step_model, run.optimizer
    lr = lr_at(run.state.step, run.config.optim, run.total_steps)
    for group in opt.param_groups:
        group["lr"] = lr
    model.train()
    loss_sum = torch.zeros((), device=run.device)
    for micro in range(t.grad_accum):
        inputs, targets = run.data.train.next_batch()
        # Under DDP, gradients are all-reduced only on the last micro-batch.
        last_micro = micro == t.grad_accum - 1
        sync = nullcontext() if last_micro or not run.dist.enabled else model.no_sync()  # type: ignore[operator]
        with sync:
            with run.autocast():
                _, loss = model(inputs, targets)
            scaled = loss / t.grad_accum
            (run.scaler.scale(scaled) if run.scaler is not None else scaled).backward()
        loss_sum += loss.detach().float()
    if run.scaler is not None:
        run.scaler.unscale_(opt)
    clip = run.config.optim.grad_clip if run.config.optim.grad_clip > 0 else math.inf
    grad_norm = clip_grad_norm(run.model.parameters(), clip)
    mean_loss = loss_sum / t.grad_accum
    if t.on_nonfinite == "skip" and not bool(torch.isfinite(grad_norm) & torch.isfinite(mean_loss)):
        log.warning("step %d: non-finite loss or gradient; update skipped", run.state.step + 1)
        run.state.skipped_steps += 1
    elif run.scaler is not None:
        run.scaler.step(opt)
        run.scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


# ------------------------------------------------------------------------------------------------- eval


@torch.no_grad()
def evaluate(run: Run) -> dict[str, float]:
    """Mean validation loss per target token over the fixed validation batches, plus the data's own metrics."""
    model = run.model
    was_training = model.training
    model.eval()
    # Compiled blocks (train.compile_scope = "blocks") evaluate eagerly: no recompilation for eval mode,
    # and no CUDA-graph replays of training graphs under no_grad.
    set_stance = getattr(torch.compiler, "set_stance", None)  # PyTorch >= 2.6
    with set_stance("force_eager") if set_stance is not None else nullcontext():
        return _evaluate(run, model, was_training)


def _evaluate(run: Run, model: nn.Module, was_training: bool) -> dict[str, float]:
    loss_sum, count = 0.0, 0
    extra_sums: dict[str, float] = {}
    for inputs, targets in run.data.val_batches():
        with run.autocast():
            logits, _ = model(inputs)
        n = int((targets != IGNORE_INDEX).sum())
        loss_sum += float(cross_entropy(logits, targets, ignore_index=IGNORE_INDEX, validate=False)) * n
        count += n
        for key, value in run.data.metrics(logits, targets).items():
            extra_sums[key] = extra_sums.get(key, 0.0) + value * n
    model.train(was_training)
    val_loss = loss_sum / max(count, 1)
    result = {"val_loss": val_loss, "val_ppl": perplexity_from_loss(val_loss)}
    result.update({key: value / max(count, 1) for key, value in extra_sums.items()})
    return result


# ------------------------------------------------------------------------------------------------- save


def save(run: Run, *, periodic: bool, best: bool) -> None:
    """Write last.pt (atomically), and copies as step_*.pt and/or best.pt; rank 0 only."""
    if not run.dist.is_main:
        return
    extra = {
        "run_config": run.config.to_tables(),
        "train_state": dataclasses.asdict(run.state),
        "sampler": run.data.train.state_dict(),
        "rng": capture_rng_state(),
    }
    if run.scaler is not None:
        extra["scaler"] = run.scaler.state_dict()
    last = run.checkpoint_dir / "last.pt"
    # Ctrl-C waits for the whole save, copies included, so an interrupted run needs no repair on resume.
    with signals_deferred():
        # last.pt is the commit point: a kill after it but before the copies is repaired on resume.
        save_checkpoint(run.model, run.optimizer, run.state.step, last, extra)
        run.saved_step = run.state.step
        if periodic:
            _atomic_copy(last, _periodic_path(run))
        if best:
            _atomic_copy(last, run.checkpoint_dir / "best.pt")


def _periodic_path(run: Run) -> Path:
    return run.checkpoint_dir / f"step_{run.state.step:09d}.pt"


def _redo_checkpoint_copies(run: Run) -> None:
    """Finish the save last.pt was written by: a kill right after it may have skipped step_*.pt / best.pt."""
    step, last = run.state.step, run.checkpoint_dir / "last.pt"
    if step > 0 and step % run.config.train.checkpoint_interval == 0 and not _periodic_path(run).is_file():
        _atomic_copy(last, _periodic_path(run))
    if step > 0 and run.state.best_step == step:  # cannot tell whether best.pt got this step's copy: redo it
        _atomic_copy(last, run.checkpoint_dir / "best.pt")


def _atomic_copy(src: Path, dst: Path) -> None:
    with open(src, "rb") as fin, atomic_write(dst, "wb") as fout:
        shutil.copyfileobj(fin, fout)


# -------------------------------------------------------------------------------------------------- fit


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
            "mfu": round(flops * tokens_per_s / peak, 4) if peak else None,
            "elapsed_s": round(run.state.elapsed_s, 3),
        }

    def state_dict(self) -> dict[str, float]:
        return {
            "loss_sum": float(self.loss_sum),
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


def fit(run: Run, *, stop_after: int | None = None, monitor: Monitor | None = None) -> dict[str, Any]:
    """Train until the budget is spent (or `stop_after` more steps, for time-limited jobs); returns a summary.

    `monitor` (e.g. a divergence detector) sees each logged row; when it returns a reason the run saves
    last.pt and stops right after that row, and the summary records the reason as "stopped".

    Non-finite values are tracked on the device without a host sync per step and checked at each log,
    eval and checkpoint boundary: the run stops there, naming the first bad step, and never saves a
    checkpoint after it, so the last good one survives.
    """
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    t = run.config.train
    main = run.dist.is_main
    if run.state.step == 0:
        _warn_if_warmup_covers_the_run(run)
    if main and run.logger is None:
        run.logger = MetricsLogger(run.run_dir, run.config.track, run.run_dir.name, run.config.to_tables())
    flops = flops_per_token(run.config.model, run.data.seq_len)
    peak = peak_flops(torch.cuda.get_device_name(run.device), "bf16") if run.device.type == "cuda" else None
    if run.autocast_dtype is None and peak is not None:
        peak = peak_flops(torch.cuda.get_device_name(run.device), "tf32")
    end_step = run.total_steps if stop_after is None else min(run.total_steps, run.state.step + stop_after)
    if main and run.state.step == 0:
        counts = param_counts(run.config.model)
        log.info(
            "training %s: %s parameters (%s non-embedding), %d steps of %d tokens, on %s%s",
            run.run_dir.name,
            f"{counts.total:,}",
            f"{counts.non_embedding:,}",
            run.total_steps,
            run.tokens_per_step,
            run.device,
            f" x{run.dist.world_size}" if run.dist.enabled else "",
        )
    first_bad = torch.full((), -1, dtype=torch.long, device=run.device)
    stopped: str | None = None
    window = LogWindow(run.device, run.state.window)
    bar = tqdm(
        total=run.total_steps,
        initial=run.state.step,
        disable=not (main and t.progress),
        unit="step",
        dynamic_ncols=True,
        mininterval=0.2 if sys.stderr.isatty() else 30.0,  # a redirected log gets a line every 30 s, not per step
    )
    with logging_redirect_tqdm(), bar:
        while run.state.step < end_step:
            loss, grad_norm = train_step(run)
            run.state.step += 1
            run.state.tokens += run.tokens_per_step
            finite = torch.isfinite(loss)
            if run.scaler is None:  # under fp16 loss scaling inf gradients are routine: GradScaler skips them
                finite &= torch.isfinite(grad_norm)
            first_bad = torch.where(~finite & (first_bad < 0), run.state.step, first_bad)
            window.add(loss, grad_norm)
            bar.update(1)
            step = run.state.step
            do_eval = step % t.eval_interval == 0 or step == run.total_steps
            do_ckpt = step % t.checkpoint_interval == 0
            do_log = step % t.log_interval == 0 or do_eval or do_ckpt
            if not (do_log or step == end_step):
                continue
            bad_step = int(first_bad)  # the one host sync per log interval
            if bad_step >= 0 and t.on_nonfinite == "stop":
                raise NonFiniteLossError(_nonfinite_message(run, bad_step), step=bad_step)
            run.state.elapsed_s += window.lap()
            if not do_log:  # stopping between log steps: keep the partial window so a resume logs the same rows
                run.state.window = window.state_dict()
                save(run, periodic=False, best=False)
                break
            row = window.row(run, flops, peak)
            best = False
            if do_eval and main:
                run.state.last_eval = evaluate(run)
                row.update(run.state.last_eval)
                best = run.state.last_eval["val_loss"] < run.state.best_val_loss
                if best:
                    run.state.best_val_loss, run.state.best_step = run.state.last_eval["val_loss"], step
                log.info(_describe(row, run))
            if main:
                assert run.logger is not None
                run.logger.log(row)
            bar.set_postfix(loss=f"{row['train_loss']:.3f}", lr=f"{row['lr']:.2e}", tok_s=f"{row['tokens_per_s']:,.0f}")
            window.reset()
            run.state.window = {}
            stopped = monitor(row) if monitor is not None else None
            if stopped:
                log.warning("%s stopped at step %d: %s", run.run_dir.name, step, stopped)
            if do_eval or do_ckpt or step == end_step or stopped:
                save(run, periodic=do_ckpt, best=best)
            if stopped:
                break
    summary = _summary(run, stopped)
    if main:
        with atomic_write(run.run_dir / "summary.json", "w", encoding="utf-8") as fh:
            fh.write(dumps_strict(summary, indent=2))
    return summary


def _summary(run: Run, stopped: str | None) -> dict[str, Any]:
    """What the run achieved, as strict JSON values (no validation yet: best_val_loss is None, not Infinity).

    Only rank 0 evaluates, so under DDP every rank returns rank 0's summary.
    """
    summary = {
        "run_dir": str(run.run_dir),
        "steps": run.state.step,
        "total_steps": run.total_steps,
        "tokens": run.state.tokens,
        "elapsed_s": round(run.state.elapsed_s, 2),
        "best_val_loss": run.state.best_val_loss,
        **{f"final_{k}": v for k, v in run.state.last_eval.items()},
        "data": run.data.info,
    }
    if stopped:
        summary["stopped"] = stopped
    summary = strict_json(summary)
    if run.dist.enabled:
        shared = [summary]
        torch.distributed.broadcast_object_list(shared, src=0)
        summary = shared[0]
    return summary


def _nonfinite_message(run: Run, bad_step: int) -> str:
    last = run.checkpoint_dir / "last.pt"
    kept = (
        f"the last good checkpoint ({last}, step {run.saved_step}) is intact"
        if run.saved_step is not None
        else "no checkpoint had been written yet"
    )
    return (
        f"the loss or gradients became NaN/Inf at step {bad_step} and the run stopped; {kept}. Lower optim.lr "
        f"(now {run.config.optim.lr}) or raise optim.warmup_steps in a new run (--out), or set "
        'train.on_nonfinite = "skip" to skip such updates.'
    )


def _describe(row: dict[str, Any], run: Run) -> str:
    parts = [
        f"step {row['step']}/{run.total_steps}",
        f"train {row['train_loss']:.4f}",
        f"val {row['val_loss']:.4f} (ppl {row['val_ppl']:.2f})",
    ]
    parts += [f"{k} {v:.4f}" for k, v in row.items() if k.startswith("val_") and k not in ("val_loss", "val_ppl")]
    parts += [f"lr {row['lr']:.2e}", f"{row['tokens_per_s']:,.0f} tok/s"]
    return " | ".join(parts)


def train(
    config: RunConfig,
    run_dir: str | Path,
    *,
    resume: bool = False,
    stop_after: int | None = None,
    monitor: Monitor | None = None,
) -> dict:
    """Lock the run directory, setup + fit, and release the lock and the metrics file whatever happens.

    `monitor`: see `fit`.
    Raises RunLockedError when another live process trains in `run_dir`.
    """
    run_dir = Path(run_dir)
    run: Run | None = None
    # Only rank 0 writes; a resume of a directory that does not exist has nothing to lock (setup says so).
    locked = is_main_process() and (not resume or run_dir.is_dir())
    with exclusive_run_dir(run_dir) if locked else nullcontext():
        try:
            run = setup(config, run_dir, resume=resume)
            summary = fit(run, stop_after=stop_after, monitor=monitor)
            shutdown_distributed(wait_for_all=True)
            return summary
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if not _is_out_of_memory(exc):
                raise
            raise _out_of_memory_error(config, run) from None
        finally:
            if run is not None and run.logger is not None:
                run.logger.close()
            shutdown_distributed()


def _out_of_memory_error(config: RunConfig, run: Run | None) -> OutOfMemoryError:
    if run is None:
        counts = param_counts(config.model)
        return OutOfMemoryError(
            f"building the model ({counts.total:,} parameters) and its optimizer state ran out of memory; choose a "
            "smaller model (model.d_model, model.num_layers, model.vocab_size) or a device with more memory."
        )
    t = config.train
    return OutOfMemoryError(
        f"a training step ran out of {run.device.type} memory at train.batch_size={t.batch_size}; lower it "
        f"(e.g. --set train.batch_size={max(1, t.batch_size // 2)} --set train.grad_accum={t.grad_accum * 2} "
        f"keeps the same tokens per step). Checkpoints already in {run.checkpoint_dir} are intact."
    )


def _is_out_of_memory(exc: BaseException) -> bool:
    text = str(exc)
    return (
        isinstance(exc, (torch.OutOfMemoryError, MemoryError))
        or "out of memory" in text
        or "can't allocate memory" in text
    )
