"""Resuming a run from its last.pt: the config must match (only the budget may change), every state is
restored, metrics rows logged after the checkpoint are dropped, and the step_*.pt / best.pt copies a kill
may have cut off are redone, so an interrupted run ends exactly where an uninterrupted one does.

A run resumed with a larger budget (train.max_steps / max_tokens / epochs) continues to the new total, with
the learning-rate schedule recomputed over it; a smaller one may not go below the steps already done."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from scratchlm.config import RunConfig, with_defaults
from scratchlm.errors import CheckpointError, ConfigError, first_line
from scratchlm.fileio import atomic_copy
from scratchlm.presets import without_budget
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.run import Run, TrainState, budget_of, lr_at, total_steps_for, write_config
from scratchlm.train.state import restore_rng_state
from scratchlm.train.tracking import truncate_metrics_after

log = logging.getLogger(__name__)


def check_same_config(saved: Any, config: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose config differs from the run's in anything but the budget (see `check_budget`)."""
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


def restore(run: Run, path: Path) -> None:
    ckpt = read_checkpoint(path, map_location=run.device)
    check_same_config(ckpt.get("run_config"), run.config, run.run_dir)
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
    old_budget = budget_of(saved) if isinstance(saved, dict) else budget_of(run.config.to_tables())
    old_total = total_steps_for(run, old_budget)
    check_budget(run, old_total)
    if run.dist.is_main:
        truncate_metrics_after(run.run_dir / "metrics.jsonl", run.state.step)
    announce_resume(run, old_total)
    if old_budget != budget_of(run.config.to_tables()) and run.dist.is_main:
        write_config(run)  # the new budget; last.pt records it too from the next save on


def check_budget(run: Run, old_total: int) -> None:
    """A changed budget may extend or shorten a run, but not below the steps it has already done."""
    if run.total_steps >= run.state.step:
        return
    key, value = budget_setting(run.config)
    steps = "" if key == "max_steps" else f" ({run.total_steps} steps)"
    raise ConfigError(
        f"train.{key} = {format_budget(value)}{steps} is fewer than the {run.state.step} steps the run in "
        f"{run.run_dir} has already done; give it a budget of at least {run.state.step} steps (it had "
        f"{old_total}), or start a new run with --out."
    )


def announce_resume(run: Run, old_total: int) -> None:
    """One line for the resume (a finished run: how to train it longer), and one more for a changed budget."""
    step, total = run.state.step, run.total_steps
    if step >= total:
        key, value = budget_setting(run.config)
        log.info(
            "resumed %s at step %d of %d: the run has already finished; to train it longer, resume it with a "
            "larger budget, e.g. --resume %s --set train.%s=%s",
            run.run_dir, step, total, run.run_dir, key, format_budget(value * 2),
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


def budget_setting(config: RunConfig) -> tuple[str, Any]:
    """(key, value) of the run's training budget, e.g. ("max_steps", 50)."""
    return next((key, value) for key, value in budget_of(config.to_tables()).items() if value is not None)


def format_budget(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else f"{value:g}"


def redo_checkpoint_copies(run: Run) -> None:
    """Finish the save last.pt was written by: a kill right after it may have skipped step_*.pt / best.pt."""
    step, last = run.state.step, run.checkpoint_dir / "last.pt"
    if step > 0 and step % run.config.train.checkpoint_interval == 0 and not run.step_checkpoint_path.is_file():
        atomic_copy(last, run.step_checkpoint_path)
    if step > 0 and run.state.best_step == step:  # cannot tell whether best.pt got this step's copy: redo it
        atomic_copy(last, run.checkpoint_dir / "best.pt")
