"""Resuming a run from its last.pt: the config must match (only the budget may change), every state is
restored, metrics rows logged after the checkpoint are dropped, and the step_*.pt / best.pt copies a kill
may have cut off are redone, so an interrupted run ends exactly where an uninterrupted one does.

A run resumed with a larger budget (train.max_steps / max_tokens / epochs) continues to the new total, with
the learning-rate schedule recomputed over it; a smaller one may not go below the steps already done."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import torch

from scratchlm.config import RunConfig, with_defaults
from scratchlm.errors import CheckpointError, ConfigError, ScratchLMError, first_line
from scratchlm.fileio import atomic_copy
from scratchlm.presets import load_toml_file, without_budget
from scratchlm.train.checkpoint import read_checkpoint
from scratchlm.train.run import Run, TrainState, budget_of, fallback_checkpoint, lr_at, total_steps_for, write_config
from scratchlm.train.state import rank_seed, restore_rng_state
from scratchlm.train.tracking import truncate_metrics_after

log = logging.getLogger(__name__)


# What a resume may change besides the budget: how the console shows the run, not what the run computes.
DISPLAY_KEYS = {"train": ("progress",)}


def must_match(tables: dict[str, Any]) -> dict[str, Any]:
    """The config tables a resumed run must share with its checkpoint: all but the budget and DISPLAY_KEYS."""
    tables = without_budget(tables)
    return {
        section: {k: v for k, v in values.items() if k not in DISPLAY_KEYS.get(section, ())}
        if isinstance(values, dict)
        else values
        for section, values in tables.items()
    }


def check_same_config(saved: Any, config: RunConfig, run_dir: Path) -> None:
    """Refuse a resume whose config differs from the run's in anything but the budget (see `check_budget`)
    and the console display (`train.progress`: a run started in a terminal may go on in a script)."""
    if saved is None:
        return
    if not isinstance(saved, dict):
        raise CheckpointError(f"the saved config of the run in {run_dir} is not a table; the run directory is damaged.")
    # All but the budget must match the checkpoint's config.
    mine, theirs = must_match(config.to_tables()), must_match(with_defaults(saved))
    if mine == theirs:
        return
    changed = _changed_keys(mine, theirs)
    raise ConfigError(
        f"the run in {run_dir} was started with a different config ({', '.join(changed)} differ); "
        "resume it without overrides (only the budget, train.max_steps / max_tokens / epochs, may change), or "
        "start a new run with --out."
    )


def check_world_size(run: Run, ckpt: dict[str, Any], saved: Any) -> Any:
    """Refuse a resume that changes the global batch (train.batch_size per process x the process count).

    The global batch is what the data order, the token counts and the validation set depend on, so a run
    may resume with another number of processes only with a batch_size that keeps it; then the config
    check must accept the new batch_size: the saved tables are returned with it.
    """
    if not isinstance(saved, dict) or not isinstance(saved.get("train"), dict):
        return saved
    saved_ws = saved_world_size(run, ckpt, saved)
    batch, ws = run.config.train.batch_size, run.dist.world_size
    saved_batch = with_defaults(saved)["train"]["batch_size"]
    if saved_ws is None or (saved_ws, saved_batch) == (ws, batch):
        return saved
    if saved_ws == ws:  # the batch size alone changed: check_same_config says so
        return saved
    global_batch = saved_ws * saved_batch
    if global_batch != ws * batch:
        keep = (
            f", or --set train.batch_size={global_batch // ws} to keep it with {ws}" if global_batch % ws == 0 else ""
        )
        raise ConfigError(
            f"the run in {run.run_dir} was trained by {_processes(saved_ws)} with train.batch_size={saved_batch} "
            f"(a global batch of {global_batch} sequences), but this resume has {_processes(ws)} with "
            f"train.batch_size={batch} (a global batch of {ws * batch}); resume it with {_processes(saved_ws)}{keep}, "
            "or start a new run with --out."
        )
    log.warning(
        "%s resumes on %s with train.batch_size=%d (it trained on %s with %d): the global batch of %d sequences "
        "and the data order are the same, the sums over ranks are not bit-identical",
        run.run_dir, _processes(ws), batch, _processes(saved_ws), saved_batch, global_batch,
    )  # fmt: skip
    return {**saved, "train": {**saved["train"], "batch_size": batch}}


def saved_world_size(run: Run, ckpt: dict[str, Any], saved: dict[str, Any]) -> int | None:
    """The process count that wrote `ckpt`; checkpoints from before it was recorded: from its token count."""
    recorded = ckpt.get("world_size")
    if isinstance(recorded, int) and recorded >= 1:
        return recorded
    state, train = ckpt.get("train_state"), with_defaults(saved)["train"]
    if not isinstance(state, dict) or not state.get("step") or not isinstance(state.get("tokens"), int):
        return None
    tokens_per_row = run.data.train.tokens_per_batch // run.config.train.batch_size
    per_process = train["batch_size"] * train["grad_accum"] * tokens_per_row * state["step"]
    ws, rest = divmod(state["tokens"], per_process) if per_process > 0 else (0, 1)
    return ws if rest == 0 and ws >= 1 else None


def _restore_rng(run: Run, ckpt: dict[str, Any]) -> None:
    """Restore this rank's saved RNG state. A checkpoint of another process count (or from before per-rank
    states were kept) has none for it: every rank takes rank 0's, and ranks above 0 then reseed torch with a
    stream of their own (the resume is not bit-identical then, as `check_world_size` warns)."""
    per_rank = ckpt.get("rng_per_rank")
    if isinstance(per_rank, list) and len(per_rank) == run.dist.world_size:
        restore_rng_state(per_rank[run.dist.rank])
        return
    restore_rng_state(per_rank[0] if isinstance(per_rank, list) and per_rank else ckpt["rng"])
    if run.dist.rank > 0:
        torch.manual_seed(rank_seed(run.config.train.seed + run.state.step, run.dist.rank))


def _processes(n: int) -> str:
    return "1 process" if n == 1 else f"{n} processes"


def restore(run: Run, path: Path) -> None:
    ckpt = _read_last(path, run)
    saved = check_world_size(run, ckpt, ckpt.get("run_config"))
    try:
        check_same_config(saved, run.config, run.run_dir)
    except ConfigError:
        check_checkpoint_is_the_runs(saved, path, run.run_dir)  # a more exact report when it is not
        raise
    check_same_data(run, ckpt.get("data_fingerprint"), int(ckpt.get("iteration", 0)))
    try:
        run.model.load_state_dict(ckpt["model"])
        run.optimizer.load_state_dict(ckpt["optimizer"])
        run.data.train.load_state_dict(ckpt["sampler"])
        if run.scaler is not None and "scaler" in ckpt:
            run.scaler.load_state_dict(ckpt["scaler"])
        run.state = TrainState(**ckpt["train_state"])
        _restore_rng(run, ckpt)
        run.saved_step = run.state.step
    except (KeyError, TypeError, ValueError, RuntimeError, IndexError) as exc:
        what = f"no {exc.args[0]!r} entry" if isinstance(exc, KeyError) else first_line(exc)
        raise CheckpointError(
            f"cannot resume from {path}: {what}; it was not written by `scratchlm train` for this run, or it is "
            "damaged -- restore the run directory or start a new run with --out."
        ) from None
    old_budget = budget_of(saved) if isinstance(saved, dict) else budget_of(run.config.to_tables())
    old_total = total_steps_for(run, old_budget)
    check_budget(run, old_total)
    if run.dist.is_main:
        truncate_metrics_after(run.run_dir / "metrics.jsonl", run.state.step)
    announce_resume(run, old_total)
    changed = saved is not ckpt.get("run_config") or old_budget != budget_of(run.config.to_tables())
    if changed and run.dist.is_main:
        write_config(run)  # the new budget or batch_size; last.pt records it too from the next save on


def check_same_data(run: Run, saved: Any, step: int) -> None:
    """Refuse data that changed under the run's data.path since the checkpoint (a corpus prepared again with
    another tokenizer, other trajectories): resuming on it would train on data the steps so far never saw.
    Checkpoints written before fingerprints were kept (None) are not checked."""
    if saved is None or run.data.fingerprint is None or saved == run.data.fingerprint:
        return
    path = run.config.data.path
    raise ConfigError(
        f"the data at {path} is not what this run trained on until step {step} (its content changed since); "
        f"put that data back at {path} to resume, or start a new run on the new data with --out."
    )


def _read_last(path: Path, run: Run) -> dict[str, Any]:
    """The run's last.pt; an unreadable one says which earlier checkpoint of the run can take its place."""
    try:
        # On the CPU whatever the run's device: the RNG and sampler states must stay there, and load_state_dict
        # moves the weights and the optimizer's moments onto the device.
        return read_checkpoint(path, map_location="cpu")
    except CheckpointError as exc:
        earlier = fallback_checkpoint(run.checkpoint_dir)
        instead = (
            f"to resume from {earlier.name}, copy it over: cp {earlier} {path}"
            if earlier is not None
            else "the run has no earlier checkpoint to resume from, so start a new run with --out"
        )
        raise CheckpointError(f"cannot resume: {str(exc).rstrip('.')}; {instead}.") from None


