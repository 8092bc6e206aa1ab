"""The training loop as plain functions: `setup` -> `fit` (-> `train_step`, `evaluate`, `save`).

A `Run` (`run.py`) holds what the loop needs; its TrainState holds the counters a checkpoint must restore.
The model is trained through `run.step_model` (compiled and/or DDP-wrapped when asked) but saved, evaluated
and restored through the plain `run.model`, so checkpoints always carry the reference state-dict layout.

Crash safety: `train` holds the run directory's lock (`lock.py`). Every file is written atomically and
`last.pt` is the commit point of a save: a process killed at any moment resumes from the newest complete
last.pt (`resume.py`), so an interrupted run ends exactly where an uninterrupted one does. Ctrl-C / SIGTERM
during a save take effect once the save is complete.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import sys
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager, nullcontext
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from scratchlm.analysis.accounting import flops_per_token, param_counts
from scratchlm.config import RunConfig
from scratchlm.device import configure_cuda
from scratchlm.errors import (
    CheckpointError,
    ConfigError,
    NonFiniteLossError,
    OutOfMemoryError,
    PeerLostError,
    ReportedElsewhere,
    Terminated,
    is_out_of_memory,
)
from scratchlm.fileio import atomic_copy, atomic_write, signals_deferred
from scratchlm.memory import check_training_fits
from scratchlm.model import IGNORE_INDEX, TransformerLM
from scratchlm.nn.functional import cross_entropy, perplexity_from_loss
from scratchlm.optim import AdamW, clip_grad_norm, weight_decay_param_groups
from scratchlm.presets import load_toml_file, to_toml
from scratchlm.train.checkpoint import save_checkpoint
from scratchlm.train.compile import compile_for_training
from scratchlm.train.datasets import build_training_data
from scratchlm.train.distributed import (
    DistInfo,
    all_ranks_agree,
    init_distributed,
    is_main_process,
    is_peer_loss,
    rng_states_of_every_rank,
    shutdown_distributed,
)
from scratchlm.train.lock import exclusive_run_dir
from scratchlm.train.log_window import LogWindow
from scratchlm.train.resume import check_same_config, redo_checkpoint_copies, restore
from scratchlm.train.run import (
    Run,
    TrainState,
    budget_of,
    fallback_checkpoint,
    lr_at,
    resolve_autocast_dtype,
    step_peak_flops,
    total_steps_for,
    write_config,
)
from scratchlm.train.state import rank_seed
from scratchlm.train.tracking import MetricsLogger, dumps_strict, strict_json, truncate_metrics_after

log = logging.getLogger(__name__)

# Beside a run that a NaN/Inf stopped (summary.json is written only by a run that ended otherwise).
OUTCOME_FILE = "outcome.json"
# Written when a run starts or resumes: the steps its budget comes to. An epoch budget's steps depend on the
# data, and summary.json only exists once a run ends, so a run cut short would otherwise leave no total.
PLAN_FILE = "plan.json"

__all__ = [
    "Monitor",
    "NonFiniteLossError",
    "OutOfMemoryError",
    "Run",
    "TrainState",
    "evaluate",
    "fit",
    "lr_at",
    "setup",
    "train",
]

# Rows of a vocabulary padded for speed (nanoGPT: 50257 -> 50304, a multiple of 64) stay under this: no warning.
UNUSED_VOCAB_WARNING = 64

# Called with every metrics row as it is logged; a returned string stops the run there (the reason is kept
# in summary.json as "stopped"). Under DDP every rank calls it with the same training fields, but only rank 0
# sees the validation ones, so a monitor must decide from training fields alone.
Monitor = Callable[[dict[str, Any]], str | None]


# ------------------------------------------------------------------------------------------------ setup


def setup(config: RunConfig, run_dir: str | Path, *, resume: bool = False) -> Run:
    """Build everything for a run in `run_dir` (a new one, or the one there when resuming).

    Resuming a run that was stopped before its first checkpoint (its config.toml exists, last.pt does not)
    starts it again from step 0. Callers that may race with another writer hold the run's lock (`train`).
    Nothing here is a collective, so a rank that fails here fails alone (`train` makes all ranks agree):
    under torchrun `wrap_for_ddp(run)` wraps the model afterwards.
    """
    run_dir = Path(run_dir)
    last = run_dir / "checkpoints" / "last.pt"
    if not last.is_file():
        _refuse_checkpoints_without_last(run_dir)
        _refuse_files_of_no_run(run_dir, config, resume)
    if resume and not last.is_file():
        saved_config = run_dir / "config.toml"
        if not saved_config.is_file():
            raise CheckpointError(
                f"cannot resume: {last} does not exist; start the run without --resume (or check --out/--resume)."
            )
        check_same_config(RunConfig.from_tables(load_toml_file(str(saved_config))).to_tables(), config, run_dir)
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
    unused_rows = config.model.vocab_size - data.vocab_size if data.vocab_size is not None else 0
    if unused_rows >= UNUSED_VOCAB_WARNING and dist.is_main:
        log.warning(
            "model.vocab_size is %d but the data's tokenizer has %d tokens: %d embedding and output rows are never "
            "trained target ids, and the loss starts near ln %d instead of ln %d; set model.vocab_size=%d unless "
            "the padding is on purpose",
            config.model.vocab_size, data.vocab_size, unused_rows, config.model.vocab_size, data.vocab_size,
            data.vocab_size,
        )  # fmt: skip
    if data.seq_len > config.model.context_length:
        raise ConfigError(
            f"the data's sequences have {data.seq_len} positions but model.context_length is "
            f"{config.model.context_length}; raise model.context_length to at least {data.seq_len}."
        )
    model, step_model, optimizer, autocast_dtype, scaler = build_model_and_optimizer(
        config, device, data.seq_len, dist.world_size
    )
    if dist.rank > 0:
        # Every rank initialized the same weights; from here each draws its own dropout masks (one mask on
        # every rank would be the same noise pattern N times). Rank 0 keeps the single-process stream.
        torch.manual_seed(rank_seed(config.train.seed, dist.rank))
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
        restore(run, last)
        if dist.is_main:
            redo_checkpoint_copies(run)
    elif dist.is_main:
        run.checkpoint_dir.mkdir(parents=True, exist_ok=True)
        write_config(run)
        truncate_metrics_after(run_dir / "metrics.jsonl", 0)  # rows of an earlier attempt that never checkpointed
    if dist.is_main:
        write_plan(run)  # on resume too: a changed budget changes the total (and older runs have no plan yet)
    return run


def write_plan(run: Run) -> None:
    """`plan.json` (PLAN_FILE): the steps the run's budget comes to, its budget and its tokens per step."""
    budget = {key: value for key, value in budget_of(run.config.to_tables()).items() if value is not None}
    record = {"total_steps": run.total_steps, "budget": budget, "tokens_per_step": run.tokens_per_step}
    with atomic_write(run.run_dir / PLAN_FILE, "w", encoding="utf-8") as fh:
        fh.write(dumps_strict(record, indent=2))