def check_checkpoint_is_the_runs(saved: Any, path: Path, run_dir: Path) -> None:
    """Refuse a last.pt whose config differs from the config.toml beside it: it was copied in from another run,
    so the differences are not the command line's (which `check_same_config` would blame)."""
    config_path = run_dir / "config.toml"
    if not isinstance(saved, dict) or not config_path.is_file():
        return
    try:
        on_disk = must_match(with_defaults(load_toml_file(str(config_path))))
    except ScratchLMError:
        return  # a damaged config.toml: the config mismatch being reported stands on its own
    in_checkpoint = must_match(with_defaults(saved))
    changed = sorted({*_changed_keys(on_disk, in_checkpoint), *_changed_keys(in_checkpoint, on_disk)})
    if changed:
        raise CheckpointError(
            f"{path} was written by a run with another config than {config_path} ({', '.join(changed)} differ), "
            "so the directory mixes files of two runs; put back the run's own last.pt (or copy one of its "
            "step_*.pt over it), or start a new run with --out."
        )


def _changed_keys(mine: dict[str, Any], theirs: dict[str, Any]) -> list[str]:
    """`section.key` of every value in `mine` that `theirs` lacks or holds differently."""
    return sorted(
        f"{section}.{key}"
        for section, values in mine.items()
        if isinstance(values, dict)
        for key, value in values.items()
        if not isinstance(theirs.get(section), dict) or theirs[section].get(key) != value
    )


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
    best = run.checkpoint_dir / "best.pt"
    kept = _train_state_of(best)
    if kept is not None and kept["step"] > step:
        # last.pt was rolled back to an older step_*.pt: best.pt holds a later, better model; keep it, and let
        # only a model that beats it replace it.
        run.state.best_val_loss, run.state.best_step = kept["best_val_loss"], kept["best_step"]
        log.info("%s keeps best.pt from step %d (resuming at step %d)", run.run_dir, run.state.best_step, step)
    elif step > 0 and run.state.best_step == step:  # cannot tell whether best.pt got this step's copy: redo it
        atomic_copy(last, best)


def _train_state_of(path: Path) -> dict[str, Any] | None:
    """step, best_val_loss and best_step of the TrainState a checkpoint holds; None when there is none or it
    is unreadable."""
    if not path.is_file():
        return None
    try:
        state = read_checkpoint(path)["train_state"]
        return {"step": int(state["step"]), "best_val_loss": float(state["best_val_loss"]),
                "best_step": int(state["best_step"])}  # fmt: skip
    except (CheckpointError, KeyError, TypeError, ValueError):
        return None