def _refuse_checkpoints_without_last(run_dir: Path) -> None:
    """Refuse a run directory that holds step_*.pt or best.pt but no last.pt (deleted or lost after a save).

    Every save writes last.pt first, so such a directory is no fresh start: treating it as one (a new run,
    or a resume "from step 0") would overwrite its best.pt, its step_*.pt and its metrics.
    """
    checkpoints = run_dir / "checkpoints"
    instead = fallback_checkpoint(checkpoints)
    if instead is None:
        return
    raise CheckpointError(
        f"{run_dir} holds checkpoints but no {checkpoints / 'last.pt'}, and starting over would overwrite them; "
        f"to continue from {instead.name}, copy it (cp {instead} {checkpoints / 'last.pt'}) and run --resume "
        f"{run_dir}, or choose another --out."
    )


def _refuse_files_of_no_run(run_dir: Path, config: RunConfig, resume: bool) -> None:
    """Refuse to overwrite a config.toml or metrics.jsonl that no run wrote, e.g. `--config exp/config.toml
    --out exp`: a run makes checkpoints/ before it writes either, so without checkpoints/ they are the user's.

    A config.toml identical to the one the run would write (a run's config copied in) is no loss and is allowed.
    """
    if (run_dir / "checkpoints").is_dir():
        return
    config_path, metrics_path = run_dir / "config.toml", run_dir / "metrics.jsonl"
    # A run writes plan.json and metrics.jsonl beside its config.toml: with them, this was a run.
    if resume and config_path.is_file() and (metrics_path.exists() or (run_dir / "plan.json").exists()):
        raise CheckpointError(
            f"cannot resume {run_dir}: its checkpoints/ directory is gone (deleted or moved), so nothing of the "
            "run is left to continue from; put it back, or train again with --out in a new directory."
        )
    if config_path.is_file() and config_path.read_bytes() != to_toml(config.to_tables()).encode("utf-8"):
        raise ConfigError(
            f"{config_path} was not written by a run ({run_dir} has no checkpoints/), and this run would overwrite "
            "it with its resolved config; keep your file elsewhere (pass it with --config) or choose another --out."
        )
    if metrics_path.exists():
        raise ConfigError(
            f"{metrics_path} was not written by a run ({run_dir} has no checkpoints/), and this run would replace "
            "it; move it away or choose another --out."
        )


def wrap_for_ddp(run: Run) -> None:
    """Under torchrun, train through DistributedDataParallel (a collective: it broadcasts rank 0's weights)."""
    if run.dist.enabled and not isinstance(run.step_model, nn.parallel.DistributedDataParallel):
        device_ids = [run.device.index] if run.device.type == "cuda" else None
        run.step_model = nn.parallel.DistributedDataParallel(run.step_model, device_ids=device_ids)


def build_model_and_optimizer(
    config: RunConfig, device: torch.device, seq_len: int | None = None, world_size: int = 1
) -> tuple[TransformerLM, nn.Module, AdamW, torch.dtype | None, torch.amp.GradScaler | None]:
    """The model, its training view (compiled as configured; `wrap_for_ddp` adds DDP), AdamW, the precision setup.

    `seq_len` (the data's positions, default the context) and `world_size` size the memory check."""
    autocast_dtype = resolve_autocast_dtype(config.train.dtype, device)
    check_training_fits(
        config.model,
        config.train.batch_size,
        device,
        4 if autocast_dtype is None else 2,
        seq_len=seq_len,
        gradients_overlap=config.train.grad_accum > 1 or world_size > 1,
    )
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
    if t.on_nonfinite == "skip" and not _finite_on_every_rank(run, grad_norm, mean_loss):
        log.warning("step %d: non-finite loss or gradient; update skipped", run.state.step + 1)
        run.state.skipped_steps += 1
    elif run.scaler is not None:
        run.scaler.step(opt)
        run.scaler.update()
    else:
        opt.step()
    opt.zero_grad(set_to_none=True)
    return mean_loss, grad_norm


def _finite_on_every_rank(run: Run, grad_norm: Tensor, mean_loss: Tensor) -> bool:
    """Whether this update is finite everywhere: the loss is each rank's own, and a rank that skipped an
    update the others made would train a different model from then on."""
    finite = (torch.isfinite(grad_norm) & torch.isfinite(mean_loss)).to(torch.int32)
    if run.dist.enabled:
        torch.distributed.all_reduce(finite, op=torch.distributed.ReduceOp.MIN)
    return bool(finite)


def _first_bad_step(run: Run, first_bad: Tensor) -> int:
    """The first step whose loss or gradients were non-finite on any rank (-1: none), the same on every rank."""
    if not run.dist.enabled:
        return int(first_bad)
    never = torch.iinfo(torch.long).max
    earliest = torch.where(first_bad < 0, never, first_bad)
    torch.distributed.all_reduce(earliest, op=torch.distributed.ReduceOp.MIN)
    return -1 if int(earliest) == never else int(earliest)


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
    rng = rng_states_of_every_rank(run.dist)  # a collective under torchrun, so before the ranks part
    if not run.dist.is_main:
        return
    extra = {
        "run_config": run.config.to_tables(),
        "train_state": dataclasses.asdict(run.state),
        "sampler": run.data.train.state_dict(),
        "rng_per_rank": rng,  # [rank 0's] alone in a single process; older checkpoints hold "rng"
        "world_size": run.dist.world_size,  # with train.batch_size, the global batch a resume must keep
        "data_fingerprint": run.data.fingerprint,  # a resume checks the data is still the same
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
            atomic_copy(last, run.step_checkpoint_path)
        if best:
            atomic_copy(last, run.checkpoint_dir / "best.pt")


# -------------------------------------------------------------------------------------------------- fit


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
    peak = step_peak_flops(run.device, run.autocast_dtype)
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
    if main and run.state.step < end_step:
        # A resume that trains on (a finished run given a larger budget) ends the old summary's truth: until
        # this session writes its own, the run reads as interrupted, not as finished at the old step.
        (run.run_dir / "summary.json").unlink(missing_ok=True)
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
            bad_step = _first_bad_step(run, first_bad)  # the one host sync per log interval
            if bad_step >= 0 and t.on_nonfinite == "stop":
                if not main:  # every rank stops at the same step; rank 0, which saved, says so
                    raise ReportedElsewhere(NonFiniteLossError.exit_code)
                _record_divergence(run, bad_step)
                raise NonFiniteLossError(_nonfinite_message(run, bad_step), step=bad_step)
            run.state.elapsed_s += window.lap()
            if not do_log:  # stopping between log steps: keep the partial window so a resume logs the same rows
                run.state.window = window.state_dict(run.dist)
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
            run.state.window = {}
            stopped = monitor(row) if monitor is not None else None
            if stopped:
                log.warning("%s stopped at step %d: %s", run.run_dir.name, step, stopped)
            if do_eval or do_ckpt or step == end_step or stopped:
                save(run, periodic=do_ckpt, best=best)
            window.reset()  # after the eval and the save: neither counts as training time or throughput
            if stopped:
                break
    summary = _summary(run, stopped)
    if main:
        with atomic_write(run.run_dir / "summary.json", "w", encoding="utf-8") as fh:
            fh.write(dumps_strict(summary, indent=2))
        (run.run_dir / OUTCOME_FILE).unlink(missing_ok=True)  # a resume got past an earlier divergence
    return summary


def _record_divergence(run: Run, bad_step: int) -> None:
    """Leave `outcome.json` beside a run stopped by NaN/Inf, so `scratchlm runs` and the experiments can tell
    it from a run that never started (one stopped before its first checkpoint has nothing else to show)."""
    record = {
        "status": "diverged",
        "reason": f"non-finite loss or gradients at step {bad_step}",
        "step": bad_step,
        "total_steps": run.total_steps,
    }
    with atomic_write(run.run_dir / OUTCOME_FILE, "w", encoding="utf-8") as fh:
        fh.write(dumps_strict(record, indent=2))


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
    continue_with: str | None = None,
) -> dict:
    """Lock the run directory, setup + fit, and release the lock and the metrics file whatever happens.

    `monitor`: see `fit`. `continue_with`: what to do to continue an interrupted run, for its warning (default
    "run `scratchlm train --resume RUN`"; an experiment says to run its own command again).
    Raises RunLockedError when another live process trains in `run_dir`.
    """
    run_dir = Path(run_dir)
    run: Run | None = None
    info = DistInfo()
    with ExitStack() as stack, _quiet_unless_main():
        try:
            info, _ = init_distributed(config.train.device)
            # All ranks set up together, so one that fails (a bad path, a locked run) fails them all, reported once.
            run = all_ranks_agree(info, lambda: _locked_setup(stack, config, run_dir, resume, info))
            wrap_for_ddp(run)
            summary = fit(run, stop_after=stop_after, monitor=monitor)
            shutdown_distributed(wait_for_all=True)
            return summary
        except OutOfMemoryError:
            raise  # already the sentence (the model does not fit, said before building it)
        except (torch.OutOfMemoryError, MemoryError, RuntimeError) as exc:
            if is_out_of_memory(exc):
                raise out_of_memory_error(config, run) from None
            if info.enabled and is_peer_loss(exc):
                if not info.is_main:  # rank 0 says it (or, when rank 0 is the one gone, torchrun's report)
                    raise ReportedElsewhere(PeerLostError.exit_code) from None
                raise _peer_lost_error(run, run_dir) from None
            raise
        except (KeyboardInterrupt, Terminated):
            if run is not None and info.is_main:
                log.warning(_interrupted_hint(run, run_dir, continue_with))
            raise
        finally:
            if run is not None and run.logger is not None:
                run.logger.close()
            shutdown_distributed()


def _locked_setup(stack: ExitStack, config: RunConfig, run_dir: Path, resume: bool, info: DistInfo) -> Run:
    # Only rank 0 writes; a resume of a directory that does not exist has nothing to lock (setup says so).
    if info.is_main and (not resume or run_dir.is_dir()):
        stack.enter_context(exclusive_run_dir(run_dir))
    return setup(config, run_dir, resume=resume)


@contextmanager
def _quiet_unless_main() -> Iterator[None]:
    """Under torchrun only rank 0 logs info and warnings: the others would repeat its lines word for word."""
    package = logging.getLogger("scratchlm")
    level = package.level
    if not is_main_process():
        package.setLevel(logging.ERROR)
    try:
        yield
    finally:
        package.setLevel(level)


def _peer_lost_error(run: Run | None, run_dir: Path) -> PeerLostError:
    kept = (
        f"checkpoints in {run.checkpoint_dir} (the newest at step {run.saved_step}) are intact"
        if run is not None and run.saved_step is not None
        else "no checkpoint had been written yet"
    )
    step = f" at step {run.state.step}" if run is not None else ""
    return PeerLostError(
        f"another process of this torchrun job stopped or lost its connection{step} (torchrun's report names "
        f"it); {kept}: run the same torchrun command with --resume {run_dir} to continue."
    )


def _interrupted_hint(run: Run, run_dir: Path, continue_with: str | None = None) -> str:
    """What a Ctrl-C / SIGTERM leaves behind and how to continue (the CLI's own line only says "interrupted")."""
    how = continue_with or f"run `scratchlm train --resume {run_dir}`"
    if run.saved_step is None:
        return f"stopped at step {run.state.step} before the first checkpoint; {how} to start it again from step 0"
    return f"stopped at step {run.state.step}; the checkpoint of step {run.saved_step} is intact: {how} to continue"


def out_of_memory_error(config: RunConfig, run: Run | None, *, checkpoints: bool = True) -> OutOfMemoryError:
    """The sentence for an out-of-memory stop: while building the model (`run` None) or in a step, with the
    batch that would fit and, for a real run (`checkpoints`), what is already saved."""
    if run is None:
        counts = param_counts(config.model)
        return OutOfMemoryError(
            f"building the model ({counts.total:,} parameters) and its optimizer state ran out of memory; choose a "
            "smaller model (model.d_model, model.num_layers, model.vocab_size; model.context_length sizes its "
            "position tables) or a device with more memory."
        )
    t = config.train
    if t.batch_size > 1:
        same = "the same" if t.batch_size % 2 == 0 else "about the same"  # an odd batch does not halve exactly
        fix = (
            f"lower it (e.g. --set train.batch_size={t.batch_size // 2} --set train.grad_accum={t.grad_accum * 2} "
            f"keeps {same} tokens per step)"
        )
    else:  # halving the batch is no longer possible: what is left is the sequence and the model
        fix = (
            "it cannot go lower, so shorten model.context_length, choose a smaller model (model.d_model, "
            "model.num_layers) or use a device with more memory"
        )
    message = f"a training step ran out of {run.device.type} memory at train.batch_size={t.batch_size}; {fix}."
    if checkpoints:
        message += (
            f" Checkpoints already in {run.checkpoint_dir} (the newest at step {run.saved_step}) are intact."
            if run.saved_step is not None
            else " No checkpoint had been written yet."
        )
    return OutOfMemoryError(message)
